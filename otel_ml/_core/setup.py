"""``configure`` / ``force_flush`` / ``shutdown``: the optional one-call OpenTelemetry pipeline.

``configure`` builds the SDK's own providers (MeterProvider + PeriodicExportingMetricReader, then
TracerProvider + BatchSpanProcessor) with OTLP exporters, but only when the application has not set global
providers already — then it uses the application's. It honours the standard variables
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_TRACES_EXPORTER`` /
``OTEL_METRICS_EXPORTER`` = otlp|console|none, ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_BSP_*``,
``OTEL_SDK_DISABLED``); unreadable values fall back to the defaults with one warning.

Reliability properties of the pipeline it builds:

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
import base64
import contextlib
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import SpanProcessor as _SdkSpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.util.re import parse_env_headers

from otel_ml import config
from otel_ml._core import runtime
from otel_ml._core.aggregation import MergingMetricExporter

_log = logging.getLogger("otel_ml")

SERVICE_NAME = "service.name"
SERVICE_INSTANCE_ID = "service.instance.id"

DROP_SPAN_QUEUE_FULL = "span_queue_full"
DROP_SPAN_EXPORT_FAILED = "span_export_failed"
DROP_SPAN_SHUTDOWN = "span_already_shutdown"
SPAN_DROP_REASONS = (DROP_SPAN_QUEUE_FULL, DROP_SPAN_EXPORT_FAILED, DROP_SPAN_SHUTDOWN)

_BSP_DEFAULTS = {
    "OTEL_BSP_MAX_QUEUE_SIZE": 2048,
    "OTEL_BSP_SCHEDULE_DELAY": 5000,
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 512,
    "OTEL_BSP_EXPORT_TIMEOUT": 30000,
}
_DEFAULT_METRIC_INTERVAL_MS = 60000.0
_DEFAULT_OTLP_TIMEOUT_S = 10.0


# --- the span ledger ------------------------------------------------------------------------------------------
class SpanLedger:
    """Exact accounting of the sampled spans that reach otel-ml's span pipeline.

    Every span is in exactly one state, and each transition happens under one lock, so at any instant
    ``produced == exported + failed + queue_full + already_shutdown + queued + in_flight``. ``queued`` counts the
    spans handed to the ``BatchSpanProcessor`` and not yet picked up by its exporter; admission is refused (and
    counted as ``span_queue_full``) when it reaches the queue's capacity, so the SDK's own drop-oldest path
    never runs. :meth:`finalize` (at shutdown) turns whatever is still queued into ``span_already_shutdown`` and
    an export still on the wire into ``span_export_failed``: after it, nothing else is sent.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.produced = self.exported = self.failed = self.queue_full = self.already_shutdown = 0
        self.queued = self.in_flight = 0
        self.closed = False
        self.final = False

    def admit(self) -> bool:
        """One sampled span ended: True if it may enter the queue (otherwise it was counted as dropped)."""
        if self._pid != os.getpid():  # a fork that skipped the Python fork hooks (e.g. uWSGI): start clean
            self._reset()
        with self._lock:
            self.produced += 1
            if self.closed:
                self.already_shutdown += 1
                reason = DROP_SPAN_SHUTDOWN
            elif self.queued >= self.capacity:
                self.queue_full += 1
                reason = DROP_SPAN_QUEUE_FULL
            else:
                self.queued += 1
                return True
        runtime.get().count_drop(reason)
        return False

    def begin_export(self, n: int) -> bool:
        """The exporter took ``n`` spans off the queue; False once finalized (they were counted already)."""
        with self._lock:
            if self.final:
                return False
            self.queued -= n
            self.in_flight += n
            return True

    def end_export(self, n: int, ok: bool) -> None:
        with self._lock:
            if self.final:  # abandoned at shutdown: already counted as span_export_failed
                return
            self.in_flight -= n
            if ok:
                self.exported += n
                return
            self.failed += n
        runtime.get().count_drop(DROP_SPAN_EXPORT_FAILED, n)

    def close(self) -> None:
        """Shutdown started: spans ending from now on are dropped as ``span_already_shutdown``."""
        with self._lock:
            self.closed = True

    def finalize(self) -> None:
        """Shutdown is over: count what was left in the queue and on the wire; nothing is exported after this."""
        with self._lock:
            if self.final:
                return
            self.final = self.closed = True
            left, wire = self.queued, self.in_flight
            self.already_shutdown += left
            self.failed += wire
            self.queued = self.in_flight = 0
        rt = runtime.get()
        if left:
            rt.count_drop(DROP_SPAN_SHUTDOWN, left)
        if wire:
            rt.count_drop(DROP_SPAN_EXPORT_FAILED, wire)

    def snapshot(self) -> dict[str, int]:
        """The ledger's counts; ``unexplained`` is 0 by construction (the identity above)."""
        with self._lock:
            counts = {
                "produced": self.produced,
                "exported": self.exported,
                "span_export_failed": self.failed,
                "span_queue_full": self.queue_full,
                "span_already_shutdown": self.already_shutdown,
                "queued": self.queued,
                "in_flight": self.in_flight,
            }
        counts["unexplained"] = counts["produced"] - sum(v for k, v in counts.items() if k != "produced")
        return counts


class _LedgerSpanProcessor(_SdkSpanProcessor):
    """Counts and admits each sampled span before the ``BatchSpanProcessor`` (one lock, three integer ops)."""

    def __init__(self, inner: BatchSpanProcessor, ledger: SpanLedger) -> None:
        self._inner = inner
        self._ledger = ledger

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass  # the BatchSpanProcessor does nothing on start either

    def _on_ending(self, span: Any) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None or not ctx.trace_flags.sampled:
            return
        if self._ledger.admit():
            self._inner.on_end(span)

    def shutdown(self) -> None:
        self._ledger.close()
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _ExportGate:
    """Keeps a fork from happening in the middle of one of otel-ml's gRPC export RPCs.

    gRPC skips its own fork handlers when a thread is inside gRPC at the moment of ``fork()`` ("Other threads are
    currently calling into gRPC, skipping fork() handlers"); the child then inherits a half-copied gRPC core and
    may hang or crash when it uses gRPC. Measured (100 forks while 8 threads predict and the exporters are busy):
    without the gate 13-26 forks skip the handlers, the slowest child needs 3 s to exit and one run in ~8 had a
    child die of SIGSEGV; with the gate, 0 skips and every child exits in ~0.1 s. Before a fork the forking
    thread waits (at most ``FORK_EXPORT_WAIT_S``) for RPCs in flight to finish, and RPCs about to start wait for
    the fork. Retry back-off sleeps are not RPCs: a fork never waits for an endpoint that refuses connections;
    it waits (the bounded time) for one that accepts and never answers.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False

    def enter(self) -> None:
        with self._cond:
            while self._forking:
                self._cond.wait(0.5)
            self._active += 1

    def exit(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def before_fork(self) -> None:
        deadline = time.monotonic() + FORK_EXPORT_WAIT_S
        with self._cond:
            self._forking = True
            while self._active and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()


FORK_EXPORT_WAIT_S = 0.5
_gate = _ExportGate()


class _GatedStub:
    """A gRPC OTLP stub whose ``Export`` RPCs hold the fork gate (only the RPC: not the retry back-off sleeps)."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def Export(self, *args: Any, **kwargs: Any) -> Any:
        _gate.enter()
        try:
            return self._stub.Export(*args, **kwargs)
        finally:
            _gate.exit()


def _gate_grpc(exporter: Any) -> Any:
    """Route a gRPC OTLP exporter's RPCs through the fork gate (also after it re-creates its channel)."""
    init = getattr(exporter, "_initialize_channel_and_stub", None)
    if getattr(exporter, "_client", None) is None or init is None:
        return exporter  # another exporter version: exports run ungated

    def reinit() -> None:
        init()
        exporter._client = _GatedStub(exporter._client)

    exporter._initialize_channel_and_stub = reinit
    exporter._client = _GatedStub(exporter._client)
    return exporter


class _ProcessLocalSpanExporter(SpanExporter):
    """The span exporter of one process, counted in the ledger.

    ``factory`` builds the real exporter; a forked child builds its own on its first export instead of using
    the parent's (a gRPC channel must not cross a fork). An exporter passed to ``configure`` (no factory) is
    used as it is.
    """

    def __init__(self, inner: SpanExporter, ledger: SpanLedger, factory: Callable[[], SpanExporter] | None) -> None:
        self._inner = inner
        self._ledger = ledger
        self._factory = factory
        self._pid = os.getpid()
        self._shut = False

    def _current(self) -> SpanExporter:
        if self._pid != os.getpid() and self._factory is not None:
            self._inner, self._pid, self._shut = self._factory(), os.getpid(), False
        return self._inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        n = len(spans)
        if not self._ledger.begin_export(n):
            return SpanExportResult.FAILURE
        ok = False
        try:
            result = self._current().export(spans)
            ok = result is SpanExportResult.SUCCESS
            return result
        finally:
            self._ledger.end_export(n, ok)

    def shutdown(self) -> None:
        if self._shut:  # the interrupt at the deadline and the processor's own shutdown both land here
            return
        self._shut = True
        if self._pid == os.getpid() or self._factory is None:
            self._inner.shutdown()

    def interrupt(self) -> None:
        """Abandon an export on the wire (shutdown ran out of time): the exporter's own shutdown cancels it."""
        with contextlib.suppress(Exception):
            self.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._current().force_flush(timeout_millis)


class _ProcessLocalMetricExporter(MetricExporter):
    """The metric exporter of one process, built lazily in a forked child (see :class:`_ProcessLocalSpanExporter`).

    ``like`` gives the temporality/aggregation preferences without building an exporter (fork hook).
    """

    def __init__(
        self,
        factory: Callable[[], MetricExporter],
        inner: MetricExporter | None = None,
        like: MetricExporter | None = None,
    ) -> None:
        first = inner if inner is not None or like is not None else factory()
        template = first if first is not None else like
        super().__init__(
            preferred_temporality=getattr(template, "_preferred_temporality", None),
            preferred_aggregation=getattr(template, "_preferred_aggregation", None),
        )
        self._factory = factory
        self._inner: MetricExporter | None = first
        self._pid = os.getpid()
        self.orphaned = False  # set in a forked child on the parent's copy: it must never send anything

    def _current(self) -> MetricExporter:
        if self._inner is None or self._pid != os.getpid():
            self._inner, self._pid = self._factory(), os.getpid()
        return self._inner

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self.orphaned:
            return MetricExportResult.SUCCESS
        return self._current().export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        if self.orphaned or self._inner is None:
            return True
        return self._current().force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self.orphaned or self._inner is None or self._pid != os.getpid():
            return
        self.orphaned = True  # once: the interrupt at the deadline and the reader's own shutdown both land here
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class _ProcessResource(Resource):
    """The pipeline's resource; a forked child gets its own ``service.instance.id`` (unless the app set it).

    Tracers and meters keep a reference to their provider's resource object, so renewing it in place moves
    every one of them, including those other instrumentation created before the fork. SDKs >= 1.45 refresh
    the instance id of their providers after a fork themselves (replacing the provider's resource object, and
    overriding an id the application set); otel-ml then leaves it to them.
    """

    def __init__(self, attributes: Mapping[str, Any], schema_url: str | None, renew_instance_id: bool) -> None:
        super().__init__(dict(attributes), schema_url)
        self.renew_instance_id = renew_instance_id

    def after_fork(self) -> None:
        if self.renew_instance_id:
            attrs = {**self.attributes, SERVICE_INSTANCE_ID: str(uuid.uuid4())}
            Resource.__init__(self, attrs, self.schema_url)


# SDK >= 1.45: TracerProvider/MeterProvider re-detect process-dependent resource attributes after a fork.
_SDK_REFRESHES_RESOURCE_AT_FORK = hasattr(TracerProvider, "_handle_fork")


class _ExportingPeriodicReader(PeriodicExportingMetricReader):
    """otel-ml's exporting reader. In a forked child it is replaced by a fresh one (:func:`_retarget`), so the
    SDK's own fork hook must not restart this one's ticker thread (which would then log "Cannot call collect")."""

    def _at_fork_reinit(self) -> None:
        pass


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
    span_exporter: _ProcessLocalSpanExporter | None = None
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
    exporter: _ProcessLocalMetricExporter
    resource: Resource
    only_ours: bool
    interval_ms: float | None


_lock = threading.Lock()
_pipeline: Pipeline | None = None
_last_ledger: SpanLedger | None = None
_atexit_registered = False


# --- environment ---------------------------------------------------------------------------------------------
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


def _positive_number(name: str, default: float) -> float:
    """A positive number from ``name``; anything else is the default, with one warning (fails closed)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        _log.warning("otel_ml: ignoring %s=%r (expected a positive number); using %s", name, raw, default)
        return default
    return value


def _bsp_settings() -> dict[str, int]:
    """The BatchSpanProcessor's settings, parsed by otel-ml (the SDK raises or logs a traceback on bad values)."""
    s = {name: int(_positive_number(name, default)) for name, default in _BSP_DEFAULTS.items()}
    if s["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] > s["OTEL_BSP_MAX_QUEUE_SIZE"]:
        _log.warning(
            "otel_ml: OTEL_BSP_MAX_EXPORT_BATCH_SIZE=%s exceeds OTEL_BSP_MAX_QUEUE_SIZE=%s; using %s",
            s["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
            s["OTEL_BSP_MAX_QUEUE_SIZE"],
            s["OTEL_BSP_MAX_QUEUE_SIZE"],
        )
        s["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = s["OTEL_BSP_MAX_QUEUE_SIZE"]
    return s


def _otlp_timeout(signal: str) -> float | None:
    """``None`` when the exporters may read their timeout variables themselves; the default when one is bad
    (the gRPC exporter would otherwise raise ``ValueError`` out of ``configure``)."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        raw = os.environ.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            value = float(raw.strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            _log.warning("otel_ml: ignoring %s=%r (expected a positive number); using %s", name, raw, 10)
            return _DEFAULT_OTLP_TIMEOUT_S
    return None


def _metric_interval(explicit: float | None) -> float:
    if explicit is not None:
        return explicit
    return _positive_number("OTEL_METRIC_EXPORT_INTERVAL", _DEFAULT_METRIC_INTERVAL_MS)


# --- endpoints and secrets -----------------------------------------------------------------------------------
@dataclass
class _Target:
    """Where one signal goes: a URL without userinfo, and the headers (userinfo became Basic auth)."""

    endpoint: str | None
    headers: dict[str, str] | None


_secrets: set[str] = set()


def _remember_secret(value: str) -> None:
    value = value.strip()
    if len(value) >= 4:  # shorter values would redact ordinary words
        _secrets.add(value)
        _install_redaction()


def _signal_url(base: str, signal: str) -> str:
    """``<base>/v1/<signal>`` with the signal path added to the URL's path, so a query string stays a query
    (the SDK appends it to the end of the whole string, which turns ``?key=v`` into ``?key=v/v1/traces``)."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + f"/v1/{signal.lower()}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _target(signal: str, protocol: str, endpoint: str | None, headers: Mapping[str, str] | None) -> _Target:
    """Resolve the endpoint and headers the exporters would use, and move secrets out of the URL."""
    if endpoint is None:
        endpoint = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        if endpoint is None and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") is not None:
            base = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
            endpoint = _signal_url(base, signal) if protocol == "http/protobuf" else base
    elif protocol == "http/protobuf":
        endpoint = _signal_url(endpoint, signal)
    merged: dict[str, str] | None = dict(headers) if headers else None
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        raw = os.environ.get(name)
        if raw:
            for value in parse_env_headers(raw, liberal=True).values():
                _remember_secret(value)
    for value in (headers or {}).values():
        _remember_secret(str(value))
    if endpoint is None:
        return _Target(None, merged)
    parts = urlsplit(endpoint)
    for _, value in parse_qsl(parts.query, keep_blank_values=False):
        _remember_secret(value)
    if parts.username is None and parts.password is None:
        return _Target(endpoint, merged)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    for secret in (user, password, parts.netloc.rpartition("@")[0]):
        _remember_secret(secret)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    if parts.port is not None:
        netloc += f":{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if merged is None:
        merged = {}
        for name in (f"OTEL_EXPORTER_OTLP_{signal}_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
            if os.environ.get(name):  # explicit headers replace the variables: keep what they said
                merged.update(parse_env_headers(os.environ[name], liberal=True))
                break
    if not any(k.lower() == "authorization" for k in merged):
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        merged["authorization"] = f"Basic {token}"
        _remember_secret(token)
    return _Target(clean, merged)


class _RedactSecrets(logging.Filter):
    """Replaces OTLP header values, endpoint userinfo and query values in a log record by ``<redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = tuple(_secrets)
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if any(s in message or (record.exc_text and s in record.exc_text) for s in secrets):
            for s in secrets:
                message = message.replace(s, "<redacted>")
                if record.exc_text:
                    record.exc_text = record.exc_text.replace(s, "<redacted>")
            record.msg, record.args = message, None
        return True


# Loggers that may print an endpoint (with its query) or an exception carrying one. A filter on a logger only
# sees records created on that very logger, hence the explicit list.
_REDACTED_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
    "urllib3.connectionpool",
    "otel_ml",
)
_redaction = _RedactSecrets()


def _install_redaction() -> None:
    for name in _REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _redaction not in logger.filters:
            logger.addFilter(_redaction)


# --- exporters -----------------------------------------------------------------------------------------------
def _http_session(signal: str) -> Any:
    """A requests session for the OTLP/HTTP exporter when a CA certificate is configured, else ``None``.

    The exporter sets ``session.verify`` to ``OTEL_EXPORTER_OTLP_CERTIFICATE``, but requests lets
    ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` from the environment override a session's ``verify``
    (psf/requests#3829): the configured CA would be silently ignored and every export would fail verification.
    This session keeps the exporter's own setting.
    """
    configured = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_CERTIFICATE") or os.environ.get(
        "OTEL_EXPORTER_OTLP_CERTIFICATE"
    )
    provider = os.environ.get(f"OTEL_PYTHON_EXPORTER_OTLP_HTTP_{signal}_CREDENTIAL_PROVIDER")
    if not configured or provider:
        return None
    import requests

    class _VerifyPinnedSession(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
            settings = super().merge_environment_settings(*args, **kwargs)
            settings["verify"] = self.verify
            return settings

    return _VerifyPinnedSession()


def _span_exporter(
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    meter_provider: metrics.MeterProvider | None = None,
) -> SpanExporter | None:
    choice = _exporter_choice("TRACES")
    if choice == "none":
        return None
    if choice == "console":
        return ConsoleSpanExporter()
    proto = _protocol("TRACES", protocol)
    target = _target("TRACES", proto, endpoint, headers)
    timeout = _otlp_timeout("TRACES")
    if proto == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

        return HttpSpanExporter(
            endpoint=target.endpoint,
            headers=target.headers,
            timeout=timeout,
            session=_http_session("TRACES"),
            meter_provider=meter_provider,
        )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

    return _gate_grpc(
        GrpcSpanExporter(
            endpoint=target.endpoint, headers=target.headers, timeout=timeout, meter_provider=meter_provider
        )
    )


def _metric_exporter(
    endpoint: str | None,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    meter_provider: metrics.MeterProvider | None = None,
) -> MetricExporter | None:
    choice = _exporter_choice("METRICS")
    if choice == "none":
        return None
    if choice == "console":
        return ConsoleMetricExporter()
    proto = _protocol("METRICS", protocol)
    target = _target("METRICS", proto, endpoint, headers)
    timeout = _otlp_timeout("METRICS")
    if proto == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

        return HttpMetricExporter(
            endpoint=target.endpoint,
            headers=target.headers,
            timeout=timeout,
            session=_http_session("METRICS"),
            meter_provider=meter_provider,
        )
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

    return _gate_grpc(
        GrpcMetricExporter(
            endpoint=target.endpoint, headers=target.headers, timeout=timeout, meter_provider=meter_provider
        )
    )


def _resource(service_name: str | None, attributes: Mapping[str, str] | None) -> _ProcessResource:
    attrs: dict[str, str] = dict(attributes or {})
    if service_name:
        attrs[SERVICE_NAME] = service_name
    from_env = parse_env_headers(os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""), liberal=True)
    explicit = SERVICE_INSTANCE_ID in attrs or SERVICE_INSTANCE_ID in from_env
    resource = Resource.create(attrs)
    if SERVICE_INSTANCE_ID not in resource.attributes:  # SDKs < 1.45 do not generate one
        resource = resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))
    return _ProcessResource(resource.attributes, resource.schema_url, renew_instance_id=not explicit)


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
    exporter = _ProcessLocalMetricExporter(factory, first, like)
    merging = MergingMetricExporter(exporter, runtime.get().aggregator, resource, only_ours=only_ours)
    reader = _ExportingPeriodicReader(merging, export_interval_millis=_metric_interval(interval_ms))
    return _ExportingReader(mp, reader, exporter, resource, only_ours, interval_ms)


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
                first = _metric_exporter(endpoint, protocol, headers, sdk_mp)
                if first is not None:

                    def make_metric_exporter() -> MetricExporter:
                        built = _metric_exporter(endpoint, protocol, headers, sdk_mp)
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
            mp: metrics.MeterProvider = sdk_mp
            owns_mp = True
        else:
            mp, owns_mp = global_mp, False
            attach_to_meter_provider(mp, endpoint, protocol, headers, metric_export_interval_ms)
            for reader in metric_readers:
                _add_reader(mp, reader)

        global_tp = trace.get_tracer_provider()
        ledger: SpanLedger | None = None
        counted: _ProcessLocalSpanExporter | None = None
        if isinstance(global_tp, trace.ProxyTracerProvider) and not sdk_disabled:
            sdk_tp = TracerProvider(resource=resource, shutdown_on_exit=False)
            self_metrics = mp if isinstance(mp, MeterProvider) else None
            exporter = span_exporter or _span_exporter(endpoint, protocol, headers, self_metrics)
            if exporter is not None:
                factory: Callable[[], SpanExporter] | None = None
                if span_exporter is None:

                    def factory() -> SpanExporter:
                        built = _span_exporter(endpoint, protocol, headers, self_metrics)
                        assert built is not None
                        return built

                bsp = _bsp_settings()
                ledger = SpanLedger(bsp["OTEL_BSP_MAX_QUEUE_SIZE"])
                counted = _ProcessLocalSpanExporter(exporter, ledger, factory)
                processor = BatchSpanProcessor(
                    counted,
                    max_queue_size=bsp["OTEL_BSP_MAX_QUEUE_SIZE"],
                    schedule_delay_millis=bsp["OTEL_BSP_SCHEDULE_DELAY"],
                    max_export_batch_size=bsp["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
                    export_timeout_millis=bsp["OTEL_BSP_EXPORT_TIMEOUT"],
                    meter_provider=self_metrics,
                )
                sdk_tp.add_span_processor(_LedgerSpanProcessor(processor, ledger))
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
    first = _metric_exporter(endpoint, protocol, headers, sdk_mp)
    if first is None:
        return False

    def make() -> MetricExporter:
        built = _metric_exporter(endpoint, protocol, headers, sdk_mp)
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
def _release_if_held(owner: object, attribute: str) -> None:
    """A lock a thread of the parent held at fork time stays locked forever in the child (that thread does not
    exist there); a plain ``threading.Lock`` may be released by any thread, so release it."""
    lock = getattr(owner, attribute, None)
    if lock is not None and hasattr(lock, "locked") and lock.locked():
        with contextlib.suppress(RuntimeError):
            lock.release()


def _retarget(er: _ExportingReader) -> _ExportingReader:
    """In a forked child: a fresh reader (no parent state, new lock and thread) and exporter replace ``er``."""
    er.exporter.orphaned = True  # the parent's copy never sends anything from this process
    # the exporter itself is built on the first export (not inside the fork hook)
    fresh = _exporting_reader(
        er.provider, er.exporter._factory, er.resource, er.only_ours, er.interval_ms, like=er.exporter
    )
    consumer = getattr(er.provider, "_measurement_consumer", None)
    _release_if_held(consumer, "_lock")
    _release_if_held(MeterProvider, "_all_metric_readers_lock")
    er.provider.add_metric_reader(fresh.reader)
    er.provider.remove_metric_reader(er.reader)  # public API: drops the storage holding the parent's points
    return fresh


def _after_fork_in_child() -> None:
    """Re-target otel-ml's pipeline in a forked child (see the module docstring). Never raises."""
    global _lock, _pipeline
    _lock = threading.Lock()
    unsafe = _gate._active > 0
    _gate._reset()
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
        if isinstance(built, _ProcessResource) and not _SDK_REFRESHES_RESOURCE_AT_FORK:
            built.after_fork()
        if pipeline is not None and pipeline.ledger is not None:
            pipeline.ledger._reset()  # the BatchSpanProcessor's own fork hook empties its queue
        if pipeline is not None:
            pipeline.exporting_readers = [_retarget(er) for er in pipeline.exporting_readers]
            pipeline.readers = [er.reader for er in pipeline.exporting_readers] + [
                r for r in pipeline.readers if not isinstance(r, _ExportingPeriodicReader)
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
        before=_gate.before_fork, after_in_parent=_gate.after_fork_in_parent, after_in_child=_after_fork_in_child
    )
