"""Every example runs end to end as written, both with no collector and exporting to a loopback OTLP receiver.

No collector: no ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and, normally, nothing on 127.0.0.1:4317), so each example
turns its exporters off and prints what it measured. Collector: ``OTEL_EXPORTER_OTLP_ENDPOINT`` points at the
``otlp_receiver`` fixture, and the telemetry each example promises must arrive there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import OtlpReceiverHandle
from test_service import ROOT, example_env, run_client, running_service

from otel_ml import semconv

pytestmark = pytest.mark.integration

EXAMPLES = ROOT / "examples"
RUN_TIMEOUT_S = 60

Records = list[dict[str, Any]]


def _default_collector_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4317), timeout=0.2):
            return True
    except OSError:
        return False


def _spans(records: Records, service: str, name: str | None = None) -> Records:
    return [
        r
        for r in records
        if r.get("kind") == "span"
        and r["resource"].get("service.name") == service
        and (name is None or r["name"] == name)
    ]


def _metric(records: Records, service: str, name: str) -> dict[str, Any] | None:
    found = [
        r
        for r in records
        if r.get("kind") == "metric" and r["name"] == name and r["resource"].get("service.name") == service
    ]
    return found[-1] if found else None


@dataclass(frozen=True)
class Example:
    """How to run one example and what it must print / export."""

    script: str
    args: Callable[[Path], list[str]]
    check_output: Callable[[str], None]
    arrived: Callable[[Records], bool]
    check_records: Callable[[Records, str], None]


# --- quickstart ------------------------------------------------------------------------------------------------
def _quickstart_output(out: str) -> None:
    assert "otel-ml quickstart: 2020 predict calls" in out
    assert "model wine-quality 1.0.0: 2020 calls, 7000 rows predicted, 0 errors" in out


def _quickstart_arrived(records: Records) -> bool:
    return len(_spans(records, "otel-ml-quickstart")) >= 2020 and bool(
        _metric(records, "otel-ml-quickstart", semconv.PREDICTION_COUNT)
    )


def _quickstart_records(records: Records, out: str) -> None:
    spans = _spans(records, "otel-ml-quickstart")
    assert len(spans) == 2020 and {s["name"] for s in spans} == {"predict_proba wine-quality"}
    count = _metric(records, "otel-ml-quickstart", semconv.PREDICTION_COUNT)
    assert count is not None and [p["value"] for p in count["data_points"]] == [7000]


# --- torch ------------------------------------------------------------------------------------------------------
def _torch_output(out: str) -> None:
    assert "otel-ml torch example: 505 forward passes" in out
    assert "model digits-mlp 1.0.0: 505 calls, 1040 rows predicted, 0 errors" in out
    assert "estimated accuracy (mean confidence) 0." in out


def _torch_arrived(records: Records) -> bool:
    return len(_spans(records, "otel-ml-torch")) >= 505 and bool(
        _metric(records, "otel-ml-torch", semconv.MODEL_ESTIMATED_ACCURACY)
    )


def _torch_records(records: Records, out: str) -> None:
    spans = _spans(records, "otel-ml-torch")
    assert len(spans) == 505 and {s["name"] for s in spans} == {"__call__ digits-mlp"}
    assert {s["attributes"]["ml.model.framework"] for s in spans} == {"torch"}
    assert sorted({s["attributes"]["ml.batch.size"] for s in spans}) == [1, 28, 128]
    count = _metric(records, "otel-ml-torch", semconv.PREDICTION_COUNT)
    assert count is not None and [p["value"] for p in count["data_points"]] == [1040]
    estimated = _metric(records, "otel-ml-torch", semconv.MODEL_ESTIMATED_ACCURACY)
    assert estimated is not None
    (point,) = estimated["data_points"]
    assert f"estimated accuracy (mean confidence) {point['value']:.3f}" in out


# --- batch scoring ----------------------------------------------------------------------------------------------
def _batch_output(out: str) -> None:
    assert "otel-ml batch scoring: 20000 rows" in out
    assert "ground truth for 6000 rows: mean absolute error" in out
    assert "model diabetes-progression 2024.06: 10 calls, 20000 rows predicted, 0 errors" in out


def _batch_arrived(records: Records) -> bool:
    return len(_spans(records, "otel-ml-batch")) >= 13 and bool(
        _metric(records, "otel-ml-batch", semconv.OUTCOME_ERROR)
    )


def _batch_records(records: Records, out: str) -> None:
    predict = _spans(records, "otel-ml-batch", "predict diabetes-progression")
    assert len(predict) == 10
    assert sorted(s["attributes"]["ml.batch.size"] for s in predict) == [2000] * 10
    outcomes = _spans(records, "otel-ml-batch", semconv.OUTCOME_SPAN_NAME)
    assert len(outcomes) == 3
    ids = {(s["trace_id"], s["span_id"]) for s in predict}
    assert all(len(s["links"]) == 1 and (s["links"][0]["trace_id"], s["links"][0]["span_id"]) in ids for s in outcomes)
    error = _metric(records, "otel-ml-batch", semconv.OUTCOME_ERROR)
    assert error is not None
    (point,) = error["data_points"]
    assert point["count"] == 6000
    assert f"mean absolute error {point['sum'] / point['count']:.2f}" in out


# --- drift demo -------------------------------------------------------------------------------------------------
def _drift_table(out: str) -> dict[str, tuple[float, float]]:
    table: dict[str, tuple[float, float]] = {}
    for line in out.splitlines():
        parts = line.replace("<- shifted", "").split()
        if len(parts) >= 3 and line[:1].isalpha():
            try:
                table[" ".join(parts[:-2])] = (float(parts[-2]), float(parts[-1]))
            except ValueError:
                continue
    return table


def _drift_output(out: str) -> None:
    table = _drift_table(out)
    assert len(table) == 30
    shifted = {"mean texture", "mean smoothness"}
    for feature, (before, after) in table.items():
        assert before < 0.2, feature
        assert (after > 1.0) if feature in shifted else (after < 0.2), feature
    assert "on_drift events: 0 before the shift, 2 after" in out


def _drift_arrived(records: Records) -> bool:
    return bool(_metric(records, "otel-ml-drift-demo", semconv.MODEL_DRIFT))


def _drift_records(records: Records, out: str) -> None:
    feature = _metric(records, "otel-ml-drift-demo", semconv.FEATURE_DRIFT)
    assert feature is not None
    psi = {
        p["attributes"]["ml.feature.name"]: p["value"]
        for p in feature["data_points"]
        if p["attributes"]["ml.drift.method"] == "psi"
    }
    table = _drift_table(out)
    assert {name: round(v, 3) for name, v in psi.items()} == {name: after for name, (_, after) in table.items()}
    model = _metric(records, "otel-ml-drift-demo", semconv.MODEL_DRIFT)
    assert model is not None
    (share,) = model["data_points"]
    assert share["value"] == 2 / 30  # exactly the two shifted features
    assert "ml.model.drift (share of drifted features): before 0.00, after 0.07" in out


# --- outcome feedback -------------------------------------------------------------------------------------------
def _feedback_output(out: str) -> None:
    result = json.loads(out.strip().splitlines()[-1])
    assert result["recorded"] == 200 and result["rejected"] == 3
    assert result["dropped"] == {"outcome_invalid_id": 1, "outcome_unknown_model": 1, "outcome_missing_predicted": 1}
    assert 0.9 < result["accuracy"] <= 1.0 and 0.9 < result["estimated_accuracy"] <= 1.0


def _feedback_arrived(records: Records) -> bool:
    return len(_spans(records, "label-ingestion", semconv.OUTCOME_SPAN_NAME)) >= 200 and bool(
        _metric(records, "label-ingestion", semconv.MODEL_ACCURACY)
    )


def _feedback_records(records: Records, out: str) -> None:
    result = json.loads(out.strip().splitlines()[-1])
    predictions = _spans(records, "cancer-service", "predict_proba cancer")
    assert len(predictions) == 200
    outcomes = _spans(records, "label-ingestion", semconv.OUTCOME_SPAN_NAME)
    assert len(outcomes) == 200
    # the ingestion process shared nothing with the service but the ids: every link lands on a prediction span
    links = sorted((s["links"][0]["trace_id"], s["links"][0]["span_id"]) for s in outcomes)
    assert links == sorted((s["trace_id"], s["span_id"]) for s in predictions)
    accuracy = _metric(records, "label-ingestion", semconv.MODEL_ACCURACY)
    assert accuracy is not None and [p["value"] for p in accuracy["data_points"]] == [result["accuracy"]]
    estimated = _metric(records, "cancer-service", semconv.MODEL_ESTIMATED_ACCURACY)
    assert estimated is not None and [p["value"] for p in estimated["data_points"]] == [result["estimated_accuracy"]]


EXAMPLES_TABLE = {
    "quickstart": Example(
        "quickstart.py", lambda tmp: [], _quickstart_output, _quickstart_arrived, _quickstart_records
    ),
    "torch_example": Example("torch_example.py", lambda tmp: [], _torch_output, _torch_arrived, _torch_records),
    "batch_scoring": Example(
        "batch_scoring.py", lambda tmp: ["--workdir", str(tmp)], _batch_output, _batch_arrived, _batch_records
    ),
    "drift_demo": Example("drift_demo.py", lambda tmp: [], _drift_output, _drift_arrived, _drift_records),
    "outcome_feedback": Example(
        "outcome_feedback.py",
        lambda tmp: ["--workdir", str(tmp)],
        _feedback_output,
        _feedback_arrived,
        _feedback_records,
    ),
}
MODES = ["no_collector", "collector"]


def _endpoint(mode: str, request: pytest.FixtureRequest) -> tuple[OtlpReceiverHandle | None, str | None]:
    if mode == "no_collector":
        return None, None
    receiver: OtlpReceiverHandle = request.getfixturevalue("otlp_receiver")
    return receiver, receiver.grpc_endpoint


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(EXAMPLES_TABLE))
def test_example_runs(name: str, mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    example = EXAMPLES_TABLE[name]
    if name == "torch_example":
        pytest.importorskip("torch")
    receiver, endpoint = _endpoint(mode, request)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / example.script), *example.args(tmp_path)],
        cwd=tmp_path,  # as a user would: not from the repository root
        env=example_env(endpoint),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    example.check_output(out)
    if receiver is None:
        if not _default_collector_answers():
            assert "nowhere (no collector)" in out
        return
    records = receiver.wait_for(example.arrived, timeout=20)
    example.check_records(records, out)


@pytest.mark.parametrize("mode", MODES)
def test_service_example_runs(mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    receiver, endpoint = _endpoint(mode, request)
    with running_service(example_env(endpoint, MODEL_VERSION="3.0.0"), tmp_path / "service.log") as service:
        result = run_client(service.url, example_env(endpoint), rows=4)
        output = service.stop()
    assert len(result["prediction_ids"]) == 4 and result["outcomes_recorded"] == 4
    assert result["exporting"] is (endpoint is not None or _default_collector_answers())
    assert "model cancer 3.0.0: 4 calls, 4 rows predicted, 0 errors" in output
    if receiver is None:
        return

    def arrived(records: Records) -> bool:
        return len(_spans(records, "cancer-api", semconv.OUTCOME_SPAN_NAME)) == 4 and bool(
            _spans(records, "cancer-client")
        )

    records = receiver.wait_for(arrived, timeout=20)
    predict = _spans(records, "cancer-api", "predict_proba cancer")
    assert sorted(s["attributes"]["ml.prediction.id"] for s in predict) == sorted(result["prediction_ids"])
    client = _spans(records, "cancer-client")
    assert {s["span_kind"] for s in client} == {"CLIENT"} and len(client) == 6  # healthz, predict, 4 outcomes
