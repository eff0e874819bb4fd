"""ColumnSketches: a window block of many numeric columns, raw while small, sketches past its limit."""

from __future__ import annotations

import numpy as np
import pytest

from otel_ml.sketch.block import ColumnSketches
from otel_ml.sketch.feature import FeatureSketch, numeric_values

RNG = np.random.default_rng(5)


def _expected(rows: np.ndarray, j: int) -> FeatureSketch:
    sketch = FeatureSketch("numeric")
    sketch.update(rows[:, j])
    return sketch


def test_raw_block_gives_each_column_exactly_the_sketch_of_its_rows() -> None:
    batches = [RNG.normal(size=(n, 3)) for n in (200, 1, 150)]
    block = ColumnSketches(3)
    for b in batches:
        block.update(b)
    rows = np.vstack(batches)
    assert block.rows == 351
    assert block.nbytes == 351 * 3 * 8  # the rows themselves, nothing more
    assert block.feature(0) is not block.feature(0)  # a fresh summary each time (callers may merge into it)
    for j in range(3):
        assert block.feature(j).to_dict() == _expected(rows, j).to_dict()


def test_a_block_past_its_raw_limit_turns_into_bounded_sketches() -> None:
    block = ColumnSketches(2, raw_limit=640)
    rows = RNG.exponential(size=(50_000, 2))
    for start in range(0, 50_000, 700):
        block.update(rows[start : start + 700])
    assert block.rows == 50_000
    assert block.nbytes < 2 * 17_000  # two quantile sketches, not 800 KB of rows
    for j in range(2):
        got, want = block.feature(j), _expected(rows, j)
        assert (got.count, got.min, got.max) == (want.count, want.min, want.max)
        assert got.quantiles.mean == pytest.approx(want.quantiles.mean, rel=1e-9)
        qs = np.linspace(0.05, 0.95, 19)
        true = np.quantile(rows[:, j], qs)
        assert np.abs(np.searchsorted(np.sort(rows[:, j]), got.quantiles.quantile(qs)) / 50_000 - qs).max() < 0.01
        assert np.all(np.isfinite(true))


@pytest.mark.parametrize("spill", ["none", "self", "other", "both"])
def test_merge_keeps_every_row_whichever_side_spilled(spill: str) -> None:
    a_rows, b_rows = (
        RNG.normal(size=(900 if spill in ("self", "both") else 300, 2)),
        RNG.normal(size=(900 if spill in ("other", "both") else 200, 2)),
    )
    a, b = ColumnSketches(2), ColumnSketches(2)
    a.update(a_rows)
    b.update(b_rows)
    a.merge(b)
    rows = np.vstack((a_rows, b_rows))
    assert a.rows == len(rows)
    for j in range(2):
        got = a.feature(j)
        assert (got.count, got.min, got.max) == (len(rows), rows[:, j].min(), rows[:, j].max())
        if spill == "none":
            assert got.to_dict() == _expected(rows, j).to_dict()
    assert b.rows == len(b_rows)  # the other side is left as it was


def test_width_mismatches_are_refused() -> None:
    block = ColumnSketches(3)
    with pytest.raises(ValueError, match="expected 3 columns"):
        block.update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="expected 3 columns"):
        block.merge(ColumnSketches(2))
    assert block.feature(0).count == 0


def test_numeric_values_count_like_the_feature_sketch() -> None:
    column = np.array([1, 2.5, None, float("nan"), "x", True, [1], 7], dtype=object)
    values, missing, mismatch = numeric_values(column)
    np.testing.assert_array_equal(values, [1.0, 2.5, np.nan, np.nan, np.nan, 1.0, np.nan, 7.0])
    sketch = FeatureSketch("numeric")
    sketch.update(column)
    assert (missing, mismatch) == (sketch.missing, sketch.type_mismatch) == (2, 2)
    ints = numeric_values(np.arange(4))
    assert ints[0].dtype == np.float64 and ints[1:] == (0, 0)
    text = numeric_values(np.array(["a", "b"]))
    assert np.isnan(text[0]).all() and text[1:] == (0, 2)
