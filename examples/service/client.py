"""Call the traced model service with W3C trace context, then send the ground truth back.

    python examples/service/client.py --url http://127.0.0.1:8000 --rows 5

``opentelemetry-instrumentation-httpx`` gives every request its own ``CLIENT`` span and injects the
``traceparent`` header, so the service's server span and its ``predict_proba cancer`` spans join the client's
trace. The client then posts each row's true label to ``/outcome`` with the prediction id and the predicted
label the service returned: that ``ml.outcome`` span links back to the prediction's span.

Like the service, it exports over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set or something listens on
127.0.0.1:4317, and exports nothing otherwise. The last line printed is a JSON summary (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

import httpx
import numpy as np
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from sklearn.datasets import load_breast_cancer

import otel_ml

READY_TIMEOUT_S = 30.0


def collector_answers(host: str = "127.0.0.1", port: int = 4317) -> bool:
    """Whether something accepts connections on the default OTLP/gRPC port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_ready(client: httpx.Client, timeout: float) -> dict[str, Any]:
    """Poll ``GET /healthz`` until the service answers (bounded by ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = client.get("/healthz")
            if response.status_code == 200:
                health: dict[str, Any] = response.json()
                return health
        except httpx.TransportError:
            pass
        if time.monotonic() >= deadline:
            raise SystemExit(f"service at {client.base_url} not ready within {timeout:.0f}s")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SERVICE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--rows", type=int, default=5, help="rows to score in one /predict request (1-1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    args = parser.parse_args(argv)

    exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) or collector_answers()
    if not exporting:
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
    otel_ml.configure(service_name=os.environ.get("OTEL_SERVICE_NAME") or "cancer-client")
    HTTPXClientInstrumentor().instrument()  # a CLIENT span per request, traceparent injected

    data = load_breast_cancer()
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(len(data.target), size=max(1, min(args.rows, 1000)), replace=False)
    rows = data.data[picked].tolist()
    actual = [str(data.target_names[t]) for t in data.target[picked]]

    with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
        health = wait_ready(client, READY_TIMEOUT_S)
        response = client.post("/predict", json={"rows": rows})
        response.raise_for_status()
        body = response.json()
        header = response.headers.get("ml-prediction-id", "")
        recorded = 0
        for prediction_id, predicted, truth in zip(body["prediction_ids"], body["predictions"], actual, strict=True):
            feedback = {"prediction_id": prediction_id, "actual": truth, "predicted": predicted}
            client.post("/outcome", json=feedback).raise_for_status()
            recorded += 1

    correct = sum(p == a for p, a in zip(body["predictions"], actual, strict=True))
    print(f"service {health['model']} {health['version']}: {len(rows)} rows scored, {correct} correct")
    for prediction_id, predicted, truth in zip(body["prediction_ids"], body["predictions"], actual, strict=True):
        print(f"  {prediction_id}  predicted {predicted:<9}  actual {truth}")
    otel_ml.shutdown(timeout=5.0)
    summary = {
        "prediction_ids": body["prediction_ids"],
        "predictions": body["predictions"],
        "proba": body["proba"],
        "actual": actual,
        "header": header,
        "outcomes_recorded": recorded,
        "correct": correct,
        "exporting": exporting,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
