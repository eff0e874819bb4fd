"""The otel-ml command line: ``reference build`` from CSV (pandas and stdlib), .npy and Parquet, ``reference show``,
progress bar, and one clean error line (exit code 2, no traceback) for every bad input."""

from __future__ import annotations

import builtins
import errno
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from otel_ml import cli
from otel_ml.cli import main
from otel_ml.sketch.reference import Reference

HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None
ROWS, FEATURES = 569, 31


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Breast cancer features plus a categorical ``diagnosis``, with 12 + 2 gaps."""
    ds = load_breast_cancer(as_frame=True)
    df = ds.frame.drop(columns="target")
    df["diagnosis"] = np.array(ds.target_names)[ds.target]
    df.loc[::50, "mean radius"] = np.nan
    df.loc[[7, 77], "diagnosis"] = None
    return df


@pytest.fixture(scope="module")
def train_csv(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def expected_ids(frame: pd.DataFrame) -> dict[str, str]:
    """Python-API ids, computed before a test hides pandas (pandas imports itself lazily)."""
    return {
        "all": Reference.from_data(frame).id,
        "two": Reference.from_data(frame[["diagnosis", "mean radius"]]).id,
    }


@pytest.fixture(params=["pandas", "stdlib"])
def csv_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with pandas' CSV reader and again with the stdlib fallback (pandas made unimportable)."""
    if request.param == "stdlib":
        monkeypatch.setitem(sys.modules, "pandas", None)
    return str(request.param)


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def build(capsys: pytest.CaptureFixture[str], src: Path, out: Path, *options: object) -> Reference:
    code, stdout, err = run(capsys, "reference", "build", src, "-o", out, *options)
    assert (code, err) == (0, ""), err
    ref = Reference.load(out)
    assert stdout == f"wrote {out}: reference {ref.id}, {ref.rows} rows, {len(ref.features)} features\n"
    return ref


def content(ref: Reference) -> dict[str, Any]:
    """Feature summaries, as serialised."""
    return {name: f.to_dict() for name, f in ref.features.items()}


# -- build ------------------------------------------------------------------------------------------------
def test_build_from_csv(
    frame: pd.DataFrame, train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = build(capsys, train_csv, tmp_path / "fraud-ref.json")
    assert (ref.feature_names, ref.rows, ref.source, ref.metadata) == (list(frame.columns), ROWS, "training", {})
    for name in frame.columns:
        f, col = ref.features[name], frame[name]
        assert (f.count, f.missing, f.valid) == (ROWS, col.isna().sum(), col.notna().sum()), name
        if name == "diagnosis":
            assert f.kind == "categorical" and f.frequent.counts() == {"benign": 357, "malignant": 210}
        else:
            assert (f.kind, f.min, f.max) == ("numeric", col.min(), col.max()), name
    assert (ref.features["mean radius"].missing, ref.features["diagnosis"].missing) == (12, 2)
    assert ref.id == Reference.from_data(frame).id  # the CLI builds what the Python API builds


def test_build_with_stdlib_csv_reader_matches_pandas(
    expected_ids: dict[str, str], train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    ref = build(capsys, train_csv, tmp_path / "ref.json")
    assert ref.id == expected_ids["all"]
    assert ref.features["diagnosis"].frequent.counts() == {"benign": 357, "malignant": 210}


def test_build_options(
    frame: pd.DataFrame, expected_ids: dict[str, str], train_csv: Path, tmp_path: Path, capsys: Any, csv_reader: str
) -> None:
    ref = build(
        capsys,
        train_csv,
        tmp_path / "ref.json",
        "--features",
        "diagnosis, mean radius",
        "--metadata",
        "model=fraud",
        "version=1.4.0",
        "--metadata",
        "note=a=b",
        "--source",
        "holdout",
    )
    assert (ref.feature_names, ref.source) == (["diagnosis", "mean radius"], "holdout")
    assert ref.metadata == {"model": "fraud", "version": "1.4.0", "note": "a=b"}
    assert ref.id == expected_ids["two"]
    ref = build(capsys, train_csv, tmp_path / "ref3.json", "--max-features", "3")
    assert ref.feature_names == list(frame.columns[:3])


def test_chunked_csv_build_equals_single_shot(train_csv: Path, tmp_path: Path, capsys: Any, csv_reader: str) -> None:
    whole = build(capsys, train_csv, tmp_path / "whole.json")
    chunked = build(capsys, train_csv, tmp_path / "chunked.json", "--chunk-rows", "50")
    assert (chunked.rows, chunked.feature_names) == (whole.rows, whole.feature_names)
    assert content(chunked) == content(whole)
    for name, f in whole.features.items():
        if f.kind == "numeric":
            assert chunked.features[name].quantiles.mean == pytest.approx(f.quantiles.mean, rel=1e-12)


def test_chunked_csv_build_has_the_single_shot_id(train_csv: Path, tmp_path: Path, capsys: Any) -> None:
    whole = build(capsys, train_csv, tmp_path / "whole.json")
    assert build(capsys, train_csv, tmp_path / "chunked.json", "--chunk-rows", "50").id == whole.id


def test_csv_column_kinds_are_fixed_by_the_first_chunk(tmp_path: Path, capsys: Any, csv_reader: str) -> None:
    src = tmp_path / "mixed.csv"
    src.write_text("code,zip,empty\n1.5,A1,\n2.5,B2,\nx,75001,\n4.0,75002,\n")
    ref = build(capsys, src, tmp_path / "ref.json", "--chunk-rows", "2")
    code, zip_, empty = (ref.features[n] for n in ("code", "zip", "empty"))
    assert (code.kind, code.count, code.type_mismatch, code.quantiles.weighted_items()[0].tolist()) == (
        "numeric",
        4,
        1,
        [1.5, 2.5, 4.0],
    )
    assert (zip_.kind, zip_.frequent.counts()) == ("categorical", {"75001": 1, "75002": 1, "A1": 1, "B2": 1})
    assert (empty.kind, empty.count, empty.missing, empty.valid) == ("numeric", 4, 4, 0)


def test_duplicate_csv_header_names(tmp_path: Path, capsys: Any, csv_reader: str) -> None:
    (tmp_path / "dup.csv").write_text("a,a,b,a\n1,2,x,3\n")
    ref = build(capsys, tmp_path / "dup.csv", tmp_path / "ref.json")
    assert ref.feature_names == ["a", "a.1", "b", "a.2"]
    assert [ref.features[n].max for n in ("a", "a.1", "a.2")] == [1.0, 2.0, 3.0]


def test_build_from_npy(frame: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arr = frame.drop(columns="diagnosis").to_numpy()
    np.save(tmp_path / "x.npy", arr)
    ref = build(capsys, tmp_path / "x.npy", tmp_path / "ref.json")
    assert (ref.feature_names, ref.rows) == ([f"f{i}" for i in range(30)], ROWS)
    assert [f.count for f in ref.features.values()] == [ROWS] * 30 and ref.features["f0"].missing == 12
    assert ref.id == Reference.from_data(arr).id
    names = ",".join(frame.columns[:30])
    named = build(capsys, tmp_path / "x.npy", tmp_path / "named.json", "--features", names, "--chunk-rows", "100")
    assert named.feature_names == list(frame.columns[:30]) and named.rows == ROWS
    assert content(named) == {n: d for n, d in zip(named.feature_names, content(ref).values(), strict=True)}
    np.save(tmp_path / "one.npy", np.array([1.0, 2.0, 4.0]))
    one = build(capsys, tmp_path / "one.npy", tmp_path / "one.json")
    assert (one.feature_names, one.rows, one.features["f0"].max) == (["f0"], 3, 4.0)


@pytest.mark.skipif(not HAS_PYARROW, reason="pyarrow not installed (the missing-pyarrow error is tested below)")
def test_build_from_parquet(frame: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame.to_parquet(tmp_path / "train.parquet", row_group_size=100)
    ref = build(capsys, tmp_path / "train.parquet", tmp_path / "ref.json")
    assert (ref.feature_names, ref.rows, ref.id) == (list(frame.columns), ROWS, Reference.from_data(frame).id)
    ref = build(capsys, tmp_path / "train.parquet", tmp_path / "two.json", "--features", "diagnosis,mean radius")
    assert ref.feature_names == ["diagnosis", "mean radius"]
    code, out, err = run(
        capsys, "reference", "build", tmp_path / "train.parquet", "-o", tmp_path / "r", "--features", "x"
    )
    assert (code, out, err) == (2, "", f"otel-ml: error: {tmp_path / 'train.parquet'}: no column(s) 'x'\n")


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "train.parquet").write_bytes(b"PAR1")
    code, out, err = run(capsys, "reference", "build", tmp_path / "train.parquet", "-o", tmp_path / "ref.json")
    assert (code, out, err) == (2, "", "otel-ml: error: reading .parquet files needs pyarrow: pip install pyarrow\n")


# -- progress ---------------------------------------------------------------------------------------------
def test_progress_bar_forced_on_goes_to_stderr(train_csv: Path, tmp_path: Path, capsys: Any, csv_reader: str) -> None:
    code, out, err = run(capsys, "reference", "build", train_csv, "-o", tmp_path / "ref.json", "--progress")
    size = train_csv.stat().st_size / 1e6
    assert code == 0 and out.startswith("wrote ") and out.count("\n") == 1
    assert err.startswith("\r[") and err.endswith(f"] 100% {size:.1f}/{size:.1f} MB\n")
    assert "#" * 30 in err


def test_progress_bar_counts_rows_for_npy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1000, 2)))
    code, _, err = run(
        capsys, "reference", "build", tmp_path / "x.npy", "-o", tmp_path / "r.json", "--progress", "--chunk-rows", "250"
    )
    assert code == 0
    assert err.split("\r")[1:] == [
        f"[{'#' * n:.<30}] {p:3d}% {r:,}/1,000 rows" for n, p, r in ((7, 25, 250), (15, 50, 500), (22, 75, 750))
    ] + ["[" + "#" * 30 + "] 100% 1,000/1,000 rows\n"]


def test_progress_bar_is_off_unless_large_file_on_a_terminal(
    train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for flags in ([], ["--no-progress"]):
        code, _, err = run(capsys, "reference", "build", train_csv, "-o", tmp_path / "ref.json", *flags)
        assert (code, err) == (0, "")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run(capsys, "reference", "build", train_csv, "-o", tmp_path / "ref.json")
    assert (code, err) == (0, "")  # a terminal, but a small file
    monkeypatch.setattr(cli, "LARGE_FILE_BYTES", 1)
    code, _, err = run(capsys, "reference", "build", train_csv, "-o", tmp_path / "ref.json")
    assert code == 0 and "100%" in err
    code, _, err = run(capsys, "reference", "build", train_csv, "-o", tmp_path / "ref.json", "--no-progress")
    assert (code, err) == (0, "")


def test_progress_redraws_only_on_whole_percent_changes() -> None:
    stream = io.StringIO()
    bar = cli.Progress(True, stream, width=10)
    bar.start(200, "rows")
    for done in (1, 2, 3, 200):
        bar.update(done)
    bar.close()
    assert (
        stream.getvalue()
        == "\r[..........]   0% 1/200 rows\r[..........]   1% 2/200 rows\r[##########] 100% 200/200 rows\n"
    )
    quiet = io.StringIO()
    off = cli.Progress(False, quiet)
    off.start(10, "rows")
    off.update(10)
    off.close()
    assert quiet.getvalue() == ""


# -- errors -----------------------------------------------------------------------------------------------
def _png(p: Path) -> None:
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10")


ERROR_CASES: dict[str, tuple[str, Any, str]] = {
    # id: (file name, how to create it, expected message after "otel-ml: error: ")
    "missing": ("nope.csv", None, "cannot read {p}: No such file or directory"),
    "directory": ("dir.csv", lambda p: p.mkdir(), "cannot read {p}: Is a directory"),
    "not-a-csv": ("image.csv", _png, "cannot read {p}: 'utf-8' codec can't decode byte 0x89 in position 0: "),
    "header-only": ("head.csv", lambda p: p.write_text("a,b,c\n"), "{p}: empty input, no data rows"),
    "zero-bytes": ("empty.csv", lambda p: p.write_text(""), "{p}: empty input, no data rows"),
    "bad-npy": ("bad.npy", lambda p: p.write_text("a,b\n1,2\n"), "cannot read {p}: not a valid .npy array file"),
    "truncated-npy": (
        "cut.npy",
        lambda p: (np.save(p, np.zeros((100, 3))), p.write_bytes(p.read_bytes()[:300])),
        "cannot read {p}: not a valid .npy array file",
    ),
    "object-npy": (
        "obj.npy",
        lambda p: np.save(p, np.array([["a", None]], dtype=object), allow_pickle=True),
        "cannot read {p}: not a valid .npy array file",
    ),
    "3d-npy": (
        "cube.npy",
        lambda p: np.save(p, np.zeros((2, 2, 2))),
        "{p}: expected a 1-D or 2-D array, got shape (2, 2, 2)",
    ),
    "empty-npy": ("none.npy", lambda p: np.save(p, np.zeros((0, 3))), "{p}: empty input, no data rows"),
    "extension": (
        "train.txt",
        lambda p: p.write_text("a\n1\n"),
        "unsupported input format '.txt': expected .csv, .parquet or .npy",
    ),
    "no-extension": (
        "train",
        lambda p: p.write_text("a\n1\n"),
        "unsupported input format '{p}': expected .csv, .parquet or .npy",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_is_one_error_line_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], csv_reader: str
) -> None:
    name, make, message = ERROR_CASES[case]
    path = tmp_path / name
    if make is not None:
        make(path)
    code, out, err = run(capsys, "reference", "build", path, "-o", tmp_path / "ref.json")
    assert (code, out) == (2, "")
    assert err.startswith("otel-ml: error: " + message.format(p=path)) and err.count("\n") == 1, err
    assert "Traceback" not in err and not (tmp_path / "ref.json").exists()


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_unreadable_file_is_an_error(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"secret{suffix}"
    if suffix == ".npy":
        np.save(path, np.zeros((2, 2)))
    else:
        path.write_text("a\n1\n")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads whatever the mode says: refuse the way the kernel does for everyone else
        real_open = builtins.open

        def refuse(file: Any, *args: Any, **kwargs: Any) -> Any:
            if os.fspath(file) == str(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refuse)
    code, out, err = run(capsys, "reference", "build", path, "-o", tmp_path / "ref.json")
    assert (code, out, err) == (2, "", f"otel-ml: error: cannot read {path}: Permission denied\n")


@pytest.mark.parametrize(
    ("content", "options", "pandas_message", "stdlib_message"),
    [
        (
            "a,b\n1,2\n3,4,5\n",
            [],
            "cannot read {p}: Error tokenizing data. C error: Expected 2 fields in line 3, saw 3",
            "{p}: a row has more fields than the header (2)",
        ),
        (
            "a,b\n1,2\n",
            ["--features", "a,zz"],
            "cannot read {p}: Usecols do not match columns, columns expected but not found: ['zz']",
            "{p}: no column(s) 'zz'",
        ),
    ],
    ids=["ragged", "unknown-feature"],
)
def test_csv_errors_with_either_reader(
    content: str,
    options: list[str],
    pandas_message: str,
    stdlib_message: str,
    tmp_path: Path,
    capsys: Any,
    csv_reader: str,
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(content)
    code, out, err = run(capsys, "reference", "build", path, "-o", tmp_path / "ref.json", *options)
    message = (pandas_message if csv_reader == "pandas" else stdlib_message).format(p=path)
    assert (code, out, err) == (2, "", f"otel-ml: error: {message}\n")


def test_npy_feature_names_must_match_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    code, out, err = run(capsys, "reference", "build", tmp_path / "x.npy", "-o", tmp_path / "r.json", "--features", "a")
    assert (code, out) == (2, "")
    assert err == f"otel-ml: error: {tmp_path / 'x.npy'}: --features names 1 columns, the array has 2\n"


def test_unwritable_output_is_an_error(train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "no-such-dir" / "ref.json"
    code, out, err = run(capsys, "reference", "build", train_csv, "-o", out_path)
    assert (code, out, err) == (2, "", f"otel-ml: error: cannot write {out_path}: No such file or directory\n")


def test_output_onto_a_directory_is_an_error(train_csv: Path, tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "ref.json").mkdir()
    code, out, err = run(capsys, "reference", "build", train_csv, "-o", tmp_path / "ref.json")
    assert (code, out, err) == (2, "", f"otel-ml: error: cannot write {tmp_path / 'ref.json'}: Is a directory\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: command"),
        (["reference"], "the following arguments are required: action"),
        (["reference", "build", "x.csv"], "the following arguments are required: -o/--output"),
        (["reference", "build", "x.csv", "-o", "r.json", "--chunk-rows", "0"], "expected a positive integer, got '0'"),
        (["reference", "build", "x.csv", "-o", "r.json", "--max-features", "many"], "expected a positive integer"),
        (["reference", "build", "x.csv", "-o", "r.json", "--metadata", "model"], "expected key=value, got 'model'"),
        (["reference", "explode"], "invalid choice: 'explode'"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("usage: otel-ml") and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [[], ["reference"], ["reference", "build"], ["reference", "show"]],
    ids=["top", "reference", "build", "show"],
)
def test_help_at_every_level(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv, "--help")
    assert (code, err) == (0, "")
    assert out.startswith(f"usage: otel-ml {' '.join(argv)}".rstrip() + " [-h]")


# -- show -------------------------------------------------------------------------------------------------
def test_show(frame: pd.DataFrame, train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = build(
        capsys, train_csv, tmp_path / "ref.json", "--metadata", "model=fraud", "--features", "mean radius,diagnosis"
    )
    code, out, err = run(capsys, "reference", "show", tmp_path / "ref.json")
    radius = frame["mean radius"]
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"id:       {ref.id}",
        "source:   training",
        "rows:     569",
        f"created:  {ref.created}",
        "metadata: model=fraud",
        "features: 2",
        f"  mean radius  numeric      count=569 missing=12  min={radius.min():.6g} max={radius.max():.6g}",
        "  diagnosis    categorical  count=569 missing=2  top: benign (357), malignant (210)",
    ]
    assert (radius.min(), radius.max()) == (6.981, 28.11)


def test_show_json(train_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = build(capsys, train_csv, tmp_path / "ref.json", "--features", "mean radius,diagnosis")
    code, out, err = run(capsys, "reference", "show", tmp_path / "ref.json", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "id": ref.id,
        "source": "training",
        "rows": 569,
        "created": ref.created,
        "metadata": {},
        "features": [
            {"name": "mean radius", "kind": "numeric", "count": 569, "missing": 12, "min": 6.981, "max": 28.11},
            {
                "name": "diagnosis",
                "kind": "categorical",
                "count": 569,
                "missing": 2,
                "top": [["benign", 357], ["malignant", 210]],
            },
        ],
    }


def test_show_feature_without_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.csv").write_text("x,c\n,\n,\n")
    build(capsys, tmp_path / "in.csv", tmp_path / "ref.json")
    code, out, _ = run(capsys, "reference", "show", tmp_path / "ref.json")
    assert code == 0 and out.splitlines()[-2:] == [
        "  x  numeric      count=2 missing=2  no finite values",
        "  c  numeric      count=2 missing=2  no finite values",
    ]
    code, out, _ = run(capsys, "reference", "show", tmp_path / "ref.json", "--json")
    assert [(f["min"], f["max"]) for f in json.loads(out)["features"]] == [(None, None), (None, None)]


def test_show_errors(frame: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = Reference.from_data(frame).to_dict()
    tampered = json.loads(json.dumps(good))
    tampered["features"][0]["sketch"]["count"] = 1
    files = {
        "missing.json": None,
        "broken.json": "{",
        "list.json": "[]",
        "other.json": json.dumps({**good, "format": "something-else"}),
        "future.json": json.dumps({**good, "version": 9}),
        "tampered.json": json.dumps(tampered),
    }
    messages = {
        "missing.json": "cannot read {p}: No such file or directory",
        "broken.json": "{p} is not a valid otel-ml reference: Expecting property name enclosed in double quotes",
        "list.json": "{p} is not a valid otel-ml reference: not an otel-ml reference (expected a JSON object)",
        "other.json": "{p} is not a valid otel-ml reference: not an otel-ml reference (format='something-else')",
        "future.json": "{p} is not a valid otel-ml reference: unsupported reference version 9 (this otel-ml reads 1)",
        "tampered.json": "{p} is not a valid otel-ml reference: reference id '" + good["id"] + "' does not match",
    }
    for name, text in files.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        code, out, err = run(capsys, "reference", "show", path)
        assert (code, out) == (2, ""), name
        assert err.startswith("otel-ml: error: " + messages[name].format(p=path)) and err.count("\n") == 1, err


# -- module entry point -----------------------------------------------------------------------------------
def test_python_dash_m_entry_point(train_csv: Path, tmp_path: Path) -> None:
    out_path = tmp_path / "ref.json"
    cmd = [sys.executable, "-m", "otel_ml.cli", "reference", "build", str(train_csv), "-o", str(out_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    ref = Reference.load(out_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"wrote {out_path}: reference {ref.id}, {ROWS} rows, {FEATURES} features\n"
    missing = subprocess.run(
        [*cmd[:5], str(tmp_path / "nope.csv"), *cmd[6:]], capture_output=True, text=True, timeout=60
    )
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == f"otel-ml: error: cannot read {tmp_path / 'nope.csv'}: No such file or directory\n"
