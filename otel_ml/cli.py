"""The ``otel-ml`` command line: build and inspect reference profiles of training data.

    otel-ml reference build train.csv -o fraud-ref.json
    otel-ml reference show fraud-ref.json

Inputs are read in chunks of ``--chunk-rows`` rows (bounded memory): ``.csv`` with pandas when it is
installed (otherwise the stdlib ``csv`` module), ``.parquet`` with pyarrow, ``.npy`` memory-mapped.
Problems with the user's files are reported as one ``otel-ml: error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import numpy as np

from otel_ml.sketch.columns import Skip
from otel_ml.sketch.reference import DEFAULT_MAX_FEATURES, Reference, ReferenceBuilder

PROG = "otel-ml"
LARGE_FILE_BYTES = 16 << 20  # below this no progress bar is drawn unless --progress asks for one
NA_STRINGS = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "NULL", "null", "None", "<NA>", "#N/A"})


class CliError(Exception):
    """A problem with the user's input or output, printed as one ``otel-ml: error:`` line (exit code 2)."""


class Progress:
    """A ``\\r``-updated text bar (bytes or rows) on a stream; does nothing when disabled."""

    def __init__(self, enabled: bool, stream: TextIO | None = None, width: int = 30) -> None:
        self.enabled, self.stream, self.width = enabled, stream or sys.stderr, width
        self.total, self.unit, self._last = 0, "rows", -1

    def start(self, total: int, unit: str) -> None:
        """Set the amount of work: ``unit`` is "bytes" (shown in MB) or "rows"."""
        self.total, self.unit = total, unit

    def update(self, done: int) -> None:
        """Redraw when the whole percentage changes."""
        if not self.enabled or self.total <= 0:
            return
        pct = min(100, done * 100 // self.total)
        if pct != self._last:
            self._last = pct
            bar = "#" * (self.width * pct // 100)
            scale, digits, label = (1e6, 1, "MB") if self.unit == "bytes" else (1, 0, "rows")
            amount = f"{done / scale:,.{digits}f}/{self.total / scale:,.{digits}f} {label}"
            self.stream.write(f"\r[{bar:.<{self.width}}] {pct:3d}% {amount}")
            self.stream.flush()

    def close(self) -> None:
        if self._last >= 0:
            self.stream.write("\n")
            self.stream.flush()


def _one_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return " ".join(text.split())


# -- readers: each yields chunks that ReferenceBuilder.add accepts ------------------------------------------
Reader = Callable[[str, list[str] | None, int, Progress], Iterator[Any]]


def _read_csv(path: str, features: list[str] | None, chunk_rows: int, progress: Progress) -> Iterator[Any]:
    """CSV chunks as DataFrames; column kinds are fixed by the first chunk so later chunks cannot flip them."""
    try:
        import pandas as pd
    except ImportError:
        yield from _read_csv_stdlib(path, features, chunk_rows, progress)
        return
    progress.start(os.path.getsize(path), "bytes")
    head = pd.read_csv(path, nrows=chunk_rows, usecols=features)
    numeric = [c for c in head.columns if pd.api.types.is_numeric_dtype(head[c])]
    text = {c: str for c in head.columns if c not in numeric}
    with open(path, "rb") as fh:
        for chunk in pd.read_csv(fh, chunksize=chunk_rows, usecols=features, dtype=text):
            for c in numeric:  # a non-number in a later chunk: keep the numbers, the rest count as mismatches
                if not pd.api.types.is_numeric_dtype(chunk[c]):
                    num = pd.to_numeric(chunk[c], errors="coerce")
                    chunk[c] = num.astype(object).where(num.notna() | chunk[c].isna(), chunk[c])
            yield chunk[features] if features else chunk
            progress.update(fh.tell())


def _read_csv_stdlib(path: str, features: list[str] | None, chunk_rows: int, progress: Progress) -> Iterator[Any]:
    """CSV chunks as dicts of columns; a column is numeric when its first chunk parses as floats."""
    progress.start(os.path.getsize(path), "bytes")
    done = 0
    with open(path, "rb") as fh:

        def lines() -> Iterator[str]:
            nonlocal done
            for raw in fh:
                yield raw.decode("utf-8-sig" if done == 0 else "utf-8")
                done += len(raw)

        reader = csv.reader(lines())
        header = _dedupe(next(reader, []))
        _check_columns(path, features, header)
        pick = [header.index(f) for f in features] if features else range(len(header))
        rows = (r for r in reader if r)  # blank lines are skipped, as pandas does
        numeric: dict[int, bool] = {}
        while block := list(itertools.islice(rows, chunk_rows)):
            if any(len(r) > len(header) for r in block):
                raise CliError(f"{path}: a row has more fields than the header ({len(header)})")
            cols = list(zip(*(r + [""] * (len(header) - len(r)) for r in block), strict=True))
            yield {header[i]: _column(cols[i], numeric, i) for i in pick}
            progress.update(done)


def _dedupe(names: list[str]) -> list[str]:
    """Repeated header names get ``.1``, ``.2``... as pandas does."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        out.append(f"{name}.{seen[name]}" if name in seen else name)
        seen[name] = seen.get(name, 0) + 1
    return out


def _check_columns(path: str, features: list[str] | None, names: Sequence[str]) -> None:
    missing = [f for f in features or [] if f not in names]
    if missing:
        raise CliError(f"{path}: no column(s) {', '.join(map(repr, missing))}")


def _column(values: Sequence[str], numeric: dict[int, bool], i: int) -> np.ndarray:
    """float64 for a numeric column (NA strings -> NaN), object strings otherwise; kind fixed on first sight."""
    first = i not in numeric
    if numeric.setdefault(i, True):
        try:
            return np.array(["nan" if v in NA_STRINGS else v for v in values], dtype=np.float64)
        except ValueError:
            numeric[i] = not first  # non-numbers in a column's first chunk make it categorical
    if numeric[i]:  # a later chunk of a numeric column: numbers stay numbers, the rest count as mismatches
        return np.array([_number(v) for v in values], dtype=object)
    return np.array([math.nan if v in NA_STRINGS else v for v in values], dtype=object)


def _number(v: str) -> float | str:
    if v in NA_STRINGS:
        return math.nan
    try:
        return float(v)
    except ValueError:
        return v


def _read_npy(path: str, features: list[str] | None, chunk_rows: int, progress: Progress) -> Iterator[Any]:
    """Row slices of a memory-mapped ``.npy`` array (1-D: one feature, 2-D: one feature per column)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError):
        raise CliError(f"cannot read {path}: not a valid .npy array file") from None
    if not isinstance(arr, np.ndarray) or arr.ndim not in (1, 2):
        raise CliError(f"{path}: expected a 1-D or 2-D array, got shape {getattr(arr, 'shape', '?')}")
    if features and len(features) != (arr.shape[1] if arr.ndim == 2 else 1):
        raise CliError(f"{path}: --features names {len(features)} columns, the array has {arr.shape[-1]}")
    progress.start(len(arr), "rows")
    for start in range(0, len(arr), chunk_rows):
        yield arr[start : start + chunk_rows]
        progress.update(min(start + chunk_rows, len(arr)))


def _read_parquet(path: str, features: list[str] | None, chunk_rows: int, progress: Progress) -> Iterator[Any]:
    """Record batches of a Parquet file (pyarrow), as DataFrames when pandas is installed."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CliError("reading .parquet files needs pyarrow: pip install pyarrow") from None
    pf = pq.ParquetFile(path)
    _check_columns(path, features, pf.schema_arrow.names)
    progress.start(pf.metadata.num_rows, "rows")
    done = 0
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=features):
        done += batch.num_rows
        try:
            yield batch.to_pandas()
        except ImportError:  # no pandas: a dict of columns
            yield batch.to_pydict()
        progress.update(done)


READERS: dict[str, Reader] = {".csv": _read_csv, ".parquet": _read_parquet, ".npy": _read_npy}


# -- commands ----------------------------------------------------------------------------------------------
def _build(args: argparse.Namespace) -> int:
    """``reference build``: sketch INPUT chunk by chunk and save the reference JSON."""
    path, ext = args.input, os.path.splitext(args.input)[1].lower()
    reader = READERS.get(ext)
    if reader is None:
        raise CliError(f"unsupported input format {ext or path!r}: expected .csv, .parquet or .npy")
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    builder = ReferenceBuilder(features if ext == ".npy" else None, max_features=args.max_features)
    try:
        auto = args.progress is None  # neither --progress nor --no-progress: large files on a terminal only
        progress = Progress(
            sys.stderr.isatty() and os.path.getsize(path) >= LARGE_FILE_BYTES if auto else args.progress
        )
        try:
            for chunk in reader(path, features, args.chunk_rows, progress):
                got = builder.add(chunk)
                if isinstance(got, Skip):
                    raise CliError(f"cannot read {path}: unsupported data ({got.reason})")
        finally:
            progress.close()
    except (OSError, ValueError, EOFError, KeyError, csv.Error) as exc:
        if type(exc).__name__ == "EmptyDataError":  # pandas: not even a header
            raise CliError(f"{path}: empty input, no data rows") from None
        raise CliError(f"cannot read {path}: {_one_line(exc)}") from None
    if builder.rows == 0 or not builder.features:
        raise CliError(f"{path}: empty input, no data rows")
    ref = builder.build(source=args.source, metadata=dict(args.metadata or []))
    try:
        ref.save(args.output)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {_one_line(exc)}") from None
    print(f"wrote {args.output}: reference {ref.id}, {ref.rows} rows, {len(ref.features)} features")
    return 0


def _summary(ref: Reference, top: int = 5) -> dict[str, Any]:
    """A JSON-safe overview of a reference: header fields plus counters and min/max or top categories."""
    feats = []
    for name, f in ref.features.items():
        item: dict[str, Any] = {"name": name, "kind": f.kind, "count": f.count, "missing": f.missing}
        if f.kind == "numeric":
            item.update(min=None if math.isnan(f.min) else f.min, max=None if math.isnan(f.max) else f.max)
        else:
            item["top"] = [list(kc) for kc in f.frequent.top(top)]  # loaded keys are JSON values already
        feats.append(item)
    head = {"id": ref.id, "source": ref.source, "rows": ref.rows, "created": ref.created, "metadata": ref.metadata}
    return {**head, "features": feats}


def _show(args: argparse.Namespace) -> int:
    """``reference show``: print a reference's header and per-feature summary."""
    try:
        ref = Reference.load(args.ref)
    except OSError as exc:
        raise CliError(f"cannot read {args.ref}: {_one_line(exc)}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CliError(f"{args.ref} is not a valid otel-ml reference: {_one_line(exc)}") from None
    info = _summary(ref)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in ("id", "source", "rows", "created"):
        print(f"{key + ':':<10}{info[key]}")
    if ref.metadata:
        print(f"{'metadata:':<10}" + ", ".join(f"{k}={v}" for k, v in ref.metadata.items()))
    print(f"features: {len(info['features'])}")
    width = max((len(f["name"]) for f in info["features"]), default=0)
    for f in info["features"]:
        if f["kind"] == "numeric":
            detail = f"min={f['min']:.6g} max={f['max']:.6g}" if f["min"] is not None else "no finite values"
        else:
            detail = "top: " + (", ".join(f"{k} ({c})" for k, c in f["top"]) or "-")
        print(f"  {f['name']:<{width}}  {f['kind']:<11}  count={f['count']} missing={f['missing']}  {detail}")
    return 0


# -- arguments ---------------------------------------------------------------------------------------------
def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="OpenTelemetry for ML models: command-line tools.")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    reference = commands.add_parser("reference", help="build or inspect reference (training data) profiles")
    actions = reference.add_subparsers(title="actions", dest="action", required=True)

    build = actions.add_parser("build", help="sketch a training file into a reference JSON")
    build.add_argument("input", metavar="INPUT", help="training data: .csv, .parquet (needs pyarrow) or .npy")
    build.add_argument("-o", "--output", required=True, metavar="OUT.json", help="reference file to write")
    build.add_argument("--features", metavar="a,b,c", help="columns to use (.npy: names of the array's columns)")
    build.add_argument("--max-features", type=_positive, default=DEFAULT_MAX_FEATURES, metavar="N")
    build.add_argument("--chunk-rows", type=_positive, default=65_536, metavar="N", help="rows read at a time")
    build.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar on stderr")
    build.add_argument("--source", default="training", help="the reference's source label (default: training)")
    build.add_argument("--metadata", type=_key_value, nargs="+", action="extend", metavar="key=value")
    build.set_defaults(func=_build)

    show = actions.add_parser("show", help="print a reference's summary")
    show.add_argument("ref", metavar="REF.json")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    show.set_defaults(func=_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 usage or input error, 130 interrupted)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error, already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code: int = args.func(args)
        return code
    except CliError as exc:
        message = _one_line(exc)
    except BrokenPipeError:  # e.g. `otel-ml reference show ref.json | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a last resort: never a traceback for the user
        message = f"unexpected {type(exc).__name__}: {_one_line(exc)}"
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
