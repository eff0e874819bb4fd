"""In-memory telemetry for tests: fresh SDK providers wired into otel-ml without touching the globals.

with InMemoryTelemetry() as tel:
    predict(X)
    tel.spans()                      # finished spans
    tel.points("ml.prediction.count")  # data points of one metric, otel-ml histograms merged in
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_ml._core import runtime
from otel_ml.summary import SummaryReader


class InMemoryTelemetry:
    """Fresh tracer and meter providers recording in memory, used by otel-ml until :meth:`close`."""

    def __init__(self, merge: bool = True, resource: Resource | None = None) -> None:
        rt = runtime.get()
        rt.worker.drain(10.0)  # work queued before (e.g. by the last collection) must not land in this one
        rt.aggregator.clear()
        self.resource = resource or Resource.create({"service.name": "otel-ml-test"})
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader: InMemoryMetricReader = SummaryReader(self.resource) if merge else InMemoryMetricReader()
        self.meter_provider = MeterProvider(
            resource=self.resource, metric_readers=[self.reader], shutdown_on_exit=False
        )
        rt.worker.reopen()
        rt.use(self.tracer_provider, self.meter_provider)

    def spans(self) -> list[ReadableSpan]:
        """Every span finished so far."""
        return list(self.exporter.get_finished_spans())

    def metrics(self) -> dict[str, Metric]:
        """Collect now; every metric by name (otel-ml's background work drained first)."""
        runtime.get().worker.drain(10.0)
        data = self.reader.get_metrics_data()
        out: dict[str, Metric] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = m
        return out

    def points(self, name: str, collected: dict[str, Metric] | None = None) -> list[Any]:
        """The data points of metric ``name`` from ``collected`` (default: a fresh collection).

        The SDK hands out exemplars once per collection: read several metrics' exemplars from one
        ``metrics()`` result.
        """
        metric = (self.metrics() if collected is None else collected).get(name)
        return list(metric.data.data_points) if metric is not None else []

    def close(self) -> None:
        """Stop recording here; otel-ml falls back to the global providers."""
        rt = runtime.get()
        rt.worker.drain(10.0)
        rt.use(None, None)
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()
        rt.aggregator.clear()

    def __enter__(self) -> InMemoryTelemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
