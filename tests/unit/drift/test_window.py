"""Exact eviction tests for count- and time-based sliding windows of sketches."""

from __future__ import annotations

import numpy as np
import pytest

from otel_ml.drift.metrics import ks_from_sketches
from otel_ml.drift.window import SlidingWindow
from otel_ml.sketch.feature import FeatureSketch
from otel_ml.sketch.quantile import QuantileSketch, max_items


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def window_range(win: SlidingWindow[QuantileSketch]) -> tuple[int, float, float]:
    snap = win.snapshot()
    return snap.count, snap.min, snap.max


def test_count_window_exact_rows_after_eviction() -> None:
    win = SlidingWindow(QuantileSketch, max_rows=5000, n_blocks=8)
    assert win.block_rows == 625
    rows = np.arange(7000, dtype=np.float64)  # value == row index
    for start, size in ((0, 1), (1, 624), (625, 3000), (3625, 1), (3626, 3374)):
        win.update(rows[start : start + size])
    # blocks of 625 rows: 11 full + 1 of 125; the newest 8 survive = rows 2500..6999
    assert win.rows() == 4500
    assert window_range(win) == (4500, 2500.0, 6999.0)
    win.update(rows[:500])  # fills the 125-row block to 625 exactly: still 8 blocks
    assert win.rows() == 5000
    win.update(rows[:1])  # opens a 9th block: the oldest 625 rows go
    assert win.rows() == 4376
    win.clear()
    assert win.rows() == 0 and win.nbytes == 0 and win.snapshot().count == 0


def test_count_window_bulk_update_equals_chunked() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=123_457)
    bulk = SlidingWindow(QuantileSketch, max_rows=5000, n_blocks=8)
    bulk.update(data[:100])
    bulk.update(data[100:])
    chunked = SlidingWindow(QuantileSketch, max_rows=5000, n_blocks=8)
    for i in range(0, data.size, 333):
        chunked.update(data[i : i + 333])
    n_live = bulk.rows()
    assert n_live == chunked.rows() == 5000 - (625 - 123_457 % 625)
    a, b = bulk.snapshot(), chunked.snapshot()
    assert (a.count, a.min, a.max) == (b.count, b.min, b.max)
    tail = data[-n_live:]
    assert (a.min, a.max) == (tail.min(), tail.max())
    assert a.mean == pytest.approx(tail.mean(), rel=1e-9)


def test_window_memory_is_bounded_and_drift_tracks_recent_rows() -> None:
    rng = np.random.default_rng(1)
    ref = QuantileSketch()
    ref.update(rng.normal(size=50_000))
    win = SlidingWindow(lambda: FeatureSketch("numeric", k=200), max_rows=5000, n_blocks=8)
    for _ in range(40):
        win.update(rng.normal(size=2_500))
    assert 0 < win.nbytes <= 8 * (max_items(200) * 8 + 48)
    assert ks_from_sketches(ref, win.snapshot().quantiles) < 0.05
    win.update(rng.normal(2.0, 1.0, 5_000))  # the whole window is now the shifted regime
    snap = win.snapshot()
    assert snap.count == 5_000
    assert ks_from_sketches(ref, snap.quantiles) > 0.6


def test_time_window_expires_blocks_with_injected_clock() -> None:
    clock = FakeClock()
    win = SlidingWindow(QuantileSketch, max_rows=None, max_age_s=80.0, n_blocks=8, clock=clock)
    for t in range(100):  # one row per second, value == arrival second
        clock.now = 1000.0 + t
        win.update(np.array([float(t)]))
    # blocks span 10 s and start at t=0, 10, ..., 90; at t=99 the ones that started at t=0 and t=10
    # are more than 80 s old, so rows 20..99 remain (the oldest is 79 s old)
    assert window_range(win) == (80, 20.0, 99.0)
    clock.now = 1000.0 + 99 + 25  # t=124: blocks that started before t=44 have expired
    assert win.rows() == 50
    assert window_range(win)[1] == 50.0
    clock.now += 1000
    assert win.rows() == 0 and win.snapshot().count == 0


def test_count_and_time_limits_combined() -> None:
    clock = FakeClock()
    win = SlidingWindow(QuantileSketch, max_rows=800, max_age_s=40.0, n_blocks=4, clock=clock)
    win.update(np.arange(150.0))  # 150 rows at t=0: blocks of 200 rows or 10 s
    clock.now += 11  # block span exceeded: next rows open a new block even though the first has room
    win.update(np.arange(150.0, 300.0))
    assert win.rows() == 300
    clock.now += 35  # first block started 46 s ago: expired; second started 35 s ago: kept
    assert window_range(win) == (150, 150.0, 299.0)


def test_invalid_configurations() -> None:
    with pytest.raises(ValueError):
        SlidingWindow(QuantileSketch, max_rows=None, max_age_s=None)
    with pytest.raises(ValueError):
        SlidingWindow(QuantileSketch, max_rows=4, n_blocks=8)
    with pytest.raises(ValueError):
        SlidingWindow(QuantileSketch, max_age_s=0.0)


def test_plan_gives_the_row_ranges_update_files_and_fill_takes_them() -> None:
    clock = FakeClock()
    win = SlidingWindow(QuantileSketch, max_rows=5000, n_blocks=8, clock=clock)
    assert win.plan(0, clock.now) == []
    assert win.plan(1000, clock.now) == [(0, 625), (625, 1000)]
    rows = np.arange(1000, dtype=np.float64)
    for start, stop in win.plan(1000, clock.now):
        win.fill(stop - start, lambda sketch, a=start, b=stop: sketch.update(rows[a:b]), clock.now)
    assert win.rows() == 1000
    # the newest block has 250 rows of room; a batch longer than the window skips its oldest rows
    assert win.plan(300, clock.now) == [(0, 250), (250, 300)]
    big = win.plan(7000, clock.now)
    # 250 rows would top up the newest block, then 11 blocks of 625: only the last 8 blocks' rows survive
    assert big[0] == (250 + 3 * 625, 250 + 4 * 625) and big[-1] == (6500, 7000)
    assert all(b - a == 625 for a, b in big[:-1]) and len(big) == 8
    assert win.rows() == 0  # every block was dropped: none of them would survive the batch
    with pytest.raises(ValueError, match="do not fit"):
        win.fill(626, lambda sketch: None, clock.now)


def test_plan_of_a_time_window_is_one_range_and_expires_first() -> None:
    clock = FakeClock()
    win = SlidingWindow(QuantileSketch, max_rows=None, max_age_s=60.0, n_blocks=4, clock=clock)
    win.update(np.ones(10))
    clock.now += 61
    assert win.plan(50, clock.now) == [(0, 50)]
    assert win.rows() == 0
