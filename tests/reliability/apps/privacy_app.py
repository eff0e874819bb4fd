"""Canary values through an instrumented model, with every logger at DEBUG on stderr.

Feature values (a string, a float, a large int), and the message of the model's own exception, carry canaries
that must never be exported or logged unless the matching opt-in variable says so. Prints one JSON line.
"""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pandas as pd

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
logging.getLogger("reliability").debug("debug logging on")

import otel_ml  # noqa: E402
from otel_ml._core import runtime, setup  # noqa: E402

CANARY_STR = "CANARY-7f3a@example.com"
CANARY_FLOAT = 12345.678901
CANARY_INT = 987654321987
CANARY_MESSAGE = "CANARY-MSG-5d2e: no account for alice@example.com " + "x" * 1000


def main() -> int:
    otel_ml.configure(service_name="privacy")
    rng = np.random.default_rng(13)

    @otel_ml.instrument(name="privacy", version="1", output="proba")
    def predict_proba(frame: pd.DataFrame) -> np.ndarray:
        if (frame["amount"] == CANARY_FLOAT).all() and len(frame) == 1:
            raise ValueError(CANARY_MESSAGE)
        p = 1 / (1 + np.exp(-frame["score"].to_numpy()))
        return np.stack([1 - p, p], axis=1)

    errors = 0
    for i in range(1200):
        frame = pd.DataFrame(
            {
                "email": [CANARY_STR if i % 2 else "other@example.org"],
                "amount": [CANARY_FLOAT if i % 3 else 1.5],
                "account": [CANARY_INT],
                "score": [float(rng.normal())],
            }
        )
        try:
            predict_proba(frame)
        except ValueError as exc:
            errors += 1
            assert str(exc) == CANARY_MESSAGE
    otel_ml.force_flush(timeout=10)
    result = {
        "user_errors": errors,
        "shutdown_ok": otel_ml.shutdown(timeout=10),
        "ledger": setup.span_ledger(),
        "drops": runtime.get().drops(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
