"""A WSGI app for ``gunicorn --preload -w 4``: configured and instrumented in the master, before the fork.

The master predicts 100 rows at import (its own telemetry) and writes its ``service.instance.id`` to
``RELIABILITY_MASTER_REPORT``; each request predicts one row in a worker and answers the worker's pid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

import otel_ml
from otel_ml._core import setup

W = np.random.default_rng(5).normal(size=20)
otel_ml.configure(service_name="gunicorn")


@otel_ml.instrument(name="wsgi", version="1", output="proba")
def predict(x: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-(x @ W)))
    return np.stack([1 - p, p], axis=1)


_rows = np.random.default_rng(6).normal(size=(100, 20))
for _i in range(100):
    predict(_rows[_i : _i + 1])
_pipeline = setup.current()
assert _pipeline is not None and _pipeline.resource is not None
with open(os.environ["RELIABILITY_MASTER_REPORT"], "w") as _f:
    json.dump({"pid": os.getpid(), "instance_id": _pipeline.resource.attributes["service.instance.id"]}, _f)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    predict(_rows[:1])
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
