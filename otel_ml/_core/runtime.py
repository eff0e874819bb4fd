"""Process-wide otel-ml state: which providers to use, the vectorised aggregator, the worker, self-metrics.

Recorders ask for a tracer and meter through :func:`get`; a ``generation`` number changes whenever the
providers change (``configure``, ``shutdown``, tests), so a recorder re-binds its instruments with one
integer comparison per call. Without ``configure`` the OpenTelemetry globals are used — otel-ml is a library.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from otel_ml import config, semconv
from otel_ml._core import guard
from otel_ml._core.aggregation import Aggregator, VectorCounter, VectorGauge, VectorHistogram
from otel_ml._core.worker import Worker
from otel_ml.version import __version__


class Runtime:
    """The providers otel-ml records into, plus the pieces shared by every model."""

    def __init__(self) -> None:
        self.generation = 0
        self._lock = threading.RLock()
        self._tracer_provider: TracerProvider | None = None
        self._meter_provider: MeterProvider | None = None
        self.aggregator = Aggregator(InstrumentationScope(semconv.SCOPE_NAME, __version__))
        self.aggregator.fallback = _SdkFallback(self)
        # rows a quiet model buffered reach the sketches by the next export, however few calls it gets
        self.aggregator.add_deriver(lambda: self.flush_monitors(drift=False))
        self._drops: collections.Counter[str] = collections.Counter()
        self._drops_lock = threading.Lock()
        self._declared: set[str] = {semconv.DROP_QUEUE_FULL, semconv.DROP_SHUTDOWN}
        self._error_baseline: dict[str, int] = {}
        self._monitors: weakref.WeakSet[Any] = weakref.WeakSet()
        self.worker = Worker(config.settings.queue_size, self._count_drop)
        self.aggregator.background = self.worker.offer
        self._bind()

    # -- providers ---------------------------------------------------------------------------------------
    def use(self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None) -> None:
        """Record into these providers from now on (``None``: the OpenTelemetry globals)."""
        with self._lock:
            self._tracer_provider = tracer_provider
            self._meter_provider = meter_provider
            self._bind()

    def _bind(self) -> None:
        tp = self._tracer_provider or trace.get_tracer_provider()
        mp = self._meter_provider or metrics.get_meter_provider()
        self.tracer: Tracer = tp.get_tracer(semconv.SCOPE_NAME, __version__)
        self.meter: Meter = mp.get_meter(semconv.SCOPE_NAME, __version__)
        # Observable self-metrics: no SDK call on the hot path, and a data point at every collection (with
        # zeros from the start), which also guarantees each collection reaches the merging exporter.
        self.meter.create_observable_counter(
            semconv.TELEMETRY_DROPPED,
            callbacks=[self._observe_drops],
            unit=semconv.TELEMETRY_DROPPED_UNIT,
            description="Telemetry items otel-ml dropped, by reason",
        )
        self.meter.create_observable_counter(
            semconv.INTERNAL_ERRORS,
            callbacks=[self._observe_errors],
            unit=semconv.INTERNAL_ERRORS_UNIT,
            description="otel-ml internal errors, by stage",
        )
        self.generation += 1

    # -- self-metrics --------------------------------------------------------------------------------------
    def _count_drop(self, reason: str, n: int) -> None:
        with self._drops_lock:
            self._drops[reason] += n

    def count_drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` telemetry items dropped for ``reason``."""
        self._count_drop(reason, n)

    def drops(self) -> dict[str, int]:
        """Telemetry items dropped so far in this process, by reason."""
        with self._drops_lock:
            return dict(self._drops)

    def declare_drop_reasons(self, *reasons: str) -> None:
        """Report these reasons from the start (as 0), so a dashboard sees the series before the first drop."""
        self._declared.update(reasons)

    def _observe_drops(self, options: CallbackOptions) -> Iterable[Observation]:
        counts = {**dict.fromkeys(sorted(self._declared), 0), **self.drops()}
        return [Observation(n, {semconv.OTEL_ML_REASON: reason}) for reason, n in counts.items()]

    def error_counts(self) -> dict[str, int]:
        """Internal errors of this process by stage (a forked child does not report its parent's)."""
        base = self._error_baseline
        counts = {stage: n - base.get(stage, 0) for stage, n in guard.error_counts().items()}
        return {stage: n for stage, n in counts.items() if n > 0 or stage not in base}

    def _observe_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {semconv.OTEL_ML_STAGE: stage}) for stage, n in self.error_counts().items()]

    def register_monitor(self, monitor: Any) -> None:
        """Remember an input monitor so ``force_flush`` can drain its buffered rows (weakly held)."""
        self._monitors.add(monitor)

    def flush_monitors(self, drift: bool = True) -> None:
        """Hand every monitor's buffered rows to the worker and (with ``drift``) request fresh drift scores."""
        for monitor in list(self._monitors):
            try:
                monitor.flush(drift)
            except Exception as exc:
                guard.internal_error("flush", exc)

    def after_fork_in_child(self) -> None:
        """A forked child starts with empty otel-ml state: the parent's counts are the parent's to export.

        Any lock another thread of the parent held at the moment of the fork stays held forever in the child
        (that thread does not exist here), so every lock this touches is replaced *before* it is used; the
        parent's half-updated state is then discarded with it. Never raises (it runs inside ``os.fork()``).
        """
        self._lock = threading.RLock()
        self._drops_lock = threading.Lock()
        self._drops = collections.Counter()
        try:
            self._error_baseline = dict(guard._counts)  # read without its lock: this thread is the only one
            guard._counts_lock = threading.Lock()
            guard.log._lock = threading.Lock()
            _reset_aggregator(self.aggregator)
            # the WeakSet's own iteration guard is not fork-safe: read its weak references directly
            for monitor in list(getattr(self._monitors, "data", ())):
                obj = monitor()
                if obj is not None:
                    _reset_monitor(obj)
        except Exception:  # pragma: no cover - defensive: the child must start whatever happens
            pass
        self.worker._after_fork()


def _reset_aggregator(agg: Aggregator) -> None:
    """Fresh locks, then no series: the aggregation's state as of the fork belongs to the parent."""
    agg._lock = threading.Lock()
    for inst in list(agg._instruments.values()):
        inst._lock = threading.Lock()
    agg.clear()


def _reset_monitor(monitor: Any) -> None:
    """The caller-side state of an input monitor: its locks, the rows it buffered and the counts it had not
    recorded yet (the parent's rows and counts)."""
    monitor._lock = threading.Lock()
    monitor._pending_lock = threading.Lock()
    monitor._pending = None
    monitor._buffer = None
    monitor._filled = 0
    monitor._capacity = 0
    monitor._spare = None
    monitor.events = []


class _SdkFallback:
    """Real SDK instruments for when no exporter merges otel-ml's aggregation (the app owns the readers)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._generation = -1
        self._instruments: dict[str, Any] = {}

    def _instrument(self, name: str, create: Callable[[Meter], Any]) -> Any:
        if self._generation != self._rt.generation:
            self._instruments = {}
            self._generation = self._rt.generation
        inst = self._instruments.get(name)
        if inst is None:
            inst = self._instruments[name] = create(self._rt.meter)
        return inst

    def _histogram(self, hist: VectorHistogram) -> Any:
        return self._instrument(
            hist.name,
            lambda m: m.create_histogram(
                hist.name,
                unit=hist.unit,
                description=hist.description,
                explicit_bucket_boundaries_advisory=hist.bounds_list,
            ),
        )

    def histogram_values(
        self, hist: VectorHistogram, values: np.ndarray, attributes: Mapping[str, AttributeValue]
    ) -> None:
        """Arrays go value by value on the worker (the SDK has no batch record).

        An SDK histogram refuses negative values (and logs a warning for each one) and non-finite values: those
        are dropped here and counted (``histogram_negative`` / ``non_finite``). ``ml.prediction.value`` of a
        regression with negative outputs needs otel-ml's own aggregation (``configure`` or a ``SummaryReader``).
        """
        keep = np.isfinite(values)
        non_finite = int(values.size - np.count_nonzero(keep))
        keep &= values >= 0
        negative = int(values.size - np.count_nonzero(keep)) - non_finite
        if non_finite:
            self._rt.count_drop(DROP_NON_FINITE, non_finite)
        if negative:
            self._rt.count_drop(DROP_HISTOGRAM_NEGATIVE, negative)
        if non_finite or negative:
            values = values[keep]
        if not values.size:
            return
        record = self._histogram(hist).record
        attrs = dict(attributes)

        def task() -> None:
            for v in values.tolist():
                record(v, attrs)

        self._rt.worker.submit(task)

    def histogram_value(self, hist: VectorHistogram, value: float, attributes: Mapping[str, AttributeValue]) -> None:
        """Single values inline, so the SDK's trace-based exemplar filter sees the active span."""
        if not math.isfinite(value):
            self._rt.count_drop(DROP_NON_FINITE)
            return
        if value < 0:
            self._rt.count_drop(DROP_HISTOGRAM_NEGATIVE)
            return
        self._histogram(hist).record(value, attributes)

    def gauge_set(self, gauge: VectorGauge, value: float, attributes: Mapping[str, AttributeValue]) -> None:
        if not math.isfinite(value):
            self._rt.count_drop(DROP_NON_FINITE)
            return
        inst = self._instrument(
            gauge.name, lambda m: m.create_gauge(gauge.name, unit=gauge.unit, description=gauge.description)
        )
        inst.set(value, attributes)

    def counter_add(self, counter: VectorCounter, amount: int, attributes: Mapping[str, AttributeValue]) -> None:
        inst = self._instrument(
            counter.name, lambda m: m.create_counter(counter.name, unit=counter.unit, description=counter.description)
        )
        inst.add(amount, attributes)


DROP_NON_FINITE = "non_finite"
DROP_HISTOGRAM_NEGATIVE = "histogram_negative"


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get() -> Runtime:
    """The process's runtime (created on first use)."""
    global _runtime
    rt = _runtime
    if rt is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime()
            rt = _runtime
    return rt


def _after_fork() -> None:
    if _runtime is not None:
        _runtime.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
