"""An instrumented model server under an open-loop load; prints one JSON line of what it measured.

Configuration comes as JSON in ``RELIABILITY_CONFIG`` (see ``Config``). Every iteration calls the bare model and
the instrumented one (alternating which goes first), so the overhead is measured on the same machine state:
``overhead = percentile(instrumented) - percentile(bare)``. RSS, threads, the span ledger and otel-ml's drop
counts are sampled every ``sample_s`` seconds, stamped with ``time.time()`` so a test can align them with what it
did to the collector (kill, restart).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil


@dataclass
class Config:
    rate: float = 1000.0  # predictions per second (open loop)
    duration_s: float = 10.0
    warmup_s: float = 2.0
    features: int = 20
    model: str = "logreg"  # logreg (sklearn LogisticRegression) | tiny (numpy dot, ~2 µs)
    sample_s: float = 0.5
    shutdown_timeout: float = 2.0
    configure: bool = True
    exit_without_shutdown: bool = False  # leave it to atexit (OTEL_ML_SHUTDOWN_TIMEOUT)
    time_exports: bool = True
    gc_before_sample: bool = True  # RSS of what is alive, not of garbage the cyclic GC has not reached yet
    micro_calls: int = 0  # > 0: first a back-to-back phase (warm caches), min p50 over 3 repeats
    extra: dict[str, Any] = field(default_factory=dict)


def _model(cfg: Config) -> Any:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2000, cfg.features))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    if cfg.model == "logreg":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(max_iter=200).fit(x, y)
        return clf.predict_proba, x
    w = rng.normal(size=cfg.features)

    def predict_proba(batch: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-(batch @ w)))
        return np.stack([1 - p, p], axis=1)

    return predict_proba, x


def main() -> int:
    cfg = Config(**json.loads(os.environ.get("RELIABILITY_CONFIG", "{}")))
    logging.basicConfig(
        level=os.environ.get("RELIABILITY_LOG_LEVEL", "WARNING"),
        stream=sys.stderr,
        format="%(created).3f %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("reliability").debug("debug logging on")
    proc = psutil.Process()
    t_import = time.perf_counter()
    import otel_ml
    from otel_ml._core import runtime, setup

    import_s = time.perf_counter() - t_import
    bare, x = _model(cfg)
    if cfg.configure:
        otel_ml.configure(service_name="reliability")
    export_times: list[float] = []
    pipeline = setup.current()
    if cfg.time_exports and pipeline is not None and pipeline.span_exporter is not None:
        inner = pipeline.span_exporter._inner
        original = inner.export

        def timed(spans: Any) -> Any:
            t0 = time.monotonic()
            try:
                return original(spans)
            finally:
                export_times.append(time.monotonic() - t0)

        inner.export = timed  # type: ignore[method-assign]
    instrumented = otel_ml.instrument(name="reliability", version="1", output="proba")(bare)
    threads_start = threading.active_count()
    os_threads_start = proc.num_threads()
    rows = [x[i : i + 1].copy() for i in range(256)]
    for r in rows[:50]:  # compile / cache warm-up outside the timed loop
        bare(r)
        instrumented(r)

    micro: dict[str, float] = {}
    if cfg.micro_calls:
        bare_p50, inst_p50 = [], []
        for _ in range(3):
            for fn, sink in ((bare, bare_p50), (instrumented, inst_p50)):
                ts = np.empty(cfg.micro_calls)
                for k in range(cfg.micro_calls):
                    t0 = time.perf_counter()
                    fn(rows[k & 255])
                    ts[k] = time.perf_counter() - t0
                sink.append(float(np.percentile(ts, 50)) * 1e6)
        micro = {"micro_bare_p50_us": min(bare_p50), "micro_overhead_p50_us": min(inst_p50) - min(bare_p50)}

    total = int(cfg.rate * cfg.duration_s)
    lat_bare = np.empty(total)
    lat_inst = np.empty(total)
    stamps = np.empty(total)
    errors = 0
    samples: list[dict[str, Any]] = []
    period = 1.0 / cfg.rate
    start = time.perf_counter()
    wall0 = time.time()
    next_sample = 0.0
    perf = time.perf_counter
    for k in range(total):
        due = start + k * period
        while True:
            now = perf()
            if now >= due:
                break
            if due - now > 0.0003:
                time.sleep(due - now - 0.0002)
        row = rows[k & 255]
        if k & 1:
            t0 = perf()
            bare(row)
            t1 = perf()
            try:
                instrumented(row)
            except Exception:
                errors += 1
            t2 = perf()
            lat_bare[k], lat_inst[k] = t1 - t0, t2 - t1
        else:
            t0 = perf()
            try:
                instrumented(row)
            except Exception:
                errors += 1
            t1 = perf()
            bare(row)
            t2 = perf()
            lat_inst[k], lat_bare[k] = t1 - t0, t2 - t1
        stamps[k] = t0 - start
        if t0 - start >= next_sample:
            next_sample += cfg.sample_s
            if cfg.gc_before_sample:
                gc.collect()
            samples.append(
                {
                    "t": round(time.time() - wall0, 3),
                    "wall": time.time(),
                    "rss": proc.memory_info().rss,
                    "threads": threading.active_count(),
                    "os_threads": proc.num_threads(),
                    "ledger": setup.span_ledger(),
                    "drops": runtime.get().drops(),
                }
            )
    elapsed = perf() - start
    warm = stamps >= cfg.warmup_s
    # per iteration, instrumented minus bare, for each order separately: whichever call goes first after the idle
    # gap runs cold (~20 µs slower here), so the two orders differ by twice that and the median of both together
    # falls on either side of the gap; the mean of the two orders' medians cancels it
    bare_first = np.arange(total) % 2 == 1
    over = lat_inst - lat_bare
    paired_p50 = (np.percentile(over[warm & bare_first], 50) + np.percentile(over[warm & ~bare_first], 50)) / 2

    def pct(a: np.ndarray, q: float) -> float:
        return float(np.percentile(a, q)) * 1e6

    result: dict[str, Any] = {
        "pid": os.getpid(),
        "wall0": wall0,
        "import_s": import_s,
        "predictions": total,
        "instrumented_calls": total + 50 + 3 * cfg.micro_calls,  # the timed loop, warm-up, back-to-back phase
        "achieved_rate": total / elapsed,
        "errors": errors,
        "bare_p50_us": pct(lat_bare[warm], 50),
        "bare_p99_us": pct(lat_bare[warm], 99),
        "inst_p50_us": pct(lat_inst[warm], 50),
        "inst_p99_us": pct(lat_inst[warm], 99),
        "overhead_p50_us": pct(lat_inst[warm], 50) - pct(lat_bare[warm], 50),
        "overhead_p99_us": pct(lat_inst[warm], 99) - pct(lat_bare[warm], 99),
        "paired_overhead_p50_us": float(paired_p50) * 1e6,
        **micro,
        "threads_start": threads_start,
        "os_threads_start": os_threads_start,
        "samples": samples,
    }
    if cfg.exit_without_shutdown:
        result.update(ledger_before_exit=setup.span_ledger(), exit_started=time.time())
        print(json.dumps(result), flush=True)
        return 0
    result["threads_end"] = threading.active_count()
    result["os_threads_end"] = proc.num_threads()
    t0 = time.monotonic()
    result["shutdown_ok"] = otel_ml.shutdown(timeout=cfg.shutdown_timeout)
    result["shutdown_s"] = time.monotonic() - t0
    instrumented(rows[0])  # after shutdown: still works, silently
    result["ledger"] = setup.span_ledger()
    result["drops"] = runtime.get().drops()
    result["worker"] = runtime.get().worker.ledger()
    result["export_s"] = export_times
    result["exit_started"] = time.time()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
