"""A real instrumented app: configure() from OTEL_* env vars, real sklearn predictions, bounded shutdown.

Prints one JSON line with what it produced, so the test can compare it with what the receiver got.
"""

from __future__ import annotations

import contextlib
import json
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

import otel_ml


def main() -> int:
    x, y = load_breast_cancer(return_X_y=True)
    model = LogisticRegression(max_iter=5000).fit(x, y)
    otel_ml.configure(service_name=sys.argv[1])

    @otel_ml.instrument(name="cancer", version="3.1")
    def predict_proba(batch: np.ndarray) -> np.ndarray:
        return model.predict_proba(batch)

    @otel_ml.instrument(name="cancer", version="3.1")
    def predict(batch: np.ndarray) -> np.ndarray:
        raise ValueError("secret-canary-4242")

    confidences: list[float] = []
    ids: list[str | None] = []
    for i in range(20):
        confidences.extend(predict_proba(x[i : i + 1]).max(axis=1).tolist())
        ids.append(otel_ml.last_prediction_id())
    confidences.extend(predict_proba(x[100:400]).max(axis=1).tolist())
    ids.append(otel_ml.last_prediction_id())
    with contextlib.suppress(ValueError):
        predict(x[:5])
    ok = otel_ml.shutdown(timeout=10)
    print(json.dumps({"confidences": confidences, "prediction_ids": ids, "shutdown_ok": ok}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
