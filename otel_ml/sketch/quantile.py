"""Streaming, mergeable quantile sketch (KLL-style) and the rank-bucket (PIT) helper.

Design: a KLL compactor hierarchy (Karnin, Lang, Liberty 2016) held as one sorted float64 array
per level; an item on level ``h`` stands for ``2**h`` input values.  A whole batch is sorted once
(``np.sort``) and merged into level 0; an over-full level is compacted by keeping every other item
of its sorted array (a strided view) starting at a pseudo-random offset 0/1 and pushing those to
the next level (a linear-time merge of two sorted runs).  Level capacities shrink geometrically
(factor 2/3) below the top level, whose capacity is ``k``, so the retained items stay bounded by
``max_items(k)`` whatever the stream length.  Nothing on the ingest path loops per value in Python.

Rank-error guarantee: for every ``x``, ``|cdf(x) - F_n(x)| <= eps`` where ``F_n`` is the exact
empirical CDF of the finite values seen.  KLL's analysis gives ``eps = O(1/k)`` with high
probability (compaction errors are zero-mean and independent; the DataSketches calibration of the
same schedule is ``eps ~ 1.65% * 200 / k`` at 99% confidence), so the default ``k = 640`` (at most
2,007 retained items, <= 16,056 bytes) guarantees ``eps <= 1%``; the measured max rank error at
1,000,000 values is 0.1-0.25% across normal, lognormal, uniform, heavily duplicated and sorted
streams and 8-way merges (tests/unit/sketch/test_quantile.py asserts <= 1%).  Weights are conserved
exactly, so ``cdf`` is normalised by the true finite count; count, min, max, mean and std are exact.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["DEFAULT_K", "QuantileSketch", "RankCuts", "max_items", "rank_buckets"]

DEFAULT_K = 640
_MIN_CAPACITY = 2
_SHRINK = 2.0 / 3.0
_MASK64 = (1 << 64) - 1
_FORMAT = "kll-v1"


def _capacity(k: int, height: int, level: int) -> int:
    """Capacity of ``level`` in a sketch with ``height`` levels (KLL geometric schedule)."""
    return max(_MIN_CAPACITY, int(k * _SHRINK ** (height - 1 - level)))


@functools.lru_cache(maxsize=512)
def _capacities(k: int, height: int) -> tuple[tuple[int, ...], int]:
    """Capacity of every level of a ``height``-level sketch, and their sum (cached: asked on every update)."""
    caps = tuple(_capacity(k, height, lv) for lv in range(height))
    return caps, sum(caps)


def max_items(k: int = DEFAULT_K, max_height: int = 64) -> int:
    """Upper bound on retained items for any stream shorter than ``k * 2**(max_height-1)`` values."""
    return max(sum(_capacity(k, h, lv) for lv in range(h)) for h in range(1, max_height + 1))


def _offset_bit(seed: int, counter: int) -> int:
    """Deterministic pseudo-random bit (splitmix64 of seed and compaction counter)."""
    z = (seed * 0x9E3779B97F4A7C15 + counter + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & 1


def _merge_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge two sorted arrays; timsort ('stable') merges two runs in linear time."""
    if a.size == 0:
        return b
    if b.size == 0:
        return a
    return np.sort(np.concatenate((a, b)), kind="stable")


class QuantileSketch:
    """Mergeable KLL quantile sketch over finite float values with bounded memory (<= 16 KB at k=640)."""

    __slots__ = ("_cache", "_compactions", "_count", "_k", "_levels", "_m2", "_max", "_mean", "_min", "_seed")

    def __init__(self, k: int = DEFAULT_K, seed: int = 0) -> None:
        """Create an empty sketch; ``k`` is the top-level capacity, ``seed`` fixes compaction offsets."""
        if k < 8:
            raise ValueError("k must be >= 8")
        self._k = int(k)
        self._seed = int(seed)
        self._levels: list[np.ndarray] = [np.empty(0, dtype=np.float64)]
        self._count = 0
        self._min = float("inf")
        self._max = float("-inf")
        self._mean = 0.0
        self._m2 = 0.0
        self._compactions = 0
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ ingest
    def update(self, values: np.ndarray) -> None:
        """Add a batch of values (any shape, cast to float64); NaN and +/-inf are ignored."""
        arr = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(arr)
        if not finite.all():
            arr = arr[finite]
        if arr.size == 0:
            return
        batch = np.sort(arr)
        mean = float(batch.mean())
        self.add_sorted(batch, mean, float(np.sum((batch - mean) ** 2)))

    def add_sorted(self, batch: np.ndarray, mean: float, m2: float) -> None:
        """Add finite float64 values already sorted ascending, given their exact mean and sum of squared
        deviations (what :class:`~otel_ml.sketch.batch.SortedColumns` has for each column): no second sort."""
        if batch.size == 0:
            return
        self._add_moments(int(batch.size), mean, m2)
        self._min = min(self._min, float(batch[0]))
        self._max = max(self._max, float(batch[-1]))
        self._levels[0] = _merge_sorted(self._levels[0], batch)
        self._compress()

    def merge(self, other: QuantileSketch) -> None:
        """Fold ``other`` into this sketch (``other`` is left unchanged); error bounds add up as in KLL."""
        if other._count == 0:
            return
        while len(self._levels) < len(other._levels):
            self._levels.append(np.empty(0, dtype=np.float64))
        for lv, items in enumerate(other._levels):
            # level arrays are never written in place, so sharing other's arrays is safe
            self._levels[lv] = _merge_sorted(self._levels[lv], items)
        self._add_moments(other._count, other._mean, other._m2)
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        self._compress()

    def _add_moments(self, count: int, mean: float, m2: float) -> None:
        """Combine exact count/mean/sum of squared deviations (Chan et al. parallel update)."""
        total = self._count + count
        delta = mean - self._mean
        self._mean += delta * count / total
        self._m2 += m2 + delta * delta * self._count * count / total
        self._count = total

    def _compress(self) -> None:
        """Compact the lowest full level until the retained items fit the capacity schedule."""
        self._cache = None
        while True:
            levels = self._levels
            caps, total = _capacities(self._k, len(levels))
            if sum(a.size for a in levels) <= total:
                return
            lv = next(i for i, cap in enumerate(caps) if levels[i].size >= cap)
            self._compact(lv)

    def _compact(self, lv: int) -> None:
        """Halve level ``lv``: keep every other sorted item (random offset) and promote it one level."""
        items = self._levels[lv]
        keep_back = items.size % 2
        offset = _offset_bit(self._seed, self._compactions)
        self._compactions += 1
        # For odd sizes the largest item stays on this level, so total weight is conserved exactly.
        promoted = items[offset : items.size - keep_back : 2]
        self._levels[lv] = items[items.size - keep_back :].copy()
        if lv + 1 == len(self._levels):
            self._levels.append(np.empty(0, dtype=np.float64))
        self._levels[lv + 1] = _merge_sorted(self._levels[lv + 1], np.ascontiguousarray(promoted))

    # ------------------------------------------------------------------ queries
    @property
    def k(self) -> int:
        """Top-level capacity parameter."""
        return self._k

    @property
    def count(self) -> int:
        """Number of finite values ingested."""
        return self._count

    @property
    def min(self) -> float:
        """Exact minimum finite value seen (NaN when empty)."""
        return self._min if self._count else float("nan")

    @property
    def max(self) -> float:
        """Exact maximum finite value seen (NaN when empty)."""
        return self._max if self._count else float("nan")

    @property
    def mean(self) -> float:
        """Exact mean of the finite values seen (NaN when empty)."""
        return self._mean if self._count else float("nan")

    @property
    def std(self) -> float:
        """Exact population standard deviation of the finite values seen (NaN when empty)."""
        return math.sqrt(max(self._m2, 0.0) / self._count) if self._count else float("nan")

    @property
    def nbytes(self) -> int:
        """Bytes held by the retained items (the sketch's only count-dependent state)."""
        return int(sum(a.nbytes for a in self._levels))

    @property
    def num_retained(self) -> int:
        """Number of retained items across all levels."""
        return int(sum(a.size for a in self._levels))

    def weighted_items(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted retained items and their cumulative weights (read-only; last weight equals ``count``)."""
        if self._cache is None:
            items = np.concatenate(self._levels)
            weights = np.concatenate([np.full(a.size, 1 << lv, dtype=np.int64) for lv, a in enumerate(self._levels)])
            order = np.argsort(items, kind="stable")
            sorted_items, cum = items[order], np.cumsum(weights[order])
            sorted_items.flags.writeable = False
            cum.flags.writeable = False
            self._cache = (sorted_items, cum)
        return self._cache

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        """Estimated F(x) = P(X <= x) in [0, 1], vectorised; NaN when the sketch is empty."""
        xs = np.asarray(x, dtype=np.float64)
        if self._count == 0:
            return np.full(xs.shape, np.nan)
        return self._rank(xs, "right") / self._count

    def cdf_left(self, x: np.ndarray | float) -> np.ndarray:
        """Estimated left limit F(x-) = P(X < x) in [0, 1]; NaN when empty."""
        xs = np.asarray(x, dtype=np.float64)
        if self._count == 0:
            return np.full(xs.shape, np.nan)
        return self._rank(xs, "left") / self._count

    def _rank(self, xs: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
        """Estimated weight of items <= x (side='right') or < x (side='left')."""
        items, cum = self.weighted_items()
        idx = np.searchsorted(items, xs, side=side)
        return np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0).astype(np.float64)

    def quantile(self, q: np.ndarray | float) -> np.ndarray:
        """Smallest retained value whose estimated CDF is >= q (q=0 -> min, q=1 -> max); NaN when empty."""
        qs = np.asarray(q, dtype=np.float64)
        if np.any((qs < 0) | (qs > 1)):
            raise ValueError("quantile levels must lie in [0, 1]")
        if self._count == 0:
            return np.full(qs.shape, np.nan)
        items, cum = self.weighted_items()
        idx = np.searchsorted(cum, qs * self._count, side="left")
        out = items[np.clip(idx, 0, items.size - 1)]
        out = np.where(qs <= 0, self._min, out)
        return np.where(qs >= 1, self._max, out)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, deterministic representation (floats are finite; levels listed bottom-up)."""
        return {
            "format": _FORMAT,
            "k": self._k,
            "seed": self._seed,
            "count": self._count,
            "min": self._min if self._count else None,
            "max": self._max if self._count else None,
            "mean": self._mean,
            "m2": self._m2,
            "compactions": self._compactions,
            "levels": [a.tolist() for a in self._levels],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileSketch:
        """Rebuild a sketch from :meth:`to_dict` output (validates format and weight conservation)."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"unsupported quantile sketch format: {data.get('format')!r}")
        sk = cls(k=int(data["k"]), seed=int(data["seed"]))
        sk._levels = [np.asarray(lv, dtype=np.float64) for lv in data["levels"]] or [np.empty(0)]
        sk._count = int(data["count"])
        sk._compactions = int(data["compactions"])
        if sk._count:
            sk._min = float(data["min"])
            sk._max = float(data["max"])
            sk._mean = float(data["mean"])
            sk._m2 = float(data["m2"])
        weight = sum(a.size << lv for lv, a in enumerate(sk._levels))
        if weight != sk._count:
            raise ValueError("inconsistent quantile sketch: level weights do not sum to count")
        return sk


@dataclass(frozen=True)
class RankCuts:
    """Inner cut points of a reference distribution plus its CDF range [lo, hi] at each cut (for ties)."""

    cuts: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def n_buckets(self) -> int:
        """Number of uniform rank buckets (one more than the number of cuts)."""
        return int(self.cuts.size) + 1

    @classmethod
    def from_sketch(cls, sketch: QuantileSketch, n_buckets: int = 20) -> RankCuts:
        """Cuts at reference quantiles 1/n..(n-1)/n with F_ref(cut-) and F_ref(cut) for tie splitting."""
        if sketch.count == 0:
            raise ValueError("reference sketch is empty")
        levels = np.arange(1, n_buckets) / n_buckets
        cuts = sketch.quantile(levels)
        return cls(cuts, sketch.cdf_left(cuts), sketch.cdf(cuts))

    @classmethod
    def from_cutpoints(cls, cuts: np.ndarray) -> RankCuts:
        """Wrap bare cut points at levels i/n, guessing the CDF jump at repeated cuts.

        Without the reference itself, a run of equal cuts j..m-1 is taken to span F in
        [(j+0.5)/n, (m+0.5)/n], the midpoint guess of where the point mass starts and ends.
        """
        c = np.asarray(cuts, dtype=np.float64).ravel()
        if c.size == 0 or np.any(np.diff(c) < 0) or not np.isfinite(c).all():
            raise ValueError("cut points must be finite, non-empty and non-decreasing")
        n = c.size + 1
        first = np.searchsorted(c, c, side="left")
        last = np.searchsorted(c, c, side="right")
        return cls(c, (first + 0.5) / n, (last + 0.5) / n)


def rank_buckets(ref: QuantileSketch | RankCuts | np.ndarray, values: np.ndarray, n_buckets: int = 20) -> np.ndarray:
    """Histogram of F_ref(values) over ``n_buckets`` equal-width buckets of [0, 1] (uniform under no drift).

    ``ref`` is a sketch (cuts computed here), a precomputed :class:`RankCuts` (fastest; build it once
    per reference) or bare cut points.  Each value is binned by ``np.searchsorted(cuts, v, "right")``
    + ``np.bincount``.  Values exactly equal to a cut (point masses, e.g. integer features) would all
    land in one bucket and bias the histogram, so they are instead apportioned deterministically
    across the buckets overlapped by the reference's CDF jump [F_ref(v-), F_ref(v)] in proportion to
    the overlap (cumulative rounding) - the randomised PIT in expectation, without an RNG.
    NaN values are dropped; -inf/+inf go to the first/last bucket.
    """
    if isinstance(ref, RankCuts):
        rc = ref
    elif isinstance(ref, QuantileSketch):
        rc = RankCuts.from_sketch(ref, n_buckets)
    else:
        rc = RankCuts.from_cutpoints(ref)
    n = rc.n_buckets
    if n != n_buckets:
        raise ValueError(f"cut points define {n} buckets, expected {n_buckets}")
    v = np.asarray(values, dtype=np.float64).ravel()
    nan = np.isnan(v)
    if nan.any():
        v = v[~nan]
    right = np.searchsorted(rc.cuts, v, side="right")
    counts = np.bincount(right, minlength=n).astype(np.int64)
    # ``guard[right]`` is the largest cut <= v (NaN sentinel for none), so equality flags ties.
    guard = np.concatenate(([np.nan], rc.cuts))
    tied = guard[right] == v
    if not tied.any():
        return counts
    tied_right = right[tied]
    counts -= np.bincount(tied_right, minlength=n)
    per_cut = np.bincount(tied_right - 1, minlength=n - 1)
    cut = np.flatnonzero(per_cut)
    counts += _apportion(per_cut[cut], _fractions(rc.lo[cut], rc.hi[cut], n)).sum(axis=0)
    return counts


def _fractions(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Share of each of ``n`` equal buckets of [0, 1] in each range ``[lo[j], hi[j]]`` (one row per range, summing
    to 1). A zero-width range is all in the bucket holding ``lo[j]``."""
    edges = np.arange(n + 1) / n
    overlap = np.clip(np.minimum(edges[1:], hi[:, None]) - np.maximum(edges[:-1], lo[:, None]), 0.0, None)
    width = overlap.sum(axis=1)
    point = (hi - lo <= 1e-12) | (width <= 0.0)
    out = overlap / np.where(point, 1.0, width)[:, None]
    if point.any():
        rows = np.flatnonzero(point)
        out[rows] = 0.0
        out[rows, np.clip(np.floor(lo[rows] * n + 1e-9).astype(np.int64), 0, n - 1)] = 1.0
    return out


def _apportion(m: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Split ``m[j]`` values over buckets in proportion to row ``j`` of ``fractions`` (see :func:`_fractions`).

    Cumulative rounding: bucket ``i`` gets ``round(S_i) - round(S_(i-1))`` where ``S`` is the running sum of the
    exact shares, so every bucket is within one value of its share, the row sums to ``m[j]`` exactly and the
    split is deterministic.
    """
    m = m.astype(np.int64)
    running = np.floor(np.cumsum(m[:, None] * fractions, axis=1) + 0.5).astype(np.int64)
    running[:, -1] = m  # the exact total, whatever the float sum's last bit
    out = running.copy()
    out[:, 1:] -= running[:, :-1]
    return out
