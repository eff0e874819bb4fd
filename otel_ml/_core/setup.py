"""``configure`` / ``force_flush`` / ``shutdown``: the optional one-call OpenTelemetry pipeline.

``configure`` builds the SDK's own providers (TracerProvider + BatchSpanProcessor, MeterProvider +
PeriodicExportingMetricReader) with OTLP exporters, but only when the application has not set global
providers already — then it uses the application's. It honours the standard variables
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_TRACES_EXPORTER`` /
``OTEL_METRICS_EXPORTER`` = otlp|console|none, ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_SDK_DISABLED``).
``shutdown`` and ``force_flush`` return within their timeout even when the endpoint never answers: the SDK's
own calls run on a helper thread that is abandoned at the deadline.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from otel_ml import config
from otel_ml._core import runtime
from otel_ml._core.aggregation import MergingMetricExporter

_log = logging.getLogger("otel_ml")

SERVICE_NAME = "service.name"
SERVICE_INSTANCE_ID = "service.instance.id"


@dataclass
class Pipeline:
    """What ``configure`` set up; ``owned`` providers are the ones otel-ml built and will shut down."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    resource: Resource | None
    owns_tracer_provider: bool
    owns_meter_provider: bool
    readers: list[MetricReader] = field(default_factory=list)


_lock = threading.Lock()
_pipeline: Pipeline | None = None
_atexit_registered = False


def _protocol(signal: str, explicit: str | None) -> str:
    value = (
        explicit
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    value = value.strip().lower()
    if value not in ("grpc", "http/protobuf"):
        _log.warning("otel_ml: unsupported OTLP protocol %r, using grpc", value)
        return "grpc"
    return value


def _exporter_choice(signal: str) -> str:
    value = os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() or "otlp"
    if value not in ("otlp", "console", "none"):
        _log.warning("otel_ml: unsupported OTEL_%s_EXPORTER=%r, using otlp", signal, value)
        return "otlp"
    return value


def _http_endpoint(endpoint: str | None, path: str) -> str | None:
    if endpoint is None:
        return None
    return endpoint.rstrip("/") + path


def _span_exporter(
    endpoint: str | None, protocol: str | None, headers: Mapping[str, str] | None
) -> SpanExporter | None:
    choice = _exporter_choice("TRACES")
    if choice == "none":
        return None
    if choice == "console":
        return ConsoleSpanExporter()
    if _protocol("TRACES", protocol) == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

        return HttpSpanExporter(
            endpoint=_http_endpoint(endpoint, "/v1/traces"), headers=dict(headers) if headers else None
        )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

    return GrpcSpanExporter(endpoint=endpoint, headers=dict(headers) if headers else None)


def _metric_exporter(
    endpoint: str | None, protocol: str | None, headers: Mapping[str, str] | None
) -> MetricExporter | None:
    choice = _exporter_choice("METRICS")
    if choice == "none":
        return None
    if choice == "console":
        return ConsoleMetricExporter()
    if _protocol("METRICS", protocol) == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

        return HttpMetricExporter(
            endpoint=_http_endpoint(endpoint, "/v1/metrics"), headers=dict(headers) if headers else None
        )
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

    return GrpcMetricExporter(endpoint=endpoint, headers=dict(headers) if headers else None)


def _resource(service_name: str | None, attributes: Mapping[str, str] | None) -> Resource:
    attrs: dict[str, str] = dict(attributes or {})
    if service_name:
        attrs[SERVICE_NAME] = service_name
    resource = Resource.create(attrs)
    if SERVICE_INSTANCE_ID not in resource.attributes:
        resource = resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))
    return resource


def configure(
    service_name: str | None = None,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    span_exporter: SpanExporter | None = None,
    metric_exporter: MetricExporter | None = None,
    metric_readers: Sequence[MetricReader] = (),
    metric_export_interval_ms: float | None = None,
    set_global: bool = True,
) -> Pipeline:
    """Set up tracing and metrics export for otel-ml (and the app), once.

    When global providers exist already they are used as they are. Otherwise otel-ml builds SDK providers
    with a resource carrying ``service.name`` and a fresh ``service.instance.id``, OTLP exporters (gRPC by
    default; ``protocol="http/protobuf"`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``), and registers them globally
    unless ``set_global=False``. ``metric_readers`` are added beside the exporting reader (e.g. an in-process
    summary). Calling it again returns the first pipeline.
    """
    global _pipeline
    with _lock:
        if _pipeline is not None:
            return _pipeline
        sdk_disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        resource = _resource(service_name, resource_attributes)
        rt = runtime.get()

        global_tp = trace.get_tracer_provider()
        if isinstance(global_tp, trace.ProxyTracerProvider) and not sdk_disabled:
            tp: trace.TracerProvider = TracerProvider(resource=resource, shutdown_on_exit=False)
            exporter = span_exporter or _span_exporter(endpoint, protocol, headers)
            if exporter is not None:
                tp.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[attr-defined]
            owns_tp = True
        else:
            tp, owns_tp = global_tp, False

        global_mp = metrics.get_meter_provider()
        readers: list[MetricReader] = []
        if type(global_mp).__name__ == "_ProxyMeterProvider" and not sdk_disabled:
            exporter_m = metric_exporter or _metric_exporter(endpoint, protocol, headers)
            if exporter_m is not None:
                readers.append(
                    PeriodicExportingMetricReader(
                        MergingMetricExporter(exporter_m, rt.aggregator, resource),
                        export_interval_millis=metric_export_interval_ms,
                    )
                )
            readers.extend(metric_readers)
            mp: metrics.MeterProvider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
            owns_mp = True
        else:
            mp, owns_mp = global_mp, False
            attach_to_meter_provider(mp, endpoint, protocol, headers, metric_export_interval_ms)
            for reader in metric_readers:
                _add_reader(mp, reader)

        if set_global:
            if owns_tp:
                trace.set_tracer_provider(tp)
            if owns_mp:
                metrics.set_meter_provider(mp)
        rt.use(tp, mp)
        rt.worker.reopen()
        _pipeline = Pipeline(tp, mp, resource if owns_tp or owns_mp else None, owns_tp, owns_mp, readers)
        _register_atexit()
        return _pipeline


_attached: set[int] = set()
# Readers otel-ml added to an application's provider: the SDK flushes and shuts down only the readers a
# provider was built with, so otel-ml does it for these itself.
_added_readers: list[MetricReader] = []


def _add_reader(mp: metrics.MeterProvider, reader: MetricReader) -> bool:
    add = getattr(mp, "add_metric_reader", None)  # SDK >= 1.3x; older SDKs keep the per-value fallback
    if add is None:
        _log.warning("otel_ml: this MeterProvider cannot take extra readers; otel-ml records value by value")
        return False
    add(reader)
    _added_readers.append(reader)
    return True


def attach_to_meter_provider(
    mp: metrics.MeterProvider | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    metric_export_interval_ms: float | None = None,
) -> bool:
    """Give an application-owned SDK ``MeterProvider`` otel-ml's fast path, once per provider.

    Adds a periodic reader whose exporter (chosen by ``OTEL_METRICS_EXPORTER`` and the OTLP variables, like the
    application's) exports only otel-ml's aggregated ``ml.*`` metrics; the application's readers keep exporting
    everything else. Used by ``configure`` and by the auto-instrumentors (``opentelemetry-instrument``).
    Returns False, changing nothing, when the provider is not an SDK one.
    """
    mp = mp or metrics.get_meter_provider()
    if not isinstance(mp, MeterProvider) or id(mp) in _attached:
        return id(mp) in _attached
    exporter = _metric_exporter(endpoint, protocol, headers)
    if exporter is None:
        return False
    rt = runtime.get()
    reader = PeriodicExportingMetricReader(
        MergingMetricExporter(exporter, rt.aggregator, Resource.create({}), only_ours=True),
        export_interval_millis=metric_export_interval_ms,
    )
    if _add_reader(mp, reader):
        _attached.add(id(mp))
        return True
    rt.aggregator.detach()
    return False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(lambda: shutdown(timeout=config.settings.shutdown_timeout))
        _atexit_registered = True


def _bounded(fn: Callable[[], object], timeout: float) -> bool:
    """Run ``fn`` on a daemon thread; True if it finished within ``timeout`` seconds."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        except Exception as exc:  # an exporter failing at shutdown is logged, not raised
            _log.warning("otel_ml: %s during flush/shutdown", type(exc).__name__)
        finally:
            done.set()

    threading.Thread(target=run, name="otel_ml-flush", daemon=True).start()
    return done.wait(max(0.0, timeout))


def force_flush(timeout: float = 5.0) -> bool:
    """Drain otel-ml's pending work, then flush the providers; returns False if ``timeout`` ran out."""
    deadline = time.monotonic() + timeout
    rt = runtime.get()
    rt.flush_monitors()
    ok = rt.worker.drain(timeout)
    pipeline = _pipeline
    providers: list[object] = list(_added_readers)
    if pipeline is not None:
        providers += [pipeline.meter_provider, pipeline.tracer_provider]
    else:
        providers += [metrics.get_meter_provider(), trace.get_tracer_provider()]

    def flush() -> None:
        for p in providers:
            flush_fn = getattr(p, "force_flush", None)
            if flush_fn is not None:
                flush_fn(int(max(0.0, deadline - time.monotonic()) * 1000))

    return _bounded(flush, deadline - time.monotonic()) and ok


def shutdown(timeout: float = 5.0) -> bool:
    """Flush and shut down what ``configure`` built, within ``timeout`` seconds; later calls are no-ops.

    After shutdown otel-ml records into no-op providers, so instrumented calls keep working silently.
    """
    global _pipeline
    deadline = time.monotonic() + timeout
    rt = runtime.get()
    rt.worker.close(max(0.0, timeout / 2))
    with _lock:
        pipeline, _pipeline = _pipeline, None
        added = list(_added_readers)
        _added_readers.clear()
    if pipeline is None and not added:
        return True
    owned: list[object] = list(added)
    if pipeline is None:
        pipeline = Pipeline(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider(), None, False, False)
    if pipeline.owns_meter_provider:
        owned.append(pipeline.meter_provider)
    if pipeline.owns_tracer_provider:
        owned.append(pipeline.tracer_provider)
    rt.use(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider())

    def stop() -> None:
        for p in owned:
            remaining_ms = max(0.0, deadline - time.monotonic()) * 1000
            if isinstance(p, (MeterProvider, MetricReader)):
                p.shutdown(timeout_millis=remaining_ms)
            else:
                p.shutdown()  # type: ignore[attr-defined]

    finished = _bounded(stop, deadline - time.monotonic())
    if not finished:
        _log.warning("otel_ml: shutdown did not finish within %.1fs; unsent telemetry was abandoned", timeout)
    return finished


def current() -> Pipeline | None:
    """The pipeline ``configure`` built, if any."""
    return _pipeline


def _reset_for_tests() -> None:
    """Forget the configured pipeline without shutting anything down (test isolation only)."""
    global _pipeline
    with _lock:
        _pipeline = None
