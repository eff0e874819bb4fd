"""otel-ml's own aggregation of ``ml.*`` metrics, exported as real OTLP histograms and sums.

The Python SDK records one value per ``Histogram.record`` call (~6 µs each) and re-hashes the attribute set
every time, which is far too slow for a 1,000-row batch of confidences or 20,000 feature ranks. otel-ml keeps
cumulative state per series itself — bucket counts filled with ``np.bincount`` of bucket indices (a lookup
table, or ``np.searchsorted``: :meth:`VectorHistogram.buckets`) for arrays, ``bisect`` for single values, plain
integer adds for counters — keyed by precomputed attribute
sets, and merges it into the SDK's ``MetricsData`` at export time through :class:`MergingMetricExporter`
(installed by ``otel_ml.configure()``) or any reader that calls :meth:`Aggregator.merge`. The points are the
SDK's own ``HistogramDataPoint`` / ``NumberDataPoint`` objects, so every exporter encodes them as usual.

Trade-off: SDK Views do not apply to these instruments (their buckets are set in :mod:`otel_ml.semconv`).
When nothing merges (the application built its own metric readers), every value goes through a real SDK
instrument instead (:class:`FallbackSink`): single values and counters inline, arrays one by one on the
background worker. Exemplars: each histogram bucket keeps the latest value recorded inside a sampled span,
as the SDK's trace-based exemplar filter would.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import numpy as np
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics import Histogram as SdkHistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue

from otel_ml import config

Attributes = Mapping[str, AttributeValue]
AttributesKey = frozenset[tuple[str, AttributeValue]]

_sum, _min, _max = np.add.reduce, np.minimum.reduce, np.maximum.reduce

GRID_CELLS = 4096
"""Cells of the lookup table that buckets values of spread-out bounds (see :func:`bucket_table`)."""
TABLE_MIN_VALUES = 4096
"""Smaller arrays take the binary search: one numpy call, where the table takes five. Right after a model's own
work has evicted the caches, each call costs a few µs, which a 1,000-value array does not win back."""


DEFERRED_LIMIT = 1024
"""Calls' deferred records (:meth:`Aggregator.defer`) waiting before the background worker is asked to apply
them; at four times this, a call applies them itself."""


class FallbackSink(Protocol):
    """Where values go when no exporter merges otel-ml's aggregation (real SDK instruments)."""

    def histogram_values(self, hist: VectorHistogram, values: np.ndarray, attributes: Attributes) -> None: ...
    def histogram_value(self, hist: VectorHistogram, value: float, attributes: Attributes) -> None: ...
    def counter_add(self, counter: VectorCounter, amount: int, attributes: Attributes) -> None: ...
    def gauge_set(self, gauge: VectorGauge, value: float, attributes: Attributes) -> None: ...


OVERFLOW_ATTRIBUTES: dict[str, AttributeValue] = {"otel.metric.overflow": True}
OVERFLOW_KEY: AttributesKey = frozenset(OVERFLOW_ATTRIBUTES.items())


def _admit(
    series: Mapping[AttributesKey, object], key: AttributesKey, attributes: Attributes
) -> tuple[AttributesKey, Attributes]:
    """A new series, or the overflow series once an instrument holds ``OTEL_ML_CARDINALITY_LIMIT`` of them.

    Measurements are never lost: past the limit they add up in one ``otel.metric.overflow=true`` series, as the
    OpenTelemetry metrics SDK specification prescribes (the Python SDK has no such limit for these paths).
    """
    if len(series) < config.settings.cardinality_limit - 1:  # the limit counts the overflow series too
        return key, attributes
    return OVERFLOW_KEY, OVERFLOW_ATTRIBUTES


class _HistogramSeries:
    """Cumulative state of one histogram series, with one exemplar slot per bucket."""

    __slots__ = ("attributes", "counts", "ex_ids", "ex_value", "high", "low", "n", "ones", "start_ns", "total")

    def __init__(self, attributes: Attributes, buckets: int) -> None:
        self.attributes = dict(attributes)
        self.start_ns = time.time_ns()
        self.counts = np.zeros(buckets, dtype=np.int64)  # values recorded in arrays
        # values recorded one at a time (a call's duration): Python ints, as the exemplar slots below are Python
        # objects. Right after a model's own work has evicted the caches, each numpy scalar read or write costs
        # microseconds; these cost a fraction. The bucket counts are counts + ones.
        self.ones = [0] * buckets
        self.total = 0.0
        self.n = 0
        self.low = float("inf")
        self.high = float("-inf")
        self.ex_value: list[float] = [0.0] * buckets
        # per bucket: None, or the (trace id, span id, time ns) of its exemplar: one tuple per call, shared by the
        # buckets the call hit (a Python list: writing a few tuples costs less than a masked numpy write)
        self.ex_ids: list[tuple[int, int, int] | None] = [None] * buckets


def bucket_table(bounds: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
    """A lookup table over a grid of ``[0, 2 * bounds[-1]]`` for bounds that are positive and spread out (every
    bucket at least four cells wide, e.g. the unit interval's twenty); ``None`` otherwise.

    Returns ``(scale, base, upper)``: a value ``v`` in cell ``c = floor(v * scale)`` (clipped to the grid) is in
    bucket ``base[c]``, or the next one when ``v > upper[base[c]]``: ``base`` counts the bounds below the cell
    before ``c``, so the one comparison settles every value near a bound, whichever cell rounding put it in. On
    data that changes from call to call, a binary search of the bounds mispredicts about one branch per level and
    takes several times as long for large arrays (``bench.overhead`` prints both)."""
    if bounds.size == 0 or bounds.size > 127 or bounds[0] <= 0:
        return None
    scale = GRID_CELLS / (2.0 * float(bounds[-1]))
    if float(np.diff(bounds, prepend=0.0).min()) * scale < 4:
        return None
    base = np.searchsorted(bounds, (np.arange(GRID_CELLS + 1) - 1) / scale, side="left").astype(np.int8)
    return scale, base, np.append(bounds, np.inf)


def _ids(ctx: SpanContext, at_ns: int | None = None) -> tuple[int, int, int]:
    """An exemplar's ids: trace id, span id, and the time of the measurement (ns; default: now)."""
    return ctx.trace_id, ctx.span_id, time.time_ns() if at_ns is None else at_ns


def _add_counts(s: _HistogramSeries, counts: np.ndarray, n: int, total: float, low: float, high: float) -> None:
    """Fold ``n`` already-bucketed values (their bucket ``counts``, sum, min and max) into series ``s``."""
    s.counts += counts
    s.total += total
    s.n += n
    s.low = low if low < s.low else s.low
    s.high = high if high > s.high else s.high


class VectorHistogram:
    """An explicit-bucket histogram that takes whole numpy arrays (or single values) per call."""

    def __init__(self, owner: Aggregator, name: str, unit: str, description: str, bounds: Sequence[float]):
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self.bounds_list = [float(b) for b in bounds]
        self._owner = owner
        self._series: dict[AttributesKey, _HistogramSeries] = {}
        self._lock = threading.Lock()
        self._table = bucket_table(self.bounds)

    def buckets(self, values: np.ndarray) -> np.ndarray:
        """Each value's bucket index: upper-inclusive buckets (Prometheus ``le``), bucket i holds
        ``bounds[i-1] < v <= bounds[i]``, exactly as ``np.searchsorted(bounds, values, side="left")``."""
        if self._table is None or values.size < TABLE_MIN_VALUES:
            return self.bounds.searchsorted(values, side="left")  # the method: np.searchsorted wraps it in Python
        scale, base, upper = self._table
        cells = np.minimum(values, GRID_CELLS / scale)  # clipped first: a huge value must not overflow
        np.maximum(cells, 0.0, out=cells)
        cells *= scale
        idx = base[cells.astype(np.intp)]
        idx += values > upper[idx]
        return idx

    def _get(self, key: AttributesKey, attributes: Attributes) -> _HistogramSeries:
        series = self._series.get(key)
        if series is None:
            key, attributes = _admit(self._series, key, attributes)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _HistogramSeries(attributes, len(self.bounds_list) + 1)
        return series

    def record(
        self,
        values: np.ndarray,
        attributes: Attributes,
        key: AttributesKey,
        ctx: SpanContext | None,
        total: float | None = None,
        low: float | None = None,
    ) -> None:
        """Add finite 1-D float64 ``values`` to the series ``attributes`` (``key`` is its frozenset); ``total`` and
        ``low``, when the caller has them, are the values' sum and minimum."""
        if values.size == 0:
            return
        if not self._owner.merging:
            if self._owner.fallback is not None:
                self._owner.fallback.histogram_values(self, values, attributes)
            return
        idx = self.buckets(values)
        counts = np.bincount(idx, minlength=len(self.bounds_list) + 1)
        # the ufuncs' reductions themselves: ndarray.sum/min/max first run a Python-level wrapper each
        total = float(_sum(values)) if total is None else total
        low = float(_min(values)) if low is None else low
        high = float(_max(values))
        sampled = ctx is not None and ctx.trace_flags.sampled
        with self._lock:
            s = self._get(key, attributes)
            s.counts += counts
            s.total += total
            s.n += values.size
            s.low = low if low < s.low else s.low
            s.high = high if high > s.high else s.high
            if sampled:
                assert ctx is not None
                hit = np.empty(counts.size)
                hit[idx] = values  # a value of this call per bucket it hit
                seen, ids, slots, kept = hit.tolist(), _ids(ctx), s.ex_ids, s.ex_value
                for i in counts.nonzero()[0].tolist():  # the call's value and ids go to those few buckets
                    kept[i] = seen[i]
                    slots[i] = ids

    def record_one(
        self,
        value: float,
        attributes: Attributes,
        key: AttributesKey,
        ctx: SpanContext | None,
        at_ns: int | None = None,
    ) -> None:
        """Add one value (the per-call path, e.g. a duration): ``bisect``, no numpy temporaries. ``at_ns``: when
        it was measured, for its exemplar (default: now)."""
        if not self._owner.merging:
            if self._owner.fallback is not None:
                self._owner.fallback.histogram_value(self, value, attributes)
            return
        i = bisect.bisect_left(self.bounds_list, value)
        with self._lock:
            s = self._get(key, attributes)
            s.ones[i] += 1
            s.total += value
            s.n += 1
            if value < s.low:
                s.low = value
            if value > s.high:
                s.high = value
            if ctx is not None and ctx.trace_flags.sampled:
                s.ex_value[i] = value
                s.ex_ids[i] = _ids(ctx, at_ns)

    def record_counts(
        self, counts: np.ndarray, total: float, low: float, high: float, attributes: Attributes, key: AttributesKey
    ) -> None:
        """Add values already bucketed by the caller (``counts`` has one entry per bucket, +Inf included)."""
        n = int(counts.sum())
        if n == 0:
            return
        if not self._owner.merging:
            if self._owner.fallback is not None:  # representative values: bucket upper bounds, value by value
                reps = np.repeat(np.append(self.bounds, self.bounds[-1]), counts)
                self._owner.fallback.histogram_values(self, reps, attributes)
            return
        with self._lock:
            _add_counts(self._get(key, attributes), counts, n, total, low, high)

    def record_rows(
        self,
        counts: np.ndarray,
        totals: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
        series: Sequence[tuple[Attributes, AttributesKey]],
    ) -> None:
        """:meth:`record_counts` for many series at once (row ``i`` of each array goes to ``series[i]``),
        under one lock: what a batch's per-feature histograms need."""
        if not self._owner.merging:
            for i, (attributes, key) in enumerate(series):
                self.record_counts(counts[i], float(totals[i]), float(low[i]), float(high[i]), attributes, key)
            return
        rows = zip(
            series, counts, counts.sum(axis=1).tolist(), totals.tolist(), low.tolist(), high.tolist(), strict=True
        )
        with self._lock:
            for (attributes, key), row, n, total, lo, hi in rows:
                if n:
                    _add_counts(self._get(key, attributes), row, n, total, lo, hi)

    def totals(self) -> list[tuple[Attributes, int, float]]:
        """(attributes, count, sum) of every series: what derived metrics (e.g. windowed means) read."""
        with self._lock:
            return [(s.attributes, s.n, s.total) for s in self._series.values()]

    def snapshot(self, now_ns: int) -> Metric | None:
        """Every series as one cumulative SDK ``Metric`` (``None`` before the first value)."""
        with self._lock:
            points = [self._point(s, now_ns) for s in self._series.values()]
        if not points:
            return None
        data = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
        return Metric(name=self.name, description=self.description, unit=self.unit, data=data)

    def _point(self, s: _HistogramSeries, now_ns: int) -> HistogramDataPoint:
        values = s.ex_value
        exemplars = [
            Exemplar(filtered_attributes=None, value=values[i], time_unix_nano=ids[2], span_id=ids[1], trace_id=ids[0])
            for i, ids in enumerate(s.ex_ids)
            if ids is not None
        ]
        return HistogramDataPoint(
            attributes=s.attributes,
            start_time_unix_nano=s.start_ns,
            time_unix_nano=now_ns,
            count=s.n,
            sum=s.total,
            bucket_counts=[a + b for a, b in zip(s.counts.tolist(), s.ones, strict=True)],
            explicit_bounds=self.bounds_list,
            min=s.low,
            max=s.high,
            exemplars=exemplars,
        )

    def clear(self) -> None:
        with self._lock:
            self._series.clear()


@dataclass
class _CounterSeries:
    attributes: Attributes
    start_ns: int
    value: int = 0


class VectorCounter:
    """A monotonic counter keyed by precomputed attribute sets: one dict lookup and an add per call."""

    def __init__(self, owner: Aggregator, name: str, unit: str, description: str) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self._owner = owner
        self._series: dict[AttributesKey, _CounterSeries] = {}
        self._lock = threading.Lock()

    def add(self, amount: int, attributes: Attributes, key: AttributesKey) -> None:
        if not self._owner.merging:
            if self._owner.fallback is not None:
                self._owner.fallback.counter_add(self, amount, attributes)
            return
        with self._lock:
            s = self._series.get(key)
            if s is None:
                key, attributes = _admit(self._series, key, attributes)
                s = self._series.get(key)
                if s is None:
                    s = self._series[key] = _CounterSeries(dict(attributes), time.time_ns())
            s.value += amount

    def snapshot(self, now_ns: int) -> Metric | None:
        with self._lock:
            points = [
                NumberDataPoint(
                    attributes=s.attributes, start_time_unix_nano=s.start_ns, time_unix_nano=now_ns, value=s.value
                )
                for s in self._series.values()
            ]
        if not points:
            return None
        data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True)
        return Metric(name=self.name, description=self.description, unit=self.unit, data=data)

    def clear(self) -> None:
        with self._lock:
            self._series.clear()


class VectorGauge:
    """A gauge keyed by precomputed attribute sets: the last value set per series."""

    def __init__(self, owner: Aggregator, name: str, unit: str, description: str) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self._owner = owner
        self._series: dict[AttributesKey, tuple[Attributes, float, int]] = {}
        self._lock = threading.Lock()

    def set(self, value: float, attributes: Attributes, key: AttributesKey) -> None:
        if not self._owner.merging:
            if self._owner.fallback is not None:
                self._owner.fallback.gauge_set(self, value, attributes)
            return
        with self._lock:
            if key not in self._series:
                key, attributes = _admit(self._series, key, attributes)
            self._series[key] = (dict(attributes), value, time.time_ns())

    def snapshot(self, now_ns: int) -> Metric | None:
        with self._lock:
            points = [
                NumberDataPoint(attributes=a, start_time_unix_nano=0, time_unix_nano=t, value=v)
                for a, v, t in self._series.values()
            ]
        if not points:
            return None
        return Metric(name=self.name, description=self.description, unit=self.unit, data=Gauge(data_points=points))

    def clear(self) -> None:
        with self._lock:
            self._series.clear()


Instrument = VectorHistogram | VectorCounter | VectorGauge
InstrumentT = TypeVar("InstrumentT", VectorHistogram, VectorCounter, VectorGauge)


class Aggregator:
    """All of otel-ml's aggregated instruments, and whether any exporter merges them.

    It also holds the calls' deferred single-value records (:meth:`defer`), applied before every collection.
    """

    def __init__(self, scope: InstrumentationScope) -> None:
        self.scope = scope
        self._instruments: dict[str, Instrument] = {}
        self._lock = threading.Lock()
        self._sinks = 0
        self._derivers: list[Callable[[], None]] = []
        self.merging = False
        self.fallback: FallbackSink | None = None
        self.deferred: collections.deque[tuple[Callable[[Any], None], Any]] = collections.deque()
        # queues a task on a background thread; False if it cannot take it (nothing is lost: the records wait)
        self.background: Callable[[Callable[[], None]], bool] | None = None
        self._background_queued = False

    def _get(self, name: str, kind: type[InstrumentT], make: Callable[[], InstrumentT]) -> InstrumentT:
        with self._lock:
            inst = self._instruments.get(name)
            if not isinstance(inst, kind):
                inst = self._instruments[name] = make()
            return inst

    def histogram(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> VectorHistogram:
        """The histogram ``name`` (created on first use)."""
        return self._get(name, VectorHistogram, lambda: VectorHistogram(self, name, unit, description, bounds))

    def counter(self, name: str, unit: str, description: str) -> VectorCounter:
        """The counter ``name`` (created on first use)."""
        return self._get(name, VectorCounter, lambda: VectorCounter(self, name, unit, description))

    def gauge(self, name: str, unit: str, description: str) -> VectorGauge:
        """The gauge ``name`` (created on first use)."""
        return self._get(name, VectorGauge, lambda: VectorGauge(self, name, unit, description))

    def add_deriver(self, derive: Callable[[], None]) -> None:
        """Run ``derive`` before every collection (it may set gauges computed from other instruments)."""
        with self._lock:
            self._derivers.append(derive)

    def attach(self) -> None:
        """A sink (exporter or reader) now merges this aggregation into its exports."""
        with self._lock:
            self._sinks += 1
            self.merging = True

    def detach(self) -> None:
        with self._lock:
            self._sinks = max(0, self._sinks - 1)
            self.merging = self._sinks > 0

    def defer(self, apply: Callable[[Any], None], record: Any) -> None:
        """Hold one call's single-value records until the next collection, which calls ``apply(record)``.

        Why: right after a model's own work has evicted the caches, each instrument update costs several µs
        (a call's duration, its row count, a single row's confidence and class: ~30 µs together after a
        forest's predict); appending one tuple costs one. Applied together, oldest first, they run warm. The
        records hold no arrays (those are recorded at once), so the log stays small: past
        :data:`DEFERRED_LIMIT` records the background worker applies them, past four times that the caller
        does. Exemplars keep the time of their call (``at_ns`` of :meth:`VectorHistogram.record_one`).
        """
        log = self.deferred
        log.append((apply, record))
        if len(log) >= DEFERRED_LIMIT:
            self._deferred_full(len(log))

    def _deferred_full(self, waiting: int) -> None:
        if waiting >= 4 * DEFERRED_LIMIT or self.background is None:
            self.apply_deferred()  # the worker could not take them: here, rather than grow or lose them
        elif not self._background_queued:
            self._background_queued = True
            if not self.background(self._apply_in_background):
                self._background_queued = False

    def _apply_in_background(self) -> None:
        self._background_queued = False
        self.apply_deferred()

    def apply_deferred(self) -> None:
        """Apply the deferred records, oldest first; each exactly once, whichever threads do it at once."""
        log = self.deferred
        while True:
            try:
                apply, record = log.popleft()
            except IndexError:
                return
            apply(record)

    def metrics(self) -> list[Metric]:
        """Cumulative snapshots of every instrument that has data (the deferred records applied first)."""
        self.apply_deferred()
        with self._lock:
            derivers = list(self._derivers)
        for derive in derivers:
            derive()
        now = time.time_ns()
        with self._lock:
            instruments = list(self._instruments.values())
        return [m for m in (i.snapshot(now) for i in instruments) if m is not None]

    def merge(self, data: MetricsData | None, resource: Resource, delta: DeltaState | None = None) -> MetricsData:
        """``data`` plus otel-ml's metrics under the ``otel_ml`` scope of its first resource."""
        ours = self.metrics()
        if delta is not None:
            ours = delta.apply(ours)
        if not ours:
            return data if data is not None else MetricsData(resource_metrics=[])
        resource_metrics = list(data.resource_metrics) if data is not None else []
        if not resource_metrics:
            resource_metrics = [ResourceMetrics(resource=resource, scope_metrics=[], schema_url="")]
        first = resource_metrics[0]
        scopes = list(first.scope_metrics)
        for i, sm in enumerate(scopes):
            if sm.scope.name == self.scope.name:
                scopes[i] = replace(sm, metrics=list(sm.metrics) + ours)
                break
        else:
            scopes.append(ScopeMetrics(scope=self.scope, metrics=ours, schema_url=""))
        resource_metrics[0] = replace(first, scope_metrics=scopes)
        return MetricsData(resource_metrics=resource_metrics)

    def clear(self) -> None:
        """Forget every series and deferred record (tests; a forked child)."""
        self.deferred.clear()
        self._background_queued = False
        with self._lock:
            instruments = list(self._instruments.values())
        for inst in instruments:
            inst.clear()


class DeltaState:
    """Turns otel-ml's cumulative points into delta points for an exporter that prefers delta."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, AttributesKey], Any] = {}

    def apply(self, metrics: list[Metric]) -> list[Metric]:
        out = []
        for m in metrics:
            if isinstance(m.data, Gauge):  # gauges have no temporality
                out.append(m)
                continue
            points: list[Any] = []
            for p in m.data.data_points:
                key = (m.name, frozenset((p.attributes or {}).items()))
                prev = self._last.get(key)
                self._last[key] = p
                if prev is None:
                    points.append(p)
                elif isinstance(p, HistogramDataPoint) and isinstance(prev, HistogramDataPoint):
                    if p.count != prev.count:
                        changes: dict[str, Any] = {
                            "start_time_unix_nano": prev.time_unix_nano,
                            "count": p.count - prev.count,
                            "sum": p.sum - prev.sum,
                            "bucket_counts": [a - b for a, b in zip(p.bucket_counts, prev.bucket_counts, strict=True)],
                            # OTLP min/max cover the point's own window; only cumulative extremes are kept: omit them
                            "min": None,
                            "max": None,
                        }
                        points.append(replace(p, **changes))
                elif isinstance(p, NumberDataPoint) and isinstance(prev, NumberDataPoint) and p.value != prev.value:
                    points.append(replace(p, start_time_unix_nano=prev.time_unix_nano, value=p.value - prev.value))
            if points:
                data = replace(m.data, data_points=points, aggregation_temporality=AggregationTemporality.DELTA)  # type: ignore[arg-type]
                out.append(replace(m, data=data))
        return out


def prefers_delta(exporter: MetricExporter) -> bool:
    """Whether ``exporter`` asked for delta temporality on histograms."""
    preferred = getattr(exporter, "_preferred_temporality", None) or {}
    return preferred.get(SdkHistogramInstrument) == AggregationTemporality.DELTA


class MergingMetricExporter(MetricExporter):
    """Wraps a metric exporter so every export also carries otel-ml's aggregated metrics.

    ``only_ours=True`` exports nothing but otel-ml's aggregation (under the resource of the collected data):
    for a reader added beside an application's own readers, which already export everything else.
    """

    def __init__(
        self, inner: MetricExporter, aggregator: Aggregator, resource: Resource, *, only_ours: bool = False
    ) -> None:
        super().__init__(
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self._inner = inner
        self._aggregator = aggregator
        self._resource = resource
        self._delta = DeltaState() if prefers_delta(inner) else None
        self._only_ours = only_ours
        aggregator.attach()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> MetricExportResult:
        if self._only_ours:
            resource = metrics_data.resource_metrics[0].resource if metrics_data.resource_metrics else self._resource
            merged = self._aggregator.merge(None, resource, self._delta)
        else:
            merged = self._aggregator.merge(metrics_data, self._resource, self._delta)
        if not merged.resource_metrics:
            return MetricExportResult.SUCCESS
        return self._inner.export(merged, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self._aggregator.detach()
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)
