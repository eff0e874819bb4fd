"""otel-ml with PyTorch: a small MLP on scikit-learn's handwritten digits, instrumented with one call.

    python examples/torch_example.py          # needs torch: pip install -e '.[torch]'

``otel_ml.instrument_model`` instruments the module's ``__call__`` (an ``nn.Module`` has no ``predict``): every
forward pass in eval mode is one ``__call__ digits-mlp`` span with latency, per-row confidence (softmax of the
logits) and predicted digits; forward passes in training mode are not counted. Input tensors are sketched
against the training data's reference profile for drift.

Exports through OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set or a collector answers on 127.0.0.1:4317;
otherwise it exports nothing and prints a summary of what it measured.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import otel_ml
from otel_ml.summary import SummaryReader


def collector_answers(host: str = "127.0.0.1", port: int = 4317) -> bool:
    """Whether something accepts connections on the default OTLP/gRPC port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def train(x: torch.Tensor, y: torch.Tensor, epochs: int = 200) -> nn.Module:
    """A 64-32-10 MLP trained full-batch with Adam (a second or two on a CPU)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimiser.step()
    return model.eval()


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
    otel_ml.configure(service_name=os.environ.get("OTEL_SERVICE_NAME") or "otel-ml-torch", metric_readers=[summary])
    torch.set_num_threads(1)  # tiny model: threads cost more than they save

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_live, y_train, y_live = train_test_split(x, digits.target, test_size=0.3, random_state=0)
    model = train(torch.from_numpy(x_train), torch.from_numpy(y_train))

    reference = otel_ml.Reference.from_data(x_train, feature_names=[f"pixel_{i}" for i in range(64)])
    net = otel_ml.instrument_model(
        model,
        name="digits-mlp",
        version="1.0.0",
        output="logits",
        task="classification",
        classes=[str(d) for d in range(10)],
        reference=reference,
    )

    live = torch.from_numpy(x_live)
    started = time.perf_counter()
    calls = 0
    correct = 0
    with torch.inference_mode():
        for i in range(500):  # single images, as an online service sees them
            logits = net(live[i : i + 1])
            correct += int(logits.argmax(dim=1).item() == y_live[i])
            calls += 1
        for start in range(0, len(live), 128):  # and batches
            net(live[start : start + 128])
            calls += 1
    elapsed = time.perf_counter() - started

    where = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317") if exporting else "nowhere (no collector)"
    print(f"otel-ml torch example: {calls} forward passes in {elapsed:.2f}s, exporting to {where}")
    print(f"last ml.prediction.id: {otel_ml.last_prediction_id()}")
    otel_ml.force_flush()
    # ml.model.estimated_accuracy: mean top-class probability, i.e. what a calibrated model expects to get right
    for point in points(summary, "ml.model.estimated_accuracy"):
        print(f"estimated accuracy (mean confidence) {point.value:.3f} vs measured {correct / 500:.3f}")
    print(summary.render())
    otel_ml.shutdown(timeout=5)


if __name__ == "__main__":
    main()
