"""Zero-code: an unmodified sklearn + torch script under ``opentelemetry-instrument`` exports otel-ml telemetry.

The script (``apps/zero_code_app.py``) imports neither OpenTelemetry nor otel-ml. ``opentelemetry-distro``
configures the SDK from ``OTEL_*`` variables and loads otel-ml's ``sklearn`` and ``torch`` entry points; the
spans and the ``ml.*`` metrics (exported at exit by the reader otel-ml adds to the distro's MeterProvider) must
arrive at a real OTLP/gRPC receiver.
"""

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

APP = Path(__file__).parent / "apps" / "zero_code_app.py"
BOOSTERS_APP = Path(__file__).parent / "apps" / "boosters_app.py"
INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"


def _run(endpoint: str, app: Path = APP, **extra: str) -> subprocess.CompletedProcess[bytes]:
    if not INSTRUMENT.exists():
        pytest.skip("opentelemetry-instrument (opentelemetry-distro) not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME="zero-code-app",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_ML_STRICT="1",  # an otel-ml internal error fails the app, hence the test
        OTEL_ML_MODEL_NAMES="RandomForestClassifier=fraud:1.4.0",
        **extra,
    )
    return subprocess.run(
        [str(INSTRUMENT), sys.executable, str(app)], env=env, capture_output=True, timeout=60, check=True
    )


def _last(records: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return [r for r in records if r.get("kind") == "metric" and r["name"] == name][-1]


def test_unmodified_script_exports_sklearn_and_torch_predictions(otlp_receiver: Any) -> None:
    out = _run(otlp_receiver.grpc_endpoint)
    produced = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert b"Traceback" not in out.stderr
    records = otlp_receiver.wait_for(
        lambda recs: (
            sum(r.get("kind") == "span" for r in recs) >= 3
            and any(r.get("name") == semconv.PREDICTION_CONFIDENCE for r in recs)
        ),
        timeout=20,
    )
    spans = {s["name"]: s for s in records if s["kind"] == "span"}
    assert sorted(spans) == ["__call__ Sequential", "predict fraud", "predict_proba LogisticRegression"]
    assert {s["resource"]["service.name"] for s in spans.values()} == {"zero-code-app"}
    assert all("telemetry.auto.version" in s["resource"] for s in spans.values())
    forest = spans["predict fraud"]["attributes"]
    assert forest == {
        **forest,
        semconv.ML_MODEL_NAME: "fraud",
        semconv.ML_MODEL_VERSION: "1.4.0",
        semconv.ML_MODEL_FRAMEWORK: "sklearn",
        semconv.ML_MODEL_TASK: "classification",
        semconv.ML_BATCH_SIZE: 30,
    }
    pipe = spans["predict_proba LogisticRegression"]["attributes"]
    assert pipe[semconv.ML_PIPELINE_STEPS] == ["standardscaler", "logisticregression"]
    assert pipe[semconv.ML_BATCH_SIZE] == 20
    net = spans["__call__ Sequential"]["attributes"]
    assert (net[semconv.ML_MODEL_FRAMEWORK], net[semconv.ML_BATCH_SIZE]) == ("torch", 40)
    for span in spans.values():
        assert span["attributes"][semconv.ML_PREDICTION_ID] == f"{span['trace_id']}-{span['span_id']}"

    def by_model(metric: dict[str, Any], key: str) -> dict[str, Any]:
        return {p["attributes"][semconv.ML_MODEL_NAME]: p[key] for p in metric["data_points"]}

    assert by_model(_last(records, semconv.PREDICTION_COUNT), "value") == {
        "fraud": 30,
        "LogisticRegression": 20,
        "Sequential": 40,
    }
    assert by_model(_last(records, semconv.PREDICTION_DURATION), "count") == {
        "fraud": 1,
        "LogisticRegression": 1,
        "Sequential": 1,
    }
    confidence = {
        p["attributes"][semconv.ML_MODEL_NAME]: p for p in _last(records, "ml.prediction.confidence")["data_points"]
    }
    assert confidence["LogisticRegression"]["count"] == 20
    assert confidence["LogisticRegression"]["sum"] == pytest.approx(produced["pipe_confidence_sum"])
    assert confidence["Sequential"]["count"] == 40
    assert confidence["Sequential"]["sum"] == pytest.approx(produced["net_confidence_sum"], rel=1e-6)
    classes = {
        p["attributes"][semconv.ML_PREDICTION_CLASS]: p["value"]
        for p in _last(records, semconv.PREDICTION_CLASS)["data_points"]
        if p["attributes"][semconv.ML_MODEL_NAME] == "fraud"
    }
    assert classes == produced["forest_classes"]


def test_disabled_instrumentations_leave_the_script_alone(otlp_receiver: Any) -> None:
    _run(otlp_receiver.grpc_endpoint, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="sklearn", OTEL_ML_TORCH_ENABLED="false")
    records = otlp_receiver.wait_for(lambda recs: any(r.get("kind") == "metric" for r in recs), timeout=20)
    assert [r for r in records if r["kind"] == "span"] == []
    assert not any(r["name"].startswith("ml.prediction.") for r in records if r["kind"] == "metric")


def test_unmodified_script_exports_xgboost_lightgbm_and_onnxruntime_predictions(otlp_receiver: Any) -> None:
    out = _run(otlp_receiver.grpc_endpoint, BOOSTERS_APP)
    rows = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert b"Traceback" not in out.stderr
    records = otlp_receiver.wait_for(
        lambda recs: (
            sum(r.get("kind") == "span" for r in recs) >= 3
            and any(r.get("name") == semconv.PREDICTION_COUNT for r in recs)
        ),
        timeout=20,
    )
    spans = {s["attributes"][semconv.ML_MODEL_FRAMEWORK]: s for s in records if s["kind"] == "span"}
    assert sorted(spans) == ["lightgbm", "onnxruntime", "xgboost"]  # one span per call, whichever wrapper
    assert {f: s["attributes"][semconv.ML_BATCH_SIZE] for f, s in spans.items()} == rows
    assert spans["xgboost"]["name"] == "predict_proba XGBClassifier"
    assert spans["onnxruntime"]["attributes"][semconv.ML_MODEL_NAME] == "cancer_onnx"
    assert all(0.5 <= s["attributes"][semconv.ML_PREDICTION_CONFIDENCE_MEAN] <= 1.0 for s in spans.values())
    count = _last(records, semconv.PREDICTION_COUNT)
    by_model = {p["attributes"][semconv.ML_MODEL_NAME]: p["value"] for p in count["data_points"]}
    assert sorted(by_model.values()) == [25, 35, 45]
