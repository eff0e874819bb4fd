"""``LightGBMInstrumentor``: sklearn-API estimators and native Boosters, one span per outermost call, exact undo."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from opentelemetry import context
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

import otel_ml
from otel_ml import config, semconv
from otel_ml._core import guard, runtime
from otel_ml._core.recorder import Recorder
from otel_ml.instrumentation import lightgbm as lgb_inst
from otel_ml.instrumentation import registry
from otel_ml.instrumentation import sklearn as sk
from otel_ml.instrumentation.lightgbm import LightGBMInstrumentor
from otel_ml.instrumentation.sklearn import SklearnInstrumentor
from otel_ml.testing import InMemoryTelemetry

X, Y = load_breast_cancer(return_X_y=True)
XW, YW = load_wine(return_X_y=True)
CLF = lgb.LGBMClassifier(n_estimators=8, num_leaves=7, random_state=0, verbose=-1).fit(X, Y)
MULTI = lgb.train(
    {"objective": "softmax", "num_class": 3, "num_leaves": 4, "verbose": -1}, lgb.Dataset(XW, YW), num_boost_round=6
)
PATCHED = [
    (lgb.Booster, "predict"),
    (lgb.LGBMModel, "predict"),
    (lgb.LGBMClassifier, "predict"),
    (lgb.LGBMClassifier, "predict_proba"),
]
_PER_CALL = (semconv.ML_PREDICTION_ID, semconv.ML_PREDICTION_CONFIDENCE_MEAN, semconv.ML_PREDICTION_CONFIDENCE_MIN)


@pytest.fixture
def instrument(instrumenting: Callable[[Any], Callable[..., InMemoryTelemetry]]) -> Callable[..., InMemoryTelemetry]:
    """``instrument(**kwargs)`` instruments LightGBM for this test; undone at teardown whatever happens."""
    return instrumenting(LightGBMInstrumentor())


@pytest.fixture
def lgb_tel(instrument: Callable[..., InMemoryTelemetry]) -> InMemoryTelemetry:
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
    proba, labels = CLF.predict_proba(X[:40]), CLF.predict(X[:10])  # predict calls predict_proba: one call
    np.testing.assert_array_equal(proba, expected_proba)
    np.testing.assert_array_equal(labels, expected_labels)
    spans = tel.spans()
    assert [s.name for s in spans] == ["predict_proba LGBMClassifier", "predict LGBMClassifier"]
    base = {
        semconv.ML_MODEL_NAME: "LGBMClassifier",
        semconv.ML_MODEL_VERSION: "",
        semconv.ML_MODEL_FRAMEWORK: "lightgbm",
        semconv.ML_MODEL_TASK: "classification",
    }
    assert _attrs(spans[0]) == {**base, semconv.ML_OPERATION: "predict_proba", semconv.ML_BATCH_SIZE: 40}
    assert _attrs(spans[1]) == {**base, semconv.ML_OPERATION: "predict", semconv.ML_BATCH_SIZE: 10}
    confidence = proba.max(axis=1)
    assert spans[0].attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(float(confidence.min()))
    collected = tel.metrics()
    (conf,) = tel.points(semconv.PREDICTION_CONFIDENCE, collected)
    assert (conf.count, conf.sum) == (40, pytest.approx(float(confidence.sum())))
    assert _counts(tel) == {("LGBMClassifier", "predict_proba"): 40, ("LGBMClassifier", "predict"): 10}
    classes = {
        p.attributes[semconv.ML_PREDICTION_CLASS]: p.value
        for p in tel.points(semconv.PREDICTION_CLASS, collected)
        if p.attributes[semconv.ML_OPERATION] == "predict"
    }
    assert classes == {str(k): int(n) for k, n in zip(*np.unique(labels, return_counts=True), strict=True)}


def test_regressor_outputs_are_values(lgb_tel: InMemoryTelemetry) -> None:
    xd, yd = load_diabetes(return_X_y=True)
    out = lgb.LGBMRegressor(n_estimators=5, verbose=-1).fit(xd, yd).predict(xd[:25])
    (span,) = lgb_tel.spans()
    assert (span.name, _attrs(span)[semconv.ML_MODEL_TASK]) == ("predict LGBMRegressor", "regression")
    (values,) = lgb_tel.points(semconv.PREDICTION_VALUE)
    assert (values.count, values.sum) == (25, pytest.approx(float(out.sum())))


def test_native_booster_arrays_are_sketched_and_a_file_is_a_skipped_input(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("OTEL_ML_WARMUP_ROWS", "50")
    env.setenv("OTEL_ML_SKETCH_BUFFER_ROWS", "10")
    config.reload()
    expected = MULTI.predict(XW)
    path = tmp_path / "wine.csv"
    np.savetxt(path, XW[:20], delimiter=",")
    tel = instrument()
    np.testing.assert_array_equal(MULTI.predict(XW), expected)
    dropped = sum(runtime.get().drops().values())
    np.testing.assert_allclose(MULTI.predict(path), expected[:20])
    spans = tel.spans()
    assert [s.name for s in spans] == ["predict lightgbm.Booster"] * 2
    assert [s.attributes[semconv.ML_BATCH_SIZE] for s in spans] == [178, 20]  # the file's rows from the result
    assert _attrs(spans[0])[semconv.ML_MODEL_TASK] == "classification"  # objective "softmax", an alias
    assert sum(runtime.get().drops().values()) == dropped + 1
    collected = tel.metrics()
    assert _counts(tel) == {("lightgbm.Booster", "predict"): 198}
    (conf,) = tel.points(semconv.PREDICTION_CONFIDENCE, collected)
    assert (conf.count, conf.sum) == (
        198,
        pytest.approx(float(expected.max(axis=1).sum() + expected[:20].max(axis=1).sum())),
    )
    ranks = tel.points(semconv.FEATURE_RANK, collected)
    assert {p.attributes[semconv.ML_FEATURE_NAME] for p in ranks} == {f"Column_{i}" for i in range(13)}
    assert {p.count for p in ranks} == {178 - 50}  # the array only, minus the warm-up rows


def test_binary_booster_and_raw_scores(lgb_tel: InMemoryTelemetry) -> None:
    booster = CLF.booster_
    p1 = booster.predict(X[:30])  # the positive class's probability
    booster.predict(X[:5], raw_score=True)
    booster.predict(X[:5], 0, None, True)  # raw_score by position
    assert booster.predict(X[:5], pred_leaf=True).shape == (5, 8)
    assert booster.predict(X[:5], pred_contrib=True).shape == (5, 31)
    spans = lgb_tel.spans()
    assert [s.attributes[semconv.ML_BATCH_SIZE] for s in spans] == [30, 5, 5]  # explanations pass through
    assert spans[0].attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(
        float(np.maximum(p1, 1 - p1).min())
    )
    assert not any(semconv.ML_PREDICTION_CONFIDENCE_MEAN in s.attributes for s in spans[1:])


def test_model_identity_for_boosters(instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_MODEL_NAMES", "lightgbm.Booster=wine:2")
    tel = instrument()
    named = lgb.Booster(model_str=MULTI.model_to_string())
    otel_ml.set_model_info(named, name="cellar", version="7", task="regression")
    MULTI.predict(XW[:2])
    named.predict(XW[:2])
    got = [(s.attributes[semconv.ML_MODEL_NAME], s.attributes[semconv.ML_MODEL_VERSION]) for s in tel.spans()]
    assert got == [("wine", "2"), ("cellar", "7")]
    assert tel.spans()[1].attributes[semconv.ML_MODEL_TASK] == "regression"


def _namespaces() -> dict[type, dict[str, Any]]:
    return {cls: dict(vars(cls)) for cls in {owner for owner, _ in PATCHED}}


def test_uninstrument_restores_exactly_and_twice_is_once(instrument: Callable[..., InMemoryTelemetry]) -> None:
    before = _namespaces()
    tel = instrument()
    LightGBMInstrumentor().instrument()  # twice is once
    assert sorted(lgb_inst.patched(), key=str) == sorted(PATCHED, key=str)
    for owner, name in PATCHED:
        assert registry.is_patch(inspect.getattr_static(owner, name))
        assert lgb_inst.patched()[(owner, name)] is before[owner][name]
    CLF.predict(X[:3])
    assert len(tel.spans()) == 1
    LightGBMInstrumentor().uninstrument()
    assert lgb_inst.patched() == {}
    after = _namespaces()
    for cls, namespace in before.items():
        assert after[cls].keys() == namespace.keys()
        assert all(after[cls][k] is v for k, v in namespace.items()), cls
    CLF.predict(X[:3])
    assert len(tel.spans()) == 1


@pytest.mark.parametrize("sklearn_first", [True, False])
def test_with_the_sklearn_instrumentor_each_call_is_one_span(tel: InMemoryTelemetry, sklearn_first: bool) -> None:
    before = _namespaces()
    first, second = (SklearnInstrumentor(), LightGBMInstrumentor())[:: 1 if sklearn_first else -1]
    first.instrument()
    second.instrument()
    try:
        proba = CLF.predict_proba(X[:12])
        CLF.predict(X[:4])
        lgb.LGBMRegressor(n_estimators=3, verbose=-1).fit(X, Y).predict(X[:5])  # fit: no spans
        CLF.booster_.predict(X[:6])
    finally:
        second.uninstrument()
        first.uninstrument()
    spans = tel.spans()
    assert [(s.name, s.attributes[semconv.ML_BATCH_SIZE]) for s in spans] == [
        ("predict_proba LGBMClassifier", 12),
        ("predict LGBMClassifier", 4),
        ("predict LGBMRegressor", 5),
        ("predict lightgbm.Booster", 6),
    ]
    assert {s.attributes[semconv.ML_MODEL_FRAMEWORK] for s in spans} == {"lightgbm"}
    assert spans[0].attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(float(proba.max(axis=1).min()))
    assert sk.patched() == {} and lgb_inst.patched() == {}
    after = _namespaces()
    assert all(after[cls][k] is v for cls, ns in before.items() for k, v in ns.items())


def test_pickles_are_byte_identical(lgb_tel: InMemoryTelemetry) -> None:
    model = lgb.LGBMClassifier(n_estimators=4, random_state=0, verbose=-1).fit(X, Y)
    plain = pickle.dumps(model), pickle.dumps(model.booster_)
    model.predict(X[:5])
    model.booster_.predict(X[:5])
    assert len(lgb_tel.spans()) == 2
    assert (pickle.dumps(model), pickle.dumps(model.booster_)) == plain
    np.testing.assert_array_equal(pickle.loads(plain[0]).predict(X[:50]), model.predict(X[:50]))


def test_an_internal_failure_never_changes_the_result(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    env.setenv("OTEL_ML_STRICT", "0")
    config.reload()
    expected = CLF.predict_proba(X[:9]), MULTI.predict(XW[:9])
    tel = instrument()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    errors = guard.error_counts()
    env.setattr(Recorder, "_finish", boom)
    np.testing.assert_array_equal(CLF.predict_proba(X[:9]), expected[0])
    np.testing.assert_array_equal(MULTI.predict(XW[:9]), expected[1])
    assert len(tel.spans()) == 2  # closed, without the failed part
    env.setattr(lgb_inst, "_reading", boom)  # a Booster whose recorder cannot be built: passed through
    fresh = lgb.Booster(model_str=MULTI.model_to_string())
    np.testing.assert_array_equal(fresh.predict(XW[:9]), expected[1])
    assert len(tel.spans()) == 2
    after = guard.error_counts()
    assert after.get("finish", 0) == errors.get("finish", 0) + 2
    assert after.get("lightgbm_model", 0) == errors.get("lightgbm_model", 0) + 1


def test_disabled_suppressed_and_switched_off(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    env.setenv("OTEL_ML_LIGHTGBM_ENABLED", "false")
    tel = instrument()
    assert lgb_inst.patched() == {}
    LightGBMInstrumentor().uninstrument()
    env.delenv("OTEL_ML_LIGHTGBM_ENABLED")
    env.setenv("OTEL_ML_DISABLED", "true")
    config.reload()
    instrument()
    assert len(lgb_inst.patched()) == len(PATCHED)
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


def test_dependencies() -> None:
    inst = LightGBMInstrumentor()
    assert list(inst.instrumentation_dependencies()) == ["lightgbm >= 4.0"]
    assert inst._check_dependency_conflicts() is None


def test_a_failure_while_instrumenting_never_raises(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env.setenv("OTEL_ML_STRICT", "0")
    config.reload()
    before = _namespaces()
    env.setattr(lgb_inst, "_ESTIMATOR_WRAPPERS", None)  # patching fails half-way
    tel = instrument()
    assert "instrumentation failed (" in caplog.text
    assert lgb_inst.patched() == {}
    assert all(vars(cls)[k] is v for cls, ns in before.items() for k, v in ns.items())  # the half put back
    LightGBMInstrumentor().uninstrument()

    def broken(env: Any = None) -> Any:
        raise RuntimeError("boom")

    env.setattr(registry.Naming, "from_env", broken)
    instrument()
    assert lgb_inst.patched() == {}
    assert CLF.predict(X[:2]).shape == (2,)
    assert tel.spans() == []
