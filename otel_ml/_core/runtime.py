"""Process-wide otel-ml state: which providers to use, the vectorised aggregator, the worker, self-metrics.

Recorders ask for a tracer and meter through :func:`get`; a ``generation`` number changes whenever the
providers change (``configure``, ``shutdown``, tests), so a recorder re-binds its instruments with one
integer comparison per call. Without ``configure`` the OpenTelemetry globals are used — otel-ml is a library.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

import numpy as np
from opentelemetry import metrics, trace
from opentelemetry.metrics import Counter, Meter, MeterProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from otel_ml import config, semconv
from otel_ml._core import guard
from otel_ml._core.aggregation import Aggregator, VectorHistogram, record_each
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
        self.aggregator.fallback = self._record_fallback
        self.worker = Worker(config.settings.queue_size, self._count_drop)
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
        self._errors: Counter = self.meter.create_counter(
            semconv.INTERNAL_ERRORS, unit=semconv.INTERNAL_ERRORS_UNIT, description="otel-ml internal errors"
        )
        self._dropped: Counter = self.meter.create_counter(
            semconv.TELEMETRY_DROPPED,
            unit=semconv.TELEMETRY_DROPPED_UNIT,
            description="telemetry items otel-ml dropped, by reason",
        )
        self._fallback_instruments: dict[str, object] = {}
        guard.set_error_counter(self._count_error)
        self.generation += 1

    # -- self-metrics --------------------------------------------------------------------------------------
    def _count_error(self, stage: str) -> None:
        self._errors.add(1, {semconv.OTEL_ML_STAGE: stage})

    def _count_drop(self, reason: str, n: int) -> None:
        try:
            self._dropped.add(n, {semconv.OTEL_ML_REASON: reason})
        except Exception as exc:
            guard.internal_error("self_metrics", exc)

    def count_drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` telemetry items dropped for ``reason``."""
        self._count_drop(reason, n)

    # -- fallback for vectorised histograms when nothing merges them ---------------------------------------
    def _record_fallback(self, hist: VectorHistogram, values: np.ndarray, attributes: Mapping[str, AttributeValue]) -> None:
        instrument = self._fallback_instruments.get(hist.name)
        if instrument is None:
            instrument = self.meter.create_histogram(
                hist.name,
                unit=hist.unit,
                description=hist.description,
                explicit_bucket_boundaries_advisory=list(hist.bounds.tolist()),
            )
            self._fallback_instruments[hist.name] = instrument
        attrs = dict(attributes)
        self.worker.submit(lambda: record_each(instrument, values, attrs))

    def after_fork_in_child(self) -> None:
        """A forked child starts with empty otel-ml state: the parent's counts are the parent's to export."""
        self.aggregator.clear()
        self.worker._after_fork()


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
