"""otel-ml quickstart: instrument a real scikit-learn model and serve a few thousand predictions.

    python examples/quickstart.py

Exports through OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set or a collector answers on localhost:4317;
with no collector it still shows what was measured: a summary read from an in-process metric reader.
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import otel_ml
from otel_ml.summary import SummaryReader


def collector_answers(host: str = "127.0.0.1", port: int = 4317) -> bool:
    """Whether something accepts connections on the default OTLP/gRPC port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def main() -> None:
    exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) or collector_answers()
    if not exporting:  # nowhere to send: keep everything in process
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
    summary = SummaryReader()
    otel_ml.configure(service_name="otel-ml-quickstart", metric_readers=[summary])

    x, y = load_wine(return_X_y=True)
    x_train, x_live, y_train, _ = train_test_split(x, y, test_size=0.5, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    names = np.array(["barolo", "grignolino", "barbera"])

    @otel_ml.instrument(name="wine-quality", version="1.0.0", classes=names)
    def predict_proba(rows: np.ndarray) -> np.ndarray:
        return model.predict_proba(rows)

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    calls = 0
    for _ in range(2000):  # single-row requests, as an online service sees them
        predict_proba(x_live[rng.integers(len(x_live))][None, :])
        calls += 1
    for _ in range(20):  # and batch scoring
        predict_proba(x_live[rng.integers(len(x_live), size=250)])
        calls += 1
    elapsed = time.perf_counter() - started

    where = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317") if exporting else "nowhere (no collector)"
    print(f"otel-ml quickstart: {calls} predict calls in {elapsed:.2f}s, exporting to {where}")
    print(f"last ml.prediction.id: {otel_ml.last_prediction_id()}")
    otel_ml.force_flush()  # finish the input sketches and drift scores before reading them
    print(summary.render())
    otel_ml.shutdown(timeout=5)


if __name__ == "__main__":
    main()
