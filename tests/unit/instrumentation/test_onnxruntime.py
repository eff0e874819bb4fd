"""``OnnxRuntimeInstrumentor``: one span per ``InferenceSession.run``, identity from the graph, exact undo."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from opentelemetry import context
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import otel_ml
from otel_ml import config, semconv
from otel_ml._core import guard
from otel_ml._core.recorder import Recorder
from otel_ml.instrumentation import onnxruntime as ort_inst
from otel_ml.instrumentation import registry
from otel_ml.instrumentation.onnxruntime import OnnxRuntimeInstrumentor
from otel_ml.testing import InMemoryTelemetry

X, Y = load_breast_cancer(return_X_y=True)
XF = X.astype(np.float32)
XD, YD = load_diabetes(return_X_y=True)
SESSION_CLASS = next(cls for cls in ort.InferenceSession.__mro__ if "run" in vars(cls))
_PER_CALL = (semconv.ML_PREDICTION_ID, semconv.ML_PREDICTION_CONFIDENCE_MEAN, semconv.ML_PREDICTION_CONFIDENCE_MIN)


def _linear_model(name: str, weights: np.ndarray, bias: np.ndarray, nodes: list[Any], outputs: list[Any]) -> bytes:
    """A one-Gemm ONNX graph ``input @ W + B`` named ``name``, followed by ``nodes``."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "B"], ["scores"]), *nodes],
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, weights.shape[0]])],
        outputs,
        [
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, producer_name="otel-ml-tests", opset_imports=[helper.make_opsetid("", 13)])
    model.model_version = 3
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _classifier() -> bytes:
    """Scaled logistic regression on the breast-cancer data, exported by hand: ``label`` and ``probabilities``."""
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, Y)
    scaler, lr = pipe[0], pipe[1]
    w = lr.coef_[0] / scaler.scale_
    b = lr.intercept_[0] - scaler.mean_ / scaler.scale_ @ lr.coef_[0]
    return _linear_model(
        "breast_cancer_lr",
        np.stack([np.zeros_like(w), w], axis=1),  # logits [0, z]: softmax = [1 - p, p]
        np.array([0.0, b]),
        [
            helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
        ],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
    )


def _regressor() -> bytes:
    """Ridge regression on the diabetes data: one output ``variable``."""
    ridge = Ridge().fit(XD, YD)
    return _linear_model(
        "diabetes_ridge",
        ridge.coef_.reshape(-1, 1),
        np.array([ridge.intercept_]),
        [],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 1])],
    )


CLASSIFIER, REGRESSOR = _classifier(), _regressor()


def _session(model: bytes = CLASSIFIER) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


@pytest.fixture
def instrument(instrumenting: Callable[[Any], Callable[..., InMemoryTelemetry]]) -> Callable[..., InMemoryTelemetry]:
    """``instrument(**kwargs)`` instruments ONNX Runtime for this test; undone at teardown whatever happens."""
    return instrumenting(OnnxRuntimeInstrumentor())


@pytest.fixture
def ort_tel(instrument: Callable[..., InMemoryTelemetry]) -> InMemoryTelemetry:
    return instrument()


def _attrs(span: Any) -> dict[str, Any]:
    return {k: v for k, v in span.attributes.items() if k not in _PER_CALL}


def test_run_is_one_span_with_exact_values(instrument: Callable[..., InMemoryTelemetry]) -> None:
    session = _session()
    expected = session.run(None, {"input": XF[:40]})
    tel = instrument()
    label, proba = session.run(None, {"input": XF[:40]})
    np.testing.assert_array_equal(label, expected[0])
    np.testing.assert_array_equal(proba, expected[1])
    (span,) = tel.spans()
    assert span.name == "run breast_cancer_lr"
    assert _attrs(span) == {
        semconv.ML_MODEL_NAME: "breast_cancer_lr",  # the graph's name
        semconv.ML_MODEL_VERSION: "3",  # the model's model_version
        semconv.ML_MODEL_FRAMEWORK: "onnxruntime",
        semconv.ML_MODEL_TASK: "classification",  # it has an output named like probabilities
        semconv.ML_OPERATION: "run",
        semconv.ML_BATCH_SIZE: 40,
    }
    confidence = proba.max(axis=1).astype(np.float64)
    assert span.attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(float(confidence.min()))
    collected = tel.metrics()
    (conf,) = tel.points(semconv.PREDICTION_CONFIDENCE, collected)
    assert (conf.count, conf.sum) == (40, pytest.approx(float(confidence.sum()), rel=1e-6))
    (count,) = tel.points(semconv.PREDICTION_COUNT, collected)
    assert count.value == 40
    classes = {p.attributes[semconv.ML_PREDICTION_CLASS]: p.value for p in tel.points(semconv.PREDICTION_CLASS)}
    assert classes == {str(k): int(n) for k, n in zip(*np.unique(label, return_counts=True), strict=True)}


def test_requested_outputs_choose_what_is_read(ort_tel: InMemoryTelemetry) -> None:
    session = _session()
    (proba,) = session.run(["probabilities"], {"input": XF[:7]})
    (label,) = session.run(output_names=["label"], input_feed={"input": XF[:5]})
    np.testing.assert_array_equal(label, proba[:5].argmax(axis=1))
    first, second = ort_tel.spans()
    assert (first.attributes[semconv.ML_BATCH_SIZE], second.attributes[semconv.ML_BATCH_SIZE]) == (7, 5)
    assert first.attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(float(proba.max(axis=1).min()))
    assert semconv.ML_PREDICTION_CONFIDENCE_MEAN not in second.attributes  # no probabilities asked for


def test_the_first_input_is_sketched(instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_WARMUP_ROWS", "100")
    env.setenv("OTEL_ML_SKETCH_BUFFER_ROWS", "10")
    config.reload()
    tel = instrument()
    session = _session()
    for start in range(0, 300, 60):
        session.run(None, {"input": XF[start : start + 60]})
    ranks = tel.points(semconv.FEATURE_RANK)
    assert {p.attributes[semconv.ML_FEATURE_NAME] for p in ranks} == {f"f{i}" for i in range(30)}
    assert {p.count for p in ranks} == {300 - 100}  # every row after the warm-up rows, per feature


def test_identity_and_how_outputs_are_read(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    env.setenv("OTEL_ML_MODEL_NAMES", "diabetes_ridge=progression:5")
    tel = instrument()
    plain, declared, named = _session(REGRESSOR), _session(REGRESSOR), _session()
    otel_ml.set_model_info(declared, task="regression")
    otel_ml.set_model_info(named, name="cancer", version="1.2")
    plain.run(None, {"input": XD[:10].astype(np.float32)})
    (out,) = declared.run(None, {"input": XD[:10].astype(np.float32)})
    named.run(None, {"input": XF[:3]})
    spans = tel.spans()
    got = [(s.name, s.attributes[semconv.ML_MODEL_VERSION], s.attributes.get(semconv.ML_MODEL_TASK)) for s in spans]
    assert got == [
        ("run progression", "5", None),
        ("run progression", "5", "regression"),
        ("run cancer", "1.2", "classification"),
    ]
    (values,) = tel.points(semconv.PREDICTION_VALUE)  # only the session declared a regression
    assert (values.count, values.sum) == (10, pytest.approx(float(out.sum()), rel=1e-5))


def test_uninstrument_restores_exactly_and_twice_is_once(instrument: Callable[..., InMemoryTelemetry]) -> None:
    original = vars(SESSION_CLASS)["run"]
    session = _session()
    state = dict(vars(session))
    tel = instrument()
    OnnxRuntimeInstrumentor().instrument()  # twice is once
    assert ort_inst.patched() == {(SESSION_CLASS, "run"): original}
    assert registry.is_patch(inspect.getattr_static(ort.InferenceSession, "run"))
    session.run(None, {"input": XF[:3]})
    assert len(tel.spans()) == 1
    assert vars(session) == state and all(vars(session)[k] is v for k, v in state.items())  # instances untouched
    OnnxRuntimeInstrumentor().uninstrument()
    assert ort_inst.patched() == {}
    assert vars(SESSION_CLASS)["run"] is original
    assert "run" not in vars(ort.InferenceSession)
    session.run(None, {"input": XF[:3]})
    assert len(tel.spans()) == 1


def test_an_internal_failure_never_changes_the_result(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    env.setenv("OTEL_ML_STRICT", "0")
    config.reload()
    session = _session()
    expected = session.run(None, {"input": XF[:9]})
    tel = instrument()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    errors = guard.error_counts()
    env.setattr(Recorder, "_finish", boom)
    for got, want in zip(session.run(None, {"input": XF[:9]}), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(tel.spans()) == 1  # closed, without the failed part
    env.setattr(ort_inst, "identity", boom)  # a session whose recorder cannot be built: passed through
    for got, want in zip(_session().run(None, {"input": XF[:9]}), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(tel.spans()) == 1
    after = guard.error_counts()
    assert after.get("finish", 0) == errors.get("finish", 0) + 1
    assert after.get("onnxruntime_model", 0) == errors.get("onnxruntime_model", 0) + 1


def test_disabled_suppressed_and_switched_off(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    session = _session()
    feed = {"input": XF[:2]}
    env.setenv("OTEL_ML_ONNXRUNTIME_ENABLED", "false")
    tel = instrument()
    assert ort_inst.patched() == {}
    OnnxRuntimeInstrumentor().uninstrument()
    env.delenv("OTEL_ML_ONNXRUNTIME_ENABLED")
    env.setenv("OTEL_ML_DISABLED", "true")
    config.reload()
    instrument()
    assert len(ort_inst.patched()) == 1
    session.run(None, feed)
    env.delenv("OTEL_ML_DISABLED")
    config.reload()
    token = context.attach(context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        session.run(None, feed)
    finally:
        context.detach(token)
    assert tel.spans() == []
    session.run(None, feed)
    assert len(tel.spans()) == 1


def test_dependencies() -> None:
    inst = OnnxRuntimeInstrumentor()
    assert "onnxruntime >= 1.16" in inst.instrumentation_dependencies()
    assert inst._check_dependency_conflicts() is None


def test_failures_are_recorded_and_reraised(ort_tel: InMemoryTelemetry) -> None:
    with pytest.raises(ValueError, match="missing from input feed"):
        _session().run(None, {"wrong": XF[:2]})
    (span,) = ort_tel.spans()
    assert span.attributes[semconv.ERROR_TYPE] == "ValueError"
    assert span.attributes[semconv.ML_BATCH_SIZE] == 2
    assert span.status.status_code.name == "ERROR"


def test_a_failure_while_instrumenting_never_raises(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env.setenv("OTEL_ML_STRICT", "0")
    config.reload()
    original = vars(SESSION_CLASS)["run"]

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    env.setattr(ort_inst._library, "_patch", boom)
    tel = instrument()
    assert "instrumentation failed (" in caplog.text
    assert ort_inst.patched() == {}
    assert vars(SESSION_CLASS)["run"] is original
    OnnxRuntimeInstrumentor().uninstrument()
    env.setattr(registry.Naming, "from_env", boom)
    instrument()
    assert ort_inst.patched() == {}
    assert len(_session().run(None, {"input": XF[:2]})) == 2
    assert tel.spans() == []
