"""Exporting telemetry must not produce telemetry (scenario 21): the OTLP/HTTP exporter's own HTTP requests call
an instrumented model. Prints one JSON line.

``requests.Session.send`` (what the OTLP/HTTP exporters send with) is patched to call ``http_model`` (an
``@otel_ml.instrument`` function) before every request, as an HTTP client instrumentation or any code on the export
path could. The SDK runs exports under its suppress-instrumentation key, so ``http_model`` must produce no span
and no count, however many exports interleave with the predictions (short ``OTEL_BSP_SCHEDULE_DELAY`` and
``OTEL_METRIC_EXPORT_INTERVAL`` given by the test).

``RELIABILITY_CONFIG`` (JSON): ``predictions`` (default 2000), ``rows`` per call (default 3).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import requests

import otel_ml
from otel_ml._core import setup


def main() -> int:
    cfg = json.loads(os.environ.get("RELIABILITY_CONFIG", "{}"))
    n, rows = int(cfg.get("predictions", 2000)), int(cfg.get("rows", 3))
    otel_ml.configure(service_name="suppression")

    @otel_ml.instrument(name="http-client")
    def http_model(sizes: list[list[float]]) -> list[int]:
        return [int(s[0] > 0) for s in sizes]

    sends: list[tuple[str, str]] = []
    original = requests.Session.send

    def send(self: requests.Session, request: Any, **kwargs: Any) -> Any:
        http_model([[float(len(request.body or b""))]])
        sends.append((threading.current_thread().name, str(request.url).rsplit("/", 1)[-1]))
        return original(self, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign]

    @otel_ml.instrument(name="model", output="proba")
    def predict_proba(batch: list[list[float]]) -> list[list[float]]:
        return [[0.5 - r[0] / 10, 0.5 + r[0] / 10] for r in batch]

    batch = [[float(i % 3), 1.0] for i in range(rows)]
    t0 = time.perf_counter()
    for i in range(n):
        predict_proba(batch)
        if i % 100 == 99:
            time.sleep(0.02)  # let the exporters run between the predictions
    run_s = time.perf_counter() - t0
    sends_during_run = len(sends)
    flushed = otel_ml.force_flush(timeout=10)
    ledger = setup.span_ledger()
    result = {
        "predictions": n,
        "rows": rows,
        "run_s": run_s,
        "sends_during_run": sends_during_run,
        "sends": len(sends),
        "send_threads": sorted({t for t, _ in sends}),
        "send_paths": sorted({p for _, p in sends}),
        "flushed": flushed,
        "ledger": ledger,
        "shutdown_ok": otel_ml.shutdown(timeout=10),
        "sends_total": len(sends),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
