"""``configure`` / ``force_flush`` / ``shutdown``: the optional one-call OpenTelemetry pipeline.

``configure`` builds the SDK's own providers (MeterProvider + PeriodicExportingMetricReader, then
TracerProvider + BatchSpanProcessor) with OTLP exporters, but only when the application has not set global
providers already — then it uses the application's. It honours the standard variables
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_TRACES_EXPORTER`` /
``OTEL_METRICS_EXPORTER`` = otlp|console|none, ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_BSP_*``,
``OTEL_SDK_DISABLED``); unreadable values fall back to the defaults with one warning.

Reliability properties of the pipeline it builds:

Each property lives in its own module: the span ledger in ``ledger``, fork safety in ``forksafe``, exporters,
environment parsing and secrets in ``exporters``; this module wires them together.

* **Span ledger.** Every sampled span that reaches the pipeline is in exactly one state at any time:
  queued, being exported, exported, or dropped with a reason (``span_queue_full``, ``span_export_failed``,
  ``span_already_shutdown``), so ``produced = exported + dropped{reason} + queued + in flight`` holds exactly
  (:func:`span_ledger`). Drops are exported in ``otel_ml.telemetry.dropped{reason}``. otel-ml decides queue
  admission itself (before the SDK's ``BatchSpanProcessor``), so the SDK's own racy drop-oldest never runs.
* **Bounded shutdown.** ``shutdown`` and ``force_flush`` return within their timeout even when the endpoint
  never answers: the SDK's own calls run on a helper thread that is abandoned at the deadline, an export still
  on the wire is interrupted, and whatever could not be sent is counted.
* **Fork.** In a forked child (``os.fork``, ``multiprocessing``, gunicorn ``--preload`` workers) the pipeline
  re-targets itself: a fresh ``service.instance.id`` (unless the application set one), fresh exporters (a
  gRPC channel is never used across fork), a fresh metric reader without the parent's accumulated state, and
  an empty span queue and ledger. Spans of other instrumentation that use the global TracerProvider follow
  automatically (same provider object); so do metrics of instruments on the global MeterProvider.
* **Secrets.** Userinfo in an OTLP endpoint becomes an ``Authorization: Basic`` header and leaves the URL;
  header values, userinfo and query values are redacted from the OpenTelemetry exporters' log records.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
)

from otel_ml import config
from otel_ml._core import runtime
from otel_ml._core.aggregation import MergingMetricExporter
from otel_ml._core.exporters import bsp_settings, build_metric_exporter, build_span_exporter, metric_interval
from otel_ml._core.forksafe import (
    FORK_EXPORT_WAIT_S,
    SDK_REFRESHES_RESOURCE_AT_FORK,
    SERVICE_INSTANCE_ID,
    ExportingPeriodicReader,
    ProcessLocalMetricExporter,
    ProcessResource,
    fork_gate,
    release_if_held,
)
from otel_ml._core.ledger import LedgerSpanProcessor, ProcessLocalSpanExporter, SpanLedger

_log = logging.getLogger("otel_ml")

SERVICE_NAME = "service.name"


@dataclass
class Pipeline:
    """What ``configure`` set up; ``owned`` providers are the ones otel-ml built and will shut down."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    built_resource: Resource | None
    owns_tracer_provider: bool
    owns_meter_provider: bool
    readers: list[MetricReader] = field(default_factory=list)
    ledger: SpanLedger | None = None
    span_exporter: ProcessLocalSpanExporter | None = None
    exporting_readers: list[_ExportingReader] = field(default_factory=list)

    @property
    def resource(self) -> Resource | None:
        """The resource otel-ml's providers export with now (a forked child's has its own instance id)."""
        if self.built_resource is None:
            return None
        for provider in (self.tracer_provider, self.meter_provider):
            current = getattr(provider, "resource", None) or getattr(
                getattr(provider, "_sdk_config", None), "resource", None
            )
            if isinstance(current, Resource):
                return current
        return self.built_resource


@dataclass
class _ExportingReader:
    """A periodic reader otel-ml added (to its own MeterProvider or to the application's)."""

    provider: MeterProvider
    reader: PeriodicExportingMetricReader
    exporter: ProcessLocalMetricExporter
    resource: Resource
    only_ours: bool
    interval_ms: float | None


_lock = threading.Lock()
_pipeline: Pipeline | None = None
_last_ledger: SpanLedger | None = None
_atexit_registered = False


def _resource(service_name: str | None, attributes: Mapping[str, str] | None) -> ProcessResource:
    attrs: dict[str, str] = dict(attributes or {})
    if service_name:
        attrs[SERVICE_NAME] = service_name
    items = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")  # not parse_env_headers: it would warn
    from_env = {item.partition("=")[0].strip() for item in items}  # about a bad item again, after the SDK did
    explicit = SERVICE_INSTANCE_ID in attrs or SERVICE_INSTANCE_ID in from_env
    resource = Resource.create(attrs)
    if SERVICE_INSTANCE_ID not in resource.attributes:  # SDKs < 1.45 do not generate one
        resource = resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))
    return ProcessResource(resource.attributes, resource.schema_url, renew_instance_id=not explicit)


def _exporting_reader(
    mp: MeterProvider,
    factory: Callable[[], MetricExporter],
    resource: Resource,
    only_ours: bool,
    interval_ms: float | None,
    first: MetricExporter | None = None,
    like: MetricExporter | None = None,
) -> _ExportingReader:
    """A periodic reader exporting otel-ml's aggregation (and, unless ``only_ours``, the provider's metrics)."""
    exporter = ProcessLocalMetricExporter(factory, first, like)
    merging = MergingMetricExporter(exporter, runtime.get().aggregator, resource, only_ours=only_ours)
    reader = ExportingPeriodicReader(merging, export_interval_millis=metric_interval(interval_ms))
    return _ExportingReader(mp, reader, exporter, resource, only_ours, interval_ms)


@config.warnings_once  # a variable read once per signal is reported once
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
    summary). Calling it again returns the first pipeline — also in a forked child, where the inherited
    pipeline has already re-targeted itself (fresh ``service.instance.id`` and exporters), so calling it from a
    gunicorn ``post_fork`` hook is safe.
    """
    global _pipeline
    with _lock:
        if _pipeline is not None:
            return _pipeline
        sdk_disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        resource = _resource(service_name, resource_attributes)
        rt = runtime.get()
        exporting: list[_ExportingReader] = []

        # Metrics first, so the span pipeline's SDK self-metrics have a provider to record into.
        global_mp = metrics.get_meter_provider()
        if type(global_mp).__name__ == "_ProxyMeterProvider" and not sdk_disabled:
            sdk_mp = MeterProvider(resource=resource, metric_readers=list(metric_readers), shutdown_on_exit=False)
            if metric_exporter is not None:
                given = metric_exporter
                exporting.append(_exporting_reader(sdk_mp, lambda: given, resource, False, metric_export_interval_ms))
            else:
                first = build_metric_exporter(endpoint, protocol, headers, sdk_mp)
                if first is not None:

                    def make_metric_exporter() -> MetricExporter:
                        built = build_metric_exporter(endpoint, protocol, headers, sdk_mp)
                        assert built is not None
                        return built

                    exporting.append(
                        _exporting_reader(
                            sdk_mp, make_metric_exporter, resource, False, metric_export_interval_ms, first
                        )
                    )
            # Added (not passed to the constructor) so that a forked child can swap it with the public API;
            # otel-ml flushes and shuts it down itself.
            for er in exporting:
                sdk_mp.add_metric_reader(er.reader)
            if exporting:  # a later attach_to_meter_provider (an auto-instrumentor's) must not add a second one
                _attached.add(id(sdk_mp))
            mp: metrics.MeterProvider = sdk_mp
            owns_mp = True
        else:
            mp, owns_mp = global_mp, False
            attach_to_meter_provider(mp, endpoint, protocol, headers, metric_export_interval_ms)
            for reader in metric_readers:
                _add_reader(mp, reader)

        global_tp = trace.get_tracer_provider()
        ledger: SpanLedger | None = None
        counted: ProcessLocalSpanExporter | None = None
        if isinstance(global_tp, trace.ProxyTracerProvider) and not sdk_disabled:
            sdk_tp = TracerProvider(resource=resource, shutdown_on_exit=False)
            self_metrics = mp if isinstance(mp, MeterProvider) else None
            exporter = span_exporter or build_span_exporter(endpoint, protocol, headers, self_metrics)
            if exporter is not None:
                factory: Callable[[], SpanExporter] | None = None
                if span_exporter is None:

                    def factory() -> SpanExporter:
                        built = build_span_exporter(endpoint, protocol, headers, self_metrics)
                        assert built is not None
                        return built

                bsp = bsp_settings()
                ledger = SpanLedger(bsp["OTEL_BSP_MAX_QUEUE_SIZE"])
                counted = ProcessLocalSpanExporter(exporter, ledger, factory)
                processor = BatchSpanProcessor(
                    counted,
                    max_queue_size=bsp["OTEL_BSP_MAX_QUEUE_SIZE"],
                    schedule_delay_millis=bsp["OTEL_BSP_SCHEDULE_DELAY"],
                    max_export_batch_size=bsp["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
                    export_timeout_millis=bsp["OTEL_BSP_EXPORT_TIMEOUT"],
                    meter_provider=self_metrics,
                )
                sdk_tp.add_span_processor(LedgerSpanProcessor(processor, ledger))
            tp: trace.TracerProvider = sdk_tp
            owns_tp = True
        else:
            tp, owns_tp = global_tp, False

        if set_global:
            if owns_tp:
                trace.set_tracer_provider(tp)
            if owns_mp:
                metrics.set_meter_provider(mp)
        rt.use(tp, mp)
        rt.worker.reopen()
        readers = [er.reader for er in exporting] + list(metric_readers)
        _pipeline = Pipeline(
            tp,
            mp,
            resource if owns_tp or owns_mp else None,
            owns_tp,
            owns_mp,
            readers,
            ledger,
            counted,
            exporting,
        )
        _register_atexit()
        _flush_at_multiprocessing_exit()
        return _pipeline


_attached: set[int] = set()
# Readers otel-ml added to an application's provider: the SDK flushes and shuts down only the readers a
# provider was built with, so otel-ml does it for these itself.
_added_readers: list[MetricReader] = []
_added_exporting: list[_ExportingReader] = []


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
    sdk_mp = mp
    first = build_metric_exporter(endpoint, protocol, headers, sdk_mp)
    if first is None:
        return False

    def make() -> MetricExporter:
        built = build_metric_exporter(endpoint, protocol, headers, sdk_mp)
        assert built is not None
        return built

    er = _exporting_reader(sdk_mp, make, Resource.create({}), True, metric_export_interval_ms, first)
    if _add_reader(sdk_mp, er.reader):
        _added_exporting.append(er)
        _attached.add(id(sdk_mp))
        return True
    runtime.get().aggregator.detach()
    return False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(lambda: shutdown(timeout=config.settings.shutdown_timeout))
        _atexit_registered = True


def _timeout(value: float) -> float:
    """A caller's timeout as a wait the threading module accepts: NaN/negative -> 0, at most one hour."""
    t = float(value)
    return min(t, config.MAX_SHUTDOWN_TIMEOUT) if t >= 0.0 else 0.0


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
    """Drain otel-ml's pending work, then flush the providers; returns False if ``timeout`` ran out.

    Spans are flushed before metrics, so the metric collection carries the span ledger's latest counts.
    """
    timeout = _timeout(timeout)
    deadline = time.monotonic() + timeout
    rt = runtime.get()
    rt.flush_monitors()
    ok = rt.worker.drain(timeout)
    pipeline = _pipeline
    targets: list[object]
    if pipeline is not None:
        targets = [pipeline.tracer_provider, *(er.reader for er in pipeline.exporting_readers)]
        targets += [pipeline.meter_provider, *_added_readers]
    else:
        targets = [trace.get_tracer_provider(), metrics.get_meter_provider(), *_added_readers]

    def flush() -> None:
        for target in targets:
            flush_fn = getattr(target, "force_flush", None)
            if flush_fn is not None:
                flush_fn(int(max(0.0, deadline - time.monotonic()) * 1000))

    return _bounded(flush, deadline - time.monotonic()) and ok


def shutdown(timeout: float = 5.0) -> bool:
    """Flush and shut down what ``configure`` built, within ``timeout`` seconds; later calls are no-ops.

    Order: otel-ml's worker (a quarter of the time at most), then spans (half of what is left: the queue is
    exported if the endpoint answers, otherwise the export on the wire is interrupted and the rest counted as
    ``span_already_shutdown`` / ``span_export_failed``), then metrics (a final collection carrying the final
    span ledger). After shutdown otel-ml records into no-op providers, so instrumented calls keep working.
    """
    timeout = _timeout(timeout)
    global _pipeline, _last_ledger
    deadline = time.monotonic() + timeout
    rt = runtime.get()
    rt.worker.close(max(0.0, timeout / 4))
    with _lock:
        pipeline, _pipeline = _pipeline, None
        added = list(_added_readers)
        added_exporting = list(_added_exporting)
        _added_readers.clear()
        _added_exporting.clear()
        _attached.clear()
    if pipeline is None and not added:
        return True
    if pipeline is None:
        pipeline = Pipeline(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider(), None, False, False)
    rt.use(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider())
    finished = True

    if pipeline.owns_tracer_provider:
        if pipeline.ledger is not None:
            _last_ledger = pipeline.ledger
            pipeline.ledger.close()
        tp = pipeline.tracer_provider
        budget = (deadline - time.monotonic()) / 2
        spans_done = _bounded(tp.shutdown, budget)  # type: ignore[attr-defined]
        if not spans_done and pipeline.span_exporter is not None:
            _bounded(pipeline.span_exporter.interrupt, 0.05)  # do not wait: the helper is abandoned if stuck
        if pipeline.ledger is not None:
            pipeline.ledger.finalize()
        finished = spans_done

    exporting = pipeline.exporting_readers + added_exporting
    owned: list[object] = [er.reader for er in exporting]
    owned += [r for r in added if all(r is not er.reader for er in added_exporting)]
    if pipeline.owns_meter_provider:
        owned.append(pipeline.meter_provider)

    def stop() -> None:
        for p in owned:
            remaining_ms = max(0.0, deadline - time.monotonic()) * 1000
            p.shutdown(timeout_millis=remaining_ms)  # type: ignore[attr-defined]

    metrics_done = _bounded(stop, deadline - time.monotonic())
    if not metrics_done:
        for er in exporting:  # interrupt an export on the wire; the helper thread is abandoned
            _bounded(er.exporter.shutdown, 0.0)
    finished = finished and metrics_done
    if not finished:
        _log.warning("otel_ml: shutdown did not finish within %.1fs; unsent telemetry was abandoned", timeout)
    return finished


def current() -> Pipeline | None:
    """The pipeline ``configure`` built, if any."""
    return _pipeline


def span_ledger() -> dict[str, int] | None:
    """The span ledger of the configured (or last shut down) pipeline: produced, exported, drops by reason."""
    pipeline = _pipeline
    ledger = pipeline.ledger if pipeline is not None and pipeline.ledger is not None else _last_ledger
    return ledger.snapshot() if ledger is not None else None


def _reset_for_tests() -> None:
    """Forget the configured pipeline without shutting anything down (test isolation only)."""
    global _pipeline
    with _lock:
        _pipeline = None


# --- fork -------------------------------------------------------------------------------------------------------
def _retarget(er: _ExportingReader) -> _ExportingReader:
    """In a forked child: a fresh reader (no parent state, new lock and thread) and exporter replace ``er``."""
    er.exporter.orphaned = True  # the parent's copy never sends anything from this process
    # the exporter itself is built on the first export (not inside the fork hook)
    fresh = _exporting_reader(
        er.provider, er.exporter._factory, er.resource, er.only_ours, er.interval_ms, like=er.exporter
    )
    consumer = getattr(er.provider, "_measurement_consumer", None)
    release_if_held(consumer, "_lock")
    release_if_held(MeterProvider, "_all_metric_readers_lock")
    er.provider.add_metric_reader(fresh.reader)
    er.provider.remove_metric_reader(er.reader)  # public API: drops the storage holding the parent's points
    return fresh


def _after_fork_in_child() -> None:
    """Re-target otel-ml's pipeline in a forked child (see the module docstring). Never raises."""
    global _lock, _pipeline
    _lock = threading.Lock()
    unsafe = fork_gate._active > 0
    fork_gate._reset()
    if unsafe:
        with contextlib.suppress(Exception):
            _log.warning(
                "otel_ml: forked while an OTLP export was still in flight after %.1fs; gRPC may not work in this "
                "process",
                FORK_EXPORT_WAIT_S,
            )
    pipeline = _pipeline
    try:
        built = pipeline.built_resource if pipeline is not None else None
        if isinstance(built, ProcessResource) and not SDK_REFRESHES_RESOURCE_AT_FORK:
            built.after_fork()
        if pipeline is not None and pipeline.ledger is not None:
            pipeline.ledger._reset()  # the BatchSpanProcessor's own fork hook empties its queue
        if pipeline is not None:
            pipeline.exporting_readers = [_retarget(er) for er in pipeline.exporting_readers]
            pipeline.readers = [er.reader for er in pipeline.exporting_readers] + [
                r for r in pipeline.readers if not isinstance(r, ExportingPeriodicReader)
            ]
        for i, er in enumerate(_added_exporting):
            fresh = _retarget(er)
            _added_readers[:] = [fresh.reader if r is er.reader else r for r in _added_readers]
            _added_exporting[i] = fresh
    except Exception as exc:  # a broken pipeline in the child must not break the child
        with contextlib.suppress(Exception):
            _log.warning("otel_ml: could not re-target telemetry after fork (%s)", type(exc).__name__)
    _flush_at_multiprocessing_exit()


_mp_hooked = False


def _flush_at_multiprocessing_exit() -> None:
    """``multiprocessing`` children leave through ``os._exit`` (no atexit): flush via its own finalizers.

    Registered once per process tree (the after-fork registry is inherited with this flag); a no-op until
    ``multiprocessing`` is imported by the application.
    """
    global _mp_hooked
    util = sys.modules.get("multiprocessing.util")
    if _mp_hooked or util is None:
        return
    util.register_after_fork(_mp_marker, _register_mp_finalizer)
    _mp_hooked = True


class _Marker:
    """A weak-referenceable key for ``multiprocessing.util.register_after_fork``."""


_mp_marker = _Marker()


def _register_mp_finalizer(_: object) -> None:
    from multiprocessing import util

    if _pipeline is not None:
        util.Finalize(None, lambda: shutdown(timeout=config.settings.shutdown_timeout), exitpriority=-100)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=fork_gate.before_fork,
        after_in_parent=fork_gate.after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
