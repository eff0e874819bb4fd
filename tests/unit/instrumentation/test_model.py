"""``instrument_model``: isinstance, available_if, pickling without otel-ml, torch modules, undo."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import otel_ml
from otel_ml import semconv
from otel_ml.testing import InMemoryTelemetry

X, Y = load_breast_cancer(return_X_y=True)


def _fitted() -> LogisticRegression:
    return LogisticRegression(max_iter=5000).fit(X, Y)


def test_every_predict_method_is_measured_with_class_names(tel: InMemoryTelemetry) -> None:
    model = otel_ml.instrument_model(_fitted(), name="fraud", version="1.4.0")
    assert isinstance(model, LogisticRegression)
    assert type(model).__name__ == "LogisticRegression"
    model.predict(X[:10])
    model.predict_proba(X[:20])
    model.predict_log_proba(X[:30])
    model.decision_function(X[:40])
    spans = tel.spans()
    assert [s.name for s in spans] == [
        "predict fraud",
        "predict_proba fraud",
        "predict_log_proba fraud",
        "decision_function fraud",
    ]
    assert [s.attributes[semconv.ML_BATCH_SIZE] for s in spans] == [10, 20, 30, 40]  # type: ignore[index]
    assert {s.attributes[semconv.ML_MODEL_FRAMEWORK] for s in spans} == {"sklearn"}  # type: ignore[index]
    assert {s.attributes[semconv.ML_MODEL_TASK] for s in spans} == {"classification"}  # type: ignore[index]
    collected = tel.metrics()
    counts = {p.attributes[semconv.ML_OPERATION]: p.value for p in tel.points(semconv.PREDICTION_COUNT, collected)}
    assert counts == {"predict": 10, "predict_proba": 20, "predict_log_proba": 30, "decision_function": 40}
    conf = {p.attributes[semconv.ML_OPERATION]: p for p in tel.points(semconv.PREDICTION_CONFIDENCE, collected)}
    assert set(conf) == {"predict_proba", "predict_log_proba", "decision_function"}
    # decision_function confidence = sigmoid(|score|) = predict_proba's top class for logistic regression
    expected = LogisticRegression.predict_proba(model, X[:40]).max(axis=1)
    assert conf["decision_function"].sum == pytest.approx(expected.sum(), rel=1e-9)
    classes = {
        (p.attributes[semconv.ML_OPERATION], p.attributes[semconv.ML_PREDICTION_CLASS]): p.value
        for p in tel.points(semconv.PREDICTION_CLASS, collected)
    }
    plain = _fitted()
    for op, rows in (("predict", 10), ("predict_proba", 20), ("decision_function", 40)):
        labels, n = np.unique(plain.predict(X[:rows]), return_counts=True)
        expected_counts = {(op, str(k)): int(v) for k, v in zip(labels, n, strict=True)}
        assert {k: v for k, v in classes.items() if k[0] == op} == expected_counts


def test_results_are_unchanged(tel: InMemoryTelemetry) -> None:
    plain = _fitted()
    model = otel_ml.instrument_model(_fitted(), name="m")
    np.testing.assert_array_equal(model.predict_proba(X), plain.predict_proba(X))
    np.testing.assert_array_equal(model.predict(X), plain.predict(X))


def test_available_if_methods_stay_unavailable(tel: InMemoryTelemetry) -> None:
    svc = otel_ml.instrument_model(SVC(probability=False).fit(X[:200], Y[:200]), name="svc")
    assert not hasattr(svc, "predict_proba")
    assert hasattr(svc, "decision_function")
    svc.predict(X[:5])
    assert [s.name for s in tel.spans()] == ["predict svc"]


def test_pipeline_is_one_call(tel: InMemoryTelemetry) -> None:
    pipe = otel_ml.instrument_model(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y), name="pipe")
    pipe.predict_proba(X[:50])
    (span,) = tel.spans()
    assert span.name == "predict_proba pipe"
    assert span.attributes[semconv.ML_MODEL_TASK] == "classification"  # type: ignore[index]


def test_pickle_is_byte_identical_to_the_plain_model() -> None:
    plain = _fitted()
    model = otel_ml.instrument_model(pickle.loads(pickle.dumps(plain)), name="m", version="1")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.dumps(model, protocol=protocol) == pickle.dumps(plain, protocol=protocol)
    restored = pickle.loads(pickle.dumps(model))
    assert type(restored) is LogisticRegression
    assert clone(model).get_params() == plain.get_params()


_LOAD_WITHOUT_OTEL_ML = """
import sys, pickle, io
sys.modules["otel_ml"] = None  # any import of otel_ml now fails
import joblib, numpy as np
from sklearn.datasets import load_breast_cancer
X, _ = load_breast_cancer(return_X_y=True)
data = sys.stdin.buffer.read()
a, b = data.split(b"--JOBLIB--")
model = pickle.loads(a)
jmodel = joblib.load(io.BytesIO(b))
print(type(model).__name__, int(model.predict(X[:50]).sum()), int(jmodel.predict(X[:50]).sum()))
"""


def test_pickled_and_joblib_dumped_models_load_without_otel_ml() -> None:
    model = otel_ml.instrument_model(_fitted(), name="m")
    buf = io.BytesIO()
    joblib.dump(model, buf)
    payload = pickle.dumps(model) + b"--JOBLIB--" + buf.getvalue()
    assert b"otel_ml" not in payload and b"wrapt" not in payload
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_OTEL_ML], input=payload, capture_output=True, timeout=120, check=True
    )
    expected = int(_fitted().predict(X[:50]).sum())
    assert out.stdout.decode().split() == ["LogisticRegression", str(expected), str(expected)]


def test_uninstrument_and_reinstrument(tel: InMemoryTelemetry) -> None:
    model = _fitted()
    original_type = type(model)
    otel_ml.instrument_model(model, name="a")
    otel_ml.instrument_model(model, name="b")  # re-instrumenting replaces, never stacks
    assert type(model).__mro__[1] is original_type
    model.predict(X[:2])
    assert [s.name for s in tel.spans()] == ["predict b"]
    assert otel_ml.uninstrument_model(model) is model
    assert type(model) is original_type
    assert "__class__" not in vars(model) and not any(k.startswith("_otel") for k in vars(model))
    model.predict(X[:2])
    assert len(tel.spans()) == 1


def test_torch_module_forward_through_call(tel: InMemoryTelemetry) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    net = otel_ml.instrument_model(net, name="mlp", version="7")
    x = torch.randn(64, 30)
    with torch.no_grad():
        logits = net(x)
    assert isinstance(net, torch.nn.Sequential)
    (span,) = tel.spans()
    assert span.name == "__call__ mlp"
    assert span.attributes[semconv.ML_BATCH_SIZE] == 64  # type: ignore[index]
    assert span.attributes[semconv.ML_MODEL_FRAMEWORK] == "torch"  # type: ignore[index]
    expected = torch.softmax(logits, dim=1).max(dim=1).values.numpy()
    (conf,) = tel.points(semconv.PREDICTION_CONFIDENCE)
    assert conf.count == 64
    assert conf.sum == pytest.approx(float(expected.sum()), rel=1e-5)
    buf = io.BytesIO()
    torch.save(net, buf)
    assert b"otel_ml" not in buf.getvalue()


def test_torch_training_mode_is_not_a_prediction(tel: InMemoryTelemetry) -> None:
    net = otel_ml.instrument_model(torch.nn.Linear(4, 2), name="lin")
    net.train()
    net(torch.randn(3, 4))
    assert tel.spans() == []
    net.eval()
    net(torch.randn(3, 4))
    assert len(tel.spans()) == 1


def test_plain_callables_are_decorated(tel: InMemoryTelemetry) -> None:
    predict = otel_ml.instrument_model(lambda x: [1 for _ in x], name="fn")
    assert predict([0, 0, 0]) == [1, 1, 1]
    assert tel.spans()[0].name == "predict fn"


class _Slotted:
    __slots__ = ("w",)

    def __init__(self) -> None:
        self.w = 2.0

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x * self.w


def test_slotted_classes_are_instrumented_in_place(tel: InMemoryTelemetry) -> None:
    model = otel_ml.instrument_model(_Slotted(), name="slotted")
    assert isinstance(model, _Slotted)
    np.testing.assert_array_equal(model.predict(np.ones(3)), np.full(3, 2.0))
    assert tel.spans()[0].attributes[semconv.ML_BATCH_SIZE] == 3  # type: ignore[index]


def test_objects_whose_class_cannot_change_get_a_pickle_transparent_proxy(tel: InMemoryTelemetry) -> None:
    import functools  # functools.partial is an immutable builtin type: its __class__ cannot be assigned

    part = functools.partial(np.multiply, 3.0)
    model = otel_ml.instrument_model(part, name="partial", methods=["__call__"])
    np.testing.assert_array_equal(model(np.ones(4)), np.full(4, 3.0))
    assert tel.spans()[0].name == "__call__ partial"
    assert pickle.loads(pickle.dumps(model)).func is np.multiply
    assert otel_ml.uninstrument_model(model) is part


def test_models_without_predict_methods_are_rejected() -> None:
    with pytest.raises(TypeError, match="none of the methods"):
        otel_ml.instrument_model(object(), name="nothing")
