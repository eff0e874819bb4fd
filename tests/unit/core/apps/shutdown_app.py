"""Configure against a dead/blackholed endpoint, predict, then time shutdown and exit (printed as JSON)."""

from __future__ import annotations

import json
import sys
import time

import otel_ml


def main() -> None:
    timeout = float(sys.argv[1])
    otel_ml.configure(service_name="shutdown-test")
    predict = otel_ml.instrument(name="m")(lambda x: [0.5 for _ in x])
    for _ in range(5000):
        predict([1.0, 2.0])
    otel_ml.force_flush(timeout=0.5)
    t0 = time.monotonic()
    ok = otel_ml.shutdown(timeout=timeout)
    took = time.monotonic() - t0
    predict([1.0])  # still works after shutdown, silently
    print(json.dumps({"shutdown_s": took, "ok": ok}), flush=True)


if __name__ == "__main__":
    main()
