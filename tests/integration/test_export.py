"""configure() exports real OTLP over gRPC and HTTP, directly and through the real rotel collector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from otel_ml import semconv

pytestmark = pytest.mark.integration

APP = Path(__file__).parent / "apps" / "export_app.py"


def _run_app(service: str, endpoint: str, protocol: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_METRIC_EXPORT_INTERVAL="60000",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    out = subprocess.run([sys.executable, str(APP), service], env=env, capture_output=True, timeout=120, check=True)
    result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert result["shutdown_ok"] is True
    return result


def _check(receiver: Any, service: str, produced: dict[str, Any]) -> None:
    records = receiver.wait_for(
        lambda recs: (
            any(r.get("name") == semconv.PREDICTION_CONFIDENCE for r in recs)
            and sum(1 for r in recs if r.get("kind") == "span") >= 22
        ),
        timeout=20,
    )
    spans = [r for r in records if r["kind"] == "span"]
    assert len(spans) == 22
    assert {s["resource"]["service.name"] for s in spans} == {service}
    assert all(len(s["resource"]["service.instance.id"]) == 36 for s in spans)
    ok = [s for s in spans if s["name"] == "predict_proba cancer"]
    assert len(ok) == 21
    assert sorted(s["attributes"]["ml.batch.size"] for s in ok) == [1] * 20 + [300]
    for s in ok:
        assert s["span_kind"] == "INTERNAL"
        assert s["attributes"]["ml.model.version"] == "3.1"
        assert s["attributes"]["ml.prediction.id"] == f"{s['trace_id']}-{s['span_id']}"
    assert sorted(s["attributes"]["ml.prediction.id"] for s in ok) == sorted(produced["prediction_ids"])
    (failed,) = [s for s in spans if s["name"] == "predict cancer"]
    assert failed["status"]["code"] == "ERROR"
    assert failed["attributes"]["error.type"] == "ValueError"
    assert "secret-canary-4242" not in json.dumps(records)

    def last(name: str) -> dict[str, Any]:
        return [r for r in records if r.get("name") == name][-1]

    count = last(semconv.PREDICTION_COUNT)
    assert count["type"] == "sum" and count["monotonic"] is True and count["unit"] == "{prediction}"
    assert [p["value"] for p in count["data_points"]] == [320]

    conf = last(semconv.PREDICTION_CONFIDENCE)
    (point,) = conf["data_points"]
    assert point["count"] == 320
    assert point["sum"] == pytest.approx(sum(produced["confidences"]))
    assert point["explicit_bounds"] == list(semconv.UNIT_INTERVAL_BUCKETS)
    assert sum(point["bucket_counts"]) == 320

    duration = last(semconv.PREDICTION_DURATION)
    assert duration["unit"] == "s"
    by_error = {p["attributes"].get("error.type"): p for p in duration["data_points"]}
    assert by_error[None]["count"] == 21 and by_error["ValueError"]["count"] == 1
    span_ids = {(s["trace_id"], s["span_id"]) for s in spans}
    exemplars = [e for p in duration["data_points"] for e in p["exemplars"]]
    assert exemplars and all((e["trace_id"], e["span_id"]) in span_ids for e in exemplars)

    dropped = last(semconv.TELEMETRY_DROPPED)
    assert {p["attributes"]["reason"]: p["value"] for p in dropped["data_points"]} == {
        "queue_full": 0,
        "already_shutdown": 0,
    }


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_direct_export(otlp_receiver: Any, protocol: str) -> None:
    endpoint = otlp_receiver.grpc_endpoint if protocol == "grpc" else otlp_receiver.http_endpoint
    produced = _run_app(f"direct-{protocol}", endpoint, protocol)
    _check(otlp_receiver, f"direct-{protocol}", produced)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_export_through_rotel(otlp_receiver: Any, rotel_collector: Any, protocol: str) -> None:
    endpoint = rotel_collector.grpc_endpoint if protocol == "grpc" else rotel_collector.http_endpoint
    produced = _run_app(f"rotel-{protocol}", endpoint, protocol)
    _check(otlp_receiver, f"rotel-{protocol}", produced)
