"""otel-ml's own aggregation: bucketing, exemplars, merging into exports, delta temporality, the SDK fallback."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.metrics import Histogram as SdkHistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

import otel_ml
from otel_ml import config, semconv
from otel_ml._core import aggregation, guard, runtime
from otel_ml._core.aggregation import (
    TABLE_MIN_VALUES,
    Aggregator,
    DeltaState,
    MergingMetricExporter,
    VectorHistogram,
    bucket_table,
    prefers_delta,
)
from otel_ml.sketch.quantile import rank_buckets
from otel_ml.testing import InMemoryTelemetry

SCOPE = InstrumentationScope(semconv.SCOPE_NAME, "0.0.test")
RESOURCE = Resource.create({"service.name": "aggregation-test"})
BOUNDS = (0.0, 0.25, 0.5, 1.0, 2.5)
ATTRS: dict[str, Any] = {semconv.ML_MODEL_NAME: "m", semconv.ML_MODEL_VERSION: "1"}
KEY = frozenset(ATTRS.items())
OTHER_ATTRS: dict[str, Any] = {semconv.ML_MODEL_NAME: "other", semconv.ML_MODEL_VERSION: "2"}
OTHER_KEY = frozenset(OTHER_ATTRS.items())

TRACE_A = 0xF0E1D2C3B4A5968778695A4B3C2D1E0F  # high bit set in both 64-bit halves
SPAN_A = 0xFEDCBA9876543210
TRACE_B = 0x0123456789ABCDEF0011223344556677
SPAN_B = 0x00000000000000A1
SAMPLED_A = SpanContext(TRACE_A, SPAN_A, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
SAMPLED_B = SpanContext(TRACE_B, SPAN_B, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
UNSAMPLED = SpanContext(TRACE_B, SPAN_B, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))

X, Y = load_breast_cancer(return_X_y=True)
CLF = LogisticRegression(max_iter=5000).fit(X, Y)


# -- helpers ------------------------------------------------------------------------------------------------
def _reference_counts(values: Any, bounds: tuple[float, ...]) -> list[int]:
    """Upper-inclusive (Prometheus ``le``) bucket counts, the slow and obvious way."""
    counts = [0] * (len(bounds) + 1)
    for v in values:
        for i, b in enumerate(bounds):
            if v <= b:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    return counts


def _merging_aggregator() -> Aggregator:
    agg = Aggregator(SCOPE)
    agg.attach()
    return agg


def _histogram(bounds: tuple[float, ...] = BOUNDS) -> tuple[Aggregator, VectorHistogram]:
    agg = _merging_aggregator()
    return agg, agg.histogram("test.hist", "1", "a test histogram", bounds)


def _point(hist: VectorHistogram) -> HistogramDataPoint:
    metric = hist.snapshot(time.time_ns())
    assert metric is not None
    (point,) = metric.data.data_points
    assert isinstance(point, HistogramDataPoint)
    return point


def _by_name(metrics: list[Metric]) -> dict[str, Any]:
    return {m.name: m for m in metrics}


def _points_by_series(metric: Any) -> dict[frozenset[tuple[str, Any]], Any]:
    return {frozenset((p.attributes or {}).items()): p for p in metric.data.data_points}


def _sdk_metric(name: str, value: int) -> Metric:
    point = NumberDataPoint(attributes={"k": "v"}, start_time_unix_nano=1, time_unix_nano=2, value=value)
    data = Sum(data_points=[point], aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True)
    return Metric(name=name, description="", unit="1", data=data)


class CapturingExporter(MetricExporter):
    """Keeps every export in memory."""

    def __init__(self, preferred_temporality: dict[type, AggregationTemporality] | None = None) -> None:
        super().__init__(preferred_temporality=preferred_temporality)
        self.exports: list[MetricsData] = []
        self.flushed = 0
        self.shut_down = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self.flushed += 1
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shut_down = True


def _exported(data: MetricsData, scope_name: str = semconv.SCOPE_NAME) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name == scope_name:
                out.update({m.name: m for m in sm.metrics})
    return out


# -- bucket assignment -------------------------------------------------------------------------------------
BUCKET_SETS = {
    "duration": semconv.DURATION_BUCKETS,
    "unit": semconv.UNIT_INTERVAL_BUCKETS,
    "value": semconv.VALUE_BUCKETS,
    "small": BOUNDS,
}


@pytest.mark.parametrize("path", ["record", "record_one"])
@pytest.mark.parametrize("bucket_set", sorted(BUCKET_SETS))
def test_a_value_exactly_on_a_bound_goes_to_that_bounds_bucket(path: str, bucket_set: str) -> None:
    bounds = BUCKET_SETS[bucket_set]
    for i, b in enumerate(bounds):
        below, above = math.nextafter(b, -math.inf), math.nextafter(b, math.inf)
        for value, expected_bucket in ((b, i), (below, i), (above, i + 1)):
            _, hist = _histogram(bounds)
            if path == "record":
                hist.record(np.array([value]), ATTRS, KEY, None)
            else:
                hist.record_one(value, ATTRS, KEY, None)
            expected = [0] * (len(bounds) + 1)
            expected[expected_bucket] = 1
            assert _point(hist).bucket_counts == expected, (bucket_set, b, value)


@pytest.mark.parametrize("bucket_set", sorted(BUCKET_SETS))
def test_record_and_record_one_agree_with_a_reference_on_random_values(bucket_set: str) -> None:
    bounds = BUCKET_SETS[bucket_set]
    rng = np.random.default_rng(20240611)
    lo, hi = bounds[0] - abs(bounds[0]) - 1.0, bounds[-1] * 1.5 + 1.0
    values = np.concatenate(
        [
            rng.uniform(lo, hi, 3000),
            rng.choice(np.asarray(bounds), 500),  # exactly on bounds
            np.nextafter(rng.choice(np.asarray(bounds), 200), np.inf),
            np.nextafter(rng.choice(np.asarray(bounds), 200), -np.inf),
        ]
    )
    rng.shuffle(values)
    expected = _reference_counts(values.tolist(), bounds)

    _, vector = _histogram(bounds)
    for chunk in np.array_split(values, 7):
        vector.record(chunk, ATTRS, KEY, None)
    _, scalar = _histogram(bounds)
    for v in values.tolist():
        scalar.record_one(v, ATTRS, KEY, None)

    pv, ps = _point(vector), _point(scalar)
    assert pv.bucket_counts == ps.bucket_counts == expected
    assert pv.count == ps.count == values.size
    assert pv.min == ps.min == float(values.min())
    assert pv.max == ps.max == float(values.max())
    assert pv.sum == pytest.approx(math.fsum(values.tolist()), rel=1e-12)
    assert ps.sum == pytest.approx(math.fsum(values.tolist()), rel=1e-12)
    assert list(pv.explicit_bounds) == list(ps.explicit_bounds) == list(bounds)


SPREAD_BOUNDS = {
    "unit": semconv.UNIT_INTERVAL_BUCKETS,
    "tenths": tuple(round(0.1 * i, 1) for i in range(1, 11)),
    "sevenths": tuple(i / 7 for i in range(1, 15)),
    "integers": (1.0, 2.0, 3.0, 4.0, 5.0),
    "uneven": (0.3, 0.5, 0.9, 2.0, 7.5),
}


@pytest.mark.parametrize(
    ("bounds", "tabled"),
    [
        (semconv.UNIT_INTERVAL_BUCKETS, True),
        ((0.3, 0.5, 0.9, 2.0, 7.5), True),
        (semconv.DURATION_BUCKETS, False),  # 0.1 ms buckets are far narrower than a cell of a 20 s grid
        (semconv.VALUE_BUCKETS, False),  # negative bounds
        (semconv.ABSOLUTE_ERROR_BUCKETS, False),  # a bound at 0
        (tuple(i / 200 for i in range(1, 201)), False),  # more buckets than an int8 table indexes
        ((), False),
    ],
)
def test_a_lookup_table_only_for_positive_spread_out_bounds(bounds: tuple[float, ...], tabled: bool) -> None:
    assert (bucket_table(np.asarray(bounds, dtype=np.float64)) is not None) is tabled
    _, hist = _histogram(bounds) if bounds else (None, None)
    if hist is not None:
        assert (hist._table is not None) is tabled


def _near(points: np.ndarray, ulps: int) -> np.ndarray:
    """Every double within ``ulps`` steps of each point, the points included."""
    out = [points]
    up, down = points.copy(), points.copy()
    for _ in range(ulps):
        up, down = np.nextafter(up, np.inf), np.nextafter(down, -np.inf)
        out += [up, down]
    return np.concatenate(out)


@pytest.mark.parametrize("name", sorted(SPREAD_BOUNDS))
def test_table_bucketing_equals_a_binary_search_on_every_hard_value(name: str) -> None:
    bounds = SPREAD_BOUNDS[name]
    _, hist = _histogram(bounds)
    assert hist._table is not None
    scale = hist._table[0]
    b = hist.bounds
    rng = np.random.default_rng(5)
    cell_edges = np.arange(0, 4097) / scale  # where the grid's cells meet
    values = np.concatenate(
        [
            rng.uniform(-0.5 * b[-1], 3 * b[-1], 50_000),
            _near(b, 300),  # on and around every bound, where v * scale rounds
            _near(np.array([2 * b[-1], 0.0]), 50),  # the clip edge, and zero from both sides
            _near(cell_edges, 2),
            [-0.0, 5e-324, -5e-324, 1e300, -1e300, float(np.finfo(np.float64).max)],
        ]
    )
    expected = np.searchsorted(b, values, side="left")
    assert values.size >= TABLE_MIN_VALUES
    assert np.array_equal(hist.buckets(values), expected)
    assert np.array_equal(hist.buckets(values[:1000]), expected[:1000])  # a small array: the binary search


def test_record_and_record_one_give_identical_sums_when_the_sum_is_exact() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(-4096, 4096, 2000) / 1024.0  # dyadic: every partial sum is exact in float64
    _, vector = _histogram()
    _, scalar = _histogram()
    vector.record(values, ATTRS, KEY, None)
    for v in values.tolist():
        scalar.record_one(v, ATTRS, KEY, None)
    pv, ps = _point(vector), _point(scalar)
    assert pv.sum == ps.sum == math.fsum(values.tolist())
    assert (pv.count, pv.min, pv.max, pv.bucket_counts) == (ps.count, ps.min, ps.max, ps.bucket_counts)


def test_histogram_state_is_cumulative_per_series() -> None:
    _, hist = _histogram()
    assert hist.snapshot(time.time_ns()) is None
    hist.record(np.array([], dtype=np.float64), ATTRS, KEY, None)  # nothing recorded: still no series
    assert hist.snapshot(time.time_ns()) is None
    hist.record(np.array([0.1, 0.5]), ATTRS, KEY, None)
    hist.record_one(3.0, ATTRS, KEY, None)
    hist.record(np.array([-1.0]), ATTRS, KEY, None)
    hist.record_one(0.75, OTHER_ATTRS, OTHER_KEY, None)

    metric: Any = hist.snapshot(time.time_ns())
    assert metric is not None
    assert metric.data.aggregation_temporality == AggregationTemporality.CUMULATIVE
    points = _points_by_series(metric)
    assert set(points) == {KEY, OTHER_KEY}
    mine, other = points[KEY], points[OTHER_KEY]
    assert mine.attributes == ATTRS
    assert (mine.count, mine.sum, mine.min, mine.max) == (4, 2.6, -1.0, 3.0)
    assert mine.bucket_counts == [1, 1, 1, 0, 0, 1]
    assert (other.count, other.sum, other.min, other.max) == (1, 0.75, 0.75, 0.75)
    assert other.bucket_counts == [0, 0, 0, 1, 0, 0]


# -- exemplars ---------------------------------------------------------------------------------------------
def test_exemplars_keep_the_latest_sampled_value_per_touched_bucket() -> None:
    _, hist = _histogram()
    before = time.time_ns()
    # buckets: 0.1 -> 1, 0.2 -> 1, 0.7 -> 3, 3.0 -> 5 (+Inf), 0.3 -> 2
    hist.record(np.array([0.1, 0.2, 0.7, 3.0, 0.3]), ATTRS, KEY, SAMPLED_A)
    after = time.time_ns()

    exemplars = _point(hist).exemplars
    assert [e.value for e in exemplars] == [0.2, 0.3, 0.7, 3.0]
    assert all((e.trace_id, e.span_id) == (TRACE_A, SPAN_A) for e in exemplars)
    assert all(before <= e.time_unix_nano <= after for e in exemplars)
    assert all(e.filtered_attributes is None for e in exemplars)

    hist.record_one(0.4, ATTRS, KEY, SAMPLED_B)  # bucket 2 now belongs to span B
    hist.record(np.array([0.05, 4.0]), ATTRS, KEY, UNSAMPLED)  # not sampled: exemplars untouched
    hist.record(np.array([0.06]), ATTRS, KEY, None)
    hist.record_one(5.0, ATTRS, KEY, None)

    point = _point(hist)
    assert point.count == 10
    got = [(e.value, e.trace_id, e.span_id) for e in point.exemplars]
    assert got == [(0.2, TRACE_A, SPAN_A), (0.4, TRACE_B, SPAN_B), (0.7, TRACE_A, SPAN_A), (3.0, TRACE_A, SPAN_A)]


def test_a_later_sampled_array_takes_over_only_the_buckets_it_hits() -> None:
    _, hist = _histogram()
    hist.record(np.array([0.1, 0.2, 0.7, 3.0, 0.3]), ATTRS, KEY, SAMPLED_A)  # buckets 1, 1, 3, 5, 2
    hist.record(np.array([0.25, 5.0, 0.6, 4.0]), ATTRS, KEY, SAMPLED_B)  # buckets 1, 5, 3, 5
    got = [(e.value, e.trace_id, e.span_id) for e in _point(hist).exemplars]
    assert got == [(0.25, TRACE_B, SPAN_B), (0.3, TRACE_A, SPAN_A), (0.6, TRACE_B, SPAN_B), (4.0, TRACE_B, SPAN_B)]


def test_record_one_exemplar_carries_the_span_ids() -> None:
    _, hist = _histogram()
    hist.record_one(1.0, ATTRS, KEY, SAMPLED_A)  # exactly on a bound: bucket 3
    hist.record_one(2.0, ATTRS, KEY, SAMPLED_B)  # bucket 4
    hist.record_one(0.9, ATTRS, KEY, SAMPLED_B)  # bucket 3 again: the latest wins
    point = _point(hist)
    assert point.bucket_counts == [0, 0, 0, 2, 1, 0]
    assert [(e.value, e.trace_id, e.span_id) for e in point.exemplars] == [
        (0.9, TRACE_B, SPAN_B),
        (2.0, TRACE_B, SPAN_B),
    ]


def test_no_exemplars_for_unsampled_or_missing_span_contexts() -> None:
    _, hist = _histogram()
    hist.record(np.array([0.1, 0.7, 3.0]), ATTRS, KEY, UNSAMPLED)
    hist.record_one(0.3, ATTRS, KEY, UNSAMPLED)
    hist.record(np.array([0.2]), ATTRS, KEY, None)
    hist.record_one(1.5, ATTRS, KEY, None)
    point = _point(hist)
    assert point.count == 6
    assert point.exemplars == []


def test_record_one_keeps_the_exemplar_time_it_is_given() -> None:
    _, hist = _histogram()
    hist.record_one(0.3, ATTRS, KEY, SAMPLED_A, 1_234_567)
    (exemplar,) = _point(hist).exemplars
    assert exemplar.time_unix_nano == 1_234_567 and exemplar.value == 0.3


# -- deferred records --------------------------------------------------------------------------------------
def test_deferred_records_are_applied_in_order_before_a_collection() -> None:
    agg = _merging_aggregator()
    counter = agg.counter("test.count", "1", "")
    applied: list[int] = []

    def apply(n: int) -> None:
        applied.append(n)
        counter.add(n, ATTRS, KEY)

    for n in (1, 2, 3):
        agg.defer(apply, n)
    assert applied == [] and counter.snapshot(time.time_ns()) is None  # nothing yet
    (metric,) = agg.metrics()
    assert applied == [1, 2, 3] and metric.data.data_points[0].value == 6
    assert agg.metrics()[0].data.data_points[0].value == 6  # each record once
    agg.defer(apply, 4)
    agg.clear()  # a forked child, a test: the records go with the series
    assert agg.metrics() == [] and applied == [1, 2, 3]


def test_a_full_log_goes_to_the_background_once_and_past_four_times_the_limit_to_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aggregation, "DEFERRED_LIMIT", 4)
    agg = _merging_aggregator()
    applied: list[int] = []
    queued: list[Any] = []
    accept = [True]

    def background(task: Any) -> bool:
        if accept[0]:
            queued.append(task)
        return accept[0]

    agg.background = background
    for n in range(6):
        agg.defer(applied.append, n)
    assert len(queued) == 1 and applied == []  # asked once at 4 waiting, not again while it is queued
    queued.pop()()  # the worker runs it: everything waiting so far
    assert applied == list(range(6)) and not agg.deferred
    accept[0] = False  # the worker is full from now on: nothing is lost, the records wait
    for n in range(6, 23):
        agg.defer(applied.append, n)
    assert applied == list(range(22)) and len(agg.deferred) == 1  # the 16th waiting (4 x 4) applied them all
    agg.metrics()
    assert applied == list(range(23)) and queued == []


def test_records_deferred_by_many_threads_are_each_applied_once() -> None:
    agg = _merging_aggregator()
    counter = agg.counter("test.count", "1", "")
    agg.background = lambda task: threading.Thread(target=task).start() is None  # a busy background thread

    def apply(n: int) -> None:
        counter.add(n, ATTRS, KEY)

    def caller() -> None:
        for _ in range(5000):
            agg.defer(apply, 1)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    collecting = True

    def collector() -> None:
        while collecting:
            agg.metrics()

    reader = threading.Thread(target=collector)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    collecting = False
    reader.join()
    assert agg.metrics()[0].data.data_points[0].value == 20_000


# -- counters ----------------------------------------------------------------------------------------------
def test_counter_adds_per_series_and_is_monotonic_cumulative() -> None:
    agg = _merging_aggregator()
    counter = agg.counter("test.count", "{x}", "a test counter")
    assert agg.counter("test.count", "{x}", "again") is counter
    assert counter.snapshot(time.time_ns()) is None
    counter.add(3, ATTRS, KEY)
    counter.add(4, ATTRS, KEY)
    counter.add(10, OTHER_ATTRS, OTHER_KEY)
    metric: Any = counter.snapshot(time.time_ns())
    assert metric is not None
    assert metric.data.is_monotonic is True
    assert metric.data.aggregation_temporality == AggregationTemporality.CUMULATIVE
    points = _points_by_series(metric)
    assert {k: p.value for k, p in points.items()} == {KEY: 7, OTHER_KEY: 10}


def test_nothing_is_kept_when_no_sink_merges_and_there_is_no_fallback() -> None:
    agg = Aggregator(SCOPE)
    assert agg.merging is False
    hist = agg.histogram("test.hist", "1", "", BOUNDS)
    counter = agg.counter("test.count", "1", "")
    hist.record(np.array([0.1]), ATTRS, KEY, SAMPLED_A)
    hist.record_one(0.1, ATTRS, KEY, SAMPLED_A)
    counter.add(1, ATTRS, KEY)
    assert agg.metrics() == []


# -- Aggregator.merge --------------------------------------------------------------------------------------
def _filled_aggregator() -> Aggregator:
    agg = _merging_aggregator()
    agg.counter("ml.test.count", "1", "").add(5, ATTRS, KEY)
    agg.histogram("ml.test.hist", "1", "", BOUNDS).record(np.array([0.1, 0.9]), ATTRS, KEY, None)
    return agg


@pytest.mark.parametrize("data", [None, MetricsData(resource_metrics=[])], ids=["none", "empty"])
def test_merge_into_nothing_creates_a_resource_with_our_scope(data: MetricsData | None) -> None:
    merged = _filled_aggregator().merge(data, RESOURCE)
    (rm,) = merged.resource_metrics
    assert rm.resource is RESOURCE
    (sm,) = rm.scope_metrics
    assert sm.scope is SCOPE
    assert sorted(m.name for m in sm.metrics) == ["ml.test.count", "ml.test.hist"]
    metrics = _by_name(list(sm.metrics))
    assert metrics["ml.test.count"].data.data_points[0].value == 5
    assert metrics["ml.test.hist"].data.data_points[0].bucket_counts == [0, 1, 0, 1, 0, 0]


def test_merge_appends_into_an_existing_otel_ml_scope() -> None:
    sdk_scope = InstrumentationScope(semconv.SCOPE_NAME, "0.1.0")
    other_scope = InstrumentationScope("someone.else", "9")
    own_resource = Resource.create({"service.name": "app"})
    sdk_ours, sdk_other = _sdk_metric(semconv.TELEMETRY_DROPPED, 0), _sdk_metric("app.requests", 12)
    data = MetricsData(
        resource_metrics=[
            ResourceMetrics(
                resource=own_resource,
                scope_metrics=[
                    ScopeMetrics(scope=other_scope, metrics=[sdk_other], schema_url=""),
                    ScopeMetrics(scope=sdk_scope, metrics=[sdk_ours], schema_url=""),
                ],
                schema_url="",
            )
        ]
    )
    merged = _filled_aggregator().merge(data, RESOURCE)
    (rm,) = merged.resource_metrics
    assert rm.resource is own_resource  # the export's own resource is kept
    assert [sm.scope.name for sm in rm.scope_metrics] == ["someone.else", semconv.SCOPE_NAME]  # no second scope
    other, ours = rm.scope_metrics
    assert other.metrics == [sdk_other]
    assert ours.scope is sdk_scope
    assert ours.metrics[0] is sdk_ours
    assert sorted(m.name for m in ours.metrics[1:]) == ["ml.test.count", "ml.test.hist"]
    # the input was not modified
    assert data.resource_metrics[0].scope_metrics[1].metrics == [sdk_ours]
    assert len(data.resource_metrics[0].scope_metrics) == 2


def test_merge_adds_our_scope_beside_other_scopes_of_the_first_resource() -> None:
    other_scope = InstrumentationScope("someone.else", "9")
    first = ResourceMetrics(
        resource=Resource.create({"service.name": "first"}),
        scope_metrics=[ScopeMetrics(scope=other_scope, metrics=[_sdk_metric("app.requests", 1)], schema_url="")],
        schema_url="",
    )
    second = ResourceMetrics(
        resource=Resource.create({"service.name": "second"}),
        scope_metrics=[ScopeMetrics(scope=other_scope, metrics=[_sdk_metric("app.requests", 2)], schema_url="")],
        schema_url="",
    )
    merged = _filled_aggregator().merge(MetricsData(resource_metrics=[first, second]), RESOURCE)
    rm0, rm1 = merged.resource_metrics
    assert rm0.resource is first.resource
    assert [sm.scope.name for sm in rm0.scope_metrics] == ["someone.else", semconv.SCOPE_NAME]
    assert rm0.scope_metrics[1].scope is SCOPE
    assert sorted(m.name for m in rm0.scope_metrics[1].metrics) == ["ml.test.count", "ml.test.hist"]
    assert rm1 is second
    assert len(first.scope_metrics) == 1


def test_merge_with_nothing_recorded_returns_the_data_unchanged() -> None:
    agg = _merging_aggregator()
    data = MetricsData(resource_metrics=[])
    assert agg.merge(data, RESOURCE) is data
    assert agg.merge(None, RESOURCE) == MetricsData(resource_metrics=[])


# -- DeltaState --------------------------------------------------------------------------------------------
def test_delta_state_turns_cumulative_histograms_and_sums_into_deltas() -> None:
    agg = _merging_aggregator()
    hist = agg.histogram("ml.test.hist", "1", "", BOUNDS)
    counter = agg.counter("ml.test.count", "1", "")
    delta = DeltaState()

    # collection 1: everything is new, values pass through as they are
    hist.record(np.array([0.1, 0.7]), ATTRS, KEY, None)
    counter.add(5, ATTRS, KEY)
    counter.add(2, OTHER_ATTRS, OTHER_KEY)
    first = _by_name(delta.apply(agg.metrics()))
    assert set(first) == {"ml.test.hist", "ml.test.count"}
    assert all(m.data.aggregation_temporality == AggregationTemporality.DELTA for m in first.values())
    (h1,) = first["ml.test.hist"].data.data_points
    assert (h1.count, h1.sum, h1.bucket_counts) == (2, pytest.approx(0.8), [0, 1, 0, 1, 0, 0])
    assert {k: p.value for k, p in _points_by_series(first["ml.test.count"]).items()} == {KEY: 5, OTHER_KEY: 2}

    # collection 2: only the new values; the unchanged counter series is left out
    hist.record(np.array([3.0]), ATTRS, KEY, None)
    counter.add(4, ATTRS, KEY)
    second = _by_name(delta.apply(agg.metrics()))
    (h2,) = second["ml.test.hist"].data.data_points
    assert (h2.count, h2.sum, h2.bucket_counts) == (1, pytest.approx(3.0), [0, 0, 0, 0, 0, 1])
    assert h2.start_time_unix_nano == h1.time_unix_nano
    c2 = _points_by_series(second["ml.test.count"])
    assert {k: p.value for k, p in c2.items()} == {KEY: 4}
    assert c2[KEY].start_time_unix_nano == _points_by_series(first["ml.test.count"])[KEY].time_unix_nano
    assert all(m.data.aggregation_temporality == AggregationTemporality.DELTA for m in second.values())

    # collection 3: the histogram is unchanged (omitted entirely), the other counter series moved
    counter.add(1, OTHER_ATTRS, OTHER_KEY)
    third = _by_name(delta.apply(agg.metrics()))
    assert set(third) == {"ml.test.count"}
    assert {k: p.value for k, p in _points_by_series(third["ml.test.count"]).items()} == {OTHER_KEY: 1}

    # and the cumulative state itself is untouched
    (cumulative,) = _by_name(agg.metrics())["ml.test.hist"].data.data_points
    assert (cumulative.count, cumulative.bucket_counts) == (3, [0, 1, 0, 1, 0, 1])


def test_delta_state_emits_nothing_when_nothing_changed() -> None:
    agg = _merging_aggregator()
    agg.counter("ml.test.count", "1", "").add(1, ATTRS, KEY)
    agg.histogram("ml.test.hist", "1", "", BOUNDS).record_one(0.3, ATTRS, KEY, None)
    delta = DeltaState()
    assert len(delta.apply(agg.metrics())) == 2
    assert delta.apply(agg.metrics()) == []
    assert delta.apply(agg.metrics()) == []


def test_delta_histogram_points_omit_min_and_max_they_cannot_know() -> None:
    agg = _merging_aggregator()
    hist = agg.histogram("ml.test.hist", "1", "", BOUNDS)
    delta = DeltaState()
    hist.record_one(0.1, ATTRS, KEY, None)
    delta.apply(agg.metrics())
    hist.record_one(0.9, ATTRS, KEY, None)
    (point,) = _by_name(delta.apply(agg.metrics()))["ml.test.hist"].data.data_points
    assert (point.count, point.sum) == (1, pytest.approx(0.9))
    # OTLP min/max cover the point's own window; only cumulative extremes are kept, so they are omitted
    assert (point.min, point.max) == (None, None)


# -- MergingMetricExporter ---------------------------------------------------------------------------------
def test_merging_exporter_adds_our_metrics_to_each_export() -> None:
    agg = _merging_aggregator()
    agg.detach()
    assert agg.merging is False
    inner = CapturingExporter()
    exporter = MergingMetricExporter(inner, agg, RESOURCE)
    assert agg.merging is True
    counter = agg.counter(semconv.PREDICTION_COUNT, semconv.PREDICTION_COUNT_UNIT, "Rows predicted")
    counter.add(7, ATTRS, KEY)

    app_metric = _sdk_metric("app.requests", 3)
    app_rm = ResourceMetrics(
        resource=RESOURCE,
        scope_metrics=[ScopeMetrics(scope=InstrumentationScope("app"), metrics=[app_metric], schema_url="")],
        schema_url="",
    )
    assert exporter.export(MetricsData(resource_metrics=[app_rm])) == MetricExportResult.SUCCESS
    counter.add(3, ATTRS, KEY)
    assert exporter.export(MetricsData(resource_metrics=[])) == MetricExportResult.SUCCESS

    first, second = inner.exports
    assert _exported(first, "app") == {"app.requests": app_metric}
    (p1,) = _exported(first)[semconv.PREDICTION_COUNT].data.data_points
    (p2,) = _exported(second)[semconv.PREDICTION_COUNT].data.data_points
    assert (p1.value, p2.value) == (7, 10)  # cumulative by default
    assert _exported(second)[semconv.PREDICTION_COUNT].unit == "{prediction}"
    assert second.resource_metrics[0].resource is RESOURCE
    assert exporter.force_flush() is True
    assert inner.flushed == 1


def test_merging_exporter_skips_empty_exports() -> None:
    inner = CapturingExporter()
    exporter = MergingMetricExporter(inner, Aggregator(SCOPE), RESOURCE)
    assert exporter.export(MetricsData(resource_metrics=[])) == MetricExportResult.SUCCESS
    assert inner.exports == []


def test_merging_exporter_sends_deltas_to_a_delta_preferring_exporter() -> None:
    agg = Aggregator(SCOPE)
    inner = CapturingExporter({SdkHistogramInstrument: AggregationTemporality.DELTA})
    assert prefers_delta(inner) is True
    assert prefers_delta(CapturingExporter()) is False
    exporter = MergingMetricExporter(inner, agg, RESOURCE)
    assert (exporter._preferred_temporality or {})[SdkHistogramInstrument] == AggregationTemporality.DELTA
    hist = agg.histogram(semconv.PREDICTION_CONFIDENCE, "1", "", semconv.UNIT_INTERVAL_BUCKETS)
    counter = agg.counter(semconv.PREDICTION_COUNT, "1", "")

    hist.record(np.array([0.95, 0.95, 0.5]), ATTRS, KEY, None)
    counter.add(3, ATTRS, KEY)
    exporter.export(MetricsData(resource_metrics=[]))
    hist.record(np.array([0.55]), ATTRS, KEY, None)
    counter.add(1, ATTRS, KEY)
    exporter.export(MetricsData(resource_metrics=[]))
    exporter.export(MetricsData(resource_metrics=[]))  # nothing new: nothing to send

    assert len(inner.exports) == 2
    first, second = (_exported(e) for e in inner.exports)
    for metrics in (first, second):
        assert {m.data.aggregation_temporality for m in metrics.values()} == {AggregationTemporality.DELTA}
    (h1,), (h2,) = (
        first[semconv.PREDICTION_CONFIDENCE].data.data_points,
        second[semconv.PREDICTION_CONFIDENCE].data.data_points,
    )
    assert h1.count == 3 and h1.bucket_counts == _reference_counts([0.95, 0.95, 0.5], semconv.UNIT_INTERVAL_BUCKETS)
    assert h2.count == 1 and h2.bucket_counts == _reference_counts([0.55], semconv.UNIT_INTERVAL_BUCKETS)
    assert [p.value for p in first[semconv.PREDICTION_COUNT].data.data_points] == [3]
    assert [p.value for p in second[semconv.PREDICTION_COUNT].data.data_points] == [1]


def test_merging_exporter_only_ours_exports_just_our_metrics_under_the_collected_resource() -> None:
    agg = Aggregator(SCOPE)
    inner = CapturingExporter()
    exporter = MergingMetricExporter(inner, agg, RESOURCE, only_ours=True)
    agg.counter(semconv.PREDICTION_COUNT, "1", "").add(4, ATTRS, KEY)
    app_resource = Resource.create({"service.name": "app"})
    app_rm = ResourceMetrics(
        resource=app_resource,
        scope_metrics=[ScopeMetrics(scope=InstrumentationScope("app"), metrics=[_sdk_metric("a", 1)], schema_url="")],
        schema_url="",
    )
    exporter.export(MetricsData(resource_metrics=[app_rm]))
    exporter.export(MetricsData(resource_metrics=[]))
    first, second = inner.exports
    for data, resource in ((first, app_resource), (second, RESOURCE)):
        (rm,) = data.resource_metrics
        assert rm.resource is resource
        assert [sm.scope.name for sm in rm.scope_metrics] == [semconv.SCOPE_NAME]
        assert [p.value for p in _exported(data)[semconv.PREDICTION_COUNT].data.data_points] == [4]


def test_merging_exporter_shutdown_detaches_its_sink() -> None:
    agg = Aggregator(SCOPE)
    inner_a, inner_b = CapturingExporter(), CapturingExporter()
    a = MergingMetricExporter(inner_a, agg, RESOURCE)
    b = MergingMetricExporter(inner_b, agg, RESOURCE)
    assert agg.merging is True
    a.shutdown()
    assert inner_a.shut_down is True
    assert agg.merging is True  # b still merges
    b.shutdown()
    assert inner_b.shut_down is True
    assert agg.merging is False
    agg.detach()  # an extra detach never goes negative
    assert agg.merging is False
    agg.attach()
    assert agg.merging is True


def test_merging_exporter_in_a_real_sdk_pipeline() -> None:
    agg = Aggregator(SCOPE)
    inner = CapturingExporter()
    reader = PeriodicExportingMetricReader(MergingMetricExporter(inner, agg, RESOURCE), export_interval_millis=10**8)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False)
    try:
        provider.get_meter("app").create_counter("app.requests").add(2, {"route": "/"})
        agg.counter(semconv.PREDICTION_COUNT, "1", "").add(11, ATTRS, KEY)
        assert provider.force_flush(5_000) is True
        assert inner.exports, "force_flush exported nothing"
        last = inner.exports[-1]
        assert [p.value for p in _exported(last, "app")["app.requests"].data.data_points] == [2]
        assert [p.value for p in _exported(last)[semconv.PREDICTION_COUNT].data.data_points] == [11]
        assert last.resource_metrics[0].resource.attributes["service.name"] == "aggregation-test"
    finally:
        provider.shutdown(5_000)
    assert inner.shut_down is True
    assert agg.merging is False


# -- the SDK fallback when nothing merges ------------------------------------------------------------------
@pytest.fixture(params=[False, True], ids=["fallback", "merging"])
def telemetry(request: pytest.FixtureRequest) -> Iterator[InMemoryTelemetry]:
    guard.log.reset()
    tel = InMemoryTelemetry(merge=request.param)
    try:
        yield tel
    finally:
        tel.close()
        config.reload()


def test_fallback_and_merging_paths_record_identical_prediction_metrics(telemetry: InMemoryTelemetry) -> None:
    merging = isinstance(telemetry.reader, otel_ml.summary.SummaryReader)
    assert runtime.get().aggregator.merging is merging

    @otel_ml.instrument(name="bc", version="3")
    def predict_proba(x: np.ndarray) -> np.ndarray:
        return CLF.predict_proba(x)

    batches = [X[:100], X[100:101], X[101:260]]  # arrays (worker in the fallback), one row (inline), arrays
    for batch in batches:
        predict_proba(batch)

    proba = CLF.predict_proba(np.concatenate(batches))
    top = proba.max(axis=1)
    base = {semconv.ML_MODEL_NAME: "bc", semconv.ML_MODEL_VERSION: "3", semconv.ML_OPERATION: "predict_proba"}
    spans = telemetry.spans()
    assert len(spans) == 3
    span_ids = {(s.context.trace_id, s.context.span_id) for s in spans}

    collected = telemetry.metrics()
    (count,) = telemetry.points(semconv.PREDICTION_COUNT, collected)
    assert (dict(count.attributes), count.value) == (base, 260)

    (duration,) = telemetry.points(semconv.PREDICTION_DURATION, collected)
    assert dict(duration.attributes) == base
    assert duration.count == 3 and sum(duration.bucket_counts) == 3
    assert list(duration.explicit_bounds) == list(semconv.DURATION_BUCKETS)
    assert duration.exemplars, "no exemplar on ml.prediction.duration"
    for exemplar in duration.exemplars:
        assert (exemplar.trace_id, exemplar.span_id) in span_ids
        assert duration.min <= exemplar.value <= duration.max

    (confidence,) = telemetry.points(semconv.PREDICTION_CONFIDENCE, collected)
    assert dict(confidence.attributes) == base
    assert list(confidence.explicit_bounds) == list(semconv.UNIT_INTERVAL_BUCKETS)
    assert list(confidence.bucket_counts) == _reference_counts(top.tolist(), semconv.UNIT_INTERVAL_BUCKETS)
    assert confidence.count == 260
    assert (confidence.min, confidence.max) == (float(top.min()), float(top.max()))
    assert confidence.sum == pytest.approx(math.fsum(top.tolist()), rel=1e-12)

    classes = {
        p.attributes[semconv.ML_PREDICTION_CLASS]: p.value
        for p in telemetry.points(semconv.PREDICTION_CLASS, collected)
    }
    expected = np.bincount(proba.argmax(axis=1), minlength=2)
    assert classes == {"0": int(expected[0]), "1": int(expected[1])}


def test_fallback_and_merging_paths_record_identical_rank_histograms(telemetry: InMemoryTelemetry) -> None:
    """The worker records every feature's rank histogram in one ``record_rows``; the fallback replays it."""
    names = [f"f{i}" for i in range(X.shape[1])]
    ref = otel_ml.Reference.from_data(X, feature_names=names)
    predict = otel_ml.instrument(name="ranks", output="none", reference=ref)(lambda x: np.zeros(len(x)))
    live = X[::2]
    predict(live)
    otel_ml.force_flush()
    ranks = {p.attributes[semconv.ML_FEATURE_NAME]: p for p in telemetry.points(semconv.FEATURE_RANK)}
    assert set(ranks) == set(names)
    for j, name in enumerate(names):
        cuts = ref.rank_cuts(name)
        assert cuts is not None
        expected = [*rank_buckets(cuts, live[:, j], 20).tolist(), 0]
        assert list(ranks[name].bucket_counts) == expected, name
        assert ranks[name].count == len(live)


def test_series_beyond_the_cardinality_limit_add_up_in_one_overflow_series(env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_CARDINALITY_LIMIT", "50")
    otel_ml.config.reload()
    agg = _merging_aggregator()
    counter = agg.counter("ml.test.count", "1", "")
    hist = agg.histogram("ml.test.hist", "1", "", BOUNDS)
    gauge = agg.gauge("ml.test.gauge", "1", "")
    for i in range(5000):
        attrs = {"ml.model.name": f"model-{i}"}
        key = frozenset(attrs.items())
        counter.add(i % 7 + 1, attrs, key)
        hist.record_one(0.3, attrs, key, None)
        gauge.set(float(i), attrs, key)
    metrics = _by_name(agg.metrics())
    for name in ("ml.test.count", "ml.test.hist", "ml.test.gauge"):
        points = metrics[name].data.data_points
        assert len(points) == 50  # 49 real series + the overflow series
        overflow = [p for p in points if p.attributes == {"otel.metric.overflow": True}]
        assert len(overflow) == 1
    counts = metrics["ml.test.count"].data.data_points
    assert sum(p.value for p in counts) == sum(i % 7 + 1 for i in range(5000))  # totals preserved
    assert sum(p.count for p in metrics["ml.test.hist"].data.data_points) == 5000
