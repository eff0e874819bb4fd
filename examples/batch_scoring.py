"""A batch-scoring job: read rows from a file in chunks, score them, write the predictions, flush, exit.

    python examples/batch_scoring.py [--rows 20000] [--chunk 2000] [--workdir DIR]

The model is a ridge regression of scikit-learn's diabetes-progression data. The job:

1. trains the model and saves the training data's reference profile (``otel-ml reference build`` does the same
   from a CSV) — in production both come from the training pipeline;
2. scores an input file chunk by chunk through an ``@otel_ml.instrument``-ed function (one span per chunk,
   with ``ml.batch.size``; per-row output values in ``ml.prediction.value``; input sketches and drift against
   the reference), writing the predictions next to it;
3. records the ground truth it already has for the first chunks with ``otel_ml.record_outcome`` — one
   prediction id per chunk, one absolute error per row in ``ml.outcome.error``;
4. calls ``otel_ml.force_flush()`` before exiting, so nothing a short-lived job measured is lost.

Exports through OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set or a collector answers on 127.0.0.1:4317;
otherwise it exports nothing and prints a summary of what it measured.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split

import otel_ml
from otel_ml.summary import SummaryReader

MODEL = "diabetes-progression"
VERSION = "2024.06"
LABELLED_CHUNKS = 3


def collector_answers(host: str = "127.0.0.1", port: int = 4317) -> bool:
    """Whether something accepts connections on the default OTLP/gRPC port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def points(summary: SummaryReader, name: str) -> list[Any]:
    """The data points of metric ``name``, collected now from the in-process reader."""
    metric = summary.collect_metrics().get(name)
    return list(metric.data.data_points) if metric is not None else []


def write_input_file(path: Path, x: np.ndarray, y: np.ndarray, rows: int, seed: int = 0) -> None:
    """A day's input: held-out rows resampled, target in the last column."""
    idx = np.random.default_rng(seed).integers(len(x), size=rows)
    np.savetxt(path, np.column_stack([x[idx], y[idx]]), delimiter=",", fmt="%.17g")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=2_000)
    parser.add_argument("--workdir", type=Path, default=None, help="where files go (default: a new temp dir)")
    args = parser.parse_args(argv)

    exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) or collector_answers()
    if not exporting:  # nowhere to send: keep everything in process
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
    summary = SummaryReader()
    otel_ml.configure(service_name=os.environ.get("OTEL_SERVICE_NAME") or "otel-ml-batch", metric_readers=[summary])

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="otel-ml-batch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_diabetes()
    x_train, x_hold, y_train, y_hold = train_test_split(data.data, data.target, test_size=0.3, random_state=0)
    model = Ridge(alpha=0.1).fit(x_train, y_train)
    reference_path = workdir / "reference.json"
    otel_ml.Reference.from_data(x_train, feature_names=list(data.feature_names)).save(reference_path)

    input_path = workdir / "input.csv"
    write_input_file(input_path, x_hold, y_hold, args.rows)
    out_path = workdir / "predictions.csv"

    @otel_ml.instrument(name=MODEL, version=VERSION, task="regression", reference=str(reference_path))
    def predict(chunk: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(chunk))

    started = time.perf_counter()
    table = np.loadtxt(input_path, delimiter=",", ndmin=2)
    features, truth = table[:, :-1], table[:, -1]
    scored = 0
    outcomes = 0
    with open(out_path, "w", encoding="utf-8") as out:
        out.write("row,prediction_id,prediction\n")
        for i, start in enumerate(range(0, len(features), args.chunk)):
            chunk = features[start : start + args.chunk]
            predictions = predict(chunk)
            prediction_id = otel_ml.last_prediction_id() or ""
            out.writelines(f"{start + j},{prediction_id},{p:.3f}\n" for j, p in enumerate(predictions))
            scored += len(chunk)
            if i < LABELLED_CHUNKS:  # ground truth already known for these rows
                actual = truth[start : start + args.chunk]
                if otel_ml.record_outcome(prediction_id, actual, model=MODEL, version=VERSION, predicted=predictions):
                    outcomes += len(actual)
    elapsed = time.perf_counter() - started

    where = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317") if exporting else "nowhere (no collector)"
    print(f"otel-ml batch scoring: {scored} rows in {elapsed:.2f}s, exporting to {where}")
    print(f"predictions written to {out_path}")
    otel_ml.force_flush()  # a batch job exits right after: drain sketches, drift and exports first
    for point in points(summary, "ml.outcome.error"):
        print(f"ground truth for {outcomes} rows: mean absolute error {point.sum / point.count:.2f}")
    print(summary.render())
    otel_ml.shutdown(timeout=5)


if __name__ == "__main__":
    main()
