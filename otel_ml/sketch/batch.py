"""One sort of a numeric batch, shared by every per-feature summary of it.

A float matrix (rows x features) is transposed and sorted along each feature once (``np.sort`` releases the
GIL, so a background worker doing this competes little with the caller's thread). Each column's NaN/±inf
counts, its finite slice and exact moments come out of that without another pass per feature. Sorted columns
then serve :meth:`QuantileSketch.add_sorted` (no second sort) and :class:`RankTable` (rank histograms and
out-of-range counts from one binary search of the cut points per column, instead of one search per value).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from otel_ml.sketch.quantile import RankCuts, _apportion, _fractions

__all__ = ["RankTable", "SortedColumns"]


_KEYED_ROWS = 4096
"""Up to this many rows, :meth:`SortedColumns.search` searches all columns at once through complex keys."""


def both_sides(points: np.ndarray) -> np.ndarray:
    """``points`` followed by their ``nextafter`` toward +inf, along the last axis: a left search of the result
    gives left and right positions of ``points`` at once (values ``<= p`` are those ``< nextafter(p)``)."""
    with np.errstate(over="ignore"):  # nextafter(largest finite) is inf: right, it counts every finite value
        return np.concatenate((points, np.nextafter(points, np.inf)), axis=-1)


class SortedColumns:
    """The columns of a float matrix, each sorted ascending (``-inf``, finite values, ``+inf``, then NaN)."""

    def __init__(self, values: np.ndarray) -> None:
        """Wrap a C-contiguous float64 ``(features, rows)`` array already sorted along its rows. Counts and
        moments are computed on first use (rank checks need the counts only)."""
        self.values = values
        self.rows = values.shape[1]

    @functools.cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per column: NaN count, index of the first finite value (= the -inf count), one past the last."""
        values, rows, width = self.values, self.rows, self.values.shape[0]
        # sorted rows put -inf first and +inf, then NaN, last: their two ends say whether everything is finite
        if not rows or (np.isfinite(values[:, 0]).all() and np.isfinite(values[:, -1]).all()):
            return np.zeros(width, dtype=np.int64), np.zeros(width, dtype=np.int64), np.full(width, rows)
        nan = np.count_nonzero(np.isnan(values), axis=1)
        start = np.count_nonzero(values == -np.inf, axis=1)
        return nan, start, rows - nan - np.count_nonzero(values == np.inf, axis=1)

    @functools.cached_property
    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per column: exact mean of the finite values (NaN when none) and sum of squared deviations from it."""
        values, (_, start, stop) = self.values, self._bounds
        if not start.any() and (stop == self.rows).all():  # every value finite
            mean = values.mean(axis=1) if self.rows else np.full(values.shape[0], np.nan)
            return mean, ((values - mean[:, None]) ** 2).sum(axis=1)
        finite = np.isfinite(values)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(finite, values, 0.0).sum(axis=1) / (stop - start)
            return mean, (np.where(finite, values - mean[:, None], 0.0) ** 2).sum(axis=1)

    @property
    def nan(self) -> np.ndarray:
        """NaN values per column."""
        return self._bounds[0]

    @property
    def start(self) -> np.ndarray:
        """Index of each column's first finite value."""
        return self._bounds[1]

    @property
    def stop(self) -> np.ndarray:
        """One past each column's last finite value."""
        return self._bounds[2]

    @property
    def mean(self) -> np.ndarray:
        """Exact mean of each column's finite values."""
        return self._moments[0]

    @property
    def m2(self) -> np.ndarray:
        """Sum of squared deviations from that mean, per column."""
        return self._moments[1]

    @classmethod
    def of(cls, matrix: np.ndarray, sort_rows: Callable[[np.ndarray], None] | None = None) -> SortedColumns:
        """Sort the columns of ``matrix`` (2-D rows x features, any real dtype; not modified). ``sort_rows``,
        when given, sorts a ``(features, rows)`` array along its rows in place (e.g. over a thread pool)."""
        values = np.array(matrix.T, dtype=np.float64, order="C")
        if sort_rows is None:
            values.sort(axis=1)
        else:
            sort_rows(values)
        return cls(values)

    def finite(self, j: int) -> np.ndarray:
        """Column ``j``'s finite values, sorted (a view)."""
        return self.values[j, self.start[j] : self.stop[j]]

    def search(self, points: np.ndarray) -> np.ndarray:
        """Left-side ``searchsorted`` of each column's own ``points`` (a ``(features, m)`` array, no NaN) into
        that column's non-NaN values: how many are below each point.

        NaN sorts last and searches as larger than every point, so a column is searched whole. Up to
        :data:`_KEYED_ROWS` rows all columns are searched at once: the key ``j + 1j * value`` orders column
        ``j``'s values after all of column ``j - 1``'s (complex numbers compare by real part first), so the
        sorted columns laid end to end are one sorted array; NaN is keyed +inf, past every point but +inf
        itself, which no value is below. Each search releases and retakes the GIL.
        """
        width, rows = self.values.shape
        if rows > _KEYED_ROWS:  # building the keys would cost more than the per-column searches save
            return np.array([c.searchsorted(p) for c, p in zip(self.values, points, strict=True)])
        keys = np.empty((width, rows), dtype=np.complex128)
        keys.real = np.arange(width)[:, None]
        keys.imag = self.values
        if self.nan.any():  # numpy sorts a complex holding a NaN after every other one
            np.copyto(keys.imag, np.inf, where=np.isnan(self.values))
        targets = np.empty(points.shape, dtype=np.complex128)
        targets.real = np.arange(width)[:, None]
        targets.imag = points
        found = keys.reshape(-1).searchsorted(targets.reshape(-1)).reshape(points.shape)
        found -= (np.arange(width) * rows)[:, None]
        return found

    def posinf(self, j: int) -> int:
        """+inf values in column ``j``."""
        return int(self.rows - self.nan[j] - self.stop[j])

    def neginf(self, j: int) -> int:
        """-inf values in column ``j``."""
        return int(self.start[j])


class RankTable:
    """Rank-bucket and range checks of many columns against their references, counted for a whole
    :class:`SortedColumns` at once: one binary search of the cut points per column (:meth:`search`, which
    releases the GIL once per column), the rest across columns in a dozen small numpy calls (:meth:`counts`).
    """

    __slots__ = ("_cuts", "_equal", "_fractions", "_high", "_low", "_searched", "_uncut", "has_cuts", "has_range")

    def __init__(self, cuts: Sequence[RankCuts | None], low: Sequence[float], high: Sequence[float]) -> None:
        """Per column: its reference's :class:`RankCuts` (``None``: no rank histogram) and finite range
        (NaN bounds: no range check). Every ``RankCuts`` must have the same number of buckets."""
        width = len(cuts)
        sizes = {c.cuts.size for c in cuts if c is not None}
        if len(sizes) > 1:
            raise ValueError("every column needs the same number of rank buckets")
        n_cuts = sizes.pop() if sizes else 0
        self.has_cuts = np.array([c is not None for c in cuts], dtype=bool)
        self._uncut = np.flatnonzero(~self.has_cuts)
        self._low, self._high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        self.has_range = ~(np.isnan(self._low) | np.isnan(self._high))
        self._cuts = np.zeros((width, n_cuts))
        lo, hi = np.zeros((width, n_cuts)), np.zeros((width, n_cuts))
        for j, c in enumerate(cuts):
            if c is not None:
                self._cuts[j], lo[j], hi[j] = c.cuts, c.lo, c.hi
        # the points of column j: its low bound, its cuts, its high bound; searched with their nextafter
        points = np.column_stack((np.nan_to_num(self._low), self._cuts, np.nan_to_num(self._high)))
        self._searched = both_sides(points)
        self._equal = self._cuts[:, 1:] == self._cuts[:, :-1]  # runs of equal cuts (point masses)
        # how values tied with each cut split over the buckets: fixed by the reference, so computed once
        self._fractions = _fractions(lo.ravel(), hi.ravel(), n_cuts + 1).reshape(width, n_cuts, -1)

    def search(self, columns: SortedColumns) -> np.ndarray:
        """The binary searches: values below each point and below each point's ``nextafter``, per column."""
        return columns.search(self._searched)

    def counts(self, columns: SortedColumns, found: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rank-bucket counts ``(columns, buckets)`` (rows of columns without cuts are zero) and the count of
        values outside each column's range (zero without one), both over non-NaN values; ``found`` is
        :meth:`search` of the same columns (searched here when not given).

        Each row equals :func:`~otel_ml.sketch.quantile.rank_buckets` of that column: values equal to a cut
        are apportioned over the buckets that the reference's CDF jump at the cut overlaps."""
        if found is None:
            found = self.search(columns)
        k = found.shape[1] // 2
        left, right = found[:, :k], found[:, k:]
        size = columns.rows - columns.nan
        outside = np.where(self.has_range, left[:, 0] + size - right[:, -1], 0)
        inner_left = left[:, 1:-1]
        below = np.column_stack((inner_left, size))  # values below each cut, and all of them
        counts = below.copy()
        counts[:, 1:] -= below[:, :-1]
        tied = right[:, 1:-1] - inner_left
        if tied.any():  # values equal to a cut (in continuous data, rarely): apportioned
            tied[:, :-1][self._equal] = 0  # a run of equal cuts: its ties belong to the last cut of the run
            tied[self._uncut] = 0
            rows, cut = np.nonzero(tied)
            if rows.size:
                m = tied[rows, cut]
                counts[rows, cut + 1] -= m
                shares = _apportion(m, self._fractions[rows, cut])
                starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
                counts[rows[starts]] += np.add.reduceat(shares, starts, axis=0)
        if self._uncut.size:
            counts[self._uncut] = 0
        return counts, outside
