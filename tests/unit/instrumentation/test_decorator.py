"""The decorator's telemetry contract: exact span, metric and exemplar values for real predictions."""

from __future__ import annotations

import asyncio
import inspect
import time

import numpy as np
import pytest
from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, StatusCode
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.linear_model import LinearRegression, LogisticRegression

import otel_ml
from otel_ml import semconv
from otel_ml.testing import InMemoryTelemetry

X, Y = load_breast_cancer(return_X_y=True)
CLF = LogisticRegression(max_iter=5000).fit(X, Y)


def _expected_buckets(values: np.ndarray, bounds: tuple[float, ...]) -> list[int]:
    """Upper-inclusive bucket counts computed the slow, obvious way."""
    counts = [0] * (len(bounds) + 1)
    for v in values:
        i = next((k for k, b in enumerate(bounds) if v <= b), len(bounds))
        counts[i] += 1
    return counts


def test_span_and_metrics_for_a_probability_batch(tel: InMemoryTelemetry) -> None:
    @otel_ml.instrument(name="fraud", version="1.4.0")
    def predict_proba(x: np.ndarray) -> np.ndarray:
        return CLF.predict_proba(x)

    batch = X[:100]
    result = predict_proba(batch)
    proba = CLF.predict_proba(batch)
    top = proba.max(axis=1)

    (span,) = tel.spans()
    assert span.name == "predict_proba fraud"
    assert span.kind == SpanKind.INTERNAL
    attrs = dict(span.attributes or {})
    assert attrs[semconv.ML_MODEL_NAME] == "fraud"
    assert attrs[semconv.ML_MODEL_VERSION] == "1.4.0"
    assert attrs[semconv.ML_MODEL_FRAMEWORK] == "custom"
    assert attrs[semconv.ML_OPERATION] == "predict_proba"
    assert attrs[semconv.ML_BATCH_SIZE] == 100
    assert attrs[semconv.ML_PREDICTION_CONFIDENCE_MEAN] == pytest.approx(top.mean())
    assert attrs[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(top.min())
    ctx = span.get_span_context()
    assert attrs[semconv.ML_PREDICTION_ID] == f"{ctx.trace_id:032x}-{ctx.span_id:016x}"
    assert otel_ml.last_prediction_id() == attrs[semconv.ML_PREDICTION_ID]
    np.testing.assert_array_equal(result, proba)

    base = {semconv.ML_MODEL_NAME: "fraud", semconv.ML_MODEL_VERSION: "1.4.0", semconv.ML_OPERATION: "predict_proba"}
    collected = tel.metrics()
    (count,) = tel.points(semconv.PREDICTION_COUNT, collected)
    assert count.value == 100 and dict(count.attributes) == base

    (duration,) = tel.points(semconv.PREDICTION_DURATION, collected)
    assert duration.count == 1 and dict(duration.attributes) == base
    assert list(duration.explicit_bounds) == list(semconv.DURATION_BUCKETS)
    assert [e.trace_id for e in duration.exemplars] == [ctx.trace_id]
    assert [e.span_id for e in duration.exemplars] == [ctx.span_id]

    (conf,) = tel.points(semconv.PREDICTION_CONFIDENCE, collected)
    assert conf.count == 100
    assert conf.sum == pytest.approx(top.sum())
    assert conf.min == pytest.approx(top.min()) and conf.max == pytest.approx(top.max())
    assert list(conf.explicit_bounds) == list(semconv.UNIT_INTERVAL_BUCKETS)
    assert list(conf.bucket_counts) == _expected_buckets(top, semconv.UNIT_INTERVAL_BUCKETS)
    assert conf.exemplars and all(e.trace_id == ctx.trace_id for e in conf.exemplars)

    classes = {
        p.attributes[semconv.ML_PREDICTION_CLASS]: p.value for p in tel.points(semconv.PREDICTION_CLASS, collected)
    }
    labels, counts = np.unique(proba.argmax(axis=1), return_counts=True)
    assert classes == {str(k): int(v) for k, v in zip(labels, counts, strict=True)}


def test_counts_accumulate_over_single_rows_and_batches(tel: InMemoryTelemetry) -> None:
    predict = otel_ml.instrument(name="m", version="1", operation="predict_proba")(CLF.predict_proba)
    expected: list[float] = []
    for i in range(50):
        expected.extend(predict(X[i : i + 1]).max(axis=1))
    expected.extend(predict(X[50:550]).max(axis=1))
    (count,) = tel.points(semconv.PREDICTION_COUNT)
    assert count.value == 550
    (conf,) = tel.points(semconv.PREDICTION_CONFIDENCE)
    assert conf.count == 550
    assert list(conf.bucket_counts) == _expected_buckets(np.array(expected), semconv.UNIT_INTERVAL_BUCKETS)
    (duration,) = tel.points(semconv.PREDICTION_DURATION)
    assert duration.count == 51
    assert len(tel.spans()) == 51


def test_labels_output_counts_classes_without_confidence(tel: InMemoryTelemetry) -> None:
    xw, yw = load_wine(return_X_y=True)
    model = LogisticRegression(max_iter=5000).fit(xw, yw)
    names = np.array(["barolo", "grignolino", "barbera"])

    @otel_ml.instrument(name="wine")
    def predict(x: np.ndarray) -> np.ndarray:
        return names[model.predict(x)]

    out = predict(xw)
    got = {p.attributes[semconv.ML_PREDICTION_CLASS]: p.value for p in tel.points(semconv.PREDICTION_CLASS)}
    uniq, n = np.unique(out, return_counts=True)
    assert got == dict(zip(uniq.tolist(), n.tolist(), strict=True))
    assert tel.points(semconv.PREDICTION_CONFIDENCE) == []
    assert semconv.ML_PREDICTION_CONFIDENCE_MEAN not in (tel.spans()[0].attributes or {})


def test_regression_values_histogram(tel: InMemoryTelemetry) -> None:
    rng = np.random.default_rng(0)
    xr = rng.normal(size=(300, 5))
    reg = LinearRegression().fit(xr, xr @ np.array([3.0, -2.0, 0.5, 10.0, 0.0]))

    @otel_ml.instrument(name="price", task="regression")
    def predict(x: np.ndarray) -> np.ndarray:
        return reg.predict(x)

    values = predict(xr)
    (point,) = tel.points(semconv.PREDICTION_VALUE)
    assert point.count == 300
    assert point.sum == pytest.approx(values.sum())
    assert list(point.bucket_counts) == _expected_buckets(values, semconv.VALUE_BUCKETS)


def test_user_confidence_callable(tel: InMemoryTelemetry) -> None:
    @otel_ml.instrument(name="custom", confidence=lambda out: out["score"])
    def predict(x: list[float]) -> dict[str, list[float]]:
        return {"score": [0.2, 0.9, 0.97]}

    predict([1, 2, 3])
    (conf,) = tel.points(semconv.PREDICTION_CONFIDENCE)
    assert conf.count == 3
    assert list(conf.bucket_counts) == _expected_buckets(np.array([0.2, 0.9, 0.97]), semconv.UNIT_INTERVAL_BUCKETS)
    assert tel.spans()[0].attributes[semconv.ML_BATCH_SIZE] == 3  # type: ignore[index]


def test_class_labels_are_capped_with_an_overflow_label(tel: InMemoryTelemetry, env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_MAX_CLASS_LABELS", "3")
    otel_ml.config.reload()

    @otel_ml.instrument(name="many-classes")
    def predict(x: np.ndarray) -> np.ndarray:
        return x

    predict(np.array(["a", "b", "c", "d", "e", "a"], dtype=object))
    got = {p.attributes[semconv.ML_PREDICTION_CLASS]: p.value for p in tel.points(semconv.PREDICTION_CLASS)}
    assert got == {"a": 2, "b": 1, "c": 1, semconv.CLASS_OVERFLOW: 2}


def test_exceptions_pass_through_and_are_recorded_redacted(tel: InMemoryTelemetry) -> None:
    error = ValueError("customer 4111-1111-1111-1111 is invalid")

    @otel_ml.instrument(name="fraud", version="2")
    def predict(x: object) -> object:
        raise error

    with pytest.raises(ValueError) as caught:
        predict([[1.0]])
    assert caught.value is error

    (span,) = tel.spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "ValueError"
    assert span.attributes[semconv.ERROR_TYPE] == "ValueError"  # type: ignore[index]
    (event,) = span.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {"exception.type": "ValueError", "exception.message": "<redacted>"}
    assert "4111" not in repr(span.to_json())

    (duration,) = tel.points(semconv.PREDICTION_DURATION)
    assert duration.attributes[semconv.ERROR_TYPE] == "ValueError"
    assert duration.count == 1
    assert tel.points(semconv.PREDICTION_COUNT) == []


def test_exception_message_is_captured_only_when_opted_in(tel: InMemoryTelemetry, env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_CAPTURE_EXCEPTION_MESSAGE", "true")
    otel_ml.config.reload()

    @otel_ml.instrument(name="m")
    def predict(x: object) -> object:
        raise KeyError("missing column")

    with pytest.raises(KeyError):
        predict([1])
    (event,) = tel.spans()[0].events
    assert event.attributes["exception.message"] == "'missing column'"  # type: ignore[index]


def test_result_is_the_same_object_and_signature_is_kept(tel: InMemoryTelemetry) -> None:
    sentinel = np.zeros((2, 2))

    def predict(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Docstring kept."""
        return sentinel

    wrapped = otel_ml.instrument(name="m")(predict)
    assert wrapped(np.ones((2, 3))) is sentinel
    assert wrapped.__doc__ == "Docstring kept."
    assert wrapped.__name__ == "predict"
    assert inspect.signature(wrapped) == inspect.signature(predict)
    assert tel.spans()[0].attributes[semconv.ML_BATCH_SIZE] == 2  # type: ignore[index]


def test_methods_read_the_input_after_self(tel: InMemoryTelemetry) -> None:
    class Model:
        @otel_ml.instrument(name="method-model")
        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.zeros(len(x), dtype=int)

    Model().predict(np.ones((7, 2)))
    Model().predict(x=np.ones((3, 2)))
    assert [s.attributes[semconv.ML_BATCH_SIZE] for s in tel.spans()] == [7, 3]  # type: ignore[index]
    assert tel.spans()[0].name == "predict method-model"


def test_bare_decorator_uses_the_function_name(tel: InMemoryTelemetry) -> None:
    @otel_ml.instrument
    def churn_model(x: list[int]) -> list[int]:
        return [0 for _ in x]

    churn_model([1, 2])
    assert tel.spans()[0].name == "predict churn_model"


def test_async_functions_time_the_awaited_call(tel: InMemoryTelemetry) -> None:
    @otel_ml.instrument(name="async-model")
    async def predict(x: np.ndarray) -> np.ndarray:
        await asyncio.sleep(0.02)
        return CLF.predict_proba(x)

    assert inspect.iscoroutinefunction(predict)
    result = asyncio.run(predict(X[:4]))
    assert result.shape == (4, 2)
    (span,) = tel.spans()
    assert (span.end_time - span.start_time) / 1e9 >= 0.02  # type: ignore[operator]
    (duration,) = tel.points(semconv.PREDICTION_DURATION)
    assert duration.sum >= 0.02
    assert span.attributes[semconv.ML_PREDICTION_CONFIDENCE_MEAN] > 0.5  # type: ignore[index]


def test_async_exceptions_propagate(tel: InMemoryTelemetry) -> None:
    @otel_ml.instrument(name="async-model")
    async def predict(x: object) -> object:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(predict([1]))
    assert tel.spans()[0].status.status_code == StatusCode.ERROR


def test_spans_nest_under_the_callers_span(tel: InMemoryTelemetry) -> None:
    tracer = tel.tracer_provider.get_tracer("app")
    inner = otel_ml.instrument(name="inner")(lambda x: x)

    @otel_ml.instrument(name="outer")
    def outer(x: list[int]) -> list[int]:
        return inner(x)

    with tracer.start_as_current_span("http request") as parent:
        outer([1, 2])
    spans = {s.name: s for s in tel.spans()}
    assert spans["predict outer"].parent.span_id == parent.get_span_context().span_id  # type: ignore[union-attr]
    assert spans["predict inner"].parent.span_id == spans["predict outer"].context.span_id  # type: ignore[union-attr]
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_disabled_is_a_pass_through(tel: InMemoryTelemetry, env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_DISABLED", "true")
    otel_ml.config.reload()
    predict = otel_ml.instrument(name="m")(lambda x: x)
    assert predict([1]) == [1]
    assert tel.spans() == []
    assert tel.points(semconv.PREDICTION_COUNT) == []


def test_suppressed_instrumentation_records_nothing(tel: InMemoryTelemetry) -> None:
    predict = otel_ml.instrument(name="m")(lambda x: x)
    token = context.attach(context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        assert predict([1]) == [1]
    finally:
        context.detach(token)
    assert tel.spans() == []


def test_prediction_ids_are_unique_even_without_tracing() -> None:
    with InMemoryTelemetry() as tel:
        tel.tracer_provider.shutdown()  # spans are non-recording from here on
        predict = otel_ml.instrument(name="m")(lambda x: x)
        ids = set()
        for _ in range(200):
            predict([1])
            ids.add(otel_ml.last_prediction_id())
    assert len(ids) == 200
    assert all(len(i) == 49 and i[32] == "-" for i in ids)


def test_a_calls_single_value_metrics_wait_for_the_collection_and_keep_their_exemplar_time(
    tel: InMemoryTelemetry,
) -> None:
    """A call's duration, row count and a single row's confidence and class are applied when metrics are
    collected (or by the worker once many wait), not inside the call; their exemplars still carry the call's
    time and span, and nothing is counted twice."""
    from otel_ml._core import runtime

    @otel_ml.instrument(name="m", output="proba")
    def predict(x: object) -> np.ndarray:
        return np.array([[0.2, 0.8]])

    predict([1])
    (span,) = tel.spans()
    assert len(runtime.get().aggregator.deferred) == 1  # waiting: the call recorded no metric itself
    time.sleep(0.02)  # collection well after the call
    collected = tel.metrics()
    assert not runtime.get().aggregator.deferred
    (duration,) = tel.points(semconv.PREDICTION_DURATION, collected)
    (confidence,) = tel.points(semconv.PREDICTION_CONFIDENCE, collected)
    (count,) = tel.points(semconv.PREDICTION_COUNT, collected)
    (label,) = tel.points(semconv.PREDICTION_CLASS, collected)
    assert duration.count == 1 and confidence.count == 1 and confidence.sum == pytest.approx(0.8)
    assert count.value == 1 and label.attributes[semconv.ML_PREDICTION_CLASS] == "1" and label.value == 1
    assert span.start_time is not None and span.end_time is not None
    for point in (duration, confidence):
        (exemplar,) = point.exemplars
        assert (exemplar.trace_id, exemplar.span_id) == (span.context.trace_id, span.context.span_id)
        assert span.start_time <= exemplar.time_unix_nano <= span.end_time  # the call's time, not the collection's
    assert tel.points(semconv.PREDICTION_COUNT)[0].value == 1  # a second collection adds nothing
