"""Delayed ground truth: predictions now, labels later — recorded by another process.

    python examples/outcome_feedback.py

1. **Serving** (this process): a logistic regression on scikit-learn's breast-cancer data answers 200
   single-row requests. For each it logs what a real service would keep in its response log: the
   ``ml.prediction.id``, the model name and version, and the predicted label. Until labels exist,
   ``ml.model.estimated_accuracy`` (the mean top-class probability over the window) estimates accuracy.
2. **Label ingestion** (a separate process, ``--ingest LOG``): the true diagnoses arrive. For each logged
   prediction it calls ``otel_ml.record_outcome(prediction_id, actual, model=..., version=..., predicted=...)``,
   which emits an ``ml.outcome`` span linked to the prediction's span — the id encodes its trace and span id,
   no shared database — and counts ``ml.outcome.count{ml.outcome.correct}``. Three malformed records show the
   counted rejections (``otel_ml.telemetry.dropped{reason=outcome_*}``) that never raise.

It prints the estimate next to the realised accuracy (``ml.model.accuracy``). Exports through OTLP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set or a collector answers on 127.0.0.1:4317; otherwise nothing is exported.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import otel_ml
from otel_ml.summary import SummaryReader

MODEL = "cancer"
VERSION = "1.0.0"
REQUESTS = 200


def collector_answers(host: str = "127.0.0.1", port: int = 4317) -> bool:
    """Whether something accepts connections on the default OTLP/gRPC port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def set_up(service_name: str) -> tuple[bool, SummaryReader]:
    """``otel_ml.configure`` with an in-process reader; no exporters when there is nowhere to send."""
    exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) or collector_answers()
    if not exporting:  # nowhere to send: keep everything in process (inherited by the ingestion process)
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
    summary = SummaryReader()
    otel_ml.configure(service_name=service_name, metric_readers=[summary])
    return exporting, summary


def gauge(summary: SummaryReader, name: str) -> float | None:
    """The value of a one-series gauge (``None`` before it has one)."""
    values = [float(point.value) for point in points(summary, name)]
    return values[0] if values else None


def points(summary: SummaryReader, name: str) -> list[Any]:
    """The data points of metric ``name``, collected now from the in-process reader."""
    metric = summary.collect_metrics().get(name)
    return list(metric.data.data_points) if metric is not None else []


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def serve(log_path: Path) -> float | None:
    """Answer single-row requests; log what the label-ingestion job needs. Returns the accuracy estimate."""
    exporting, summary = set_up(os.environ.get("OTEL_SERVICE_NAME") or "cancer-service")
    data = load_breast_cancer()
    x_train, x_live, y_train, _ = train_test_split(data.data, data.target, test_size=0.5, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    classes = [str(c) for c in data.target_names]

    @otel_ml.instrument(name=MODEL, version=VERSION, classes=classes)
    def predict_proba(row: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_proba(row))

    rng = np.random.default_rng(0)
    live_index = rng.integers(len(x_live), size=REQUESTS)
    with open(log_path, "w", encoding="utf-8") as log:
        for i in live_index:
            proba = predict_proba(x_live[i][None, :])[0]
            record = {
                "prediction_id": otel_ml.last_prediction_id(),
                "model": MODEL,
                "version": VERSION,
                "predicted": classes[int(proba.argmax())],
                "row": int(i),  # the demo's stand-in for "which patient": the label job looks it up
            }
            log.write(json.dumps(record) + "\n")
    otel_ml.force_flush()
    estimated = gauge(summary, "ml.model.estimated_accuracy")
    where = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317") if exporting else "nowhere (no collector)"
    print(f"serving: {REQUESTS} predictions logged to {log_path}, exporting to {where}")
    print(f"serving: estimated accuracy (mean confidence) {_fmt(estimated)} before any label arrived")
    otel_ml.shutdown(timeout=5)
    return estimated


def ingest(log_path: Path) -> dict[str, Any]:
    """The label-ingestion job: record every logged prediction's true label with ``otel_ml.record_outcome``."""
    _, summary = set_up("label-ingestion")
    data = load_breast_cancer()
    _, _, _, y_live = train_test_split(data.data, data.target, test_size=0.5, random_state=0)
    classes = [str(c) for c in data.target_names]
    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
    recorded = 0
    for r in records:
        actual = classes[int(y_live[r["row"]])]
        if otel_ml.record_outcome(
            r["prediction_id"], actual, model=r["model"], version=r["version"], predicted=r["predicted"]
        ):
            recorded += 1
    # what a label feed also contains: garbage. Each is rejected, counted and logged, never raised.
    rejected = [
        otel_ml.record_outcome("not-a-prediction-id", "benign", model=MODEL, version=VERSION, predicted="benign"),
        otel_ml.record_outcome(records[0]["prediction_id"], "benign", predicted="benign"),  # no model
        otel_ml.record_outcome(records[0]["prediction_id"], "benign", model=MODEL, version=VERSION),  # no predicted
    ]
    otel_ml.force_flush()
    accuracy = gauge(summary, "ml.model.accuracy")
    dropped = {
        str((p.attributes or {}).get("reason")): int(p.value)
        for p in points(summary, "otel_ml.telemetry.dropped")
        if str((p.attributes or {}).get("reason")).startswith("outcome_")
    }
    otel_ml.shutdown(timeout=5)
    return {"recorded": recorded, "rejected": rejected.count(False), "accuracy": accuracy, "dropped": dropped}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ingest", type=Path, help="run as the label-ingestion job over this prediction log")
    parser.add_argument("--workdir", type=Path, default=None, help="where the log goes (default: a temporary dir)")
    args = parser.parse_args(argv)
    if args.ingest is not None:
        print(json.dumps(ingest(args.ingest)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="otel-ml-outcomes-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "predictions.jsonl"
    estimated = serve(log_path)
    # later, elsewhere: the labels arrive. Another process — nothing shared with this one but the log.
    job = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--ingest", str(log_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if job.returncode != 0:
        raise SystemExit(f"label ingestion failed:\n{job.stderr}")
    result = json.loads(job.stdout.strip().splitlines()[-1])
    print(
        f"label ingestion (a separate process): {result['recorded']} outcomes recorded, "
        f"{result['rejected']} malformed records rejected {result['dropped']}"
    )
    print(f"realised accuracy {_fmt(result['accuracy'])} vs estimated {_fmt(estimated)}")
    print(json.dumps({"estimated_accuracy": estimated, **result}))


if __name__ == "__main__":
    main()
