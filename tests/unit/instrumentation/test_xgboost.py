"""``XGBoostInstrumentor``: sklearn-API estimators and native Boosters, one span per outermost call, exact undo."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from opentelemetry import context
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

import otel_ml
from otel_ml import config, semconv
from otel_ml._core import guard, runtime
from otel_ml._core.recorder import Recorder
from otel_ml.instrumentation import library, registry
from otel_ml.instrumentation import sklearn as sk
from otel_ml.instrumentation import xgboost as xgb_inst
from otel_ml.instrumentation.sklearn import SklearnInstrumentor
from otel_ml.instrumentation.xgboost import XGBoostInstrumentor
from otel_ml.testing import InMemoryTelemetry

X, Y = load_breast_cancer(return_X_y=True)
XW, YW = load_wine(return_X_y=True)
CLF = xgb.XGBClassifier(n_estimators=8, max_depth=3, random_state=0).fit(X, Y)
SOFTPROB = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2}, xgb.DMatrix(XW, YW), 6)
PATCHED = [
    (xgb.Booster, "predict"),
    (xgb.Booster, "inplace_predict"),
    (xgb.XGBModel, "predict"),
    (xgb.XGBClassifier, "predict"),
    (xgb.XGBClassifier, "predict_proba"),
    (xgb.XGBRanker, "predict"),
]
_PER_CALL = (semconv.ML_PREDICTION_ID, semconv.ML_PREDICTION_CONFIDENCE_MEAN, semconv.ML_PREDICTION_CONFIDENCE_MIN)


@pytest.fixture
def instrument(instrumenting: Callable[[Any], Callable[..., InMemoryTelemetry]]) -> Callable[..., InMemoryTelemetry]:
    """``instrument(**kwargs)`` instruments XGBoost for this test; undone at teardown whatever happens."""
    return instrumenting(XGBoostInstrumentor())


@pytest.fixture
def xgb_tel(instrument: Callable[..., InMemoryTelemetry]) -> InMemoryTelemetry:
    return instrument()


def _attrs(span: Any) -> dict[str, Any]:
    return {k: v for k, v in span.attributes.items() if k not in _PER_CALL}


def _counts(tel: InMemoryTelemetry) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[semconv.ML_MODEL_NAME], p.attributes[semconv.ML_OPERATION]): p.value
        for p in tel.points(semconv.PREDICTION_COUNT)
    }


def test_classifier_calls_are_one_span_each_with_exact_values(instrument: Callable[..., InMemoryTelemetry]) -> None:
    expected_proba, expected_labels = CLF.predict_proba(X[:40]), CLF.predict(X[:10])
    tel = instrument()
    proba, labels = CLF.predict_proba(X[:40]), CLF.predict(X[:10])
    np.testing.assert_array_equal(proba, expected_proba)
    np.testing.assert_array_equal(labels, expected_labels)
    spans = tel.spans()  # the Booster.inplace_predict inside each call is part of it
    assert [s.name for s in spans] == ["predict_proba XGBClassifier", "predict XGBClassifier"]
    base = {
        semconv.ML_MODEL_NAME: "XGBClassifier",
        semconv.ML_MODEL_VERSION: "",
        semconv.ML_MODEL_FRAMEWORK: "xgboost",
        semconv.ML_MODEL_TASK: "classification",
    }
    assert _attrs(spans[0]) == {**base, semconv.ML_OPERATION: "predict_proba", semconv.ML_BATCH_SIZE: 40}
    assert _attrs(spans[1]) == {**base, semconv.ML_OPERATION: "predict", semconv.ML_BATCH_SIZE: 10}
    confidence = proba.max(axis=1)
    assert spans[0].attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(float(confidence.min()))
    collected = tel.metrics()
    (conf,) = tel.points(semconv.PREDICTION_CONFIDENCE, collected)
    assert (conf.count, conf.sum) == (40, pytest.approx(float(confidence.sum())))
    assert _counts(tel) == {("XGBClassifier", "predict_proba"): 40, ("XGBClassifier", "predict"): 10}
    classes = {
        p.attributes[semconv.ML_PREDICTION_CLASS]: p.value
        for p in tel.points(semconv.PREDICTION_CLASS, collected)
        if p.attributes[semconv.ML_OPERATION] == "predict"
    }
    assert classes == {str(k): int(n) for k, n in zip(*np.unique(labels, return_counts=True), strict=True)}


def test_the_boosters_own_call_inside_an_estimator_call_never_enters_the_wrapper(
    xgb_tel: InMemoryTelemetry, entries: Callable[[Any], list[object]]
) -> None:
    """``XGBClassifier.predict_proba`` runs ``Booster.inplace_predict``: its class patch calls it directly."""
    entered = entries(library)
    CLF.predict_proba(X[:5])
    assert len(entered) == 1  # the estimator's wrapper, not the Booster's
    assert [s.name for s in xgb_tel.spans()] == ["predict_proba XGBClassifier"]
    SOFTPROB.inplace_predict(XW[:5])  # a Booster on its own is a measured call
    assert len(entered) == 2 and len(xgb_tel.spans()) == 2


def test_regressor_outputs_are_values(xgb_tel: InMemoryTelemetry) -> None:
    xd, yd = load_diabetes(return_X_y=True)
    out = xgb.XGBRegressor(n_estimators=5, random_state=0).fit(xd, yd).predict(xd[:25])
    (span,) = xgb_tel.spans()
    assert (span.name, _attrs(span)[semconv.ML_MODEL_TASK]) == ("predict XGBRegressor", "regression")
    (values,) = xgb_tel.points(semconv.PREDICTION_VALUE)
    assert (values.count, values.sum) == (25, pytest.approx(float(out.sum()), rel=1e-6))


def test_native_booster_arrays_are_sketched_and_dmatrix_is_a_skipped_input(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    env.setenv("OTEL_ML_WARMUP_ROWS", "50")
    env.setenv("OTEL_ML_SKETCH_BUFFER_ROWS", "10")
    config.reload()
    tel = instrument()
    expected = SOFTPROB.inplace_predict(XW)  # (instrumented) 178 x 3 probabilities
    dropped = runtime.get().drops().get("input_type", 0)
    by_dmatrix = SOFTPROB.predict(xgb.DMatrix(XW[:30]))
    np.testing.assert_allclose(by_dmatrix, expected[:30], rtol=1e-6)
    spans = tel.spans()
    assert [(s.name, s.attributes[semconv.ML_BATCH_SIZE]) for s in spans] == [
        ("inplace_predict xgboost.Booster", 178),
        ("predict xgboost.Booster", 30),  # rows from the result: the DMatrix is not read
    ]
    assert _attrs(spans[0])[semconv.ML_MODEL_TASK] == "classification"  # from objective multi:softprob
    assert runtime.get().drops()["input_type"] == dropped + 1
    collected = tel.metrics()
    assert _counts(tel) == {("xgboost.Booster", "inplace_predict"): 178, ("xgboost.Booster", "predict"): 30}
    confidences = tel.points(semconv.PREDICTION_CONFIDENCE, collected)
    (conf,) = [p for p in confidences if p.attributes[semconv.ML_OPERATION] == "predict"]
    assert (conf.count, conf.sum) == (30, pytest.approx(float(by_dmatrix.max(axis=1).sum()), rel=1e-6))
    ranks = tel.points(semconv.FEATURE_RANK, collected)
    assert {p.attributes[semconv.ML_FEATURE_NAME] for p in ranks} == {f"f{i}" for i in range(13)}
    assert {p.count for p in ranks} == {178 - 50}  # the array only, minus the warm-up rows


def test_explanations_pass_through_and_margins_are_not_read(xgb_tel: InMemoryTelemetry) -> None:
    booster = CLF.get_booster()
    dm = xgb.DMatrix(X[:5])
    assert booster.predict(dm, pred_leaf=True).shape == (5, 8)
    assert booster.predict(dm, pred_contribs=True).shape == (5, 31)
    assert xgb_tel.spans() == []
    booster.predict(dm, output_margin=True)
    booster.inplace_predict(X[:6], predict_type="margin")
    spans = xgb_tel.spans()
    assert [(s.name, s.attributes[semconv.ML_BATCH_SIZE]) for s in spans] == [
        ("predict xgboost.Booster", 5),
        ("inplace_predict xgboost.Booster", 6),
    ]
    assert not any(semconv.ML_PREDICTION_CONFIDENCE_MEAN in s.attributes for s in spans)


def test_model_identity_for_boosters(instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_MODEL_NAMES", "xgboost.Booster=wine:2")
    tel = instrument()
    named = xgb.Booster(model_file=bytearray(SOFTPROB.save_raw()))
    otel_ml.set_model_info(named, name="cancer", version="7")
    SOFTPROB.inplace_predict(XW[:2])
    named.inplace_predict(XW[:2])
    got = [(s.attributes[semconv.ML_MODEL_NAME], s.attributes[semconv.ML_MODEL_VERSION]) for s in tel.spans()]
    assert got == [("wine", "2"), ("cancer", "7")]


def _namespaces() -> dict[type, dict[str, Any]]:
    return {cls: dict(vars(cls)) for cls in {owner for owner, _ in PATCHED}}


def test_uninstrument_restores_exactly_and_twice_is_once(instrument: Callable[..., InMemoryTelemetry]) -> None:
    before = _namespaces()
    tel = instrument()
    XGBoostInstrumentor().instrument()  # twice is once
    assert sorted(xgb_inst.patched(), key=str) == sorted(PATCHED, key=str)
    for owner, name in PATCHED:
        assert registry.is_patch(inspect.getattr_static(owner, name))
        assert xgb_inst.patched()[(owner, name)] is before[owner][name]
    CLF.predict(X[:3])
    assert len(tel.spans()) == 1
    XGBoostInstrumentor().uninstrument()
    assert xgb_inst.patched() == {}
    after = _namespaces()
    for cls, namespace in before.items():
        assert after[cls].keys() == namespace.keys()
        assert all(after[cls][k] is v for k, v in namespace.items()), cls
    CLF.predict(X[:3])
    assert len(tel.spans()) == 1


@pytest.mark.parametrize("sklearn_first", [True, False])
def test_with_the_sklearn_instrumentor_each_call_is_one_span(tel: InMemoryTelemetry, sklearn_first: bool) -> None:
    before = _namespaces()
    first, second = (SklearnInstrumentor(), XGBoostInstrumentor())[:: 1 if sklearn_first else -1]
    first.instrument()
    second.instrument()
    try:
        proba = CLF.predict_proba(X[:12])
        CLF.predict(X[:4])
        xgb.XGBRegressor(n_estimators=3).fit(X, Y).predict(X[:5])  # fit: no spans
        CLF.get_booster().inplace_predict(X[:6])
    finally:
        second.uninstrument()
        first.uninstrument()
    spans = tel.spans()
    assert [(s.name, s.attributes[semconv.ML_BATCH_SIZE]) for s in spans] == [
        ("predict_proba XGBClassifier", 12),
        ("predict XGBClassifier", 4),
        ("predict XGBRegressor", 5),
        ("inplace_predict xgboost.Booster", 6),
    ]
    assert {s.attributes[semconv.ML_MODEL_FRAMEWORK] for s in spans} == {"xgboost"}
    assert spans[0].attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(float(proba.max(axis=1).min()))
    assert sk.patched() == {} and xgb_inst.patched() == {}
    after = _namespaces()
    assert all(after[cls][k] is v for cls, ns in before.items() for k, v in ns.items())


def test_pickles_are_byte_identical(xgb_tel: InMemoryTelemetry) -> None:
    model = xgb.XGBClassifier(n_estimators=4, random_state=0).fit(X, Y)
    plain = pickle.dumps(model), pickle.dumps(model.get_booster())
    model.predict(X[:5])
    model.get_booster().inplace_predict(X[:5])
    assert len(xgb_tel.spans()) == 2
    assert (pickle.dumps(model), pickle.dumps(model.get_booster())) == plain
    np.testing.assert_array_equal(pickle.loads(plain[0]).predict(X[:50]), model.predict(X[:50]))


def test_an_internal_failure_never_changes_the_result(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    env.setenv("OTEL_ML_STRICT", "0")
    config.reload()
    expected = CLF.predict_proba(X[:9]), SOFTPROB.inplace_predict(XW[:9])
    tel = instrument()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    errors = guard.error_counts()
    env.setattr(Recorder, "_finish", boom)
    np.testing.assert_array_equal(CLF.predict_proba(X[:9]), expected[0])
    np.testing.assert_array_equal(SOFTPROB.inplace_predict(XW[:9]), expected[1])
    assert len(tel.spans()) == 2  # closed, without the failed part
    env.setattr(xgb_inst, "_reading", boom)  # a Booster whose recorder cannot be built: passed through
    fresh = xgb.Booster(model_file=bytearray(SOFTPROB.save_raw()))
    np.testing.assert_array_equal(fresh.inplace_predict(XW[:9]), expected[1])
    assert len(tel.spans()) == 2
    after = guard.error_counts()
    assert after.get("finish", 0) == errors.get("finish", 0) + 2
    assert after.get("xgboost_model", 0) == errors.get("xgboost_model", 0) + 1


def test_disabled_suppressed_and_switched_off(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    env.setenv("OTEL_ML_XGBOOST_ENABLED", "false")
    tel = instrument()
    assert xgb_inst.patched() == {}
    XGBoostInstrumentor().uninstrument()
    env.delenv("OTEL_ML_XGBOOST_ENABLED")
    env.setenv("OTEL_ML_DISABLED", "true")
    config.reload()
    instrument()
    assert len(xgb_inst.patched()) == len(PATCHED)
    CLF.predict(X[:2])
    env.delenv("OTEL_ML_DISABLED")
    config.reload()
    token = context.attach(context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        CLF.predict(X[:2])
    finally:
        context.detach(token)
    assert tel.spans() == []
    CLF.predict(X[:2])
    assert len(tel.spans()) == 1


def test_dependencies_accept_either_distribution() -> None:
    inst = XGBoostInstrumentor()
    assert list(inst.instrumentation_dependencies()) == ["xgboost >= 2.0", "xgboost-cpu >= 2.1"]
    assert inst._check_dependency_conflicts() is None  # one of them (xgboost-cpu here) is installed


def test_a_failure_while_instrumenting_never_raises(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env.setenv("OTEL_ML_STRICT", "0")
    config.reload()
    before = _namespaces()
    env.setattr(xgb_inst, "_ESTIMATOR_WRAPPERS", None)  # patching fails half-way
    tel = instrument()
    assert "instrumentation failed (" in caplog.text
    assert xgb_inst.patched() == {}
    assert all(vars(cls)[k] is v for cls, ns in before.items() for k, v in ns.items())  # the half put back
    XGBoostInstrumentor().uninstrument()

    def broken(env: Any = None) -> Any:
        raise RuntimeError("boom")

    env.setattr(registry.Naming, "from_env", broken)
    instrument()
    assert xgb_inst.patched() == {}
    assert CLF.predict(X[:2]).shape == (2,)
    assert tel.spans() == []
