"""configure(): builds or reuses providers; shutdown() is bounded even when the collector never answers.

These run in subprocesses: global providers can be set once per process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = Path(__file__).parent / "apps" / "shutdown_app.py"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra)
    return env


def _run(code: str, **extra: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=_env(**extra), capture_output=True, timeout=60, check=True
    )
    return out.stdout.decode()


def test_configure_builds_sdk_providers_once() -> None:
    out = _run(
        """
        import otel_ml
        from opentelemetry import trace, metrics
        p1 = otel_ml.configure(service_name="svc-a")
        p2 = otel_ml.configure(service_name="ignored")
        res = trace.get_tracer_provider().resource.attributes
        print(p1 is p2, p1.owns_tracer_provider, p1.owns_meter_provider,
              trace.get_tracer_provider() is p1.tracer_provider, metrics.get_meter_provider() is p1.meter_provider,
              res["service.name"], len(res["service.instance.id"]))
        otel_ml.shutdown(timeout=1)
        """,
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
    )
    assert out.split() == ["True", "True", "True", "True", "True", "svc-a", "36"]


def test_attach_after_configure_adds_no_second_reader() -> None:
    """An auto-instrumentor attaching to configure()'s own provider must not add a second exporting reader."""
    out = _run(
        """
        import otel_ml
        from otel_ml._core import setup
        from opentelemetry import metrics
        p = otel_ml.configure(service_name="svc")
        mp = metrics.get_meter_provider()
        before = len(mp._all_metric_readers)  # the SDK keeps every reader here
        print(setup.attach_to_meter_provider(mp), len(mp._all_metric_readers) - before, len(p.readers))
        otel_ml.shutdown(timeout=1)
        """,
        OTEL_TRACES_EXPORTER="none",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    assert out.split() == ["True", "0", "1"]


def test_flush_and_shutdown_take_any_timeout() -> None:
    """inf, NaN, negative and huge timeouts: clamped to a wait the threading module accepts, never raised."""
    out = _run(
        """
        import math, otel_ml
        otel_ml.configure(service_name="svc")
        print(otel_ml.force_flush(timeout=math.inf), otel_ml.force_flush(timeout=math.nan),
              otel_ml.force_flush(timeout=-1) in (True, False), otel_ml.shutdown(timeout=1e300))
        """,
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
    )
    assert out.split() == ["True", "True", "True", "True"]


def test_configure_uses_the_applications_providers() -> None:
    out = _run(
        """
        import otel_ml
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        app = TracerProvider(); app.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(app)
        p = otel_ml.configure(service_name="svc")
        otel_ml.instrument(name="m")(lambda x: x)([1])
        print(p.tracer_provider is app, p.owns_tracer_provider, [s.name for s in exporter.get_finished_spans()])
        """,
        OTEL_METRICS_EXPORTER="none",
    )
    assert out.strip() == "True False ['predict m']"


def test_service_name_and_resource_attributes_from_env() -> None:
    out = _run(
        """
        import otel_ml
        from opentelemetry import trace
        otel_ml.configure()
        res = trace.get_tracer_provider().resource.attributes
        print(res["service.name"], res["deployment.environment"], res["service.instance.id"])
        """,
        OTEL_SERVICE_NAME="from-env",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=staging,service.instance.id=pod-7",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
    )
    assert out.split() == ["from-env", "staging", "pod-7"]


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("target", ["blackhole", "closed"])
def test_shutdown_is_bounded_when_the_collector_never_answers(blackhole: int, protocol: str, target: str) -> None:
    port = blackhole if target == "blackhole" else _closed_port()
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(APP), "2"],
        env=_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_INSECURE="true",
            OTEL_ML_SHUTDOWN_TIMEOUT="2",
        ),
        capture_output=True,
        timeout=60,
        check=True,
    )
    wall = time.monotonic() - started
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert result["shutdown_s"] <= 2.5
    assert wall < 20  # interpreter start, sklearn-free import, 5,000 predictions, bounded flush and exit
    assert b"Traceback" not in out.stderr


def test_application_owned_meter_provider_gets_the_fast_path_reader() -> None:
    out = _run(
        """
        import json, otel_ml
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        app_reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[app_reader]))
        otel_ml.configure(service_name="svc")
        predict = otel_ml.instrument(name="m", output="proba")(lambda x: [[0.2, 0.8]] * len(x))
        for _ in range(10):
            predict([[1.0], [2.0], [3.0]])
        app_names = sorted({m.name for rm in app_reader.get_metrics_data().resource_metrics
                            for sm in rm.scope_metrics for m in sm.metrics})
        print(json.dumps(app_names))
        otel_ml.shutdown(timeout=2)
        metrics.get_meter_provider().shutdown()
        """,
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="console",
        OTEL_ML_SKETCH_INPUTS="false",
    )
    first, console = out.split("\n", 1)
    # the application's own reader sees only the SDK instruments (otel-ml's observable self-metrics) ...
    assert json.loads(first) == ["otel_ml.telemetry.dropped"]  # internal.errors has no point until an error
    # ... and otel-ml's added reader exports its aggregated ml.* metrics, exactly once each, with real counts
    exported, _ = json.JSONDecoder().raw_decode(console.strip())  # the first export (shutdown exports again)
    names = [m["name"] for rm in exported["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]]
    assert sorted(names) == sorted(
        [
            "ml.prediction.duration",
            "ml.prediction.count",
            "ml.prediction.class",
            "ml.prediction.confidence",
            "ml.model.estimated_accuracy",
        ]
    )
    by_name = {m["name"]: m for rm in exported["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]}
    assert by_name["ml.prediction.count"]["data"]["data_points"][0]["value"] == 30
    assert by_name["ml.prediction.confidence"]["data"]["data_points"][0]["count"] == 30
