"""SortedColumns and RankTable: one sort of a batch gives what per-column passes gave, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from otel_ml.sketch.batch import RankTable, SortedColumns, both_sides
from otel_ml.sketch.feature import FeatureSketch
from otel_ml.sketch.quantile import QuantileSketch, RankCuts, rank_buckets

RNG = np.random.default_rng(11)


def _hostile(rows: int, width: int) -> np.ndarray:
    """Floats with NaN, ±inf, heavy ties and an all-NaN column."""
    m = RNG.normal(size=(rows, width))
    m[:, 1] = RNG.integers(0, 4, rows)  # point masses
    m[RNG.random((rows, width)) < 0.05] = np.nan
    m[RNG.random((rows, width)) < 0.02] = np.inf
    m[RNG.random((rows, width)) < 0.02] = -np.inf
    m[:, 2] = np.nan
    return m


def _positions(cols: SortedColumns, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left and right searchsorted positions of ``points`` per column, from one search (as RankTable does)."""
    found = cols.search(both_sides(points))
    k = points.shape[1]
    return found[:, :k], found[:, k:]


@pytest.mark.parametrize("rows", [500, 4097, 5000])  # complex-keyed positions, and per-column ones past 4,096 rows
def test_sorted_columns_counts_and_moments_match_each_column(rows: int) -> None:
    m = _hostile(rows, 5)
    cols = SortedColumns.of(m)
    assert cols.rows == rows
    points = np.sort(RNG.normal(size=(5, 7)), axis=1)
    points[1] = np.arange(7) - 1.0  # exactly on the point masses of column 1
    left, right = _positions(cols, points)
    for j in range(5):
        col = m[:, j]
        finite = np.sort(col[np.isfinite(col)])
        assert cols.nan[j] == np.isnan(col).sum()
        assert cols.posinf(j) == (col == np.inf).sum()
        assert cols.neginf(j) == (col == -np.inf).sum()
        np.testing.assert_array_equal(cols.finite(j), finite)
        present = np.sort(col[~np.isnan(col)])
        np.testing.assert_array_equal(left[j], present.searchsorted(points[j], side="left"))
        np.testing.assert_array_equal(right[j], present.searchsorted(points[j], side="right"))
        if finite.size:
            assert cols.mean[j] == pytest.approx(finite.mean(), rel=1e-12)
            assert cols.m2[j] == pytest.approx(((finite - finite.mean()) ** 2).sum(), rel=1e-9)


@pytest.mark.parametrize("rows", [4000, 4100])  # both search paths
def test_positions_at_ties_nan_tails_and_both_ends(rows: int) -> None:
    """Points on the values themselves, inside long runs of ties, below every value and above every value."""
    m = np.column_stack(
        (
            np.arange(rows, dtype=np.float64),
            np.repeat(np.arange(rows // 40 + 1.0), 40)[:rows],  # runs of 40 ties
            np.where(np.arange(rows) < rows - 9, np.arange(rows) / 7.0, np.nan),  # NaN tail
        )
    )
    cols = SortedColumns.of(m)
    edges = [-1.0, 0.0, 14.0, 15.0, 16.0, 17.0, rows - 5.0, rows - 1.0, rows + 1.0]
    points = np.array([edges, [-1.0, 0.0, 0.5, 1.0, 3.0, 50.0, rows / 40 - 1, rows / 40, 1e9], np.array(edges) / 7.0])
    left, right = _positions(cols, points)
    for j in range(3):
        present = np.sort(m[~np.isnan(m[:, j]), j])
        np.testing.assert_array_equal(left[j], present.searchsorted(points[j], side="left"))
        np.testing.assert_array_equal(right[j], present.searchsorted(points[j], side="right"))


@pytest.mark.parametrize("rows", [600, 4200])  # both search paths
def test_positions_right_side_at_float_extremes(rows: int) -> None:
    """The right side is a left search of nextafter(p): exact at signed zeros, subnormals, the largest finite
    doubles (whose nextafter is inf) and with ±inf values present."""
    big, tiny = np.finfo(np.float64).max, np.nextafter(0.0, 1.0)
    pool = np.array([-np.inf, -big, -1.0, -tiny, -0.0, 0.0, tiny, 1.0, big, np.inf, np.nan])
    m = pool[RNG.integers(0, pool.size, (rows, 2))]
    cols = SortedColumns.of(m)
    points = np.array([[-big, -tiny, -0.0, 0.0, tiny, big], [-big, -1.0, 0.0, -0.0, 1.0, big]])
    left, right = _positions(cols, points)
    for j in range(2):
        present = np.sort(m[~np.isnan(m[:, j]), j])
        np.testing.assert_array_equal(left[j], present.searchsorted(points[j], side="left"))
        np.testing.assert_array_equal(right[j], present.searchsorted(points[j], side="right"))


def test_finite_batches_give_bit_identical_sketches() -> None:
    m = RNG.normal(size=(700, 4))
    cols = SortedColumns.of(m)
    for j in range(4):
        a, b = FeatureSketch("numeric"), FeatureSketch("numeric")
        a.update(m[:, j])
        b.update_sorted(cols, j)
        assert a.to_dict() == b.to_dict()


def test_update_sorted_keeps_every_counter_with_nan_and_inf() -> None:
    m = _hostile(800, 4)
    cols = SortedColumns.of(m)
    for j in range(4):
        a, b = FeatureSketch("numeric"), FeatureSketch("numeric")
        for _ in range(3):  # several batches: moments combine, levels compact
            a.update(m[:, j])
            b.update_sorted(cols, j)
        da, db = a.to_dict(), b.to_dict()
        qa, qb = da.pop("quantiles"), db.pop("quantiles")
        assert da == db
        assert qa["levels"] == qb["levels"] and qa["count"] == qb["count"]
        if qa["count"]:
            assert qb["mean"] == pytest.approx(qa["mean"], rel=1e-12)
            assert qb["m2"] == pytest.approx(qa["m2"], rel=1e-9)
    with pytest.raises(TypeError):
        FeatureSketch("categorical").update_sorted(cols, 0)


def _cuts(values: np.ndarray) -> RankCuts:
    sketch = QuantileSketch()
    sketch.update(values)
    return RankCuts.from_sketch(sketch)


@pytest.mark.parametrize("seed", range(40))
def test_rank_table_equals_rank_buckets_column_by_column(seed: int) -> None:
    """Ties with cuts (integer features, runs of equal cuts), infinities, NaN and empty columns included."""
    rng = np.random.default_rng(seed)
    rows, width = int(rng.integers(1, 400)), 6
    ref = np.column_stack(
        [
            rng.normal(size=2000),
            rng.integers(0, 3, 2000),  # three values: runs of equal cuts
            rng.integers(0, 30, 2000),
            rng.exponential(size=2000),
            np.r_[np.zeros(1900), rng.normal(size=100)],  # a point mass at 0 holding 95 %
            rng.normal(size=2000),
        ]
    ).astype(np.float64)
    live = np.column_stack(
        [
            rng.normal(size=rows),
            rng.integers(0, 4, rows),
            rng.integers(0, 30, rows),
            rng.choice(ref[:, 3], rows),  # values equal to reference items, some equal to cuts
            np.r_[np.zeros(rows // 2), rng.normal(size=rows - rows // 2)],
            np.full(rows, np.nan),
        ]
    ).astype(np.float64)
    live[rng.random(live.shape) < 0.03] = np.inf
    live[rng.random(live.shape) < 0.03] = -np.inf
    live[rng.random(live.shape) < 0.05] = np.nan
    cuts = [_cuts(ref[:, j]) for j in range(width - 1)] + [None]
    low = [float(np.min(ref[:, j])) for j in range(width - 1)] + [np.nan]
    high = [float(np.max(ref[:, j])) for j in range(width - 1)] + [np.nan]
    table = RankTable(cuts, low, high)
    counts, outside = table.counts(SortedColumns.of(live))
    for j in range(width):
        col = live[:, j]
        col = col[~np.isnan(col)]
        if cuts[j] is None:
            assert not counts[j].any() and outside[j] == 0
            continue
        np.testing.assert_array_equal(counts[j], rank_buckets(cuts[j], col, 20), err_msg=f"column {j}")
        assert outside[j] == np.count_nonzero((col < low[j]) | (col > high[j]))
        assert counts[j].sum() == col.size


def test_rank_table_without_ties_and_a_column_without_cuts() -> None:
    """Continuous columns (no value equals a cut: the counts skip the apportioning) beside a column with values
    but no reference cuts, whose row stays zero; counting from a given search equals searching inside."""
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(3000, 2))
    live = np.column_stack((rng.normal(size=900), rng.normal(1.0, 2.0, 900), rng.normal(size=900)))
    known = [_cuts(ref[:, 0]), _cuts(ref[:, 1])]
    low, high = [*ref.min(axis=0), np.nan], [*ref.max(axis=0), np.nan]
    table = RankTable([*known, None], low, high)
    cols = SortedColumns.of(live)
    counts, outside = table.counts(cols)
    given_counts, given_outside = table.counts(cols, table.search(cols))
    np.testing.assert_array_equal(given_counts, counts)
    np.testing.assert_array_equal(given_outside, outside)
    for j in range(2):
        np.testing.assert_array_equal(counts[j], rank_buckets(known[j], live[:, j], 20))
        assert outside[j] == np.count_nonzero((live[:, j] < low[j]) | (live[:, j] > high[j]))
    assert not counts[2].any() and outside[2] == 0


def test_rank_table_rejects_mixed_bucket_counts() -> None:
    values = RNG.normal(size=500)
    sketch = QuantileSketch()
    sketch.update(values)
    with pytest.raises(ValueError, match="same number"):
        RankTable([RankCuts.from_sketch(sketch, 20), RankCuts.from_sketch(sketch, 10)], [0.0, 0.0], [1.0, 1.0])
