"""Queue spans against an endpoint that never answers, then time ``otel_ml.shutdown`` and the exit.

argv: ``explicit <timeout>`` calls ``otel_ml.shutdown(timeout)``; ``atexit`` leaves it to the exit-time hook
(``OTEL_ML_SHUTDOWN_TIMEOUT``). Prints one JSON line; ``exit_started`` is ``time.time()`` just before returning
from main, so the test can time the interpreter's exit.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

import otel_ml
from otel_ml._core import runtime, setup


def main() -> int:
    how = sys.argv[1]
    otel_ml.configure(service_name="shutdown")
    predict = otel_ml.instrument(name="m", output="proba")(lambda x: np.full((len(x), 2), 0.5))
    x = np.ones((1, 20))
    for _ in range(5000):
        predict(x)
    result: dict[str, object] = {"queued_before": setup.span_ledger()}
    if how == "explicit":
        t0 = time.monotonic()
        result["shutdown_ok"] = otel_ml.shutdown(timeout=float(sys.argv[2]))
        result["shutdown_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        for _ in range(100):
            predict(x)  # after shutdown: works, records nothing, raises nothing
        result["after_shutdown_call_us"] = (time.monotonic() - t0) / 100 * 1e6
        result["ledger"] = setup.span_ledger()
        result["drops"] = runtime.get().drops()
    result["exit_started"] = time.time()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
