"""Tests of the integration harness itself, using only the plain OpenTelemetry SDK.

They prove that ``tests/otlp_receiver.py`` decodes real SDK exports exactly (over
OTLP/gRPC and OTLP/HTTP, directly and through the real rotel collector), and that its
fault modes make SDK exporters fail in the expected, bounded way. Other integration
tests rely on these guarantees when they assert on otel_ml's telemetry.
"""

from __future__ import annotations

import gzip
import math
import os
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from conftest import OtlpReceiverHandle, RotelHandle

pytestmark = pytest.mark.integration

ReceiverFactory = Callable[..., "OtlpReceiverHandle"]

SPAN_ATTRS: dict[str, Any] = {"ml.model.name": "iris", "ml.batch.size": 8, "ml.ok": True, "ml.score": 0.25}
EVENT_ATTRS: dict[str, Any] = {"ml.n": 8, "ml.label": "setosa"}
LINK_ATTRS: dict[str, Any] = {"link.kind": "upstream"}
BOUNDS = [0.01, 0.1, 1.0]
LATENCIES = [0.005, 0.05, 0.05, 0.5, 5.0]  # -> buckets (-inf,.01] (.01,.1] (.1,1] (1,inf) = 1,2,1,1
SCOPE = "otel_ml.harness"


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exporter behaviour must not depend on OTEL_* variables of the calling shell."""
    for key in list(os.environ):
        if key.startswith("OTEL_") and not key.startswith("OTEL_ML_"):
            monkeypatch.delenv(key)


# --------------------------------------------------------------------------- SDK helpers


def make_exporters(transport: str, endpoint: str, timeout: float = 5.0, gzip_http: bool = True) -> Any:
    """(span, metric, log) OTLP exporters for ``grpc`` or ``http`` pointed at ``endpoint``."""
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        return (
            GrpcSpans(endpoint=endpoint, insecure=True, timeout=timeout),
            GrpcMetrics(endpoint=endpoint, insecure=True, timeout=timeout),
            GrpcLogs(endpoint=endpoint, insecure=True, timeout=timeout),
        )
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

    compression = Compression.Gzip if gzip_http else Compression.NoCompression
    return (
        HttpSpans(endpoint=f"{endpoint}/v1/traces", timeout=timeout, compression=compression),
        HttpMetrics(endpoint=f"{endpoint}/v1/metrics", timeout=timeout, compression=compression),
        HttpLogs(endpoint=f"{endpoint}/v1/logs", timeout=timeout, compression=compression),
    )


def send_sample(transport: str, endpoint: str, tag: str, gzip_http: bool = True) -> dict[str, str]:
    """Export one traced "prediction" (spans, counter, histogram with exemplars, log).

    Returns the hex ids of the predict span and of the upstream span it links to.
    """
    span_exp, metric_exp, log_exp = make_exporters(transport, endpoint, gzip_http=gzip_http)
    resource = Resource.create({"service.name": f"harness-{tag}", "deployment.environment": "test"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exp))
    # One collection only, at shutdown: no periodic export during the test.
    reader = PeriodicExportingMetricReader(metric_exp, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exp))

    tracer = tracer_provider.get_tracer(SCOPE, "0.0.1")
    meter = meter_provider.get_meter(SCOPE, "0.0.1")
    logger = logger_provider.get_logger(SCOPE, "0.0.1")
    counter = meter.create_counter(f"harness.predictions.{tag}", unit="1")
    histogram = meter.create_histogram(f"harness.latency.{tag}", unit="s", explicit_bucket_boundaries_advisory=BOUNDS)
    try:
        with tracer.start_as_current_span(f"upstream-{tag}") as upstream:
            up = upstream.get_span_context()
        with tracer.start_as_current_span(
            f"predict-{tag}", kind=SpanKind.SERVER, attributes=SPAN_ATTRS, links=[Link(up, LINK_ATTRS)]
        ) as span:
            span.add_event("prediction.done", EVENT_ATTRS)
            with tracer.start_as_current_span(f"preprocess-{tag}"):
                pass
            counter.add(8, {"ml.model.name": "iris"})
            for value in LATENCIES:
                histogram.record(value, {"ml.model.name": "iris"})
            logger.emit(
                body=f"prediction served {tag}",
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                attributes={"ml.batch.size": 8},
            )
            span.set_status(Status(StatusCode.OK))
            ctx = span.get_span_context()
    finally:
        meter_provider.shutdown()
        tracer_provider.shutdown()
        logger_provider.shutdown()
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "up_trace_id": f"{up.trace_id:032x}",
        "up_span_id": f"{up.span_id:016x}",
    }


def assert_types(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Exact equality including value types (dict == alone treats True == 1 == 1.0)."""
    assert actual == expected
    for key, value in expected.items():
        assert type(actual[key]) is type(value), f"{key}: {type(actual[key])} != {type(value)}"


def assert_sample(rx: OtlpReceiverHandle, tag: str, ids: dict[str, str]) -> None:
    """Check that everything ``send_sample`` exported arrived exactly at the receiver."""
    counter_name, hist_name = f"harness.predictions.{tag}", f"harness.latency.{tag}"
    rx.wait_for(
        lambda rs: (
            {f"upstream-{tag}", f"predict-{tag}", f"preprocess-{tag}"} <= {r["name"] for r in rs if r["kind"] == "span"}
            and {counter_name, hist_name} <= {r["name"] for r in rs if r["kind"] == "metric"}
            and any(r["kind"] == "log" for r in rs)
        )
    )
    (predict,) = rx.spans(f"predict-{tag}")
    (pre,) = rx.spans(f"preprocess-{tag}")
    (upstream,) = rx.spans(f"upstream-{tag}")

    assert predict["resource"]["service.name"] == f"harness-{tag}"
    assert predict["resource"]["deployment.environment"] == "test"
    assert (predict["scope"], predict["scope_version"]) == (SCOPE, "0.0.1")
    assert (predict["trace_id"], predict["span_id"]) == (ids["trace_id"], ids["span_id"])
    assert predict["parent_span_id"] is None
    assert predict["span_kind"] == "SERVER"
    assert predict["status"]["code"] == "OK"
    assert predict["end_time_unix_nano"] >= predict["start_time_unix_nano"] > 0
    assert_types(predict["attributes"], SPAN_ATTRS)
    assert [e["name"] for e in predict["events"]] == ["prediction.done"]
    assert_types(predict["events"][0]["attributes"], EVENT_ATTRS)
    assert len(predict["links"]) == 1
    link = predict["links"][0]
    assert (link["trace_id"], link["span_id"]) == (ids["up_trace_id"], ids["up_span_id"])
    assert link["attributes"] == LINK_ATTRS
    assert (upstream["trace_id"], upstream["span_id"]) == (ids["up_trace_id"], ids["up_span_id"])
    assert pre["trace_id"] == predict["trace_id"]
    assert pre["parent_span_id"] == predict["span_id"]
    assert pre["span_kind"] == "INTERNAL"

    counter = rx.metrics(counter_name)[-1]
    assert (counter["type"], counter["unit"], counter["temporality"], counter["monotonic"]) == (
        "sum",
        "1",
        "CUMULATIVE",
        True,
    )
    (cpoint,) = counter["data_points"]
    assert_types({"value": cpoint["value"]}, {"value": 8})
    assert cpoint["attributes"] == {"ml.model.name": "iris"}

    hist = rx.metrics(hist_name)[-1]
    assert (hist["type"], hist["unit"], hist["temporality"], hist["scope"]) == (
        "histogram",
        "s",
        "CUMULATIVE",
        SCOPE,
    )
    (hpoint,) = hist["data_points"]
    assert hpoint["attributes"] == {"ml.model.name": "iris"}
    assert hpoint["explicit_bounds"] == BOUNDS
    assert_types({"b": hpoint["bucket_counts"][0]}, {"b": 1})
    assert hpoint["bucket_counts"] == [1, 2, 1, 1]
    assert hpoint["count"] == len(LATENCIES)
    assert math.isclose(hpoint["sum"], sum(LATENCIES))
    assert (hpoint["min"], hpoint["max"]) == (min(LATENCIES), max(LATENCIES))
    assert hpoint["exemplars"], "histogram recorded inside a sampled span must carry exemplars"
    for exemplar in hpoint["exemplars"]:
        assert exemplar["trace_id"] == predict["trace_id"]
        assert exemplar["span_id"] == predict["span_id"]
        assert exemplar["value"] in LATENCIES

    (log,) = [r for r in rx.logs() if r["body"] == f"prediction served {tag}"]
    assert (log["severity_number"], log["severity_text"]) == (SeverityNumber.INFO.value, "INFO")
    assert_types(log["attributes"], {"ml.batch.size": 8})
    assert (log["trace_id"], log["span_id"]) == (predict["trace_id"], predict["span_id"])
    assert log["resource"]["service.name"] == f"harness-{tag}"

    requests = rx.requests()
    assert {r["signal"] for r in requests} == {"traces", "metrics", "logs"}
    assert all(r["outcome"] == "accepted" and r["bytes"] > 0 for r in requests)


# --------------------------------------------------------------------------- accept path


def test_grpc_direct(otlp_receiver: OtlpReceiverHandle) -> None:
    """SDK OTLP/gRPC exporters -> receiver: every field decoded exactly."""
    ids = send_sample("grpc", otlp_receiver.grpc_endpoint, "grpc")
    assert_sample(otlp_receiver, "grpc", ids)
    assert {r["transport"] for r in otlp_receiver.requests()} == {"grpc"}


@pytest.mark.parametrize("gzip_http", [True, False], ids=["gzip", "plain"])
def test_http_direct(otlp_receiver: OtlpReceiverHandle, gzip_http: bool) -> None:
    """SDK OTLP/HTTP-protobuf exporters (gzip and uncompressed) -> receiver."""
    ids = send_sample("http", otlp_receiver.http_endpoint, "http", gzip_http=gzip_http)
    assert_sample(otlp_receiver, "http", ids)
    requests = otlp_receiver.requests()
    assert {r["transport"] for r in requests} == {"http"}
    assert {r["http_status"] for r in requests} == {200}
    assert {r["encoding"] for r in requests} == {"gzip" if gzip_http else "identity"}
    for r in requests:  # gzip bodies were inflated by the receiver, plain ones arrive as-is
        assert r["wire_bytes"] > 0 and (gzip_http or r["wire_bytes"] == r["bytes"])


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_through_rotel(rotel_collector: RotelHandle, otlp_receiver: OtlpReceiverHandle, transport: str) -> None:
    """SDK -> real rotel collector (gRPC or HTTP in) -> OTLP/gRPC -> receiver, intact."""
    endpoint = rotel_collector.grpc_endpoint if transport == "grpc" else rotel_collector.http_endpoint
    ids = send_sample(transport, endpoint, f"rotel-{transport}")
    assert_sample(otlp_receiver, f"rotel-{transport}", ids)
    assert {r["transport"] for r in otlp_receiver.requests()} == {"grpc"}  # rotel exports gRPC


# --------------------------------------------------------------------------- raw OTLP/HTTP


def _post(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers, body) for success and error answers."""
    req = urllib.request.Request(url, data=body if method == "POST" else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def _kv(key: str, value: common_pb2.AnyValue) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=value)


def test_http_protocol_details(otlp_receiver: OtlpReceiverHandle) -> None:
    """Hand-built requests: all AnyValue kinds, all metric types, response format, errors."""
    from google.rpc import status_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    span = trace_pb2.Span(
        trace_id=bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"),
        span_id=bytes.fromhex("00f067aa0ba902b7"),
        name="raw",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        attributes=[
            _kv("arr", common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[
                common_pb2.AnyValue(int_value=1), common_pb2.AnyValue(string_value="x")]))),
            _kv("kv", common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[
                _kv("inner", common_pb2.AnyValue(double_value=1.5))]))),
            _kv("raw", common_pb2.AnyValue(bytes_value=b"\x01\xff")),
            _kv("empty", common_pb2.AnyValue()),
        ],
    )  # fmt: skip
    traces = trace_service_pb2.ExportTraceServiceRequest()
    traces.resource_spans.add().scope_spans.add().spans.append(span)
    url = f"{otlp_receiver.http_endpoint}/v1/traces"
    proto = {"Content-Type": "application/x-protobuf"}
    status, headers, body = _post(url, gzip.compress(traces.SerializeToString()), {**proto, "Content-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Type"] == "application/x-protobuf"
    trace_service_pb2.ExportTraceServiceResponse.FromString(body)  # a valid (empty) response

    metrics = metrics_service_pb2.ExportMetricsServiceRequest()
    scope_metrics = metrics.resource_metrics.add().scope_metrics.add()
    gauge = scope_metrics.metrics.add(name="g", unit="1")
    gauge.gauge.data_points.add(as_double=0.5)
    exp = scope_metrics.metrics.add(name="e")
    exp.exponential_histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    point = exp.exponential_histogram.data_points.add(count=3, sum=6.0, scale=1, zero_count=1)
    point.positive.offset = 2
    point.positive.bucket_counts.extend([1, 1])
    summary = scope_metrics.metrics.add(name="s")
    summary.summary.data_points.add(count=2, sum=3.0).quantile_values.add(quantile=0.5, value=1.5)
    status, headers, body = _post(
        f"{otlp_receiver.http_endpoint}/v1/metrics",
        zlib.compress(metrics.SerializeToString()),
        {**proto, "Content-Encoding": "deflate"},
    )
    assert status == 200
    metrics_service_pb2.ExportMetricsServiceResponse.FromString(body)

    (raw,) = otlp_receiver.wait_for_count("span", name="raw")
    assert raw["attributes"] == {"arr": [1, "x"], "kv": {"inner": 1.5}, "raw": "01ff", "empty": None}
    assert (raw["trace_id"], raw["span_id"], raw["span_kind"]) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "CLIENT",
    )
    by_name = {m["name"]: m for m in otlp_receiver.wait_for_count("metric", 3)}
    assert (by_name["g"]["type"], by_name["g"]["temporality"], by_name["g"]["data_points"][0]["value"]) == (
        "gauge",
        None,
        0.5,
    )
    e = by_name["e"]
    assert (e["type"], e["temporality"]) == ("exponentialHistogram", "DELTA")
    assert e["data_points"][0]["positive"] == {"offset": 2, "bucket_counts": [1, 1]}
    assert (e["data_points"][0]["zero_count"], e["data_points"][0]["scale"]) == (1, 1)
    assert by_name["s"]["type"] == "summary"
    assert by_name["s"]["data_points"][0]["quantile_values"] == [{"quantile": 0.5, "value": 1.5}]

    # Error answers carry a google.rpc.Status protobuf body.
    cases = [
        (f"{otlp_receiver.http_endpoint}/v1/nope", b"", proto, "POST", 404),
        (url, b"{}", {"Content-Type": "application/json"}, "POST", 415),
        (url, b"\xff\xff\xff", proto, "POST", 400),
        (url, b"not gzip", {**proto, "Content-Encoding": "gzip"}, "POST", 400),
        (url, b"", proto, "GET", 405),
    ]
    for target, payload, hdrs, method, expected in cases:
        status, headers, body = _post(target, payload, hdrs, method)
        assert status == expected, (target, method, hdrs)
        assert headers["Content-Type"] == "application/x-protobuf"
        assert status_pb2.Status.FromString(body).message
    assert len(otlp_receiver.requests()) == 2  # errors are not counted as export requests


# --------------------------------------------------------------------------- fault modes


def _one_span() -> ReadableSpan:
    """A finished span to push through exporters by hand."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer(SCOPE).start_as_current_span("fault-probe"):
        pass
    provider.shutdown()
    return memory.get_finished_spans()[0]


@pytest.fixture
def export_once() -> Iterator[Callable[[str, str, float], tuple[SpanExportResult, float]]]:
    """``export(transport, endpoint, timeout)`` -> (result, seconds); exporters shut down after."""
    exporters: list[SpanExporter] = []
    span = _one_span()

    def export(transport: str, endpoint: str, timeout: float) -> tuple[SpanExportResult, float]:
        exporter = make_exporters(transport, endpoint, timeout=timeout)[0]
        exporters.append(exporter)
        start = time.monotonic()
        result = exporter.export([span])
        return result, time.monotonic() - start

    yield export
    for exporter in exporters:
        exporter.shutdown()


def _endpoint(rx: OtlpReceiverHandle, transport: str) -> str:
    return rx.grpc_endpoint if transport == "grpc" else rx.http_endpoint


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_reject_is_permanent(otlp_receiver_factory: ReceiverFactory, export_once: Any, transport: str) -> None:
    """``reject``: INVALID_ARGUMENT / HTTP 400, not retryable -> FAILURE at once, nothing stored."""
    rx = otlp_receiver_factory("reject")
    result, seconds = export_once(transport, _endpoint(rx, transport), 5.0)
    assert result is SpanExportResult.FAILURE
    assert seconds < 2.0
    (req,) = rx.requests()
    assert req["outcome"] == "rejected" and req["items"] == 0
    assert req["grpc_code" if transport == "grpc" else "http_status"] == (
        "INVALID_ARGUMENT" if transport == "grpc" else 400
    )
    assert rx.spans() == []


@pytest.mark.parametrize(("transport", "mode"), [("grpc", "reject-grpc-code:UNAVAILABLE"), ("http", "reject-http:503")])
def test_transient_reject_then_retry_succeeds(
    otlp_receiver_factory: ReceiverFactory, export_once: Any, transport: str, mode: str
) -> None:
    """Retryable rejection of the first request only, with a 0.2 s retry hint -> retried, SUCCESS."""
    rx = otlp_receiver_factory(mode, fault_count=1, retry_after=0.2)
    result, seconds = export_once(transport, _endpoint(rx, transport), 5.0)
    assert result is SpanExportResult.SUCCESS
    assert 0.15 < seconds < 2.0  # waited for the server's hint, not the 1 s default backoff
    first, second = rx.requests()
    assert (first["outcome"], second["outcome"]) == ("rejected", "accepted")
    if transport == "grpc":
        assert first["grpc_code"] == "UNAVAILABLE"
    else:
        assert first["http_status"] == 503
    assert [s["name"] for s in rx.spans()] == ["fault-probe"]


def test_reject_http_413_maps_to_resource_exhausted(otlp_receiver_factory: ReceiverFactory, export_once: Any) -> None:
    """``reject-http:413``: HTTP fails at once; gRPC gets RESOURCE_EXHAUSTED (retryable, bounded)."""
    rx = otlp_receiver_factory("reject-http:413")
    result, seconds = export_once("http", rx.http_endpoint, 5.0)
    assert (result, seconds < 2.0) == (SpanExportResult.FAILURE, True)
    result, seconds = export_once("grpc", rx.grpc_endpoint, 1.0)
    assert (result, seconds < 2.5) == (SpanExportResult.FAILURE, True)
    requests = rx.requests()
    assert requests[0]["http_status"] == 413
    assert {r["grpc_code"] for r in requests[1:]} == {"RESOURCE_EXHAUSTED"}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_slow_beyond_timeout_fails(otlp_receiver_factory: ReceiverFactory, export_once: Any, transport: str) -> None:
    """``slow:3`` with a 1 s exporter timeout -> FAILURE after about 1 s (not 3 s)."""
    rx = otlp_receiver_factory("slow:3")
    result, seconds = export_once(transport, _endpoint(rx, transport), 1.0)
    assert result is SpanExportResult.FAILURE
    assert 0.8 < seconds < 2.5


def test_slow_within_timeout_succeeds(otlp_receiver_factory: ReceiverFactory, export_once: Any) -> None:
    """``slow:0.3`` with a 5 s timeout -> SUCCESS, after the delay, on both transports."""
    rx = otlp_receiver_factory("slow:0.3")
    for transport in ("grpc", "http"):
        result, seconds = export_once(transport, _endpoint(rx, transport), 5.0)
        assert result is SpanExportResult.SUCCESS
        assert 0.3 <= seconds < 2.0
    assert [r["delay_s"] for r in rx.requests()] == [0.3, 0.3]
    assert len(rx.spans("fault-probe")) == 2


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_blackhole_times_out(otlp_receiver_factory: ReceiverFactory, export_once: Any, transport: str) -> None:
    """``blackhole``: the TCP connection is accepted, no answer ever -> FAILURE within the timeout."""
    rx = otlp_receiver_factory("blackhole")
    result, seconds = export_once(transport, _endpoint(rx, transport), 1.0)
    assert result is SpanExportResult.FAILURE
    assert 0.8 < seconds < 2.5
    connections = rx.wait_for_count("connection")
    assert {c["transport"] for c in connections} == {transport}
    assert rx.requests() == []
