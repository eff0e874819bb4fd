"""Loopback OTLP receiver for integration and reliability tests.

A real OTLP server (not a mock of the SDK): OTLP/gRPC via opentelemetry-proto's
TraceService/MetricsService/LogsService servicers and OTLP/HTTP-protobuf
(``POST /v1/traces|/v1/metrics|/v1/logs``, gzip/deflate request bodies), both bound to
127.0.0.1 only. Every received request is decoded to JSON lines in an output file so a
test (possibly in another process) can assert on exactly what went over the wire.

Run as a script (always exits by itself after ``--lifetime`` seconds)::

    python tests/otlp_receiver.py --out OUT.jsonl [--grpc-port 0] [--http-port 0]
        [--mode accept|slow:<s>|reject|reject-grpc-code:<CODE>|reject-http:<status>|blackhole]
        [--fault-count N] [--retry-after SECONDS] [--lifetime 120] [--tls-cert PEM --tls-key PEM]

Once listening it prints exactly one line ``READY grpc=<port> http=<port>`` to stdout.
It can also be used in-process: ``with OtlpReceiver(path, ...) as rx: rx.grpc_port``.

JSON lines written (``kind`` field): ``request`` (one per export request, with byte counts
and outcome), ``span``, ``metric`` (with its data points), ``log`` and, in blackhole mode,
``connection`` (one per accepted TCP connection).
"""

from __future__ import annotations

import argparse
import itertools
import json
import selectors
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import IO, Any

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

HOST = "127.0.0.1"
MAX_BODY_BYTES = 64 * 1024 * 1024  # larger request bodies are refused (HTTP 413 / gRPC limit)
MAX_HELD_CONNECTIONS = 512  # blackhole mode: stop accepting beyond this (backlog still fills)
HTTP_IDLE_TIMEOUT_S = 30.0  # idle keep-alive HTTP connections are closed after this

# Signal name -> (request message type, response message type).
SIGNALS: dict[str, tuple[type[Message], type[Message]]] = {
    "traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}
HTTP_PATHS = {f"/v1/{name}": name for name in SIGNALS}

# gRPC code -> HTTP status, following the usual gRPC<->HTTP correspondence (grpc-gateway).
GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
# HTTP status -> gRPC code for ``reject-http:<status>``; 413 maps to RESOURCE_EXHAUSTED
# (what gRPC itself uses for an oversized message).
HTTP_TO_GRPC: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


# --------------------------------------------------------------------------- fault modes


@dataclass(frozen=True)
class FaultMode:
    """How the receiver answers: ``accept``, ``slow``, ``reject`` or ``blackhole``.

    ``reject`` carries both the gRPC code and the HTTP status it answers with, so one
    receiver behaves consistently whichever transport the exporter uses.
    """

    kind: str
    delay_s: float = 0.0
    grpc_code: grpc.StatusCode | None = None
    http_status: int | None = None
    spec: str = "accept"


def _grpc_code(name: str) -> grpc.StatusCode:
    """Parse a gRPC status code given by name (``UNAVAILABLE``) or number (``14``)."""
    text = name.strip().upper()
    for code in grpc.StatusCode:
        if text == code.name or (text.isdigit() and int(text) == code.value[0]):
            if code is grpc.StatusCode.OK:
                break
            return code
    raise ValueError(f"not a gRPC error code: {name!r}")


def parse_mode(spec: str) -> FaultMode:
    """Parse a ``--mode`` value into a :class:`FaultMode` (raises ValueError if invalid).

    ``reject`` is a *permanent* rejection (gRPC INVALID_ARGUMENT + HTTP 400): neither is
    retryable per the OTLP spec, so SDK exporters fail at once. Use
    ``reject-grpc-code:<CODE>`` / ``reject-http:<status>`` for specific (e.g. retryable)
    answers; the other transport then answers with the corresponding code/status.
    """
    head, _, arg = spec.partition(":")
    head = head.strip().lower()
    if head == "accept" and not arg:
        return FaultMode("accept", spec=spec)
    if head == "blackhole" and not arg:
        return FaultMode("blackhole", spec=spec)
    if head == "slow":
        delay = float(arg)
        if not 0 <= delay <= 3600:
            raise ValueError(f"slow delay out of range: {arg!r}")
        return FaultMode("slow", delay_s=delay, spec=spec)
    if head == "reject" and not arg:
        return FaultMode("reject", grpc_code=grpc.StatusCode.INVALID_ARGUMENT, http_status=400, spec=spec)
    if head == "reject-grpc-code":
        code = _grpc_code(arg)
        return FaultMode("reject", grpc_code=code, http_status=GRPC_TO_HTTP.get(code, 500), spec=spec)
    if head == "reject-http":
        status = int(arg)
        if not 400 <= status <= 599:
            raise ValueError(f"reject-http needs a 4xx/5xx status, got {arg!r}")
        fallback = grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.FAILED_PRECONDITION
        return FaultMode("reject", grpc_code=HTTP_TO_GRPC.get(status, fallback), http_status=status, spec=spec)
    raise ValueError(f"unknown mode: {spec!r}")


# --------------------------------------------------------------------------- decoding


def hex_id(raw: bytes) -> str | None:
    """Trace/span id bytes as lowercase hex; None when absent (e.g. a root span's parent)."""
    return raw.hex() if raw else None


def any_value(value: common_pb2.AnyValue) -> Any:
    """Decode an OTLP AnyValue to a plain Python value (intValue -> int, bytes -> hex str)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)  # string_value / bool_value / int_value / double_value


def attributes(kvs: Sequence[common_pb2.KeyValue]) -> dict[str, Any]:
    """Decode repeated KeyValue to a dict of plain Python values."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def _optional(msg: Message, field: str) -> Any:
    """Value of a proto3 ``optional`` field, or None when it is not set."""
    return getattr(msg, field) if msg.HasField(field) else None


def _enum_name(enum_type: Any, number: int, prefix: str) -> str:
    """Enum value name without its prefix (``SPAN_KIND_SERVER`` -> ``SERVER``)."""
    try:
        name: str = enum_type.Name(number)
    except ValueError:
        return str(number)
    return name.removeprefix(prefix)


def _resource_fields(resource: Any, scope: common_pb2.InstrumentationScope) -> dict[str, Any]:
    """Fields shared by every item record: resource attributes and instrumentation scope."""
    return {
        "resource": attributes(resource.attributes),
        "scope": scope.name,
        "scope_version": scope.version,
        "scope_attributes": attributes(scope.attributes),
    }


def span_records(request: trace_service_pb2.ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """One JSON-ready dict per span of an ExportTraceServiceRequest."""
    out: list[dict[str, Any]] = []
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            common = _resource_fields(rs.resource, ss.scope)
            for s in ss.spans:
                out.append(
                    {
                        "kind": "span",
                        **common,
                        "name": s.name,
                        "trace_id": hex_id(s.trace_id),
                        "span_id": hex_id(s.span_id),
                        "parent_span_id": hex_id(s.parent_span_id),
                        "trace_state": s.trace_state,
                        "flags": s.flags,
                        "span_kind": _enum_name(trace_pb2.Span.SpanKind, s.kind, "SPAN_KIND_"),
                        "start_time_unix_nano": s.start_time_unix_nano,
                        "end_time_unix_nano": s.end_time_unix_nano,
                        "status": {
                            "code": _enum_name(trace_pb2.Status.StatusCode, s.status.code, "STATUS_CODE_"),
                            "message": s.status.message,
                        },
                        "attributes": attributes(s.attributes),
                        "dropped_attributes_count": s.dropped_attributes_count,
                        "events": [
                            {
                                "name": e.name,
                                "time_unix_nano": e.time_unix_nano,
                                "attributes": attributes(e.attributes),
                            }
                            for e in s.events
                        ],
                        "dropped_events_count": s.dropped_events_count,
                        "links": [
                            {
                                "trace_id": hex_id(link.trace_id),
                                "span_id": hex_id(link.span_id),
                                "trace_state": link.trace_state,
                                "attributes": attributes(link.attributes),
                            }
                            for link in s.links
                        ],
                        "dropped_links_count": s.dropped_links_count,
                    }
                )
    return out


def _number(msg: metrics_pb2.NumberDataPoint | metrics_pb2.Exemplar) -> int | float | None:
    """The ``as_int`` (int) or ``as_double`` (float) value of a data point or exemplar."""
    which = msg.WhichOneof("value")
    if which is None:
        return None
    value: int | float = getattr(msg, which)
    return value


def _exemplars(exemplars: Sequence[metrics_pb2.Exemplar]) -> list[dict[str, Any]]:
    """Exemplars with hex trace/span ids and their numeric value (int or float)."""
    return [
        {
            "trace_id": hex_id(ex.trace_id),
            "span_id": hex_id(ex.span_id),
            "value": _number(ex),
            "time_unix_nano": ex.time_unix_nano,
            "filtered_attributes": attributes(ex.filtered_attributes),
        }
        for ex in exemplars
    ]


def _point_common(p: Any) -> dict[str, Any]:
    """Fields every data point type has."""
    return {
        "attributes": attributes(p.attributes),
        "start_time_unix_nano": p.start_time_unix_nano,
        "time_unix_nano": p.time_unix_nano,
        "flags": p.flags,
    }


def _data_points(metric: metrics_pb2.Metric, data_type: str) -> list[dict[str, Any]]:
    """Decode the data points of one metric according to its data type."""
    data = getattr(metric, data_type)
    points: list[dict[str, Any]] = []
    for p in data.data_points:
        point = _point_common(p)
        if data_type in ("sum", "gauge"):
            point["value"] = _number(p)
            point["exemplars"] = _exemplars(p.exemplars)
        elif data_type == "histogram":
            point.update(
                count=p.count,
                sum=_optional(p, "sum"),
                min=_optional(p, "min"),
                max=_optional(p, "max"),
                bucket_counts=[int(c) for c in p.bucket_counts],
                explicit_bounds=list(p.explicit_bounds),
                exemplars=_exemplars(p.exemplars),
            )
        elif data_type == "exponential_histogram":
            point.update(
                count=p.count,
                sum=_optional(p, "sum"),
                min=_optional(p, "min"),
                max=_optional(p, "max"),
                scale=p.scale,
                zero_count=p.zero_count,
                zero_threshold=p.zero_threshold,
                positive={
                    "offset": p.positive.offset,
                    "bucket_counts": [int(c) for c in p.positive.bucket_counts],
                },
                negative={
                    "offset": p.negative.offset,
                    "bucket_counts": [int(c) for c in p.negative.bucket_counts],
                },
                exemplars=_exemplars(p.exemplars),
            )
        else:  # summary
            point.update(
                count=p.count,
                sum=p.sum,
                quantile_values=[{"quantile": q.quantile, "value": q.value} for q in p.quantile_values],
            )
        points.append(point)
    return points


# proto oneof field -> the type name written in records (OTLP/JSON spelling).
METRIC_TYPES = {
    "sum": "sum",
    "gauge": "gauge",
    "histogram": "histogram",
    "exponential_histogram": "exponentialHistogram",
    "summary": "summary",
}


def metric_records(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[dict[str, Any]]:
    """One JSON-ready dict per metric (with all its data points) of an export request."""
    out: list[dict[str, Any]] = []
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            common = _resource_fields(rm.resource, sm.scope)
            for m in sm.metrics:
                data_type = m.WhichOneof("data")
                record: dict[str, Any] = {
                    "kind": "metric",
                    **common,
                    "name": m.name,
                    "description": m.description,
                    "unit": m.unit,
                    "type": METRIC_TYPES.get(data_type, data_type) if data_type else None,
                    "temporality": None,
                    "monotonic": None,
                    "data_points": [],
                }
                if data_type is not None:
                    data = getattr(m, data_type)
                    if data_type in ("sum", "histogram", "exponential_histogram"):
                        record["temporality"] = _enum_name(
                            metrics_pb2.AggregationTemporality,
                            data.aggregation_temporality,
                            "AGGREGATION_TEMPORALITY_",
                        )
                    if data_type == "sum":
                        record["monotonic"] = data.is_monotonic
                    record["data_points"] = _data_points(m, data_type)
                out.append(record)
    return out


def log_records(request: logs_service_pb2.ExportLogsServiceRequest) -> list[dict[str, Any]]:
    """One JSON-ready dict per log record of an ExportLogsServiceRequest."""
    out: list[dict[str, Any]] = []
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            common = _resource_fields(rl.resource, sl.scope)
            for lr in sl.log_records:
                out.append(
                    {
                        "kind": "log",
                        **common,
                        "time_unix_nano": lr.time_unix_nano,
                        "observed_time_unix_nano": lr.observed_time_unix_nano,
                        "severity_number": int(lr.severity_number),
                        "severity_text": lr.severity_text,
                        "event_name": getattr(lr, "event_name", ""),
                        "body": any_value(lr.body),
                        "attributes": attributes(lr.attributes),
                        "dropped_attributes_count": lr.dropped_attributes_count,
                        "flags": lr.flags,
                        "trace_id": hex_id(lr.trace_id),
                        "span_id": hex_id(lr.span_id),
                    }
                )
    return out


DECODERS: dict[str, Callable[[Any], list[dict[str, Any]]]] = {
    "traces": span_records,
    "metrics": metric_records,
    "logs": log_records,
}


# --------------------------------------------------------------------------- shared core


@dataclass(frozen=True)
class Decision:
    """What to answer to one request: accept, or reject with the mode's code/status."""

    accepted: bool
    mode: FaultMode


def _grpc_answer(mode: FaultMode, accepted: bool) -> str:
    """Name of the gRPC status code the receiver answers with."""
    if accepted:
        return "OK"
    return (mode.grpc_code or grpc.StatusCode.INVALID_ARGUMENT).name


class RecordSink:
    """Applies the fault mode to each request and appends its JSON lines to the output.

    All lines of one request are written with a single write + flush under a lock, so a
    concurrent reader sees whole requests (at most a partial last line, which it skips).
    """

    def __init__(self, out: IO[str], mode: FaultMode, fault_count: int, stop: threading.Event) -> None:
        self._out = out
        self.mode = mode
        self._fault_count = fault_count
        self._stop = stop
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def _next(self) -> tuple[int, bool]:
        """Next request id and whether the fault applies to it (``--fault-count``)."""
        with self._lock:
            request_id = next(self._ids)
        faulty = self._fault_count <= 0 or request_id <= self._fault_count
        return request_id, faulty

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append records as JSON lines (one write, flushed)."""
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        with self._lock:
            self._out.write(data)
            self._out.flush()

    def handle(
        self,
        signal_name: str,
        transport: str,
        request: Message,
        wire_bytes: int | None,
        encoding: str | None,
        is_client_alive: Callable[[], bool] | None = None,
    ) -> Decision:
        """Apply the fault mode (delay / reject) and record the request and its items."""
        request_id, faulty = self._next()
        mode = self.mode if faulty else FaultMode("accept")
        if mode.kind == "slow":
            self._stop.wait(mode.delay_s)  # interrupted at shutdown
        accepted = mode.kind != "reject"
        items = DECODERS[signal_name](request) if accepted else []
        summary: dict[str, Any] = {
            "kind": "request",
            "request_id": request_id,
            "transport": transport,
            "signal": signal_name,
            "bytes": request.ByteSize(),
            "wire_bytes": wire_bytes,
            "encoding": encoding,
            "items": len(items),
            "outcome": "accepted" if accepted else "rejected",
            "grpc_code": _grpc_answer(mode, accepted) if transport == "grpc" else None,
            "http_status": (200 if accepted else mode.http_status) if transport == "http" else None,
            "delay_s": mode.delay_s,
            "client_alive": is_client_alive() if is_client_alive else None,
            "time": time.time(),
        }
        tag = {"request_id": request_id, "transport": transport}
        self.write([summary, *({"kind": item["kind"], **tag, **item} for item in items)])
        return Decision(accepted, mode)


# --------------------------------------------------------------------------- gRPC


class _Servicer:
    """Shared Export implementation for the three OTLP gRPC services."""

    signal_name = ""

    def __init__(self, sink: RecordSink, retry_after: float | None) -> None:
        self._sink = sink
        self._retry_after = retry_after

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:
        """Record the request and answer per the fault mode."""
        decision = self._sink.handle(self.signal_name, "grpc", request, None, None, is_client_alive=context.is_active)
        if not decision.accepted:
            code = decision.mode.grpc_code or grpc.StatusCode.INVALID_ARGUMENT
            if self._retry_after is not None:
                info = error_details_pb2.RetryInfo()
                info.retry_delay.FromNanoseconds(int(self._retry_after * 1e9))
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
            context.abort(code, f"otlp_receiver: rejected by mode {decision.mode.spec}")
        return SIGNALS[self.signal_name][1]()


class _TraceServicer(_Servicer, trace_service_pb2_grpc.TraceServiceServicer):
    signal_name = "traces"


class _MetricsServicer(_Servicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    signal_name = "metrics"


class _LogsServicer(_Servicer, logs_service_pb2_grpc.LogsServiceServicer):
    signal_name = "logs"


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate chain and private key (PEM files) for TLS on both transports."""

    cert: str
    key: str

    def read(self) -> tuple[bytes, bytes]:
        with open(self.cert, "rb") as cert, open(self.key, "rb") as key:
            return cert.read(), key.read()


def _start_grpc(
    sink: RecordSink, port: int, retry_after: float | None, tls: TlsFiles | None = None
) -> tuple[grpc.Server, int]:
    """Start the OTLP/gRPC server on 127.0.0.1:port (0 = any free port), with TLS when ``tls`` is given."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_BODY_BYTES),
            ("grpc.so_reuseport", 0),  # a taken port must fail, not be shared
        ],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(sink, retry_after), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsServicer(sink, retry_after), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(sink, retry_after), server)
    if tls is not None:
        cert, key = tls.read()
        bound = server.add_secure_port(f"{HOST}:{port}", grpc.ssl_server_credentials([(key, cert)]))
    else:
        bound = server.add_insecure_port(f"{HOST}:{port}")
    if not bound:
        raise OSError(f"gRPC server could not bind {HOST}:{port}")
    server.start()
    return server, bound


# --------------------------------------------------------------------------- HTTP


class _HttpServer(ThreadingHTTPServer):
    """Threaded HTTP server with the receiver's state attached; no reverse DNS on bind."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, sink: RecordSink, retry_after: float | None, tls: TlsFiles | None = None) -> None:
        self.sink = sink
        self.retry_after = retry_after
        super().__init__((HOST, port), _OtlpHttpHandler)
        if tls is not None:  # HTTPS: the handshake happens on the handler thread's first read
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def server_bind(self) -> None:
        """Bind without HTTPServer's getfqdn() lookup (can stall on some resolvers)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = HOST
        self.server_port = self.server_address[1]


class _HttpError(Exception):
    """An HTTP error answer with a google.rpc.Status body."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


def _decompress(body: bytes, encoding: str) -> bytes:
    """Undo Content-Encoding gzip/deflate with a size cap (no zip bombs)."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise _HttpError(415, f"unsupported Content-Encoding: {encoding}")
    attempts = (31,) if encoding != "deflate" else (15, -15)  # zlib-wrapped, then raw deflate
    for wbits in attempts:
        try:
            inflater = zlib.decompressobj(wbits)
            data = inflater.decompress(body, MAX_BODY_BYTES + 1)
        except zlib.error:
            continue
        if len(data) > MAX_BODY_BYTES:
            raise _HttpError(413, "decompressed body too large")
        return data
    raise _HttpError(400, f"body is not valid {encoding} data")


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    """OTLP/HTTP-protobuf endpoint: POST /v1/traces, /v1/metrics, /v1/logs."""

    protocol_version = "HTTP/1.1"  # keep-alive, as SDK exporters expect
    timeout = HTTP_IDLE_TIMEOUT_S
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request access logging (stdout must only carry the READY line)."""

    def _send(self, status: int, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Send a complete protobuf response."""
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_error_status(self, err: _HttpError, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Answer with a google.rpc.Status protobuf body, as OTLP/HTTP specifies."""
        grpc_code = HTTP_TO_GRPC.get(err.status, grpc.StatusCode.UNKNOWN).value[0]
        body = status_pb2.Status(code=grpc_code, message=err.message).SerializeToString()
        if err.close:
            self.close_connection = True
            headers = (*headers, ("Connection", "close"))
        self._send(err.status, body, headers)

    def _read_body(self) -> bytes:
        """Read the request body (Content-Length or chunked), bounded by MAX_BODY_BYTES."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:  # bounded: total size is capped below
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers until the blank line
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise _HttpError(413, "body too large", close=True)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)  # CRLF after each chunk
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise _HttpError(411, "Content-Length required", close=True)
        length = int(length_text)
        if length < 0 or length > MAX_BODY_BYTES:
            raise _HttpError(413, "body too large", close=True)
        return self.rfile.read(length)

    def do_POST(self) -> None:
        """Decode one OTLP export request and answer per the fault mode."""
        path = self.path.split("?", 1)[0]
        signal_name = HTTP_PATHS.get(path)
        try:
            body = self._read_body()
            if signal_name is None:
                raise _HttpError(404, f"unknown path {path}")
            content_type = self.headers.get("Content-Type", "application/x-protobuf")
            if content_type.split(";")[0].strip().lower() != "application/x-protobuf":
                raise _HttpError(415, f"only application/x-protobuf is supported, got {content_type}")
            encoding = self.headers.get("Content-Encoding", "").strip().lower()
            data = _decompress(body, encoding)
            request = SIGNALS[signal_name][0]()
            try:
                request.ParseFromString(data)
            except DecodeError as exc:
                raise _HttpError(400, f"invalid protobuf: {exc}") from exc
        except _HttpError as err:
            self._send_error_status(err)
            return
        except ValueError as exc:  # malformed Content-Length / chunk size
            self._send_error_status(_HttpError(400, f"malformed request: {exc}", close=True))
            return
        decision = self.server.sink.handle(signal_name, "http", request, len(body), encoding or "identity")
        if decision.accepted:
            self._send(200, SIGNALS[signal_name][1]().SerializeToString())
            return
        status = decision.mode.http_status or 400
        headers: list[tuple[str, str]] = []
        if self.server.retry_after is not None:
            ra = self.server.retry_after
            headers.append(("Retry-After", str(int(ra)) if ra == int(ra) else f"{ra:g}"))
        self._send_error_status(_HttpError(status, f"otlp_receiver: rejected by mode {decision.mode.spec}"), headers)

    def _not_allowed(self) -> None:
        """Any method but POST: 405 (404 for unknown paths)."""
        known = self.path.split("?", 1)[0] in HTTP_PATHS
        err = _HttpError(405 if known else 404, "only POST is supported")
        self._send_error_status(err, (("Allow", "POST"),) if known else ())

    do_GET = do_PUT = do_DELETE = do_PATCH = _not_allowed


# --------------------------------------------------------------------------- blackhole


class _Blackhole:
    """Raw TCP listeners that accept connections, read and discard, and never reply."""

    def __init__(self, ports: dict[str, int], sink: RecordSink, stop: threading.Event) -> None:
        self._sink = sink
        self._stop = stop
        self._sel = selectors.DefaultSelector()
        self._conns: list[socket.socket] = []
        self._listeners: list[socket.socket] = []
        self.ports: dict[str, int] = {}
        self._ids = itertools.count(1)
        for transport, port in ports.items():
            lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind((HOST, port))
            lsock.listen(64)
            lsock.setblocking(False)
            self._sel.register(lsock, selectors.EVENT_READ, ("listen", transport))
            self._listeners.append(lsock)
            self.ports[transport] = lsock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name="otlp-blackhole", daemon=True)

    def start(self) -> None:
        """Start the accept/discard loop."""
        self._thread.start()

    def _run(self) -> None:
        """Accept and hold connections until stopped (loop bounded by the stop event)."""
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.2):
                role, transport = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if role == "listen":
                    if len(self._conns) >= MAX_HELD_CONNECTIONS:
                        continue
                    try:
                        conn, peer = sock.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    self._conns.append(conn)
                    self._sel.register(conn, selectors.EVENT_READ, ("conn", transport))
                    self._sink.write(
                        [
                            {
                                "kind": "connection",
                                "connection_id": next(self._ids),
                                "transport": transport,
                                "peer_port": peer[1],
                                "time": time.time(),
                            }
                        ]
                    )
                    continue
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # peer closed: release it
                    self._sel.unregister(sock)
                    self._conns.remove(sock)
                    sock.close()

    def close(self) -> None:
        """Stop the loop and close every held connection and listener."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for sock in [*self._conns, *self._listeners]:
            sock.close()
        self._sel.close()


# --------------------------------------------------------------------------- receiver


class OtlpReceiver:
    """The receiver: gRPC + HTTP servers (or blackhole listeners) writing JSON lines.

    Usable in-process as a context manager, or via :func:`main` as a subprocess.
    """

    def __init__(
        self,
        out_path: str,
        mode: str | FaultMode = "accept",
        grpc_port: int = 0,
        http_port: int = 0,
        fault_count: int = 0,
        retry_after: float | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.mode = parse_mode(mode) if isinstance(mode, str) else mode
        self._tls = tls
        self.stop_event = threading.Event()
        self._out = open(out_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in stop())
        self.sink = RecordSink(self._out, self.mode, fault_count, self.stop_event)
        self._requested = {"grpc": grpc_port, "http": http_port}
        self._retry_after = retry_after
        self._grpc: grpc.Server | None = None
        self._http: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._blackhole: _Blackhole | None = None
        self.grpc_port = 0
        self.http_port = 0

    def start(self) -> OtlpReceiver:
        """Bind and start serving; ports are known afterwards."""
        try:
            if self.mode.kind == "blackhole":
                self._blackhole = _Blackhole(self._requested, self.sink, self.stop_event)
                self.grpc_port = self._blackhole.ports["grpc"]
                self.http_port = self._blackhole.ports["http"]
                self._blackhole.start()
                return self
            self._grpc, self.grpc_port = _start_grpc(self.sink, self._requested["grpc"], self._retry_after, self._tls)
            self._http = _HttpServer(self._requested["http"], self.sink, self._retry_after, self._tls)
            self.http_port = self._http.server_address[1]
            self._http_thread = threading.Thread(
                target=self._http.serve_forever, kwargs={"poll_interval": 0.2}, name="otlp-http", daemon=True
            )
            self._http_thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop all servers (interrupting slow-mode sleeps) and close the output file."""
        self.stop_event.set()
        if self._blackhole is not None:
            self._blackhole.close()
            self._blackhole = None
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait(timeout=3)
            self._grpc = None
        if self._http is not None:
            if self._http_thread is not None and self._http_thread.is_alive():
                self._http.shutdown()
                self._http_thread.join(timeout=3)
            self._http.server_close()
            self._http = None
        if not self._out.closed:
            self._out.close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line interface (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Loopback OTLP (gRPC + HTTP/protobuf) receiver for tests.")
    parser.add_argument("--out", required=True, help="JSON-lines output file (appended to)")
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port on 127.0.0.1 (0 = pick a free one)")
    parser.add_argument("--http-port", type=int, default=0, help="HTTP port on 127.0.0.1 (0 = pick a free one)")
    parser.add_argument(
        "--mode",
        default="accept",
        help="accept | slow:<seconds> | reject | reject-grpc-code:<CODE> | reject-http:<status> | blackhole",
    )
    parser.add_argument(
        "--fault-count", type=int, default=0, help="apply the mode to the first N requests only (0 = all)"
    )
    parser.add_argument(
        "--retry-after",
        type=float,
        default=None,
        help="on rejection also send HTTP Retry-After / gRPC google.rpc.RetryInfo with this delay (s)",
    )
    parser.add_argument("--lifetime", type=float, default=120.0, help="exit by itself after this many seconds")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve TLS on both ports")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    try:
        parse_mode(args.mode)
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 < args.lifetime <= 24 * 3600:
        parser.error("--lifetime must be in (0, 86400]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the receiver until SIGTERM/SIGINT or the end of its lifetime."""
    args = _parse_args(argv)
    receiver = OtlpReceiver(
        args.out,
        mode=args.mode,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        fault_count=args.fault_count,
        retry_after=args.retry_after,
        tls=TlsFiles(args.tls_cert, args.tls_key) if args.tls_cert else None,
    )

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        receiver.stop_event.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    receiver.start()
    print(f"READY grpc={receiver.grpc_port} http={receiver.http_port}", flush=True)
    try:
        receiver.stop_event.wait(args.lifetime)
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
