"""Drift demo: a reference profile from the training data, then a live stream that shifts half-way.

    python examples/drift_demo.py

The model is a logistic regression on scikit-learn's breast-cancer data (30 measurements of cell nuclei in a
scan). otel-ml sketches every input feature and compares the latest ``drift_window`` rows with the training
data's reference profile:

1. **Phase 1** streams held-out scans as they come: the drift scores stay low (PSI < 0.2 — what is left is
   the sampling noise of a 284-row reference).
2. **Phase 2** streams scans from a new scanner whose texture readings are 1.5 standard deviations higher and
   whose smoothness readings are 30 % stronger: PSI jumps for exactly those features, ``on_drift`` fires once
   per feature crossing, and ``ml.model.drift`` (the share of drifted features) rises.

The scores printed are the ``ml.feature.drift`` / ``ml.model.drift`` gauges, read from an in-process
``SummaryReader`` — the same values a collector receives. Exports through OTLP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set or a collector answers on 127.0.0.1:4317; otherwise nothing is exported.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import otel_ml
from otel_ml.summary import SummaryReader

WINDOW = 800
ROWS_PER_PHASE = 1000
BATCH = 20
SHIFTED = {"mean texture": ("add_std", 1.5), "mean smoothness": ("scale", 1.3)}


def collector_answers(host: str = "127.0.0.1", port: int = 4317) -> bool:
    """Whether something accepts connections on the default OTLP/gRPC port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def drift_scores(summary: SummaryReader) -> tuple[dict[str, float], float]:
    """PSI per feature (``ml.feature.drift{ml.drift.method=psi}``) and the model's share of drifted features."""
    psi: dict[str, float] = {}
    for point in points(summary, "ml.feature.drift"):
        attrs = point.attributes or {}
        if attrs.get("ml.drift.method") == "psi":
            psi[str(attrs.get("ml.feature.name"))] = float(point.value)
    share = [float(point.value) for point in points(summary, "ml.model.drift")]
    return psi, share[0] if share else float("nan")


def points(summary: SummaryReader, name: str) -> list[Any]:
    """The data points of metric ``name``, collected now from the in-process reader."""
    metric = summary.collect_metrics().get(name)
    return list(metric.data.data_points) if metric is not None else []


def main() -> None:
    exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) or collector_answers()
    if not exporting:  # nowhere to send: keep everything in process
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
    summary = SummaryReader()
    otel_ml.configure(
        service_name=os.environ.get("OTEL_SERVICE_NAME") or "otel-ml-drift-demo", metric_readers=[summary]
    )

    data = load_breast_cancer()
    names = [str(n) for n in data.feature_names]
    x_train, x_live, y_train, _ = train_test_split(data.data, data.target, test_size=0.5, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    reference = otel_ml.Reference.from_data(x_train, feature_names=names)
    events: list[otel_ml.DriftEvent] = []

    @otel_ml.instrument(
        name="cancer", version="1.0.0", reference=reference, drift_window=WINDOW, on_drift=events.append
    )
    def predict_proba(rows: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_proba(rows))

    rng = np.random.default_rng(1)

    def stream(shift: bool) -> None:
        for _ in range(ROWS_PER_PHASE // BATCH):
            rows = x_live[rng.integers(len(x_live), size=BATCH)].copy()
            if shift:
                for feature, (kind, amount) in SHIFTED.items():
                    col = names.index(feature)
                    if kind == "add_std":
                        rows[:, col] += amount * x_train[:, col].std()
                    else:
                        rows[:, col] *= amount
            predict_proba(rows)

    stream(shift=False)
    otel_ml.force_flush()  # computes fresh drift scores over the window
    before, share_before = drift_scores(summary)
    seen_before = len(events)
    stream(shift=True)
    otel_ml.force_flush()
    after, share_after = drift_scores(summary)

    where = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317") if exporting else "nowhere (no collector)"
    print(f"otel-ml drift demo: {2 * ROWS_PER_PHASE} rows, window {WINDOW} rows, exporting to {where}")
    print(f"reference {reference.id} from {len(x_train)} training rows")
    print(f"{'feature':<30} {'PSI before':>10} {'PSI after':>10}")
    for name in names:
        mark = "  <- shifted" if name in SHIFTED else ""
        print(f"{name:<30} {before.get(name, float('nan')):>10.3f} {after.get(name, float('nan')):>10.3f}{mark}")
    print(f"ml.model.drift (share of drifted features): before {share_before:.2f}, after {share_after:.2f}")
    print(f"on_drift events: {seen_before} before the shift, {len(events) - seen_before} after")
    for event in events[seen_before:]:
        print(f"  {event.feature}: {event.method} {event.score:.3f} > {event.threshold}")
    otel_ml.shutdown(timeout=5)


if __name__ == "__main__":
    main()
