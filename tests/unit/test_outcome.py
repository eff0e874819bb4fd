"""``otel_ml.record_outcome``: the linked ``ml.outcome`` span, outcome metrics, and counted rejections."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from opentelemetry.trace import SpanKind
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

import otel_ml
from otel_ml import semconv
from otel_ml._core import estimate, runtime
from otel_ml.outcome import OutcomeRejected, parse_prediction_id
from otel_ml.testing import InMemoryTelemetry

X, Y = load_breast_cancer(return_X_y=True)
CLF = LogisticRegression(max_iter=5000).fit(X, Y)
LABELS = np.array(["malignant", "benign"])
PID = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"


@pytest.fixture(autouse=True)
def fresh_estimator() -> Iterator[None]:
    """The process-wide accuracy estimator starts each test without earlier tests' checkpoints."""
    est = estimate.install()
    est.reset()
    yield
    est.reset()


@pytest.fixture
def predict() -> Any:
    @otel_ml.instrument(name="cancer", version="1.0.0", classes=LABELS)
    def predict_proba(x: np.ndarray) -> np.ndarray:
        return np.asarray(CLF.predict_proba(x))

    return predict_proba


def _drops() -> dict[str, int]:
    return dict(runtime.get().drops())


def _new_drops(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in runtime.get().drops().items() if v != before.get(k, 0)}


def _counts(tel: InMemoryTelemetry) -> dict[tuple[str, str, object], int]:
    return {
        (
            p.attributes[semconv.ML_MODEL_NAME],
            p.attributes[semconv.ML_MODEL_VERSION],
            p.attributes.get(semconv.ML_OUTCOME_CORRECT),
        ): p.value
        for p in tel.points(semconv.OUTCOME_COUNT)
    }


def test_parse_prediction_id_round_trips_trace_and_span_id() -> None:
    assert parse_prediction_id(PID) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-an-id",
        "0af7651916cd43dd8448eb211c80319c",  # trace id only
        "0af7651916cd43dd8448eb211c80319-b7ad6b7169203331",  # 31 hex digits
        "0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331",  # otel-ml emits lowercase
        "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331\n",
        "0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331",
        "00000000000000000000000000000000-b7ad6b7169203331",  # W3C: all-zero trace id is invalid
        "0af7651916cd43dd8448eb211c80319c-0000000000000000",
        "g" * 32 + "-" + "b7ad6b7169203331",
    ],
)
def test_parse_prediction_id_rejects_malformed_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_prediction_id(bad)


def test_classification_outcome_links_to_the_prediction_span(tel: InMemoryTelemetry, predict: Any) -> None:
    predict(X[:1])
    pid = otel_ml.last_prediction_id()
    assert pid is not None
    predicted = str(LABELS[CLF.predict(X[:1])[0]])
    assert otel_ml.record_outcome(pid, "benign", model="cancer", version="1.0.0", predicted=predicted) is True

    predict_span, outcome_span = tel.spans()
    assert outcome_span.name == semconv.OUTCOME_SPAN_NAME == "ml.outcome"
    assert outcome_span.kind == SpanKind.INTERNAL
    assert outcome_span.parent is None  # no active span: a root of its own trace
    (link,) = outcome_span.links
    ctx = predict_span.get_span_context()
    assert (link.context.trace_id, link.context.span_id) == (ctx.trace_id, ctx.span_id)
    assert link.context.is_remote is True
    assert dict(link.attributes or {}) == {semconv.ML_PREDICTION_ID: pid}
    assert dict(outcome_span.attributes or {}) == {
        semconv.ML_MODEL_NAME: "cancer",
        semconv.ML_MODEL_VERSION: "1.0.0",
        semconv.ML_MODEL_TASK: "classification",
        semconv.ML_OPERATION: "outcome",
        semconv.ML_PREDICTION_ID: pid,
        semconv.ML_OUTCOME_ROWS: 1,
        semconv.ML_OUTCOME_CORRECT: predicted == "benign",
    }
    correct = int(predicted == "benign")
    assert _counts(tel) == {("cancer", "1.0.0", True): correct, ("cancer", "1.0.0", False): 1 - correct}


def test_a_batch_outcome_counts_each_row(tel: InMemoryTelemetry) -> None:
    actual = np.array([1, 0, 1, 1, 0])
    predicted = np.array([1, 1, 1, 0, 0])
    assert otel_ml.record_outcome(PID, actual, model="fraud", version="2", predicted=predicted) is True
    (span,) = tel.spans()
    attrs = dict(span.attributes or {})
    assert attrs[semconv.ML_OUTCOME_ROWS] == 5
    assert attrs[semconv.ML_OUTCOME_ACCURACY] == 0.6
    assert semconv.ML_OUTCOME_CORRECT not in attrs
    assert _counts(tel) == {("fraud", "2", True): 3, ("fraud", "2", False): 2}
    assert tel.points(semconv.OUTCOME_ERROR) == []


def test_outcomes_accumulate_per_model_and_version(tel: InMemoryTelemetry) -> None:
    for actual, predicted, version in [("a", "a", "1"), ("a", "b", "1"), ("b", "b", "1"), ("b", "b", "2")]:
        assert otel_ml.record_outcome(PID, actual, model="m", version=version, predicted=predicted)
    assert _counts(tel) == {("m", "1", True): 2, ("m", "1", False): 1, ("m", "2", True): 1, ("m", "2", False): 0}


def test_regression_outcome_records_the_absolute_error_with_an_exemplar(tel: InMemoryTelemetry) -> None:
    assert otel_ml.record_outcome(PID, 3.5, model="price", version="7", predicted=2.0) is True
    assert otel_ml.record_outcome(PID, [10.0, 20.0, 30.0], model="price", version="7", predicted=[12.0, 20.0, 0.5])
    first, second = tel.spans()
    assert dict(first.attributes or {})[semconv.ML_OUTCOME_ERROR] == 1.5
    assert dict(first.attributes or {})[semconv.ML_MODEL_TASK] == "regression"
    assert dict(second.attributes or {})[semconv.ML_OUTCOME_ERROR_MEAN] == pytest.approx((2.0 + 0.0 + 29.5) / 3)

    collected = tel.metrics()
    (count,) = tel.points(semconv.OUTCOME_COUNT, collected)
    assert dict(count.attributes) == {semconv.ML_MODEL_NAME: "price", semconv.ML_MODEL_VERSION: "7"}
    assert count.value == 4
    (error,) = tel.points(semconv.OUTCOME_ERROR, collected)
    assert dict(error.attributes) == {semconv.ML_MODEL_NAME: "price", semconv.ML_MODEL_VERSION: "7"}
    assert (error.count, error.sum, error.min, error.max) == (4, 33.0, 0.0, 29.5)
    assert list(error.explicit_bounds) == list(semconv.ABSOLUTE_ERROR_BUCKETS)
    expected = [0] * (len(semconv.ABSOLUTE_ERROR_BUCKETS) + 1)
    for e in (1.5, 2.0, 0.0, 29.5):
        expected[next(i for i, b in enumerate(semconv.ABSOLUTE_ERROR_BUCKETS) if e <= b)] += 1
    assert list(error.bucket_counts) == expected
    span_ids = {(s.context.trace_id, s.context.span_id) for s in (first, second)}
    assert error.exemplars and {(e.trace_id, e.span_id) for e in error.exemplars} <= span_ids


def test_task_inference_and_override(tel: InMemoryTelemetry) -> None:
    otel_ml.record_outcome(PID, True, model="m", predicted=False)  # bools: classification
    otel_ml.record_outcome(PID, 3, model="m", predicted=3)  # ints: classification
    otel_ml.record_outcome(PID, 3.0, model="m", predicted=3.25)  # floats: regression
    otel_ml.record_outcome(PID, 3, model="m", predicted=5, task="regression")  # integer target, explicit
    tasks = [dict(s.attributes or {})[semconv.ML_MODEL_TASK] for s in tel.spans()]
    assert tasks == ["classification", "classification", "regression", "regression"]
    (error,) = tel.points(semconv.OUTCOME_ERROR)
    assert (error.count, error.sum) == (2, 2.25)


def test_outcome_span_is_a_child_of_the_current_span(tel: InMemoryTelemetry) -> None:
    tracer = tel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("POST /outcome") as request:
        assert otel_ml.record_outcome(PID, "x", model="m", predicted="x")
    outcome = next(s for s in tel.spans() if s.name == semconv.OUTCOME_SPAN_NAME)
    assert outcome.parent is not None and outcome.parent.span_id == request.get_span_context().span_id
    assert outcome.context.trace_id == request.get_span_context().trace_id
    assert outcome.links[0].context.trace_id == int(PID[:32], 16)


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: otel_ml.record_outcome("nope", 1, model="m", predicted=1), "outcome_invalid_id"),
        (lambda: otel_ml.record_outcome(None, 1, model="m", predicted=1), "outcome_invalid_id"),  # type: ignore[arg-type]
        (lambda: otel_ml.record_outcome(PID, 1, predicted=1), "outcome_unknown_model"),
        (lambda: otel_ml.record_outcome(PID, 1, model="  ", predicted=1), "outcome_unknown_model"),
        (lambda: otel_ml.record_outcome(PID, 1, model="m"), "outcome_missing_predicted"),
        (lambda: otel_ml.record_outcome(PID, [1, 2], model="m", predicted=[1]), "outcome_invalid_value"),
        (lambda: otel_ml.record_outcome(PID, [], model="m", predicted=[]), "outcome_invalid_value"),
        (lambda: otel_ml.record_outcome(PID, float("nan"), model="m", predicted=1.0), "outcome_invalid_value"),
        (
            lambda: otel_ml.record_outcome(PID, "a", model="m", predicted="b", task="regression"),
            "outcome_invalid_value",
        ),
        (lambda: otel_ml.record_outcome(PID, 1, model="m", predicted=1, task="ranking"), "outcome_invalid_value"),
        (lambda: otel_ml.record_outcome(PID, [[1, 2]], model="m", predicted=[[1, 2]]), "outcome_invalid_value"),
    ],
)
def test_invalid_outcomes_are_counted_rejections_not_exceptions(tel: InMemoryTelemetry, call: Any, reason: str) -> None:
    before = _drops()
    assert call() is False
    assert _new_drops(before) == {reason: 1}
    assert tel.spans() == []
    assert tel.points(semconv.OUTCOME_COUNT) == []
    dropped = {p.attributes["reason"]: p.value for p in tel.points(semconv.TELEMETRY_DROPPED)}
    assert dropped[reason] >= 1


def test_strict_raises_a_value_error_naming_the_reason(tel: InMemoryTelemetry) -> None:
    before = _drops()
    with pytest.raises(OutcomeRejected) as info:
        otel_ml.record_outcome("nope", 1, model="m", predicted=1, strict=True)
    assert isinstance(info.value, ValueError)
    assert info.value.reason == "outcome_invalid_id"
    assert "outcome_invalid_id" in str(info.value)
    with pytest.raises(ValueError, match="predicted= is required"):
        otel_ml.record_outcome(PID, 1, model="m", strict=True)
    assert _new_drops(before) == {"outcome_invalid_id": 1, "outcome_missing_predicted": 1}
    assert otel_ml.record_outcome(PID, 1, model="m", predicted=1, strict=True) is True


def test_disabled_records_nothing(tel: InMemoryTelemetry, env: pytest.MonkeyPatch) -> None:
    from otel_ml import config

    env.setenv("OTEL_ML_DISABLED", "true")
    config.reload()
    before = _drops()
    assert otel_ml.record_outcome(PID, 1, model="m", predicted=1) is False
    assert otel_ml.record_outcome("nope", 1) is False
    assert tel.spans() == [] and _new_drops(before) == {}


def test_realised_accuracy_gauge_follows_the_outcomes(tel: InMemoryTelemetry, predict: Any) -> None:
    ids = []
    for i in range(8):
        predict(X[i : i + 1])
        ids.append(otel_ml.last_prediction_id())
    verdicts = [True, True, False, True, True, True, False, True]
    for pid, ok in zip(ids, verdicts, strict=True):
        otel_ml.record_outcome(pid, "benign", model="cancer", version="1.0.0", predicted="benign" if ok else "x")
    collected = tel.metrics()
    (accuracy,) = tel.points(semconv.MODEL_ACCURACY, collected)
    assert dict(accuracy.attributes) == {semconv.ML_MODEL_NAME: "cancer", semconv.ML_MODEL_VERSION: "1.0.0"}
    assert accuracy.value == 6 / 8
    (estimated,) = tel.points(semconv.MODEL_ESTIMATED_ACCURACY, collected)
    assert estimated.value == pytest.approx(CLF.predict_proba(X[:8]).max(axis=1).mean(), abs=1e-12)
