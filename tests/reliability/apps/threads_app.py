"""N threads x M predictions against one instrumented model; prints what otel-ml counted and what it expected.

``RELIABILITY_CONFIG``: ``threads``, ``per_thread``, ``path`` (``decorator`` or ``sklearn_auto``). A
``faulthandler`` watchdog dumps every thread's stack and exits if anything deadlocks.
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import sys
import threading
import time
from typing import Any

import numpy as np

faulthandler.dump_traceback_later(float(os.environ.get("RELIABILITY_WATCHDOG_S", "150")), exit=True)

import otel_ml  # noqa: E402
from otel_ml._core import runtime, setup  # noqa: E402
from otel_ml.summary import SummaryReader  # noqa: E402

FEATURES = 20


def main() -> int:
    cfg: dict[str, Any] = json.loads(os.environ.get("RELIABILITY_CONFIG", "{}"))
    threads, per_thread, path = cfg["threads"], cfg["per_thread"], cfg["path"]
    reader = SummaryReader()
    otel_ml.configure(service_name="threads", metric_readers=[reader])
    rng = np.random.default_rng(3)
    train = rng.normal(size=(5000, FEATURES))
    reference = otel_ml.Reference.from_data(train)
    w = rng.normal(size=FEATURES)

    if path == "decorator":

        def bare(x: np.ndarray) -> np.ndarray:
            p = 1 / (1 + np.exp(-(x @ w)))
            return np.stack([1 - p, p], axis=1)

        predict = otel_ml.instrument(name="threads", version="1", output="proba", reference=reference)(bare)
    else:
        from sklearn.linear_model import LogisticRegression

        from otel_ml.instrumentation.sklearn import SklearnInstrumentor

        SklearnInstrumentor().instrument()
        clf = LogisticRegression().fit(train, (train @ w > 0).astype(int))
        otel_ml.set_model_info(clf, name="threads", version="1", reference=reference)
        predict = clf.predict_proba
        bare = clf.predict_proba

    rows = [np.random.default_rng(100 + t).normal(size=(per_thread, FEATURES)) for t in range(threads)]
    expected_conf = [0.0] * threads
    errors = [0] * threads
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        data = rows[t]
        barrier.wait()
        total = 0.0
        for k in range(per_thread):
            try:
                out = predict(data[k : k + 1])
                total += float(out.max())
            except Exception:
                errors[t] += 1
        expected_conf[t] = total

    started = time.monotonic()
    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    predict_s = time.monotonic() - started
    flushed = otel_ml.force_flush(timeout=120)
    metrics = reader.collect_metrics()

    def points(name: str) -> list[Any]:
        m = metrics.get(name)
        return list(m.data.data_points) if m is not None else []

    rank = {p.attributes["ml.feature.name"]: p.count for p in points("ml.feature.rank")}
    conf = points("ml.prediction.confidence")
    result = {
        "predict_s": predict_s,
        "flushed": flushed,
        "errors": sum(errors),
        "expected_calls": threads * per_thread,
        "expected_conf_sum": math.fsum(expected_conf),
        "count": sum(p.value for p in points("ml.prediction.count")),
        "duration_count": sum(p.count for p in points("ml.prediction.duration")),
        "conf_count": sum(p.count for p in conf),
        "conf_sum": sum(p.sum for p in conf),
        "rank_count_per_feature": rank,
        "worker": runtime.get().worker.ledger(),
        "drops": runtime.get().drops(),
    }
    result["shutdown_ok"] = otel_ml.shutdown(timeout=60)
    result["ledger"] = setup.span_ledger()
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps(result), flush=True)
    del bare
    return 0


if __name__ == "__main__":
    sys.exit(main())
