"""Accuracy, memory, determinism and serialisation tests for the KLL quantile sketch and rank buckets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import pytest

from otel_ml.sketch.quantile import DEFAULT_K, QuantileSketch, RankCuts, max_items, rank_buckets

N_BIG = 1_000_000
QS = np.linspace(0.001, 0.999, 999)


def exact_rank_error(sketch: QuantileSketch, data: np.ndarray) -> float:
    """Max over q of the distance between q and the exact normalised rank interval of quantile(q),
    and over a grid of x of |cdf(x) - exact F(x)| (both definitions of rank error)."""
    s = np.sort(data)
    n = s.size
    est = sketch.quantile(QS)
    lo = np.searchsorted(s, est, side="left") / n
    hi = np.searchsorted(s, est, side="right") / n
    q_err = float(np.max(np.maximum(0.0, np.maximum(lo - QS, QS - hi))))
    xs = np.unique(s[np.linspace(0, n - 1, 2001).astype(int)])
    cdf_err = float(np.max(np.abs(sketch.cdf(xs) - np.searchsorted(s, xs, side="right") / n)))
    return max(q_err, cdf_err)


def feed(sketch: QuantileSketch, data: np.ndarray, batch: int) -> QuantileSketch:
    for i in range(0, data.size, batch):
        sketch.update(data[i : i + batch])
    return sketch


def big_streams() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    return {
        "normal": rng.normal(3.0, 2.0, N_BIG),
        "lognormal": rng.lognormal(0.0, 2.0, N_BIG),
        "uniform": rng.uniform(-1.0, 1.0, N_BIG),
        "duplicates": rng.integers(0, 20, N_BIG).astype(np.float64),
        "sorted": np.sort(rng.normal(size=N_BIG)),
    }


STREAMS = big_streams()


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_rank_error_below_one_percent_at_one_million(name: str) -> None:
    data = STREAMS[name]
    sketch = feed(QuantileSketch(seed=7), data, 50_000)
    assert sketch.count == N_BIG
    assert sketch.min == data.min() and sketch.max == data.max()
    assert exact_rank_error(sketch, data) <= 0.01
    assert sketch.nbytes <= 16 * 1024
    assert sketch.mean == pytest.approx(data.mean(), rel=1e-9, abs=1e-12)
    assert sketch.std == pytest.approx(data.std(), rel=1e-9)


def test_rank_error_small_batches_and_reverse_order() -> None:
    data = STREAMS["normal"][:200_000][::-1].copy()
    data[: data.size // 2] = np.sort(data[: data.size // 2])[::-1]
    sketch = feed(QuantileSketch(seed=1), data, 97)
    assert exact_rank_error(sketch, data) <= 0.01
    assert sketch.nbytes <= 16 * 1024


def test_merge_of_eight_partial_sketches() -> None:
    data = STREAMS["lognormal"]
    parts = [feed(QuantileSketch(seed=i), p, 10_000) for i, p in enumerate(np.array_split(data, 8))]
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    assert merged.count == N_BIG
    assert merged.min == data.min() and merged.max == data.max()
    assert exact_rank_error(merged, data) <= 0.01
    assert merged.nbytes <= 16 * 1024
    assert merged.mean == pytest.approx(data.mean(), rel=1e-9)
    assert merged.std == pytest.approx(data.std(), rel=1e-9)
    assert parts[1].count == N_BIG // 8  # merge leaves the argument untouched


def test_memory_bound_whatever_stream_length() -> None:
    assert max_items(DEFAULT_K) * 8 <= 16 * 1024
    sketch = QuantileSketch()
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(200):
        sketch.update(rng.normal(size=5_000))
        sizes.append(sketch.nbytes)
    assert max(sizes) <= max_items(DEFAULT_K) * 8
    assert sketch.count == 1_000_000
    assert sketch.num_retained * 8 == sketch.nbytes


def test_small_streams_are_exact() -> None:
    data = np.array([5.0, 1.0, 3.0, 3.0, 2.0])
    sketch = QuantileSketch()
    sketch.update(data)
    np.testing.assert_array_equal(sketch.cdf(np.array([0.0, 1.0, 2.5, 3.0, 5.0, 9.0])), [0, 0.2, 0.4, 0.8, 1, 1])
    np.testing.assert_array_equal(sketch.cdf_left(np.array([1.0, 3.0])), [0.0, 0.4])
    np.testing.assert_array_equal(sketch.quantile(np.array([0.0, 0.2, 0.5, 0.8, 1.0])), [1, 1, 3, 3, 5])
    assert float(sketch.quantile(0.3)) == 2.0


def test_ignores_nan_and_inf_and_handles_empty() -> None:
    sketch = QuantileSketch()
    assert np.isnan(sketch.min) and np.isnan(sketch.cdf(1.0)) and np.isnan(sketch.quantile(0.5))
    sketch.update(np.array([np.nan, np.inf, -np.inf]))
    assert sketch.count == 0
    sketch.update(np.array([1.0, np.nan, 2.0, np.inf]))
    assert sketch.count == 2 and sketch.min == 1.0 and sketch.max == 2.0
    with pytest.raises(ValueError):
        sketch.quantile(1.5)


def test_deterministic_given_seed_and_json_round_trip() -> None:
    data = STREAMS["normal"][:300_000]
    a = feed(QuantileSketch(seed=3), data, 7_000)
    b = feed(QuantileSketch(seed=3), data, 7_000)
    c = feed(QuantileSketch(seed=4), data, 7_000)
    text = json.dumps(a.to_dict(), sort_keys=True)
    assert text == json.dumps(b.to_dict(), sort_keys=True)
    assert text != json.dumps(c.to_dict(), sort_keys=True)
    restored = QuantileSketch.from_dict(json.loads(text))
    np.testing.assert_array_equal(restored.quantile(QS), a.quantile(QS))
    assert json.dumps(restored.to_dict(), sort_keys=True) == text
    # the restored sketch keeps evolving exactly like the original
    restored.update(data[:1000])
    a.update(data[:1000])
    assert restored.to_dict() == a.to_dict()


def test_from_dict_rejects_inconsistent_state() -> None:
    d = feed(QuantileSketch(), STREAMS["uniform"][:10_000], 1000).to_dict()
    d["count"] += 1
    with pytest.raises(ValueError):
        QuantileSketch.from_dict(d)


def test_ingest_throughput_vs_searchsorted_bincount() -> None:
    """Prints sketch ingest speed relative to binning into 20 fixed bins (run with -s); asserts correctness."""
    rng = np.random.default_rng(5)
    frame = rng.normal(size=(100_000, 20))
    cuts = np.quantile(frame[:, 0], np.linspace(0.05, 0.95, 19))

    def baseline() -> None:
        for j in range(frame.shape[1]):
            np.bincount(np.searchsorted(cuts, frame[:, j], side="right"), minlength=20)

    sketches = [QuantileSketch(seed=j) for j in range(frame.shape[1])]

    def sketch_ingest() -> None:
        for j, sk in enumerate(sketches):
            sk.update(frame[:, j])

    def best_of(fn: Callable[[], None], reps: int = 3) -> float:
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    t_base, t_sketch = best_of(baseline), best_of(sketch_ingest)
    print(
        f"\n100000x20 frame: searchsorted+bincount {t_base * 1e3:.1f} ms, sketch {t_sketch * 1e3:.1f} ms, "
        f"relative throughput {t_base / t_sketch:.2f}x, bytes/feature {max(s.nbytes for s in sketches)}"
    )
    assert all(sk.count == 300_000 for sk in sketches)
    assert exact_rank_error(sketches[0], np.tile(frame[:, 0], 3)) <= 0.01


# ---------------------------------------------------------------------- rank buckets (PIT)
def chi_square_uniform(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(np.sum((counts - expected) ** 2 / expected))


def test_rank_buckets_uniform_under_no_drift_and_not_under_shift() -> None:
    rng = np.random.default_rng(11)
    ref = QuantileSketch()
    ref.update(rng.gamma(2.0, 3.0, 200_000))
    cuts = RankCuts.from_sketch(ref)
    same = rank_buckets(cuts, rng.gamma(2.0, 3.0, 100_000))
    assert same.dtype == np.int64 and same.shape == (20,) and same.sum() == 100_000
    # chi-square with 19 dof: 99.9th percentile is 43.8; the sketch's cut error adds a little
    assert chi_square_uniform(same) < 60
    assert np.all(np.abs(same / 100_000 - 0.05) < 0.006)
    shifted = rank_buckets(cuts, rng.gamma(2.0, 3.0, 100_000) + 1.0)
    assert chi_square_uniform(shifted) > 1000
    np.testing.assert_array_equal(rank_buckets(ref, rng.gamma(2.0, 3.0, 10)).sum(), 10)


def test_rank_buckets_matches_naive_pit_on_continuous_data() -> None:
    rng = np.random.default_rng(2)
    ref = QuantileSketch()
    ref.update(rng.normal(size=50_000))
    values = rng.normal(size=20_000)
    naive = np.bincount(np.minimum((ref.cdf(values) * 20).astype(int), 19), minlength=20)
    fast = rank_buckets(ref, values)
    # identical except for values within one retained item's weight of a cut
    assert np.abs(fast - naive).sum() <= 0.002 * values.size


def test_rank_buckets_point_masses_do_not_bias() -> None:
    rng = np.random.default_rng(3)
    probs = np.array([0.5, 0.2, 0.15, 0.1, 0.05])

    def draw(n: int) -> np.ndarray:
        return rng.choice(np.arange(5.0), size=n, p=probs)

    ref = QuantileSketch()
    ref.update(draw(100_000))
    counts = rank_buckets(ref, draw(100_000))
    assert counts.sum() == 100_000
    assert np.all(np.abs(counts / 100_000 - 0.05) < 0.006), counts
    # the naive searchsorted histogram is heavily biased on the same data
    naive = np.bincount(np.searchsorted(RankCuts.from_sketch(ref).cuts, draw(100_000), "right"), minlength=20)
    assert np.max(np.abs(naive / 100_000 - 0.05)) > 0.1


def test_rank_buckets_from_bare_cutpoints_and_nan() -> None:
    cuts = np.arange(1.0, 20.0)  # reference = uniform on [0, 20)
    values = np.array([0.5, 1.5, 19.5, np.nan, np.inf, -np.inf])
    counts = rank_buckets(cuts, values)
    np.testing.assert_array_equal(np.flatnonzero(counts), [0, 1, 19])
    np.testing.assert_array_equal(counts[[0, 1, 19]], [2, 1, 2])
    # a value exactly on a single cut is split between its two neighbouring buckets
    tied = rank_buckets(cuts, np.full(1000, 5.0))
    np.testing.assert_array_equal(tied[[4, 5]], [500, 500])
    assert tied.sum() == 1000
    with pytest.raises(ValueError):
        rank_buckets(cuts, values, n_buckets=10)
