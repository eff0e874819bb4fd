"""The windowed accuracy gauges derived from otel-ml's cumulative aggregation (fake clock, exact values)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import otel_ml
from otel_ml import config, semconv
from otel_ml._core import estimate, runtime
from otel_ml._core.aggregation import Aggregator
from otel_ml._core.estimate import AccuracyEstimator, WindowValues
from otel_ml.testing import InMemoryTelemetry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def agg() -> Iterator[Aggregator]:
    aggregator = Aggregator(InstrumentationScope("test"))
    aggregator.attach()  # merging: values land in otel-ml's own aggregation
    yield aggregator
    aggregator.detach()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _attrs(name: str = "m", version: str = "1", operation: str = "predict_proba") -> dict[str, str]:
    return {semconv.ML_MODEL_NAME: name, semconv.ML_MODEL_VERSION: version, semconv.ML_OPERATION: operation}


def confidences(agg: Aggregator, values: list[float], **attrs: str) -> None:
    a = _attrs(**attrs)
    hist = agg.histogram(semconv.PREDICTION_CONFIDENCE, "1", "", semconv.UNIT_INTERVAL_BUCKETS)
    hist.record(np.asarray(values, dtype=np.float64), a, frozenset(a.items()), None)


def outcomes(agg: Aggregator, correct: int, wrong: int, name: str = "m", version: str = "1") -> None:
    counter = agg.counter(semconv.OUTCOME_COUNT, semconv.OUTCOME_COUNT_UNIT, "")
    for verdict, n in ((True, correct), (False, wrong)):
        a = {semconv.ML_MODEL_NAME: name, semconv.ML_MODEL_VERSION: version, semconv.ML_OUTCOME_CORRECT: verdict}
        counter.add(n, a, frozenset(a.items()))


def gauges(agg: Aggregator, name: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for metric in agg.metrics():
        if metric.name == name:
            for p in metric.data.data_points:
                attrs = p.attributes or {}
                out[(str(attrs[semconv.ML_MODEL_NAME]), str(attrs[semconv.ML_MODEL_VERSION]))] = p.value  # type: ignore[union-attr]
    return out


def test_windowed_mean_confidence_uses_the_newest_checkpoint_a_window_old(agg: Aggregator, clock: Clock) -> None:
    est = AccuracyEstimator(agg, window=300, slots=30, clock=clock)
    confidences(agg, [0.9, 0.8, 0.7, 0.6])
    assert est.derive() == {("m", "1"): WindowValues(pytest.approx(0.75), None, 4, 0)}  # type: ignore[arg-type]
    clock.now += 100
    confidences(agg, [1.0, 1.0])
    assert est.derive()[("m", "1")].estimated_accuracy == pytest.approx(5.0 / 6)  # younger than a window: all
    clock.now += 300  # t=400: the checkpoint at t=100 is the newest one at least 300 s old
    confidences(agg, [0.5, 0.5])
    values = est.derive()[("m", "1")]
    assert values.rows == 2 and values.estimated_accuracy == pytest.approx(0.5)
    assert gauges(agg, semconv.MODEL_ESTIMATED_ACCURACY) == {("m", "1"): pytest.approx(0.5)}


def test_no_new_rows_keeps_the_last_value(agg: Aggregator, clock: Clock) -> None:
    est = AccuracyEstimator(agg, window=60, clock=clock)
    confidences(agg, [0.8, 0.6])
    est.derive()
    clock.now += 600
    est.derive()  # checkpoint at t+600 holds the same totals
    clock.now += 600
    assert est.derive()[("m", "1")] == WindowValues(None, None, 0, 0)
    assert gauges(agg, semconv.MODEL_ESTIMATED_ACCURACY) == {("m", "1"): pytest.approx(0.7)}


def test_operations_are_summed_and_versions_kept_apart(agg: Aggregator, clock: Clock) -> None:
    est = AccuracyEstimator(agg, window=300, clock=clock)
    confidences(agg, [0.9, 0.7], operation="predict_proba")
    confidences(agg, [0.5], operation="decision_function")
    confidences(agg, [0.99], version="2")
    confidences(agg, [0.6], name="other")
    est.derive()
    assert gauges(agg, semconv.MODEL_ESTIMATED_ACCURACY) == {
        ("m", "1"): pytest.approx(0.7),
        ("m", "2"): pytest.approx(0.99),
        ("other", "1"): pytest.approx(0.6),
    }


def test_realised_accuracy_over_the_same_window(agg: Aggregator, clock: Clock) -> None:
    est = AccuracyEstimator(agg, window=300, clock=clock)
    outcomes(agg, correct=9, wrong=1)
    est.derive()
    assert gauges(agg, semconv.MODEL_ACCURACY) == {("m", "1"): 0.9}
    assert gauges(agg, semconv.MODEL_ESTIMATED_ACCURACY) == {}  # labels but no confidences yet
    clock.now += 301
    outcomes(agg, correct=1, wrong=3)
    assert est.derive()[("m", "1")] == WindowValues(None, 0.25, 0, 4)
    assert gauges(agg, semconv.MODEL_ACCURACY) == {("m", "1"): 0.25}


def test_regression_outcomes_do_not_count_towards_accuracy(agg: Aggregator, clock: Clock) -> None:
    est = AccuracyEstimator(agg, window=300, clock=clock)
    counter = agg.counter(semconv.OUTCOME_COUNT, semconv.OUTCOME_COUNT_UNIT, "")
    a = {semconv.ML_MODEL_NAME: "price", semconv.ML_MODEL_VERSION: "1"}
    counter.add(5, a, frozenset(a.items()))
    assert est.totals() == {}  # no confidences, no verdicts: nothing to track
    est.derive()
    assert gauges(agg, semconv.MODEL_ACCURACY) == {}


def test_a_cleared_aggregation_restarts_the_window(agg: Aggregator, clock: Clock) -> None:
    est = AccuracyEstimator(agg, window=300, clock=clock)
    confidences(agg, [0.9] * 10)
    est.derive()
    clock.now += 400
    est.derive()
    agg.clear()  # a forked child / a test: cumulative totals start again from zero
    clock.now += 10
    confidences(agg, [0.4])
    assert est.derive()[("m", "1")] == WindowValues(pytest.approx(0.4), None, 1, 0)  # type: ignore[arg-type]


def test_the_checkpoint_ring_stays_bounded(agg: Aggregator, clock: Clock) -> None:
    est = AccuracyEstimator(agg, window=300, slots=30, clock=clock)
    for _ in range(2000):  # a collection every second for half an hour
        confidences(agg, [0.5])
        est.derive()
        clock.now += 1.0
    ring = est._rings[("m", "1")]
    assert len(ring) <= 32
    assert clock.now - ring[0][0] >= 300  # the baseline is at least one window old
    # one row per second, the last at now - 1: rows after a baseline 300..310 s old
    assert est.derive()[("m", "1")].rows in range(299, 310)


def test_constructor_validates() -> None:
    agg = Aggregator(InstrumentationScope("test"))
    with pytest.raises(ValueError):
        AccuracyEstimator(agg, window=0)
    with pytest.raises(ValueError):
        AccuracyEstimator(agg, window=10, slots=0)


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 300.0), ("120", 120.0), ("0.5", 300.0), ("abc", 300.0), ("-5", 300.0), ("1", 1.0)]
)
def test_window_from_env(raw: str | None, expected: float) -> None:
    env = {} if raw is None else {config.OTEL_ML_ACCURACY_WINDOW: raw}
    assert config.load(env).accuracy_window == expected


def test_installed_once_on_import_as_a_deriver_of_the_runtime() -> None:
    est = estimate.installed()
    assert est is not None
    assert estimate.install() is est
    assert est._aggregator is runtime.get().aggregator
    assert runtime.get().aggregator._derivers.count(est) == 1
    assert est.window == config.settings.accuracy_window


def test_estimate_from_real_predictions_reaches_the_exported_metrics(tel: InMemoryTelemetry) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    est = estimate.install()
    est.reset()

    @otel_ml.instrument(name="iris", version="3")
    def predict_proba(rows: np.ndarray) -> np.ndarray:
        return np.asarray(clf.predict_proba(rows))

    predict_proba(x[:100])
    predict_proba(x[100:101])
    (point,) = tel.points(semconv.MODEL_ESTIMATED_ACCURACY)
    assert dict(point.attributes) == {semconv.ML_MODEL_NAME: "iris", semconv.ML_MODEL_VERSION: "3"}
    assert point.value == pytest.approx(clf.predict_proba(x[:101]).max(axis=1).mean(), abs=1e-12)
    est.reset()
