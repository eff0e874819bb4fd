"""The traced service example end to end: uvicorn + FastAPI + otel-ml, called by the httpx-instrumented client.

At the loopback OTLP receiver: the client's CLIENT span, the service's SERVER span and the ``predict_proba
cancer`` spans are one trace with the right parents; ``ml.prediction.duration`` exemplars point at those predict
spans; the ids the client got back are the spans' ``ml.prediction.id``; the outcomes the client posted are
``ml.outcome`` spans linked to the predictions, counted in ``ml.outcome.count``; and the shadow candidate's
spans and agreement counts arrived too.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import HOST, OtlpReceiverHandle, _tail, _timeout_bin, free_port, stop_process

from otel_ml import semconv

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "examples" / "service" / "client.py"
SERVICE_LIFETIME_S = 60
READY_TIMEOUT_S = 30.0


def example_env(endpoint: str | None, **extra: str) -> dict[str, str]:
    """The test's environment without OTEL_* / OTEL_ML_* settings, plus an OTLP endpoint when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    if endpoint is not None:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_EXPORTER_OTLP_INSECURE="true",
            OTEL_BSP_SCHEDULE_DELAY="200",
            OTEL_METRIC_EXPORT_INTERVAL="60000",
        )
    env.update(extra)
    return env


@dataclass
class Service:
    """A running ``uvicorn examples.service.app:app`` under ``timeout``."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> str:
        """SIGTERM (uvicorn shuts down gracefully, flushing telemetry), bounded wait; returns its output."""
        stop_process(self.proc)
        return _tail(self.log_path, 20_000)


@contextlib.contextmanager
def running_service(env: Mapping[str, str], log_path: Path) -> Iterator[Service]:
    """Start the service on a free 127.0.0.1 port, wait (bounded) for ``/healthz``; always stopped by PID."""
    port = free_port()
    cmd = [
        _timeout_bin(), "-k", "5", str(SERVICE_LIFETIME_S),
        sys.executable, "-m", "uvicorn", "examples.service.app:app", "--host", HOST, "--port", str(port),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    service = Service(proc, f"http://{HOST}:{port}", log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{service.url}/healthz", timeout=0.5).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() >= deadline:
                pytest.fail(f"service not ready within {READY_TIMEOUT_S}s: {_tail(log_path)}")
            time.sleep(0.1)
        yield service
    finally:
        stop_process(proc)


def run_client(url: str, env: Mapping[str, str], rows: int) -> dict[str, Any]:
    """Run ``examples/service/client.py`` to completion (bounded); its last stdout line is a JSON summary."""
    out = subprocess.run(
        [sys.executable, str(CLIENT), "--url", url, "--rows", str(rows)],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    summary: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return summary


def _last_metric(records: list[dict[str, Any]], name: str, service: str) -> dict[str, Any]:
    found = [r for r in records if r.get("name") == name and r["resource"].get("service.name") == service]
    assert found, f"no {name} from {service}"
    return found[-1]


def test_trace_client_to_predict_span(otlp_receiver: OtlpReceiverHandle, tmp_path: Path) -> None:
    endpoint = otlp_receiver.grpc_endpoint
    server_env = example_env(endpoint, OTEL_SERVICE_NAME="cancer-api", MODEL_VERSION="1.2.3", CANDIDATE_VERSION="2.0.0")
    with running_service(server_env, tmp_path / "service.log") as service:
        result = run_client(service.url, example_env(endpoint, OTEL_SERVICE_NAME="cancer-client"), rows=3)
        output = service.stop()
    assert "Application shutdown complete" in output
    assert "model cancer 1.2.3: 3 calls, 3 rows predicted, 0 errors" in output

    ids: list[str] = result["prediction_ids"]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert result["header"] == ",".join(ids)
    assert result["outcomes_recorded"] == 3
    trace_id = ids[0].split("-")[0]
    assert all(i.startswith(trace_id + "-") for i in ids)  # one request: one trace

    def arrived(records: list[dict[str, Any]]) -> bool:
        names = {r.get("name") for r in records}
        outcomes = [r for r in records if r.get("kind") == "span" and r["name"] == semconv.OUTCOME_SPAN_NAME]
        return len(outcomes) == 3 and {semconv.PREDICTION_DURATION, semconv.OUTCOME_COUNT} <= names

    records = otlp_receiver.wait_for(arrived, timeout=20)
    spans = [r for r in records if r["kind"] == "span"]
    in_trace = [s for s in spans if s["trace_id"] == trace_id]

    # client span → server span → predict spans, one trace, correct parents
    (client_span,) = [s for s in in_trace if s["span_kind"] == "CLIENT"]
    assert client_span["resource"]["service.name"] == "cancer-client"
    assert client_span["parent_span_id"] is None
    assert client_span["name"] == "POST"
    (server_span,) = [s for s in in_trace if s["span_kind"] == "SERVER"]
    assert server_span["resource"]["service.name"] == "cancer-api"
    assert server_span["name"] == "POST /predict"
    assert server_span["parent_span_id"] == client_span["span_id"]
    predict_spans = [s for s in in_trace if s["name"] == "predict_proba cancer"]
    primary = [s for s in predict_spans if s["attributes"]["ml.model.version"] == "1.2.3"]
    candidate = [s for s in predict_spans if s["attributes"]["ml.model.version"] == "2.0.0"]
    assert len(primary) == 3 and len(candidate) == 3 and len(predict_spans) == 6
    for s in predict_spans:
        assert s["parent_span_id"] == server_span["span_id"]
        assert s["span_kind"] == "INTERNAL"
        assert s["resource"]["service.name"] == "cancer-api"
        assert s["attributes"]["ml.prediction.id"] == f"{s['trace_id']}-{s['span_id']}"
    # the ids returned to the caller are the primary's predict spans' attribute, in row order
    by_start = sorted(primary, key=lambda s: s["start_time_unix_nano"])
    assert [s["attributes"]["ml.prediction.id"] for s in by_start] == ids
    primary_ids = {(s["trace_id"], s["span_id"]) for s in primary}

    # exemplars of the primary's latency carry this trace and point at its predict spans
    duration = _last_metric(records, semconv.PREDICTION_DURATION, "cancer-api")
    (point,) = [p for p in duration["data_points"] if p["attributes"]["ml.model.version"] == "1.2.3"]
    assert point["count"] == 3
    exemplars = point["exemplars"]
    assert exemplars and {e["trace_id"] for e in exemplars} == {trace_id}
    assert {(e["trace_id"], e["span_id"]) for e in exemplars} <= primary_ids

    # delayed ground truth: one ml.outcome span per row, linked to its prediction span, and counted
    outcome_spans = [s for s in spans if s["name"] == semconv.OUTCOME_SPAN_NAME]
    linked = sorted((link["trace_id"], link["span_id"]) for s in outcome_spans for link in s["links"])
    assert linked == sorted(primary_ids)
    for s in outcome_spans:
        assert s["resource"]["service.name"] == "cancer-api"
        assert s["trace_id"] != trace_id  # the label came later, in its own request
        assert s["attributes"]["ml.model.version"] == "1.2.3"
        assert s["attributes"]["ml.outcome.rows"] == 1
    verdicts = sorted(s["attributes"]["ml.outcome.correct"] for s in outcome_spans)
    expected = [p == a for p, a in zip(result["predictions"], result["actual"], strict=True)]
    assert verdicts == sorted(expected)
    counts = _last_metric(records, semconv.OUTCOME_COUNT, "cancer-api")
    assert {p["attributes"]["ml.outcome.correct"]: p["value"] for p in counts["data_points"]} == {
        True: result["correct"],
        False: 3 - result["correct"],
    }

    # the accuracy estimate is the mean top-class probability of the three rows served
    estimated = _last_metric(records, semconv.MODEL_ESTIMATED_ACCURACY, "cancer-api")
    by_version = {p["attributes"]["ml.model.version"]: p["value"] for p in estimated["data_points"]}
    assert by_version["1.2.3"] == pytest.approx(float(np.max(result["proba"], axis=1).mean()), abs=1e-12)
    realised = _last_metric(records, semconv.MODEL_ACCURACY, "cancer-api")
    assert [p["value"] for p in realised["data_points"]] == [pytest.approx(result["correct"] / 3)]

    # the shadow candidate compared every row, off the response path
    comparisons = _last_metric(records, semconv.SHADOW_COMPARISONS, "cancer-api")
    assert sum(p["value"] for p in comparisons["data_points"]) == 3
    for p in comparisons["data_points"]:
        assert p["attributes"]["ml.model.version"] == "1.2.3"
        assert p["attributes"]["ml.shadow.candidate.version"] == "2.0.0"
