"""Reference profiles: the training data's per-feature sketches, saved as a versioned JSON document.

The file format (``"format": "otel-ml-reference"``, ``"version": 1``)::

    {"format": "otel-ml-reference", "version": 1, "id": "<16 hex>", "source": "training",
     "rows": 455, "created": "2026-11-23T01:00:00Z", "metadata": {...},
     "features": [{"name": "mean radius", "kind": "numeric", "sketch": {<FeatureSketch.to_dict()>}}, ...]}

``id`` is the first 16 hex digits of the SHA-256 of the canonical JSON of ``format``, ``version`` and
``features`` (creation time and metadata excluded), so the same data always yields the same id; it is
exported as ``ml.reference.id`` to answer "which data was this model compared against".
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from otel_ml.sketch import parallel
from otel_ml.sketch.columns import Skip, Table, concat, to_table
from otel_ml.sketch.feature import FeatureSketch
from otel_ml.sketch.quantile import RankCuts

FORMAT = "otel-ml-reference"
VERSION = 1
RANK_BUCKETS = 20
DEFAULT_MAX_FEATURES = 100


class Reference:
    """Per-feature sketches of a reference (training) distribution, with a content-derived id."""

    def __init__(
        self,
        features: dict[str, FeatureSketch],
        *,
        source: str = "training",
        rows: int | None = None,
        created: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.features = dict(features)
        self.source = source
        self.rows = rows if rows is not None else max((f.count for f in features.values()), default=0)
        self.created = created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.metadata = dict(metadata or {})
        self._cuts: dict[str, RankCuts | None] = {}
        self.id = self._content_id()

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)

    def _content_id(self) -> str:
        body = {"format": FORMAT, "version": VERSION, "features": self._features_json()}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def _features_json(self) -> list[dict[str, Any]]:
        return [{"name": n, "kind": f.kind, "sketch": f.to_dict()} for n, f in self.features.items()]

    def rank_cuts(self, name: str) -> RankCuts | None:
        """The 19 inner cut points of feature ``name`` (numeric, non-empty), computed once."""
        if name not in self._cuts:
            f = self.features.get(name)
            ok = f is not None and f.kind == "numeric" and f.quantiles.count > 0
            self._cuts[name] = RankCuts.from_sketch(f.quantiles, RANK_BUCKETS) if ok and f is not None else None
        return self._cuts[name]

    # -- building ----------------------------------------------------------------------------------------
    @classmethod
    def from_data(
        cls,
        data: Any,
        feature_names: Sequence[str] | None = None,
        *,
        max_features: int = DEFAULT_MAX_FEATURES,
        chunk_rows: int = 65_536,
        metadata: dict[str, Any] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Reference:
        """Build a reference from numpy, pandas, a list of rows or a dict of columns (chunked, bounded memory)."""
        builder = ReferenceBuilder(feature_names, max_features=max_features)
        for chunk in _chunks(data, chunk_rows):
            builder.add(chunk)
            if progress is not None:
                progress(builder.rows)
        return builder.build(metadata=metadata)

    # -- files -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "id": self.id,
            "source": self.source,
            "rows": self.rows,
            "created": self.created,
            "metadata": self.metadata,
            "features": self._features_json(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        if not isinstance(data, dict):
            raise ValueError("not an otel-ml reference (expected a JSON object)")
        if data.get("format") != FORMAT:
            raise ValueError(f"not an otel-ml reference (format={data.get('format')!r})")
        if data.get("version") != VERSION:
            raise ValueError(f"unsupported reference version {data.get('version')!r} (this otel-ml reads {VERSION})")
        features_json = data.get("features")
        if not isinstance(features_json, list) or not all(isinstance(f, dict) for f in features_json):
            raise ValueError("not an otel-ml reference: 'features' must be a list of objects")
        try:
            features = {f["name"]: FeatureSketch.from_dict(f["sketch"]) for f in features_json}
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an otel-ml reference: malformed feature ({exc!r})") from exc
        ref = cls(
            features,
            source=data.get("source", "training"),
            rows=data.get("rows"),
            created=data.get("created"),
            metadata=data.get("metadata"),
        )
        if data.get("id") not in (None, ref.id):
            raise ValueError(f"reference id {data.get('id')!r} does not match its content ({ref.id}): file altered?")
        return ref

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON document (atomically: a temporary file renamed into place)."""
        tmp = f"{os.fspath(path)}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, allow_nan=False, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Reference:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def __repr__(self) -> str:
        return f"Reference(id={self.id!r}, source={self.source!r}, rows={self.rows}, features={len(self.features)})"


class ReferenceBuilder:
    """Accumulates batches into per-feature sketches (the first batch fixes the feature set).

    Rows are re-blocked into fixed ``BLOCK_ROWS`` blocks before they reach the sketches, so the result (and the
    reference id) depends only on the rows and their order, not on how the input was chunked.
    """

    BLOCK_ROWS = 65_536

    def __init__(
        self,
        feature_names: Sequence[str] | None = None,
        *,
        max_features: int = DEFAULT_MAX_FEATURES,
        threads: int | None = None,
    ):
        self._names = list(feature_names) if feature_names is not None else None
        self._max = max_features
        self._threads = parallel.default_threads() if threads is None else threads
        self.features: dict[str, FeatureSketch] = {}
        self.rows = 0
        self._pending: list[Table] = []
        self._pending_rows = 0

    def add(self, data: Any) -> Table | Skip:
        """Add one batch; returns the table read from it (or why it was skipped)."""
        table = to_table(data, self._names)
        if isinstance(table, Skip):
            return table
        self.add_table(table)
        return table

    def add_table(self, table: Table) -> None:
        """Queue a table's rows; every full block of ``BLOCK_ROWS`` rows is sketched right away."""
        if not self.features:
            for name, kind in list(zip(table.names, table.kinds, strict=True))[: self._max]:
                self.features[name] = FeatureSketch("numeric" if kind == "numeric" else "categorical")
        if table.rows == 0:
            return
        self.rows += table.rows
        self._pending.append(table)
        self._pending_rows += table.rows
        while self._pending_rows >= self.BLOCK_ROWS:
            joined = concat(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._sketch(joined.slice(0, self.BLOCK_ROWS))
            rest = joined.slice(self.BLOCK_ROWS, joined.rows)
            self._pending, self._pending_rows = ([rest] if rest.rows else []), rest.rows
        if self._pending:  # keep a private copy: the caller may reuse its buffers before build()
            self._pending = [concat(self._pending).copy()] if len(self._pending) > 1 else [self._pending[0].copy()]

    def _sketch(self, table: Table) -> None:
        table = table.by_column()
        work = [(self.features[name], i) for i, name in enumerate(table.names[: self._max]) if name in self.features]
        parallel.for_each(
            lambda item: item[0].update(table.column(item[1])), work, table.rows * len(work), self._threads
        )

    def build(self, *, source: str = "training", metadata: dict[str, Any] | None = None) -> Reference:
        """Sketch the last partial block and return the reference."""
        if not self.features or self.rows == 0:
            raise ValueError("no rows to build a reference from")
        if self._pending:
            self._sketch(concat(self._pending))
            self._pending, self._pending_rows = [], 0
        return Reference(self.features, source=source, rows=self.rows, metadata=metadata)


def _chunks(data: Any, rows: int) -> Iterator[Any]:
    """Row chunks of array-likes (views where possible), so a huge frame is sketched in bounded steps."""
    if isinstance(data, np.ndarray) or type(data).__module__.split(".")[0] == "pandas":
        n = len(data)
        take = data.iloc if hasattr(data, "iloc") else data
        for start in range(0, max(n, 1), rows):
            yield take[start : start + rows]
    else:
        yield data
