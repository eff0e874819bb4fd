"""``SklearnInstrumentor``: one span per outermost call, Pipelines and meta-estimators, identity, exact undo."""

from __future__ import annotations

import gc
import inspect
import io
import pickle
import subprocess
import sys
import textwrap
import types
import weakref
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier, VotingClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

import otel_ml
from otel_ml import config, semconv
from otel_ml.instrumentation import registry
from otel_ml.instrumentation import sklearn as sk
from otel_ml.instrumentation.sklearn import SklearnInstrumentor
from otel_ml.testing import InMemoryTelemetry

X, Y = load_breast_cancer(return_X_y=True)
IRIS = load_iris(as_frame=True)
XI, YI = IRIS.data, IRIS.target  # a DataFrame: feature_names_in_ is set


def _lr() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)


@pytest.fixture
def instrument(instrumenting: Callable[[Any], Callable[..., InMemoryTelemetry]]) -> Callable[..., InMemoryTelemetry]:
    """``instrument(**kwargs)`` instruments scikit-learn for this test; undone at teardown whatever happens."""
    return instrumenting(SklearnInstrumentor())


@pytest.fixture
def sk_tel(instrument: Callable[..., InMemoryTelemetry]) -> InMemoryTelemetry:
    """Instrumented with the defaults."""
    return instrument()


def _attrs(span: Any) -> dict[str, Any]:
    """A span's attributes without the per-call ones (prediction id, confidence)."""
    variable = (semconv.ML_PREDICTION_ID, semconv.ML_PREDICTION_CONFIDENCE_MEAN, semconv.ML_PREDICTION_CONFIDENCE_MIN)
    return {k: v for k, v in span.attributes.items() if k not in variable}


def _counts(tel: InMemoryTelemetry) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[semconv.ML_MODEL_NAME], p.attributes[semconv.ML_OPERATION]): p.value
        for p in tel.points(semconv.PREDICTION_COUNT)
    }


def test_every_predict_method_is_one_span_with_exact_attributes(sk_tel: InMemoryTelemetry) -> None:
    clf = LogisticRegression(max_iter=200).fit(XI, YI)
    clf.predict(XI[:10])
    clf.predict_proba(XI[:20])
    clf.predict_log_proba(XI[:30])
    clf.decision_function(XI[:40])
    assert clf.score(XI, YI) > 0.9
    spans = sk_tel.spans()
    assert [s.name for s in spans] == [
        f"{op} LogisticRegression"
        for op in ("predict", "predict_proba", "predict_log_proba", "decision_function", "score")
    ]
    base = {
        semconv.ML_MODEL_NAME: "LogisticRegression",
        semconv.ML_MODEL_VERSION: "",
        semconv.ML_MODEL_FRAMEWORK: "sklearn",
        semconv.ML_MODEL_TASK: "classification",
    }
    assert _attrs(spans[0]) == {**base, semconv.ML_OPERATION: "predict", semconv.ML_BATCH_SIZE: 10}
    assert _attrs(spans[4]) == {**base, semconv.ML_OPERATION: "score", semconv.ML_BATCH_SIZE: 150}
    assert [s.parent for s in spans] == [None] * 5  # predict -> decision_function inside is the same call
    expected_conf = clf.predict_proba(XI[:20]).max(axis=1)
    assert spans[1].attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(expected_conf.min())
    assert "ml.prediction.confidence.mean" not in spans[4].attributes  # score() returns a metric, not predictions
    collected = sk_tel.metrics()
    assert _counts(sk_tel) == {
        ("LogisticRegression", "predict"): 10,
        ("LogisticRegression", "predict_proba"): 20 + 20,  # the extra call just above
        ("LogisticRegression", "predict_log_proba"): 30,
        ("LogisticRegression", "decision_function"): 40,
        ("LogisticRegression", "score"): 150,
    }
    classes = {
        p.attributes[semconv.ML_PREDICTION_CLASS]: p.value
        for p in sk_tel.points(semconv.PREDICTION_CLASS, collected)
        if p.attributes[semconv.ML_OPERATION] == "predict"
    }
    labels, n = np.unique(clf.predict(XI[:10]), return_counts=True)
    assert classes == {str(k): int(v) for k, v in zip(labels, n, strict=True)}
    assert not any(p.attributes[semconv.ML_OPERATION] == "score" for p in sk_tel.points(semconv.PREDICTION_CLASS))


def test_class_labels_follow_a_refit_with_new_classes(sk_tel: InMemoryTelemetry) -> None:
    """The recorder converts an estimator's ``classes_`` to Python labels once per array: refitting with other
    labels (a new ``classes_``) changes the labels from the next call on, for single rows and batches alike."""
    expected: dict[str, int] = {}
    clf = LogisticRegression(max_iter=500)
    for y in (Y, np.where(Y == 1, "benign", "malignant")):
        clf.fit(X, y)
        for rows in (X[:1], X[19:20], X[15:25]):
            clf.predict_proba(rows)
            for label in clf.classes_[clf.predict_proba(rows).argmax(axis=1)]:
                expected[str(label)] = expected.get(str(label), 0) + 2  # both predict_proba calls
    classes = {
        p.attributes[semconv.ML_PREDICTION_CLASS]: p.value
        for p in sk_tel.points(semconv.PREDICTION_CLASS)
        if p.attributes[semconv.ML_OPERATION] == "predict_proba"
    }
    assert set(classes) == {"0", "1", "benign", "malignant"}
    assert classes == expected


def test_regressor_outputs_are_values(sk_tel: InMemoryTelemetry) -> None:
    xd, yd = load_diabetes(return_X_y=True)
    reg = Ridge().fit(xd, yd)
    out = reg.predict(xd[:25])
    (span,) = sk_tel.spans()
    assert _attrs(span)[semconv.ML_MODEL_TASK] == "regression"
    (values,) = sk_tel.points(semconv.PREDICTION_VALUE)
    assert values.count == 25
    assert values.sum == pytest.approx(float(out.sum()))


def test_pipeline_is_one_span_listing_its_steps_with_feature_sketches(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    env.setenv("OTEL_ML_WARMUP_ROWS", "50")
    env.setenv("OTEL_ML_SKETCH_BUFFER_ROWS", "10")
    config.reload()
    tel = instrument()
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=200))]).fit(XI, YI)
    for start in range(0, 150, 30):
        pipe.predict_proba(XI[start : start + 30])
    spans = tel.spans()
    assert [s.name for s in spans] == ["predict_proba LogisticRegression"] * 5
    assert spans[0].attributes[semconv.ML_PIPELINE_STEPS] == ("scale", "clf")
    assert _counts(tel) == {("LogisticRegression", "predict_proba"): 150}  # steps are not counted again
    ranks = tel.points(semconv.FEATURE_RANK)
    assert {p.attributes[semconv.ML_FEATURE_NAME] for p in ranks} == set(IRIS.feature_names)
    assert {p.count for p in ranks} == {100}  # 150 rows minus the 50 warm-up rows, per feature


def test_column_transformer_pipeline(sk_tel: InMemoryTelemetry) -> None:
    ct = ColumnTransformer([("petal", StandardScaler(), ["petal length (cm)", "petal width (cm)"])], remainder="drop")
    pipe = make_pipeline(ct, DecisionTreeClassifier(random_state=0)).fit(XI, YI)
    pipe.predict(XI)
    (span,) = sk_tel.spans()
    assert span.name == "predict DecisionTreeClassifier"
    assert span.attributes[semconv.ML_PIPELINE_STEPS] == ("columntransformer", "decisiontreeclassifier")
    assert _counts(sk_tel) == {("DecisionTreeClassifier", "predict"): 150}


def test_step_spans_are_children_of_the_pipeline_span(instrument: Callable[..., InMemoryTelemetry]) -> None:
    tel = instrument(pipeline_step_spans=True)
    inner = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=200))])
    pipe = Pipeline([("impute", StandardScaler()), ("model", inner)]).fit(XI, YI)
    pipe.predict(XI[:7])
    by_name = {s.name: s for s in tel.spans()}
    assert list(by_name) == [
        "transform impute",
        "transform model__scale",
        "predict model__clf",
        "predict model",
        "predict LogisticRegression",
    ]
    root = by_name["predict LogisticRegression"]
    assert root.attributes[semconv.ML_PIPELINE_STEPS] == ("impute", "model")
    assert by_name["transform impute"].parent.span_id == root.context.span_id  # type: ignore[union-attr]
    assert by_name["predict model"].parent.span_id == root.context.span_id  # type: ignore[union-attr]
    model_id = by_name["predict model"].context.span_id
    assert by_name["predict model__clf"].parent.span_id == model_id  # type: ignore[union-attr]
    assert dict(by_name["predict model__clf"].attributes) == {
        semconv.ML_PIPELINE_STEP: "model__clf",
        semconv.ML_OPERATION: "predict",
    }
    assert _counts(tel) == {("LogisticRegression", "predict"): 7}  # child spans carry no metrics
    StandardScaler().fit(XI).transform(XI)  # a transformer on its own is not a step: nothing
    assert len(tel.spans()) == 5


def test_step_spans_from_the_environment(instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_SKLEARN_STEP_SPANS", "true")
    tel = instrument()
    make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(XI, YI).predict(XI[:3])
    assert [s.name for s in tel.spans()] == [
        "transform standardscaler",
        "predict logisticregression",
        "predict LogisticRegression",
    ]


def test_meta_estimators_count_once_and_not_while_fitting(sk_tel: InMemoryTelemetry) -> None:
    search = GridSearchCV(LogisticRegression(max_iter=300), {"C": [0.1, 1.0]}, cv=3).fit(XI, YI)
    calibrated = CalibratedClassifierCV(SVC(), cv=3).fit(XI, YI)
    assert sk_tel.spans() == []  # the 6 + 3 scoring/calibration predictions made while fitting are not counted
    search.predict(XI[:5])
    calibrated.predict_proba(XI[:6])
    hard = VotingClassifier([("lr", LogisticRegression(max_iter=300)), ("svc", SVC())], voting="hard").fit(XI, YI)
    soft = VotingClassifier([("lr", LogisticRegression(max_iter=300)), ("dt", DecisionTreeClassifier())], voting="soft")
    soft.fit(XI, YI)
    assert not hasattr(hard, "predict_proba")
    hard.predict(XI[:7])
    soft.predict_proba(XI[:8])
    assert [(s.name, s.attributes[semconv.ML_BATCH_SIZE]) for s in sk_tel.spans()] == [
        ("predict GridSearchCV", 5),
        ("predict_proba CalibratedClassifierCV", 6),
        ("predict VotingClassifier", 7),
        ("predict_proba VotingClassifier", 8),
    ]
    assert {s.attributes[semconv.ML_MODEL_TASK] for s in sk_tel.spans()} == {"classification"}


def test_available_if_methods_keep_their_availability(sk_tel: InMemoryTelemetry) -> None:
    assert isinstance(inspect.getattr_static(SVC, "predict_proba"), registry.ClassWrapper)  # the descriptor, wrapped
    plain = SVC().fit(XI, YI)  # probability=False
    assert not hasattr(plain, "predict_proba")
    with pytest.raises(AttributeError):
        plain.predict_proba(XI[:1])
    assert not hasattr(make_pipeline(StandardScaler(), SVC()).fit(XI, YI), "predict_proba")
    assert hasattr(make_pipeline(StandardScaler(), LogisticRegression()).fit(XI, YI), "predict_proba")
    assert sk_tel.spans() == []


def test_a_forest_in_a_thread_pool_is_one_call(sk_tel: InMemoryTelemetry) -> None:
    forest = RandomForestClassifier(n_estimators=8, n_jobs=2, random_state=0).fit(XI, YI)
    proba = forest.predict_proba(XI)
    assert [s.name for s in sk_tel.spans()] == ["predict_proba RandomForestClassifier"]  # not 8 tree spans
    (conf,) = sk_tel.points(semconv.PREDICTION_CONFIDENCE)
    assert conf.count == 150
    assert conf.sum == pytest.approx(float(proba.max(axis=1).sum()))


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_a_forests_trees_never_enter_the_wrapper(
    sk_tel: InMemoryTelemetry, entries: Callable[[Any], list[object]], n_jobs: int | None
) -> None:
    """Inside a measured call the class patches call the trees' own methods directly (``registry.wrapping``):
    the wrapper's code runs once per forest call, not once per tree, in pool threads too."""
    forest = RandomForestClassifier(n_estimators=12, n_jobs=n_jobs, random_state=0).fit(XI, YI)
    entered = entries(sk)
    forest.predict_proba(XI)
    calls = len(entered)
    assert [s.name for s in sk_tel.spans()] == ["predict_proba RandomForestClassifier"]
    assert calls <= 2  # the forest's own wrapper (+ joblib.Parallel's, which must see measured calls)
    forest.estimators_[0].predict_proba(XI)  # a tree on its own is a measured call again
    assert len(entered) > calls and len(sk_tel.spans()) == 2
    assert registry.wrapping.get() is True and registry.active_call.get() is None


def test_plain_methods_stay_functions_so_a_forests_trees_look_them_up_at_full_speed(sk_tel: InMemoryTelemetry) -> None:
    """A function in the class binds in C; a wrapt proxy's ``__get__`` costs ~10x that on every lookup, and a
    forest looks ``predict_proba`` and ``fit`` up on each of its trees, every call."""
    for owner, name in ((DecisionTreeClassifier, "predict_proba"), (DecisionTreeClassifier, "fit")):
        patch = inspect.getattr_static(owner, name)
        assert inspect.isfunction(patch) and registry.is_patch(patch)
        assert sk.patched()[(owner, name)] is patch.__wrapped__
    tree = DecisionTreeClassifier(random_state=0).fit(XI, YI)
    bound = tree.predict_proba
    assert type(bound) is types.MethodType
    assert bound.__func__ is inspect.getattr_static(DecisionTreeClassifier, "predict_proba")
    assert "sample_weight" in inspect.signature(tree.fit).parameters  # has_fit_parameter reads the original's


class Doubler(ClassifierMixin, BaseEstimator):
    """An estimator outside scikit-learn, defined before instrumentation."""

    def fit(self, x: Any, y: Any) -> Doubler:
        self.classes_ = np.unique(y)
        return self

    def predict(self, x: Any) -> np.ndarray:
        return self.classes_[np.zeros(len(x), dtype=int)]


def test_estimators_outside_sklearn_before_and_after_instrumenting(sk_tel: InMemoryTelemetry) -> None:
    class Later(Doubler):
        """Defined after instrumentation: patched by the __init_subclass__ hook; calls super()."""

        def predict(self, x: Any) -> np.ndarray:
            return super().predict(x)

    assert registry.is_patch(inspect.getattr_static(Later, "predict"))
    Doubler().fit(XI, YI).predict(XI[:4])
    Later().fit(XI, YI).predict(XI[:5])
    assert Later().fit(XI, YI).score(XI[::25], YI[::25]) == pytest.approx(1 / 3)  # ClassifierMixin.score
    assert [(s.name, s.attributes[semconv.ML_BATCH_SIZE]) for s in sk_tel.spans()] == [
        ("predict Doubler", 4),
        ("predict Later", 5),
        ("score Later", 6),
    ]


def test_failures_are_recorded_and_reraised(sk_tel: InMemoryTelemetry) -> None:
    with pytest.raises(NotFittedError):
        LogisticRegression().predict(XI[:2])
    (span,) = sk_tel.spans()
    assert span.attributes[semconv.ERROR_TYPE] == "sklearn.exceptions.NotFittedError"
    assert span.status.status_code.name == "ERROR"


def test_model_identity(instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_MODEL_NAMES", "RandomForestClassifier=forest:3, DecisionTreeClassifier=tree, bad-item")
    tel = instrument()
    named = LogisticRegression(max_iter=200).fit(XI, YI)
    otel_ml.set_model_info(named, name="fraud", version="1.4.0")
    attributed = LogisticRegression(max_iter=200).fit(XI, YI)
    attributed.ml_model_version = "2024-06"  # a plain attribute pickles without otel-ml
    pipe = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=3, random_state=0)).fit(XI, YI)
    final_named = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(XI, YI)
    otel_ml.set_model_info(final_named[-1], name="by-step", version="9")
    for model in (named, attributed, pipe, DecisionTreeClassifier().fit(XI, YI), final_named):
        model.predict(XI[:2])
    got = [(s.attributes[semconv.ML_MODEL_NAME], s.attributes[semconv.ML_MODEL_VERSION]) for s in tel.spans()]
    assert got == [
        ("fraud", "1.4.0"),
        ("LogisticRegression", "2024-06"),
        ("forest", "3"),
        ("tree", ""),
        ("by-step", "9"),
    ]
    otel_ml.set_model_info(named, name="renamed")  # takes effect on the next call
    named.predict(XI[:2])
    assert tel.spans()[-1].name == "predict renamed"


def test_references_from_set_model_info_and_the_environment(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch, tmp_path: Any, caplog: Any
) -> None:
    first, second = otel_ml.Reference.from_data(XI[:75]), otel_ml.Reference.from_data(XI[75:])
    first.save(tmp_path / "first.json")
    second.save(tmp_path / "second.json")
    env.setenv("OTEL_ML_MODEL_REFERENCES", f"iris={tmp_path / 'second.json'},Ridge={tmp_path / 'missing.json'}")
    tel = instrument()
    by_path = LogisticRegression(max_iter=200).fit(XI, YI)
    otel_ml.set_model_info(by_path, reference=tmp_path / "first.json")
    by_env = LogisticRegression(max_iter=200).fit(XI, YI)
    otel_ml.set_model_info(by_env, name="iris")
    by_path.predict(XI[:3])
    by_env.predict(XI[:3])
    Ridge().fit(XI, YI).predict(XI[:3])  # a reference that cannot be read: logged, the model still measured
    ids = [s.attributes.get(semconv.ML_REFERENCE_ID) for s in tel.spans()]
    assert ids == [first.id, second.id, None]
    assert "cannot load reference" in caplog.text


def test_set_model_info_stores_nothing_on_the_model() -> None:
    model = LogisticRegression(max_iter=200).fit(XI, YI)
    before = {p: pickle.dumps(model, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)}
    keys = set(vars(model))
    otel_ml.set_model_info(model, name="fraud", version="1")
    assert set(vars(model)) == keys
    assert {p: pickle.dumps(model, protocol=p) for p in before} == before
    with pytest.raises(ValueError, match="output must be one of"):
        otel_ml.set_model_info(model, output="probabilities")
    with pytest.raises(ValueError, match="task must be"):
        otel_ml.set_model_info(model, task="ranking")


class _Slotted:
    """No ``__weakref__`` slot: otel-ml cannot keep settings beside it (estimators always have one)."""

    __slots__ = ()


def test_settings_and_recorders_go_away_with_their_model(sk_tel: InMemoryTelemetry) -> None:
    model = LogisticRegression(max_iter=200).fit(XI, YI)
    otel_ml.set_model_info(model, name="short-lived")
    model.predict(XI[:2])
    entries = len(registry._entries)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # neither the settings nor the Recorder keep the estimator alive
    assert len(registry._entries) == entries - 1


def test_a_calls_waiting_metrics_keep_neither_the_model_nor_its_recorder_alive(sk_tel: InMemoryTelemetry) -> None:
    """A call's single-value metrics wait for the collection; the record refers to the operation's attributes
    and instruments only, so a discarded model's Recorder (and its input monitor) goes with the model."""
    from otel_ml._core import runtime

    model = LogisticRegression(max_iter=200).fit(XI, YI)
    model.predict_proba(XI[:1])
    model.predict_proba(XI[:1])
    rec = weakref.ref(registry.cached(model, "sklearn"))
    assert rec() is not None and len(runtime.get().aggregator.deferred) == 2
    del model
    gc.collect()
    assert rec() is None
    (count,) = sk_tel.points(semconv.PREDICTION_COUNT)  # the waiting records still count
    assert count.value == 2
    with pytest.raises(TypeError, match="cannot be weakly referenced"):
        otel_ml.set_model_info(_Slotted(), name="slotted")


_LOAD_WITHOUT_OTEL_ML = """
import sys, pickle, io
sys.modules["otel_ml"] = None  # any import of otel_ml now fails
import joblib
from sklearn.datasets import load_breast_cancer
X, _ = load_breast_cancer(return_X_y=True)
a, b = sys.stdin.buffer.read().split(b"--JOBLIB--")
print(type(pickle.loads(a)).__name__, int(pickle.loads(a).predict(X[:50]).sum()),
      int(joblib.load(io.BytesIO(b)).predict(X[:50]).sum()))
"""


def _dumps(model: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return pickle.dumps(model) + b"--JOBLIB--" + buf.getvalue()


def test_pickles_are_byte_identical_and_load_without_otel_ml(instrument: Callable[..., InMemoryTelemetry]) -> None:
    model = _lr()
    plain = _dumps(model)
    tel = instrument(pipeline_step_spans=True)
    otel_ml.set_model_info(model, name="cancer", version="1")
    expected = int(model.predict(X[:50]).sum())
    assert len(tel.spans()) == 3  # the Pipeline's span and its two step spans
    payload = _dumps(model)
    assert payload == plain
    assert b"otel_ml" not in payload and b"wrapt" not in payload
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_OTEL_ML], input=payload, capture_output=True, timeout=120, check=True
    )
    assert out.stdout.decode().split() == ["Pipeline", str(expected), str(expected)]


def _class_dicts() -> dict[type, dict[str, Any]]:
    """A copy of the namespace of every estimator class, every class in their MROs, and joblib.Parallel."""
    classes: set[type] = {joblib.Parallel}
    for cls in (BaseEstimator, *sk._subclasses(BaseEstimator)):
        classes.update(cls.__mro__)
    return {cls: dict(vars(cls)) for cls in classes}


def test_uninstrument_restores_every_attribute_exactly(instrument: Callable[..., InMemoryTelemetry]) -> None:
    make_pipeline(StandardScaler(), LogisticRegression()).fit(XI, YI)  # warm caches scikit-learn fills lazily
    before = _class_dicts()
    tel = instrument(pipeline_step_spans=True)
    inst = SklearnInstrumentor()
    inst.instrument()  # twice is once
    patched = sk.patched()
    assert len(patched) > 100
    assert (BaseEstimator, "__init_subclass__") in patched and (joblib.Parallel, "__call__") in patched
    assert all(owner.__dict__[name] is not original for (owner, name), original in patched.items())
    make_pipeline(StandardScaler(), LogisticRegression()).fit(XI, YI).predict(XI[:3])  # patches transform
    assert (StandardScaler, "transform") in sk.patched()
    patched = sk.patched()
    assert len(tel.spans()) == 3
    inst.uninstrument()
    assert sk.patched() == {}
    after = _class_dicts()
    assert after.keys() == before.keys()
    for cls, namespace in before.items():
        assert after[cls].keys() == namespace.keys(), cls
        assert all(after[cls][k] is v for k, v in namespace.items()), cls
    for (owner, name), original in patched.items():
        assert inspect.getattr_static(owner, name) is original or original is None
    assert "__init_subclass__" not in vars(BaseEstimator)
    make_pipeline(StandardScaler(), LogisticRegression()).fit(XI, YI).predict(XI[:3])
    assert len(tel.spans()) == 3  # nothing new


def test_instrument_model_and_the_instrumentor_together_count_once(sk_tel: InMemoryTelemetry) -> None:
    model = otel_ml.instrument_model(LogisticRegression(max_iter=200).fit(XI, YI), name="manual")
    model.predict_proba(XI[:4])
    assert [s.name for s in sk_tel.spans()] == ["predict_proba manual"]


def test_disabled_and_switched_off(instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_SKLEARN_ENABLED", "false")
    tel = instrument()
    assert sk.patched() == {}
    LogisticRegression(max_iter=200).fit(XI, YI).predict(XI[:2])
    assert tel.spans() == []


def test_an_internal_failure_while_instrumenting_never_raises(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    env.setenv("OTEL_ML_STRICT", "false")
    config.reload()

    def broken(env: Any = None) -> Any:
        raise RuntimeError("boom")

    env.setattr(sk.registry.Naming, "from_env", broken)
    tel = instrument()
    assert sk.patched() == {}
    assert LogisticRegression(max_iter=200).fit(XI, YI).predict(XI[:2]).shape == (2,)
    assert tel.spans() == []


_LATER_IMPORTS = """
import inspect, sys
from otel_ml.instrumentation import registry
from otel_ml.instrumentation.sklearn import SklearnInstrumentor, PREDICT_METHODS
SklearnInstrumentor().instrument()
assert "sklearn" not in sys.modules  # instrumenting does not import scikit-learn
from sklearn.utils import all_estimators
missed = [
    f"{cls.__name__}.{m}" for _, cls in all_estimators() for m in PREDICT_METHODS
    if m in dir(cls) and not registry.is_patch(inspect.getattr_static(cls, m))
]
print(len(all_estimators()), missed)
"""


def test_estimator_modules_imported_after_instrumenting_are_patched() -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_LATER_IMPORTS)], capture_output=True, timeout=120, check=True
    )
    count, missed = out.stdout.decode().split(" ", 1)
    assert int(count) > 150
    assert missed.strip() == "[]"
