"""A traced model service: FastAPI + OpenTelemetry's FastAPI instrumentation + otel-ml.

    uvicorn examples.service.app:app --host 127.0.0.1 --port 8000
    python examples/service/client.py --url http://127.0.0.1:8000

It serves a scikit-learn ``LogisticRegression`` trained at start-up on scikit-learn's breast-cancer data, as
model ``cancer`` version ``$MODEL_VERSION`` (default ``1.0.0``). One request's trace reads::

    POST (client span, client.py) → POST /predict (server span) → predict_proba cancer (one per row)

Endpoints:

- ``POST /predict`` ``{"rows": [[30 floats], ...]}`` → ``{"prediction_ids": [...], "predictions": [...],
  "proba": [...]}``: one model call, hence one ``ml.prediction.id``, per row; the ids also come back in the
  ``ml-prediction-id`` response header (comma-separated).
- ``POST /outcome`` ``{"prediction_id": ..., "actual": "benign", "predicted": "benign"}`` →
  ``otel_ml.record_outcome``. ``predicted`` is what ``/predict`` returned: the prediction id names the predict
  span, not the value (see ``otel_ml/outcome.py``). This replica also remembers its last 10,000 predictions,
  so ``predicted`` may be left out while the label comes back to the same replica soon enough.
- ``GET /healthz``.

``CANDIDATE_VERSION=2.0.0`` also trains a candidate (stronger regularisation) and serves it in shadow with
``otel_ml.shadow``: responses come from the primary only; agreement is counted in ``ml.shadow.comparisons``.

Telemetry goes over OTLP (``OTEL_EXPORTER_OTLP_ENDPOINT``, default localhost:4317, and the other ``OTEL_*``
variables). With no endpoint set and nothing listening on 127.0.0.1:4317 it exports nothing and prints a
summary at shutdown.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from pydantic import BaseModel, Field
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import otel_ml
from otel_ml.outcome import OutcomeRejected
from otel_ml.shadow import Shadow
from otel_ml.summary import SummaryReader

MODEL_NAME = "cancer"
N_FEATURES = 30
MAX_ROWS = 1000
RECENT_PREDICTIONS = 10_000
PREDICTION_ID_HEADER = "ml-prediction-id"

Feature = Annotated[float, Field(allow_inf_nan=False)]
Row = Annotated[list[Feature], Field(min_length=N_FEATURES, max_length=N_FEATURES)]
Label = str | int | float | bool


def collector_answers(host: str = "127.0.0.1", port: int = 4317) -> bool:
    """Whether something accepts connections on the default OTLP/gRPC port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def set_up_telemetry(service_name: str) -> tuple[bool, SummaryReader]:
    """``otel_ml.configure`` honouring the ``OTEL_*`` variables; no exporters when there is nowhere to send."""
    exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) or collector_answers()
    if not exporting:
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
    summary = SummaryReader()
    otel_ml.configure(service_name=os.environ.get("OTEL_SERVICE_NAME") or service_name, metric_readers=[summary])
    return exporting, summary


class PredictRequest(BaseModel):
    """Rows of the 30 breast-cancer features, in scikit-learn's column order."""

    rows: Annotated[list[Row], Field(min_length=1, max_length=MAX_ROWS)]


class PredictResponse(BaseModel):
    """One prediction id, label and probability row per input row."""

    prediction_ids: list[str | None]
    predictions: list[str]
    proba: list[list[float]]


class OutcomeRequest(BaseModel):
    """The ground truth of one earlier prediction."""

    prediction_id: str
    actual: Label
    predicted: Label | None = None
    version: str | None = None


class RecentPredictions:
    """This replica's latest predictions by id (bounded): lets ``/outcome`` omit ``predicted`` for a while."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def remember(self, prediction_id: str, predicted: str, version: str) -> None:
        with self._lock:
            self._items[prediction_id] = (predicted, version)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def get(self, prediction_id: str) -> tuple[str, str] | None:
        with self._lock:
            return self._items.get(prediction_id)


def train(c: float, seed: int = 0) -> tuple[Pipeline, np.ndarray, list[str]]:
    """A standardised logistic regression on the breast-cancer training split, and that split's rows."""
    data = load_breast_cancer()
    x_train, _, y_train, _ = train_test_split(data.data, data.target, test_size=0.3, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x_train, y_train)
    return model, x_train, [str(name) for name in data.feature_names]


def create_app() -> FastAPI:
    """Configure telemetry, train the model(s), and build the instrumented FastAPI app."""
    exporting, summary = set_up_telemetry("cancer-api")
    version = os.environ.get("MODEL_VERSION", "1.0.0")
    candidate_version = os.environ.get("CANDIDATE_VERSION", "")
    classes = [str(c) for c in load_breast_cancer().target_names]  # ['malignant', 'benign']

    model, x_train, features = train(c=1.0)
    reference = otel_ml.Reference.from_data(x_train, feature_names=features)
    primary = otel_ml.instrument_model(model, name=MODEL_NAME, version=version, classes=classes, reference=reference)
    predict_proba: Callable[[np.ndarray], Any] = primary.predict_proba
    shadowed: Shadow[[np.ndarray], Any] | None = None
    if candidate_version:
        candidate_model, _, _ = train(c=0.01)
        candidate = otel_ml.instrument_model(
            candidate_model, name=MODEL_NAME, version=candidate_version, classes=classes, reference=reference
        )
        shadowed = otel_ml.shadow(
            primary.predict_proba,
            candidate.predict_proba,
            sample=float(os.environ.get("SHADOW_SAMPLE", "1.0")),
        )
        predict_proba = shadowed
    recent = RecentPredictions(RECENT_PREDICTIONS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if shadowed is not None:
            shadowed.close(timeout=2.0)
        otel_ml.force_flush(timeout=2.0)
        print(summary.render(), flush=True)
        otel_ml.shutdown(timeout=5.0)

    app = FastAPI(title="cancer model service", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 without echoing the input back (no raw feature values in responses; NaN is not JSON)."""
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": MODEL_NAME,
            "version": version,
            "candidate_version": candidate_version or None,
            "exporting": exporting,
        }

    @app.post("/predict")
    def predict(request: PredictRequest, response: Response) -> PredictResponse:
        ids: list[str | None] = []
        labels: list[str] = []
        proba: list[list[float]] = []
        for row in request.rows:
            p = np.asarray(predict_proba(np.asarray([row], dtype=np.float64)))[0]
            prediction_id = otel_ml.last_prediction_id()  # the id of the call just made, in this request
            label = classes[int(p.argmax())]
            if prediction_id is not None:
                recent.remember(prediction_id, label, version)
            ids.append(prediction_id)
            labels.append(label)
            proba.append([float(v) for v in p])
        response.headers[PREDICTION_ID_HEADER] = ",".join(i for i in ids if i)
        return PredictResponse(prediction_ids=ids, predictions=labels, proba=proba)

    @app.post("/outcome")
    def outcome(request: OutcomeRequest) -> dict[str, Any]:
        predicted, served_version = request.predicted, request.version or version
        if predicted is None:
            remembered = recent.get(request.prediction_id)
            if remembered is None:
                raise HTTPException(
                    422, "predicted is required: this replica no longer remembers that prediction id (or never did)"
                )
            predicted, served_version = remembered
        try:
            otel_ml.record_outcome(
                request.prediction_id,
                request.actual,
                model=MODEL_NAME,
                version=served_version,
                predicted=predicted,
                task="classification",
                strict=True,
            )
        except OutcomeRejected as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"recorded": True, "correct": request.actual == predicted}

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz", exclude_spans=["receive", "send"])
    return app


app = create_app()
