"""Input-sketch throughput and per-call cost, side by side in one run.

Run: ``python -m bench.sketch`` (``--quick`` for a short run; ``--whylogs-python PATH`` to time whylogs from a
separate virtualenv, since its pinned dependencies conflict with OpenTelemetry's).

1. Batch ingest of a 100,000 x 20 float frame (breast-cancer features, resampled):
   - floor: ``np.searchsorted`` + ``np.bincount`` into 20 fixed bins per column (the memory-speed floor)
   - otel-ml profile: one ``FeatureSketch`` per column (quantile sketch + quality counters), as ``Reference``
   - otel-ml monitor: the worker's whole per-batch job (window sketches, PIT rank histogram, quality counters)
   - whylogs: ``whylogs.log(frame)``
   Targets (issue #3): otel-ml >= 20 x whylogs, and >= 0.5 x the floor.
2. Added cost per single-row 20-feature call, sketching on vs off, amortised over 20,000 calls including the
   background worker's time (the run ends with a drain). Target <= 10 µs.
3. Memory per feature after 1,000,000 values.
4. One drift update of a 20-feature model over its 5,000-row window (the worker's periodic job: summarise the
   window, score psi/ks/js/wasserstein per feature, set the gauges), and its share of one core at the default
   ``OTEL_ML_DRIFT_INTERVAL``. It holds the GIL for much of that time, so a busy caller feels about as much.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

import otel_ml
from bench.overhead import NullMetricExporter, NullSpanExporter
from otel_ml import config
from otel_ml._core.monitor import InputMonitor, MonitorOptions
from otel_ml.sketch.columns import Table
from otel_ml.sketch.feature import FeatureSketch
from otel_ml.sketch.reference import Reference, ReferenceBuilder

WHYLOGS_SNIPPET = """
import sys, time, json, numpy as np, pandas as pd, whylogs
frame = pd.DataFrame(np.load(sys.argv[1]), columns=[f"f{i}" for i in range(20)])
whylogs.log(frame.head(1000))  # warm-up
times = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter(); whylogs.log(frame); times.append(time.perf_counter() - t0)
print(json.dumps({"median_s": sorted(times)[len(times) // 2], "version": whylogs.__version__}))
"""


def frame(rows: int = 100_000) -> np.ndarray:
    x = load_breast_cancer().data[:, :20]
    rng = np.random.default_rng(0)
    return np.ascontiguousarray(x[rng.integers(0, len(x), rows)] * rng.normal(1.0, 0.01, (rows, 20)))


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floor(data: np.ndarray, edges: list[np.ndarray]) -> None:
    for i in range(data.shape[1]):
        np.bincount(np.searchsorted(edges[i], data[:, i]), minlength=21)


def profile(data: np.ndarray) -> None:
    builder = ReferenceBuilder()
    builder.add(data)


def whylogs_time(data: np.ndarray, python: str | None, repeats: int) -> tuple[float, str] | None:
    if python is None:
        try:
            import whylogs  # noqa: F401
        except ImportError:
            return None
        python = sys.executable
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".npy") as fh:
        np.save(fh.name, data)
        out = subprocess.run([python, "-c", WHYLOGS_SNIPPET, fh.name, str(repeats)], capture_output=True, timeout=600)
    if out.returncode != 0:
        print("whylogs run failed:", out.stderr.decode()[-500:])
        return None
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return float(result["median_s"]), str(result["version"])


def ingest(data: np.ndarray, whylogs_python: str | None, repeats: int) -> bool:
    rows, cols = data.shape
    values = rows * cols
    ref = Reference.from_data(data[:20_000])
    edges = [ref.rank_cuts(n).cuts for n in ref.feature_names]  # type: ignore[union-attr]
    monitor = InputMonitor("bench", "1", {}, MonitorOptions(reference=ref, drift_window=5000))
    table = Table(ref.feature_names, ["numeric"] * cols, rows, matrix=data)

    results = {
        "floor (searchsorted+bincount)": median_time(lambda: floor(data, edges), repeats),
        "otel-ml profile (sketches)": median_time(lambda: profile(data), repeats),
        "otel-ml monitor (full job)": median_time(lambda: monitor._process(table), repeats),
    }
    wl = whylogs_time(data, whylogs_python, max(3, repeats // 2))
    if wl is not None:
        results[f"whylogs {wl[1]} log()"] = wl[0]
    print(f"\n1. batch ingest, {rows:,} x {cols} floats (median of {repeats})")
    for name, t in results.items():
        print(f"  {name:<34} {t * 1e3:9.1f} ms   {values / t / 1e6:8.1f} M values/s")
    # The targets compare like with like: profiling a frame (what whylogs.log does) vs the floor and whylogs.
    # The monitor's full job (window sketches + PIT ranks + quality counters) is printed for information.
    profile_t = results["otel-ml profile (sketches)"]
    vs_floor = results["floor (searchsorted+bincount)"] / profile_t
    ok = vs_floor >= 0.5
    print(f"  profile throughput / floor = {vs_floor:.2f}   target >= 0.5   {'OK' if ok else 'MISSED'}")
    if wl is not None:
        vs_wl = wl[0] / profile_t
        print(f"  profile vs whylogs = {vs_wl:.1f}x faster   target >= 20   {'OK' if vs_wl >= 20 else 'MISSED'}")
        ok = ok and vs_wl >= 20
        print(f"  monitor full job vs whylogs = {wl[0] / results['otel-ml monitor (full job)']:.1f}x faster")
    if wl is None:
        print("  whylogs: not available here (pass --whylogs-python PATH of a venv with whylogs)")
    return ok


def per_call(calls: int, rounds: int) -> bool:
    x, y = load_breast_cancer(return_X_y=True)
    x = x[:, :20]
    model = LogisticRegression(max_iter=5000).fit(x, y)
    ref = Reference.from_data(x)
    on = otel_ml.instrument(name="on", reference=ref)(model.predict_proba)
    off = otel_ml.instrument(name="off", sketch_inputs=False)(model.predict_proba)
    rows = [x[i % len(x)][None, :] for i in range(calls)]

    def run(fn: Callable[[np.ndarray], object]) -> float:
        t0 = time.perf_counter()
        for r in rows:
            fn(r)
        otel_ml.force_flush()  # the worker's share of the sketching is part of the cost
        return (time.perf_counter() - t0) / calls * 1e6

    run(on), run(off)
    samples: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(rounds):
        samples["off"].append(run(off))
        samples["on"].append(run(on))
    on_us, off_us = statistics.median(samples["on"]), statistics.median(samples["off"])
    added = on_us - off_us
    ok = added <= 10.0
    print(f"\n2. single-row 20-feature calls ({calls:,} per round, {rounds} rounds, worker drained in the timing)")
    print(f"  sketching off {off_us:8.2f} µs/call   sketching on {on_us:8.2f} µs/call")
    print(f"  added per call (amortised) = {added:.2f} µs   target <= 10 µs   {'OK' if ok else 'MISSED'}")
    return ok


def memory() -> None:
    rng = np.random.default_rng(1)
    sketch = FeatureSketch("numeric")
    for _ in range(10):
        sketch.update(rng.lognormal(size=100_000))
    print("\n3. memory per feature after 1,000,000 values")
    print(f"  FeatureSketch (quantiles + counters): {sketch.nbytes / 1024:.1f} KB   target <= 16 KB")


def drift_update(data: np.ndarray, repeats: int) -> None:
    ref = Reference.from_data(data[:20_000])
    monitor = InputMonitor("bench-drift", "1", {}, MonitorOptions(reference=ref, drift_window=5000))
    monitor._process(Table(ref.feature_names, ["numeric"] * data.shape[1], 5000, matrix=data[-5000:]))
    t = median_time(lambda: monitor._update_drift(force=True), repeats)
    interval = config.settings.drift_interval
    print(f"\n4. drift update, {data.shape[1]} features over a 5,000-row window (median of {repeats})")
    print(f"  {t * 1e3:.2f} ms per update; once per OTEL_ML_DRIFT_INTERVAL ({interval:g} s) per model with new rows:"
          f" {100 * t / interval:.3f} % of one core")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--whylogs-python", help="python of a separate venv that has whylogs installed")
    args = parser.parse_args(argv)
    os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "100")  # export often: 20,000 calls must not fill the queue
    otel_ml.configure(
        service_name="otel-ml-bench-sketch",
        span_exporter=NullSpanExporter(),
        metric_exporter=NullMetricExporter(),
        metric_export_interval_ms=1000,
    )
    ok = ingest(frame(), args.whylogs_python, 5 if args.quick else 11)
    ok = per_call(5_000 if args.quick else 20_000, 3 if args.quick else 7) and ok
    memory()
    drift_update(frame(), 5 if args.quick else 21)
    otel_ml.shutdown(timeout=5)
    print("\nall targets met" if ok else "\nsome targets missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
