"""Input monitoring end to end: real data, a real covariate shift, exact counts, hostile inputs."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch
from sklearn.datasets import load_breast_cancer

import otel_ml
from otel_ml import config, semconv
from otel_ml._core import guard, runtime
from otel_ml._core.aggregation import VectorHistogram
from otel_ml._core.monitor import BUFFER_VALUES, MIN_BUFFER_ROWS, InputMonitor, MonitorOptions, buffer_limit
from otel_ml.testing import InMemoryTelemetry

DATA = load_breast_cancer(as_frame=True)
X = DATA.data.to_numpy()
NAMES = list(DATA.data.columns)
RNG = np.random.default_rng(7)
# Reference and "production" rows resampled from the same real data: no drift by construction.
TRAIN = X[RNG.integers(0, len(X), 20_000)]
LIVE = X[RNG.integers(0, len(X), 5_000)]
REF = otel_ml.Reference.from_data(TRAIN, feature_names=NAMES)


def _by_feature(points: list[Any], method: str | None = None) -> dict[str, Any]:
    return {
        p.attributes[semconv.ML_FEATURE_NAME]: p
        for p in points
        if method is None or p.attributes.get(semconv.ML_DRIFT_METHOD) == method
    }


def _model(**kwargs: Any) -> Any:
    return otel_ml.instrument(name="cancer", version="2", output="none", **kwargs)(lambda x: np.zeros(len(x)))


def test_no_drift_stays_quiet_and_a_real_shift_is_flagged_on_the_shifted_features_only(tel: InMemoryTelemetry) -> None:
    events: list[otel_ml.DriftEvent] = []
    predict = _model(reference=REF, drift_window=5000, on_drift=events.append)
    predict(LIVE)
    otel_ml.force_flush()
    collected = tel.metrics()
    drift = tel.points(semconv.FEATURE_DRIFT, collected)
    assert {p.attributes[semconv.ML_DRIFT_METHOD] for p in drift} == {"psi", "ks", "js", "wasserstein"}
    assert len(drift) == 4 * 30
    for method, limit in (("psi", 0.2), ("ks", 0.1), ("js", 0.1), ("wasserstein", 0.1)):
        scores = {f: p.value for f, p in _by_feature(drift, method).items()}
        assert max(scores.values()) < limit, (method, max(scores.items(), key=lambda kv: kv[1]))
    assert {p.attributes[semconv.ML_REFERENCE_ID] for p in drift} == {REF.id}
    (model_drift,) = tel.points(semconv.MODEL_DRIFT, collected)
    assert model_drift.value == 0.0
    assert events == []

    shifted = LIVE.copy()
    moved = ["mean radius", "worst texture", "mean smoothness"]
    for name in moved:
        i = NAMES.index(name)
        shifted[:, i] += 1.5 * TRAIN[:, i].std()
    predict(shifted)
    otel_ml.force_flush()
    collected = tel.metrics()
    psi = {f: p.value for f, p in _by_feature(tel.points(semconv.FEATURE_DRIFT, collected), "psi").items()}
    assert sorted(f for f, v in psi.items() if v > 0.2) == sorted(moved)
    (model_drift,) = tel.points(semconv.MODEL_DRIFT, collected)
    assert model_drift.value == pytest.approx(3 / 30)
    assert sorted(e.feature for e in events) == sorted(moved)  # once per crossing
    assert all(e.method == "psi" and e.score > 0.2 and e.reference_id == REF.id for e in events)

    predict(shifted[:10])  # the queued events ride on the next predict span, once
    predict(shifted[:10])
    spans = tel.spans()
    detected = [e for e in spans[-2].events if e.name == semconv.DRIFT_EVENT]
    assert sorted(e.attributes[semconv.ML_FEATURE_NAME] for e in detected) == sorted(moved)  # type: ignore[index]
    assert [e for e in spans[-1].events if e.name == semconv.DRIFT_EVENT] == []
    assert spans[-1].attributes[semconv.ML_REFERENCE_ID] == REF.id  # type: ignore[index]
    assert spans[-1].attributes[semconv.ML_REFERENCE_SOURCE] == "training"  # type: ignore[index]


def test_rank_histogram_and_quality_counters_are_exact(tel: InMemoryTelemetry) -> None:
    predict = _model(reference=REF)
    batch = LIVE[:1000].copy()
    i_nan, i_out = NAMES.index("mean area"), NAMES.index("mean texture")
    batch[:17, i_nan] = np.nan
    batch[100:105, i_out] = REF.features["mean texture"].max + 1.0
    batch[105:108, i_out] = REF.features["mean texture"].min - 1.0
    for k in range(0, 1000, 100):  # batches above and below the buffer size, and single rows
        predict(batch[k : k + 100])
    for row in LIVE[1000:1300]:
        predict(row[None, :])
    otel_ml.force_flush()
    collected = tel.metrics()
    ranks = _by_feature(tel.points(semconv.FEATURE_RANK, collected))
    assert set(ranks) == set(NAMES)
    assert ranks["mean area"].count == 1300 - 17
    assert ranks["mean radius"].count == 1300
    assert sum(ranks["mean radius"].bucket_counts) == 1300
    assert list(ranks["mean radius"].explicit_bounds) == list(semconv.UNIT_INTERVAL_BUCKETS)
    # resampled from the reference's own data: every 5 % bucket holds 5 % (sampling noise only)
    shares = np.array(ranks["worst area"].bucket_counts[:20]) / 1300
    assert np.abs(shares - 0.05).max() < 0.03
    assert _by_feature(tel.points(semconv.FEATURE_MISSING, collected))["mean area"].value == 17
    out = _by_feature(tel.points(semconv.FEATURE_OUT_OF_RANGE, collected))
    assert out["mean texture"].value == 8
    assert set(out) == {"mean texture"}  # resampled rows never leave the reference range
    assert runtime.get().drops().get("queue_full", 0) == 0


def test_without_a_reference_the_first_rows_become_a_warmup_reference(tel: InMemoryTelemetry) -> None:
    predict = _model(feature_names=NAMES, monitor=otel_ml.MonitorOptions(warmup_rows=500))
    predict(LIVE[:300])
    otel_ml.force_flush()
    assert tel.points(semconv.FEATURE_DRIFT) == []
    assert semconv.ML_REFERENCE_ID not in (tel.spans()[-1].attributes or {})
    predict(LIVE[300:900])
    otel_ml.force_flush()
    predict(LIVE[:1])
    otel_ml.force_flush()
    attrs = tel.spans()[-1].attributes or {}
    assert attrs[semconv.ML_REFERENCE_SOURCE] == "warmup"
    collected = tel.metrics()
    ranks = _by_feature(tel.points(semconv.FEATURE_RANK, collected))
    assert ranks["mean radius"].count == 400 + 1  # rows after the 500 warm-up rows
    drift = tel.points(semconv.FEATURE_DRIFT, collected)
    assert {p.attributes[semconv.ML_REFERENCE_SOURCE] for p in drift} == {"warmup"}
    assert {p.attributes[semconv.ML_REFERENCE_ID] for p in drift} == {attrs[semconv.ML_REFERENCE_ID]}


def _frame(n: int, colors: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n),
            "color": pd.Categorical(rng.choice(colors, n, p=[0.6, 0.3, 0.1][: len(colors)])),
            "count": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        }
    )


def test_categorical_features_from_pandas(tel: InMemoryTelemetry) -> None:
    ref = otel_ml.Reference.from_data(_frame(5000, ["red", "green", "blue"]))
    predict = _model(reference=ref)
    live = _frame(2000, ["red", "green", "blue"])
    live.loc[:9, "color"] = np.nan
    live["color"] = live["color"].cat.add_categories(["purple"])
    live.loc[10:14, "color"] = "purple"
    live.loc[20:22, "count"] = pd.NA
    predict(live)
    otel_ml.force_flush()
    collected = tel.metrics()
    cats = {p.attributes[semconv.ML_FEATURE_CATEGORY]: p.value for p in tel.points(semconv.FEATURE_CATEGORY, collected)}
    expected = live["color"].value_counts()
    assert cats == {
        "top1": expected["red"],
        "top2": expected["green"],
        "top3": expected["blue"],
        "__unseen__": 5,
    }
    assert "purple" not in repr(collected)  # raw category values are opt-in
    missing = _by_feature(tel.points(semconv.FEATURE_MISSING, collected))
    assert missing["color"].value == 10 and missing["count"].value == 3
    assert _by_feature(tel.points(semconv.FEATURE_UNSEEN_CATEGORY, collected))["color"].value == 5
    chi2 = _by_feature(tel.points(semconv.FEATURE_DRIFT, collected), "chi2")
    assert chi2["color"].value < 0.01  # purple and missing reds: a real change in the mix


def test_category_values_are_exported_only_when_opted_in(tel: InMemoryTelemetry) -> None:
    ref = otel_ml.Reference.from_data(_frame(3000, ["red", "green", "blue"]))
    predict = _model(reference=ref, monitor=otel_ml.MonitorOptions(capture_categories=True))
    predict(_frame(300, ["red", "green", "blue"]))
    otel_ml.force_flush()
    labels = {p.attributes[semconv.ML_FEATURE_CATEGORY] for p in tel.points(semconv.FEATURE_CATEGORY)}
    assert labels == {"red", "green", "blue"}


def test_sketching_can_be_turned_off(tel: InMemoryTelemetry) -> None:
    predict = _model(reference=REF, sketch_inputs=False)
    predict(LIVE[:100])
    otel_ml.force_flush()
    assert not [n for n in tel.metrics() if n.startswith("ml.feature.")]
    assert semconv.ML_REFERENCE_ID not in (tel.spans()[0].attributes or {})


def test_a_reference_path_is_loaded_at_instrumentation_time(tel: InMemoryTelemetry, tmp_path: Any) -> None:
    path = tmp_path / "ref.json"
    REF.save(path)
    predict = _model(reference=str(path))
    predict(LIVE[:5])
    assert tel.spans()[0].attributes[semconv.ML_REFERENCE_ID] == REF.id  # type: ignore[index]
    with pytest.raises(FileNotFoundError):
        _model(reference=str(tmp_path / "missing.json"))


def test_a_failing_drift_callback_never_reaches_the_caller(tel: InMemoryTelemetry) -> None:
    def callback(event: otel_ml.DriftEvent) -> None:
        raise RuntimeError("retraining service down")

    predict = _model(reference=REF, on_drift=callback)
    shifted = LIVE[:2000] * 3.0
    predict(shifted)
    otel_ml.force_flush()
    assert _by_feature(tel.points(semconv.FEATURE_DRIFT), "psi")["mean radius"].value > 0.2


HOSTILE: dict[str, tuple[Any, int, str | None]] = {
    # name: (input, rows expected in the rank histogram of feature f0 (-1: no sketch), drop reason or None)
    "nan and inf": (np.array([[np.nan, 1.0], [np.inf, 2.0], [-np.inf, 3.0], [0.5, 4.0]]), 3, None),
    "object mix": (np.array([[None, 1.0], ["a", 2.0], [[1, 2], 3.0], [0.5, 4.0]], dtype=object), 1, None),
    "empty batch": (np.empty((0, 2)), -1, None),
    "1-D": (np.array([0.1, 0.2, 0.3]), -1, "input_shape_changed"),
    "0-d": (np.float64(3.0), -1, "input_scalar"),
    "3-D": (np.zeros((2, 2, 2)), -1, "input_ndim"),
    "sparse": (
        scipy.sparse.csr_matrix(([1.0, 2.0], ([3, 99_999], [5, 99_998])), shape=(100_000, 100_000)),
        -1,
        "input_sparse",
    ),
    "torch": (torch.tensor([[0.1, 0.2], [0.3, 0.4]], requires_grad=True).t(), 2, None),
    "list of dicts": ([{"a": 1}], -1, "input_type"),
    "generator": ((r for r in [[1.0, 2.0]]), -1, "input_type"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_inputs_give_exact_counts_or_a_counted_skip(tel: InMemoryTelemetry, case: str) -> None:
    x, ranked, reason = HOSTILE[case]
    ref = otel_ml.Reference.from_data(np.random.default_rng(0).normal(size=(500, 2)))
    result = np.array([7.0])
    predict = otel_ml.instrument(name="h", output="none", reference=ref)(lambda x: result)
    predict(np.zeros((1, 2)))  # fixes the 2-feature schema
    before = dict(runtime.get().drops())
    grad_before = (x.requires_grad, x.grad_fn) if isinstance(x, torch.Tensor) else None
    assert predict(x) is result
    otel_ml.force_flush()
    drops = {k: v - before.get(k, 0) for k, v in runtime.get().drops().items() if v - before.get(k, 0)}
    assert drops == ({reason: 1} if reason else {})
    ranks = _by_feature(tel.points(semconv.FEATURE_RANK))
    assert ranks["f0"].count == 1 + max(ranked, 0)
    if isinstance(x, torch.Tensor):
        assert (x.requires_grad, x.grad_fn) == grad_before


def test_column_count_changes_and_feature_limit_are_counted(tel: InMemoryTelemetry) -> None:
    predict = _model(monitor=otel_ml.MonitorOptions(max_features=3, warmup_rows=10))
    predict(np.zeros((20, 5)))
    predict(np.zeros((20, 4)))
    otel_ml.force_flush()
    drops = runtime.get().drops()
    assert drops.get("feature_limit", 0) >= 2 and drops.get("input_shape_changed", 0) >= 1
    ranks = _by_feature(tel.points(semconv.FEATURE_RANK))
    assert set(ranks) == {"f0", "f1", "f2"}


def test_a_quiet_models_buffered_rows_reach_the_sketches_after_one_drift_interval(
    tel: InMemoryTelemetry, env: pytest.MonkeyPatch
) -> None:
    """Fewer rows than the buffer holds and no force_flush: a collection hands the buffer to the worker once its
    first row has waited OTEL_ML_DRIFT_INTERVAL, not before (a small batch per export costs busy threads)."""
    env.setenv(config.OTEL_ML_DRIFT_INTERVAL, "1")
    config.reload()
    predict = _model(reference=REF)
    for row in LIVE[:7]:
        predict(row[None, :])
    tel.metrics()  # the rows are younger than the interval: they stay buffered
    assert runtime.get().worker.drain(10)
    assert tel.points(semconv.FEATURE_RANK, tel.metrics()) == []
    predict(LIVE[7:8])
    time.sleep(1.1)  # the first row is now older than the interval; the eighth is not, and goes with it
    first = tel.metrics()  # this collection hands the 8 buffered rows over ...
    assert tel.points(semconv.FEATURE_RANK, first) == []
    assert runtime.get().worker.drain(10)
    ranks = _by_feature(tel.points(semconv.FEATURE_RANK))  # ... the next one carries them
    assert ranks["mean radius"].count == 8
    assert {p.count for p in ranks.values()} == {8}


def test_an_export_hands_over_a_first_buffers_worth_of_rows_however_young(tel: InMemoryTelemetry) -> None:
    """A model that fills its first buffer between exports keeps that one buffer: only a trickle waits."""
    predict = _model(reference=REF)
    for start in range(0, MIN_BUFFER_ROWS, 64):
        predict(LIVE[start : start + 64])  # 256 rows within a second: young, but a first buffer's worth
    tel.metrics()
    assert runtime.get().worker.drain(10)
    ranks = _by_feature(tel.points(semconv.FEATURE_RANK))
    assert {p.count for p in ranks.values()} == {MIN_BUFFER_ROWS}


def test_numeric_columns_from_pandas_and_numpy_give_the_same_sketches(tel: InMemoryTelemetry) -> None:
    """A DataFrame's object and int columns take the same vectorised path as a float matrix: the same rank
    histograms and drift scores, with missing values and type mismatches told apart."""
    rows = LIVE[:1500].copy()
    i = NAMES.index("mean radius")
    rows[:15, i] = np.nan
    frame = pd.DataFrame(LIVE[:1500], columns=NAMES)
    radius = frame["mean radius"].astype(object)
    radius[:10] = None
    radius[10:15] = "n/a"  # not a number: a type mismatch, not a missing value
    frame["mean radius"] = radius
    frame["mean texture"] = np.round(frame["mean texture"]).astype(np.int64)
    rows[:, NAMES.index("mean texture")] = np.round(rows[:, NAMES.index("mean texture")])
    from_numpy = otel_ml.instrument(name="np", output="none", reference=REF)(lambda x: np.zeros(len(x)))
    from_pandas = otel_ml.instrument(name="pd", output="none", reference=REF)(lambda x: np.zeros(len(x)))
    from_numpy(rows)
    from_pandas(frame)
    otel_ml.force_flush()
    collected = tel.metrics()

    def of(metric: str, model: str) -> dict[str, Any]:
        return _by_feature([p for p in tel.points(metric, collected) if p.attributes[semconv.ML_MODEL_NAME] == model])

    ranks_np, ranks_pd = of(semconv.FEATURE_RANK, "np"), of(semconv.FEATURE_RANK, "pd")
    assert set(ranks_np) == set(ranks_pd) == set(NAMES)
    for name in NAMES:
        assert list(ranks_np[name].bucket_counts) == list(ranks_pd[name].bucket_counts), name
    assert ranks_pd["mean radius"].count == 1500 - 15
    assert of(semconv.FEATURE_MISSING, "np")["mean radius"].value == 15
    assert of(semconv.FEATURE_MISSING, "pd")["mean radius"].value == 10
    assert of(semconv.FEATURE_TYPE_MISMATCH, "pd")["mean radius"].value == 5

    def drift(model: str) -> dict[tuple[str, str], float]:
        points = [
            p for p in tel.points(semconv.FEATURE_DRIFT, collected) if p.attributes[semconv.ML_MODEL_NAME] == model
        ]
        return {(p.attributes[semconv.ML_FEATURE_NAME], p.attributes[semconv.ML_DRIFT_METHOD]): p.value for p in points}

    drift_np, drift_pd = drift("np"), drift("pd")
    assert len(drift_np) == 4 * len(NAMES) and drift_np == drift_pd


def test_a_time_window_keeps_drift_exact_with_bounded_memory(tel: InMemoryTelemetry) -> None:
    """A time-only window has no row limit per block: its blocks turn into sketches past k rows."""
    opts = otel_ml.MonitorOptions(reference=REF, drift_window=0, drift_window_seconds=3600.0)
    predict = _model(monitor=opts)
    shifted = LIVE.copy()
    shifted[:, NAMES.index("worst area")] *= 1.5
    for start in range(0, 5000, 1000):
        predict(shifted[start : start + 1000])
    otel_ml.force_flush()
    psi = {f: p.value for f, p in _by_feature(tel.points(semconv.FEATURE_DRIFT), "psi").items()}
    assert psi["worst area"] > 0.2 and max(v for f, v in psi.items() if f != "worst area") < 0.2
    (monitor,) = [m for m in list(runtime.get()._monitors) if m.model == "cancer"]
    assert monitor._numeric_window is not None
    window = monitor._numeric_window[1]
    assert window.rows() == 5000 and window.nbytes < 30 * 17_000  # sketches, not 5000 x 30 raw rows (1.2 MB)


def test_torch_tensors_take_the_numpy_fast_path(tel: InMemoryTelemetry) -> None:
    """After the first call fixes the schema, float CPU tensors are read as numpy views, like arrays."""
    predict = _model(reference=REF)
    rows = torch.tensor(LIVE[:300], dtype=torch.float32)
    predict(rows)
    predict(rows)
    predict(LIVE[:300])
    otel_ml.force_flush()
    ranks = _by_feature(tel.points(semconv.FEATURE_RANK))
    assert {p.count for p in ranks.values()} == {900}
    (monitor,) = [m for m in list(runtime.get()._monitors) if m.model == "cancer"]
    assert monitor._matrix_width == len(NAMES) and monitor.rows_observed == 900


# -- the caller-side buffer -----------------------------------------------------------------------------------
def _monitor(**options: Any) -> InputMonitor:
    """An input monitor of the 30 breast-cancer features, recording its worker batches (rows, reusable)."""
    attrs = {semconv.ML_MODEL_NAME: "buffered"}
    monitor = InputMonitor("buffered", "1", attrs, MonitorOptions(reference=REF, **options))
    monitor.batches = []  # type: ignore[attr-defined]
    process = monitor._process

    def recording(table: Any, spare: bool = False) -> None:
        monitor.batches.append((table.rows, spare))  # type: ignore[attr-defined]
        process(table, spare)

    monitor._process = recording  # type: ignore[method-assign]
    return monitor


def _drained() -> None:
    assert runtime.get().worker.drain(10)


def test_the_buffer_limit_is_the_row_setting_within_two_mebibytes(env: pytest.MonkeyPatch) -> None:
    assert BUFFER_VALUES * 8 == 2 * 1024 * 1024
    assert buffer_limit(1) == 16384  # OTEL_ML_SKETCH_BUFFER_ROWS binds for narrow inputs
    assert buffer_limit(30) == 8738 and buffer_limit(100) == 2621  # the bytes bind for wide ones
    env.setenv(config.OTEL_ML_SKETCH_BUFFER_ROWS, "10")
    config.reload()
    assert buffer_limit(30) == 10


def test_calls_below_the_limit_reach_the_worker_together(tel: InMemoryTelemetry) -> None:
    """1,000-row calls fill one buffer; the worker sorts 8,738 rows at a time, not 1,000."""
    monitor = _monitor()
    for _ in range(20):
        monitor.observe(LIVE[:1000])
    _drained()
    assert monitor.batches == [(8738, True), (8738, True)]  # type: ignore[attr-defined]
    assert monitor.rows_processed == 2 * 8738 and monitor._filled == 20_000 - 2 * 8738
    monitor.observe(TRAIN[:8738])  # a call as large as the buffer goes on its own, as it came
    monitor.flush()
    _drained()
    assert monitor.batches[2:] == [(8738, False), (20_000 - 2 * 8738, True)]  # type: ignore[attr-defined]
    assert monitor.rows_processed == monitor.rows_observed == 28_738
    ranks = _by_feature(tel.points(semconv.FEATURE_RANK))
    assert {p.count for p in ranks.values()} == {28_738}


def test_the_buffer_grows_by_doubling_and_keeps_every_row(tel: InMemoryTelemetry) -> None:
    monitor = _monitor()
    sizes = []
    for _ in range(12):
        monitor.observe(LIVE[:100])
        assert monitor._buffer is not None
        sizes.append(monitor._buffer.shape[0])
    assert sizes == [256, 256, 512, 512, 512, 1024, 1024, 1024, 1024, 1024, 2048, 2048]
    assert np.array_equal(monitor._buffer[:1200], np.tile(LIVE[:100], (12, 1)))  # copied over at each growth
    while monitor.batches == []:  # type: ignore[attr-defined]
        monitor.observe(LIVE[:1000])
    assert monitor._capacity == 8738  # a busy model: its next buffers start at the limit
    monitor.observe(LIVE[:10])
    assert monitor._buffer is not None and monitor._buffer.shape[0] == 8738


def test_a_processed_buffer_is_reused_for_the_next_rows(tel: InMemoryTelemetry) -> None:
    """No fresh 2 MiB (and its page faults) per buffer: the worker hands each one back when done with it."""
    monitor = _monitor()
    for _ in range(9):  # the first buffer fills (8,738 rows) and is queued; 262 rows start a full-size one
        monitor.observe(LIVE[:1000])
    _drained()
    first, current = monitor._spare, monitor._buffer
    assert first is not None and first.shape == (8738, 30)
    assert current is not None and current is not first and current.shape == (8738, 30)
    for _ in range(9):  # 262 + 9,000 rows: the current buffer fills, the last 524 rows go into the first one
        monitor.observe(LIVE[:1000])
    assert monitor._buffer is first and monitor._spare is None
    assert np.array_equal(first[:524], LIVE[476:1000])
    monitor.flush()  # a flush hands over a view of the filled rows: the whole buffer comes back
    _drained()
    assert monitor._spare is first and monitor.rows_processed == 18_000
    assert monitor.batches == [(8738, True), (8738, True), (524, True)]  # type: ignore[attr-defined]


def test_a_buffer_the_window_keeps_is_never_reused(tel: InMemoryTelemetry) -> None:
    """A window block large enough to hold a whole batch keeps the batch's own array: it must not be refilled."""
    monitor = _monitor(drift_window=1_000_000)
    for _ in range(9):
        monitor.observe(LIVE[:1000])
    _drained()
    assert monitor.batches == [(8738, True)]  # type: ignore[attr-defined]
    assert monitor._spare is None
    kept = monitor._buffer
    monitor.observe(LIVE[:10])
    assert monitor._buffer is kept  # the current buffer, never the kept one
    assert monitor._numeric_window is not None and monitor._numeric_window[1].rows() == 8738


def test_a_smaller_buffer_setting_hands_the_buffered_rows_over(tel: InMemoryTelemetry, env: pytest.MonkeyPatch) -> None:
    """Settings re-read while rows are buffered (tests, start-up code): the rows go on, none lost, no error."""
    errors = guard.error_counts()
    monitor = _monitor()
    monitor.observe(LIVE[:500])
    env.setenv(config.OTEL_ML_SKETCH_BUFFER_ROWS, "100")
    config.reload()
    monitor.observe(LIVE[500:550])
    monitor.flush()
    _drained()
    assert monitor.batches == [(500, True), (50, True)]  # type: ignore[attr-defined]
    assert monitor.rows_processed == 550 and guard.error_counts() == errors


def test_a_buffer_read_by_categorical_sketches_is_never_reused(tel: InMemoryTelemetry) -> None:
    """A float column the reference holds as categorical is counted value by value from the buffer's columns."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=2000), "b": rng.integers(0, 3, 2000).astype(float).astype(str)})
    ref = otel_ml.Reference.from_data(frame)
    assert ref.features["b"].kind == "categorical"
    monitor = InputMonitor("mixed", "1", {}, MonitorOptions(reference=ref, feature_names=["a", "b"]))
    rows = np.column_stack((rng.normal(size=1000), rng.integers(0, 3, 1000).astype(float)))
    for _ in range(17):  # 16,384 rows fill the buffer of two features
        monitor.observe(rows)
    _drained()
    assert monitor.rows_processed == 16_384 and monitor._spare is None


def test_a_sketch_task_declares_the_rows_it_holds(tel: InMemoryTelemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker bounds the bytes its queue holds: each batch says how many it pins."""
    worker = runtime.get().worker
    sizes: list[int] = []
    submit = worker.submit

    def recording(task: Any, nbytes: int = 0) -> bool:
        sizes.append(nbytes)
        return submit(task, nbytes)

    monkeypatch.setattr(worker, "submit", recording)
    monitor = _monitor()
    for _ in range(9):
        monitor.observe(LIVE[:1000])
    _drained()
    assert sizes == [8738 * 30 * 8]


# -- counts recorded at collection ------------------------------------------------------------------------
def _rank_totals() -> dict[str, int]:
    """Rows recorded so far in each feature's rank histogram, read from the aggregation without collecting."""
    rank = runtime.get().aggregator._instruments.get(semconv.FEATURE_RANK)
    if rank is None:
        return {}
    assert isinstance(rank, VectorHistogram)
    return {str(attrs[semconv.ML_FEATURE_NAME]): n for attrs, n, _ in rank.totals()}


def test_batch_counts_wait_for_the_next_collection_and_are_recorded_once(tel: InMemoryTelemetry) -> None:
    """With a merging export, the worker adds each batch's rank and quality counts to the monitor's pending
    ones; a collection records them in one pass, and the next collection only what came after."""
    monitor = _monitor()
    batch = TRAIN[:8738].copy()  # the buffer's size: it goes to the worker as it came
    batch[:5, 0] = np.nan
    batch[10:13, 1] = REF.features[NAMES[1]].max + 1.0
    monitor.observe(batch)
    monitor.observe(batch)
    _drained()
    pending = monitor._pending
    assert pending is not None and monitor.rows_processed == 2 * 8738
    assert pending.counts.sum(axis=1).tolist() == [2 * 8733] + [2 * 8738] * 29
    assert pending.missing.tolist() == [10] + [0] * 29
    assert pending.outside.tolist() == [0, 6] + [0] * 28
    assert _rank_totals() == {}  # nothing recorded between collections

    collected = tel.metrics()
    assert monitor._pending is None
    ranks = _by_feature(tel.points(semconv.FEATURE_RANK, collected))
    assert ranks[NAMES[0]].count == 2 * 8733 and ranks[NAMES[2]].count == 2 * 8738
    assert sum(ranks[NAMES[2]].bucket_counts) == 2 * 8738
    assert _by_feature(tel.points(semconv.FEATURE_MISSING, collected))[NAMES[0]].value == 10
    assert _by_feature(tel.points(semconv.FEATURE_OUT_OF_RANGE, collected))[NAMES[1]].value == 6

    monitor.observe(batch)
    _drained()
    collected = tel.metrics()
    assert tel.metrics() and _rank_totals()[NAMES[2]] == 3 * 8738  # a collection with nothing new adds nothing
    assert _by_feature(tel.points(semconv.FEATURE_RANK, collected))[NAMES[2]].count == 3 * 8738
    assert _by_feature(tel.points(semconv.FEATURE_MISSING, collected))[NAMES[0]].value == 15


def test_a_flush_records_the_pending_counts_on_the_worker() -> None:
    """``force_flush`` records them after the rows it hands over, before it scores drift: what an exporter
    that does not collect at once (or a reader of the aggregation) sees is complete."""
    with InMemoryTelemetry():
        monitor = _monitor()
        monitor.observe(LIVE[:300])
        assert monitor._pending is None and _rank_totals() == {}
        monitor.flush()
        _drained()
        assert monitor._pending is None and set(_rank_totals().values()) == {300}


def test_without_a_merging_exporter_each_batch_is_recorded_at_once() -> None:
    """The SDK's own instruments take the counts when no exporter merges otel-ml's aggregation: nothing would
    collect pending counts later."""
    with InMemoryTelemetry(merge=False) as tel:
        assert not runtime.get().aggregator.merging
        monitor = _monitor()
        monitor.observe(TRAIN[:8738])
        _drained()
        assert monitor._pending is None
        ranks = _by_feature(tel.points(semconv.FEATURE_RANK))
        assert {p.count for p in ranks.values()} == {8738}


def test_counts_of_a_replaced_feature_set_are_recorded_before_the_new_ones(tel: InMemoryTelemetry) -> None:
    """Pending counts belong to one reference's features: a batch under another reference records them first."""
    monitor = _monitor()
    monitor.observe(TRAIN[:8738])
    _drained()
    first = monitor._pending
    monitor.reference = otel_ml.Reference.from_data(LIVE, feature_names=NAMES)
    monitor.observe(TRAIN[:8738])
    _drained()
    assert monitor._pending is not None and monitor._pending is not first
    assert set(_rank_totals().values()) == {8738}  # the first batch's, recorded when the second came
    assert {p.count for p in tel.points(semconv.FEATURE_RANK)} == {2 * 8738}


def test_a_forked_child_drops_the_parents_pending_counts(tel: InMemoryTelemetry) -> None:
    monitor = _monitor()
    monitor.observe(TRAIN[:8738])
    _drained()
    assert monitor._pending is not None
    runtime._reset_monitor(monitor)  # what the at-fork hook does to every monitor in the child
    assert monitor._pending is None
    assert tel.points(semconv.FEATURE_RANK) == []


def test_the_batch_plan_is_worked_out_once_per_reference(tel: InMemoryTelemetry) -> None:
    monitor = _monitor()
    for _ in range(3):
        monitor.observe(TRAIN[:8738])
    _drained()
    plan = monitor._plan
    assert plan is not None and plan.reference is REF and len(plan.numeric) == 30 and plan.categorical == []
    monitor.observe(TRAIN[:8738])
    _drained()
    assert monitor._plan is plan
    monitor.reference = otel_ml.Reference.from_data(LIVE, feature_names=NAMES)
    monitor.observe(TRAIN[:8738])
    _drained()
    assert monitor._plan is not plan and monitor._plan.reference is monitor.reference
    assert [f for f, _ in monitor._plan.numeric] == [f for f, _ in plan.numeric]  # the same features' state
