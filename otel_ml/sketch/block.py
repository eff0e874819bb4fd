"""A sliding-window block's summary of many numeric columns at once.

A window block of a few hundred rows keeps the rows themselves (each batch that reached it, as it came):
adding a batch is one list append whatever the number of columns, with no sort, and a quantile sketch of so
few rows would hold every one of them anyway (a KLL sketch keeps its first ``k`` items as they are). The
rows are sorted when a column's summary is asked for (a drift update, at most once per
``OTEL_ML_DRIFT_INTERVAL``). Past ``raw_limit`` rows (large or time-bounded blocks) the block turns into one
:class:`FeatureSketch` per column, so memory stays bounded as the sketches' is.
"""

from __future__ import annotations

import numpy as np

from otel_ml.sketch.batch import SortedColumns
from otel_ml.sketch.feature import FeatureSketch
from otel_ml.sketch.quantile import DEFAULT_K

__all__ = ["ColumnSketches"]


class ColumnSketches:
    """Mergeable summary of the rows of ``width`` numeric columns: the rows, or sketches of them."""

    __slots__ = ("_merged", "_parts", "_raw_limit", "_rows", "_sketches", "_width")

    def __init__(self, width: int, raw_limit: int = DEFAULT_K) -> None:
        """An empty summary of ``width`` columns that keeps up to ``raw_limit`` rows as they are."""
        self._width = width
        self._raw_limit = raw_limit
        self._parts: list[np.ndarray] = []
        self._merged: SortedColumns | None = None
        self._sketches: list[FeatureSketch] | None = None
        self._rows = 0

    @property
    def rows(self) -> int:
        """Rows summarised."""
        return self._rows

    @property
    def nbytes(self) -> int:
        """Bytes held: the kept rows, or the sketches."""
        if self._sketches is not None:
            return sum(s.nbytes for s in self._sketches)
        return sum(p.nbytes for p in self._parts)

    def update(self, rows: np.ndarray) -> None:
        """Add a ``(rows, width)`` float64 batch. It is kept, not copied: the caller must not change it."""
        if rows.ndim != 2 or rows.shape[1] != self._width:
            raise ValueError(f"expected {self._width} columns, got an array of shape {rows.shape}")
        self._rows += rows.shape[0]
        if self._sketches is not None:
            self._feed(rows)
            return
        self._parts.append(rows)
        self._merged = None
        if self._rows > self._raw_limit:
            self._spill()

    def merge(self, other: ColumnSketches) -> None:
        """Fold ``other`` in (``other`` unchanged). Raw rows stay raw, whatever their number: a merge makes a
        window's snapshot, which lives for one drift update and holds at most the window's rows."""
        if other._width != self._width:
            raise ValueError(f"expected {self._width} columns, got {other._width}")
        self._rows += other._rows
        if self._sketches is None and other._sketches is None:
            self._parts.extend(other._parts)
            self._merged = None
            return
        if self._sketches is None:
            self._spill()
        assert self._sketches is not None
        if other._sketches is None:
            for part in other._parts:
                self._feed(part)
        else:
            for mine, theirs in zip(self._sketches, other._sketches, strict=True):
                mine.merge(theirs)

    def feature(self, j: int) -> FeatureSketch:
        """Column ``j``'s summary (a new object when the rows are raw: one sort of them, then a sketch)."""
        if self._sketches is not None:
            return self._sketches[j]
        sketch = FeatureSketch("numeric")
        if self._parts:
            if self._merged is None:
                rows = self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts)
                self._merged = SortedColumns.of(rows)
            sketch.update_sorted(self._merged, j)
        return sketch

    def _spill(self) -> None:
        self._sketches = [FeatureSketch("numeric") for _ in range(self._width)]
        for part in self._parts:
            self._feed(part)
        self._parts, self._merged = [], None

    def _feed(self, rows: np.ndarray) -> None:
        assert self._sketches is not None
        columns = SortedColumns.of(rows)
        for j, sketch in enumerate(self._sketches):
            sketch.update_sorted(columns, j)
