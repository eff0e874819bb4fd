"""The in-process summary: Prometheus-style quantiles from buckets, and the rendered text after real predictions."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import NumberDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

import otel_ml
from otel_ml import semconv
from otel_ml._core import runtime
from otel_ml.summary import SummaryReader, histogram_quantile
from otel_ml.testing import InMemoryTelemetry

X, Y = load_breast_cancer(return_X_y=True)
CLF = LogisticRegression(max_iter=5000).fit(X, Y)
LATENCY_LINE = re.compile(r"  latency   p50 \d+\.\d{3} ms   p95 \d+\.\d{3} ms   p99 \d+\.\d{3} ms")


# -- histogram_quantile ------------------------------------------------------------------------------------
def _prometheus_quantile(q: float, bounds: list[float], counts: list[int]) -> float:
    """Prometheus' bucketQuantile, transcribed step by step over cumulative counts."""
    total = sum(counts)
    if total == 0:
        return math.nan
    cumulative = list(itertools.accumulate(counts))
    rank = q * total
    b = next(i for i, c in enumerate(cumulative) if c >= rank)
    if b == len(bounds):  # the +Inf bucket
        return bounds[-1]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, below = (0.0, 0) if b == 0 else (bounds[b - 1], cumulative[b - 1])
    return start + (bounds[b] - start) * (rank - below) / (cumulative[b] - below)


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        (0.5, [2, 2, 0, 0], 1.0),  # rank 2 ends bucket (0, 1]
        (0.75, [2, 2, 0, 0], 1.5),  # rank 3: halfway through (1, 2]
        (1.0, [2, 2, 0, 0], 2.0),
        (0.25, [0, 4, 0, 0], 1.25),
        (0.5, [0, 0, 4, 0], 3.0),  # (2, 4]: halfway
        (0.1, [0, 0, 1, 3], 2.8),  # rank 0.4 inside the only finite non-empty bucket (2, 4]
        (0.5, [0, 0, 1, 3], 4.0),  # in the +Inf bucket: the highest finite bound
        (0.99, [1, 0, 0, 99], 4.0),
        (0.01, [1, 0, 0, 99], 1.0),
        (0.5, [1, 0, 0, 1], 1.0),  # rank 1 ends the first bucket; the empty ones after it are skipped
    ],
)
def test_histogram_quantile_on_known_buckets(q: float, counts: list[int], expected: float) -> None:
    bounds = [1.0, 2.0, 4.0]
    assert histogram_quantile(q, bounds, counts) == pytest.approx(expected, rel=1e-12)
    assert _prometheus_quantile(q, bounds, counts) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("q", [0.0, 0.5, 0.99, 1.0])
def test_empty_histogram_quantile_is_nan(q: float) -> None:
    assert math.isnan(histogram_quantile(q, [1.0, 2.0], [0, 0, 0]))
    assert math.isnan(histogram_quantile(q, list(semconv.DURATION_BUCKETS), [0] * 17))


def test_histogram_quantile_matches_prometheus_on_random_histograms() -> None:
    rng = np.random.default_rng(99)
    bounds = list(semconv.DURATION_BUCKETS)
    for _ in range(300):
        counts = rng.integers(0, 20, len(bounds) + 1) * (rng.random(len(bounds) + 1) < 0.4)
        if counts.sum() == 0:
            counts[rng.integers(0, len(counts))] = 1
        for q in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0):
            got = histogram_quantile(q, bounds, counts.tolist())
            assert got == pytest.approx(_prometheus_quantile(q, bounds, counts.tolist()), rel=1e-12), (q, counts)


def test_histogram_quantile_with_a_non_positive_first_bucket() -> None:
    bounds = [-1.0, 0.0, 1.0]
    counts = [4, 0, 0, 0]  # every observation is <= -1
    assert _prometheus_quantile(0.5, bounds, counts) == -1.0
    assert histogram_quantile(0.5, bounds, counts) == -1.0


# -- render ------------------------------------------------------------------------------------------------
def _bar(c: int, n: int) -> str:
    return "#" * round(40 * c / n)


def _confidence_lines(top: np.ndarray) -> list[str]:
    """The four confidence rows: (0, 0.5], (0.5, 0.8], (0.8, 0.9], (0.9, 1.0] (the last also takes > 1)."""
    n = top.size
    groups = [
        ("(0.00, 0.50]", top <= 0.5),
        ("(0.50, 0.80]", (top > 0.5) & (top <= 0.8)),
        ("(0.80, 0.90]", (top > 0.8) & (top <= 0.9)),
        ("(0.90, 1.00]", top > 0.9),
    ]
    return [f"    {label}  {int(c.sum()):6d}  {_bar(int(c.sum()), n)}" for label, c in groups]


def test_render_without_predictions(tel: InMemoryTelemetry) -> None:
    assert isinstance(tel.reader, SummaryReader)
    assert tel.reader.render() == "otel-ml: no predictions recorded."


def test_render_after_real_predictions(tel: InMemoryTelemetry) -> None:
    assert isinstance(tel.reader, SummaryReader)

    @otel_ml.instrument(name="bc", version="2")
    def predict_proba(x: np.ndarray) -> np.ndarray:
        if x.shape[1] != X.shape[1]:
            raise ValueError("wrong number of features")
        return CLF.predict_proba(x)

    @otel_ml.instrument(name="bc-labels", version="1")
    def predict(x: np.ndarray) -> np.ndarray:
        return CLF.predict(x)

    first, second, third = X[:120], X[120:121], X[200:260]
    for batch in (first, second, third):
        predict_proba(batch)
    for _ in range(2):
        with pytest.raises(ValueError):
            predict_proba(X[:5, :3])
    predict(X[300:400])

    tops = [CLF.predict_proba(b).max(axis=1) for b in (first, second, third)]
    top = np.concatenate(tops)
    mean = sum(float(t.sum()) for t in tops) / top.size
    winners = np.bincount(CLF.predict_proba(np.concatenate([first, second, third])).argmax(axis=1), minlength=2)
    labels = np.bincount(CLF.predict(X[300:400]), minlength=2)

    def classes(counts: np.ndarray) -> str:
        order = sorted(range(2), key=lambda k: -counts[k])
        return "  classes   " + ", ".join(f"{k}: {counts[k]}" for k in order if counts[k])

    assert winners[0] != winners[1] and labels[0] != labels[1]  # no ties: the class order is well defined

    lines = tel.reader.render().split("\n")
    assert lines[0] == "model bc 2: 5 calls, 181 rows predicted, 2 errors"
    assert LATENCY_LINE.fullmatch(lines[1]), lines[1]
    assert lines[2] == f"  confidence mean {mean:.3f} over 181 rows"
    assert lines[3:7] == _confidence_lines(top)
    assert lines[7] == classes(winners)
    assert lines[8] == "model bc-labels 1: 1 calls, 100 rows predicted, 0 errors"
    assert LATENCY_LINE.fullmatch(lines[9]), lines[9]
    assert lines[10] == classes(labels)
    assert len(lines) == 11


def test_render_quantiles_come_from_the_duration_buckets(tel: InMemoryTelemetry) -> None:
    assert isinstance(tel.reader, SummaryReader)

    @otel_ml.instrument(name="fixed")
    def predict(x: list[int]) -> list[int]:
        return x

    for _ in range(20):
        predict([1])
    (point,) = tel.points(semconv.PREDICTION_DURATION)
    bounds, counts = list(point.explicit_bounds), list(point.bucket_counts)
    expected = [histogram_quantile(q, bounds, counts) * 1e3 for q in (0.5, 0.95, 0.99)]
    latency = tel.reader.render().split("\n")[1]
    assert latency == f"  latency   p50 {expected[0]:.3f} ms   p95 {expected[1]:.3f} ms   p99 {expected[2]:.3f} ms"


def test_summary_reader_with_hand_built_providers() -> None:
    rt = runtime.get()
    rt.aggregator.clear()
    resource = Resource.create({"service.name": "summary-test"})
    reader = SummaryReader(resource)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    try:
        rt.use(tracer_provider, meter_provider)
        assert rt.aggregator.merging is True

        @otel_ml.instrument(name="hand", version="0.1")
        def predict_proba(x: np.ndarray) -> np.ndarray:
            return CLF.predict_proba(x)

        predict_proba(X[:10])
        predict_proba(X[10:30])
        (count,) = list(reader.collect_metrics()[semconv.PREDICTION_COUNT].data.data_points)
        assert isinstance(count, NumberDataPoint) and count.value == 30
        text = reader.render().split("\n")
        assert text[0] == "model hand 0.1: 2 calls, 30 rows predicted, 0 errors"
        assert text[2].endswith(" over 30 rows")
    finally:
        rt.use(None, None)
        meter_provider.shutdown()
        tracer_provider.shutdown()
        rt.aggregator.clear()
    assert rt.aggregator.merging is False
