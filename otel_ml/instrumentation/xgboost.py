"""Auto-instrumentation for XGBoost: sklearn-API estimators' and native Boosters' predictions become telemetry.

Usage::

    from otel_ml.instrumentation.xgboost import XGBoostInstrumentor

    XGBoostInstrumentor().instrument()            # or: opentelemetry-instrument python app.py
    clf.predict_proba(X)                          # span "predict_proba XGBClassifier" + ml.* metrics
    booster.inplace_predict(X)                    # span "inplace_predict Booster"
    otel_ml.set_model_info(booster, name="fraud", version="7")   # optional; stored beside it, not on it

What is measured, with ``ml.model.framework=xgboost`` and only the outermost call counting:

- ``predict`` and ``predict_proba`` of ``XGBClassifier``, ``XGBRegressor``, ``XGBRFClassifier``,
  ``XGBRFRegressor`` and ``XGBRanker`` (and subclasses that do not override them): the same telemetry as the
  scikit-learn instrumentor gives them (they are scikit-learn estimators; with both instrumentors active each
  call is measured once). The Booster call inside is part of it.
- ``Booster.predict(DMatrix)`` and ``Booster.inplace_predict(X)``: the name is ``Booster`` unless
  ``set_model_info``, an ``ml_model_name`` attribute or ``OTEL_ML_MODEL_NAMES`` says otherwise; task and output
  come from the objective, read once per Booster from its configuration: ``binary:logistic`` and
  ``multi:softprob`` outputs are probabilities (confidence, predicted classes ``0..k-1``), ``binary:logitraw``
  scores, ``binary:hinge`` and ``multi:softmax`` labels, ``reg:*``, ``count:*`` and ``survival:*`` regression
  values, ``rank:*`` scores recorded as values; other (custom) objectives are read as ``auto``.
  ``output_margin=True`` / ``predict_type="margin"`` calls are measured without reading their output; calls for
  leaf indices, contributions or interactions (``pred_leaf``, ``pred_contribs``, ``pred_interactions``) are
  explanations, not predictions, and pass through.

Inputs sketched: what ``inplace_predict`` and the estimators take (numpy arrays, pandas DataFrames; feature
names from the Booster's ``feature_names`` or ``feature_names_in_``). A ``DMatrix`` holds its data in XGBoost's
own memory and is not read: it is counted as a skipped input (``otel_ml.telemetry.dropped{reason=input_type}``)
and the batch size is the first dimension of the result. Configuration: ``OTEL_ML_XGBOOST_ENABLED`` and the
variables of :mod:`otel_ml.instrumentation.environment_variables`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from otel_ml import semconv
from otel_ml._core import outputs
from otel_ml._core.recorder import Recorder
from otel_ml.instrumentation import registry
from otel_ml.instrumentation.environment_variables import OTEL_ML_XGBOOST_ENABLED
from otel_ml.instrumentation.library import (
    Library,
    LibraryInstrumentor,
    Wrapper,
    estimator_wrapper,
    identity,
    measure,
    model_spec,
    nothing,
    whole,
)
from otel_ml.instrumentation.package import _instruments_xgboost

FRAMEWORK = semconv.FRAMEWORK_XGBOOST
NAME = "xgboost.Booster"
"""A native Booster's default model name."""
ESTIMATORS = ("XGBClassifier", "XGBRegressor", "XGBRFClassifier", "XGBRFRegressor", "XGBRanker")
"""The sklearn-API classes whose predictions are measured."""
ESTIMATOR_METHODS = ("predict", "predict_proba")
BOOSTER_METHODS = ("predict", "inplace_predict")
_EXPLANATIONS = ("pred_leaf", "pred_contribs", "pred_interactions")

_dmatrix: type = type(None)  # xgboost.DMatrix once xgboost is imported


def _reading(objective: str) -> tuple[str | None, str]:
    """(task, output kind) of the predictions of a Booster trained with ``objective``."""
    if objective in ("binary:logistic", "multi:softprob"):
        return semconv.TASK_CLASSIFICATION, outputs.PROBA
    if objective == "binary:logitraw":
        return semconv.TASK_CLASSIFICATION, outputs.SCORES
    if objective in ("binary:hinge", "multi:softmax"):
        return semconv.TASK_CLASSIFICATION, outputs.LABELS
    if objective.startswith(("reg:", "count:", "survival:")):
        return semconv.TASK_REGRESSION, outputs.REGRESSION
    if objective.startswith("rank:"):
        return None, outputs.REGRESSION
    return None, outputs.AUTO


def _objective(booster: Any) -> str:
    """The Booster's objective name, from its JSON configuration."""
    return str(json.loads(booster.save_config())["learner"]["objective"]["name"])


def _booster_recorder(booster: Any) -> Callable[[registry.Naming], Recorder]:
    """Builds a Booster's Recorder on its first measured call: identity, and task/output from its objective."""

    def build(naming: registry.Naming) -> Recorder:
        task, output = _reading(_objective(booster))
        spec = model_spec(identity(naming, booster, NAME), FRAMEWORK, task, output, booster.feature_names)
        return Recorder(spec)

    return build


def _booster_wrapper(operation: str) -> Wrapper:
    """``Booster.predict`` / ``Booster.inplace_predict`` (keyword-only options in both)."""

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not _library.measuring(instance) or any(kwargs.get(flag) for flag in _EXPLANATIONS):
            return wrapped(*args, **kwargs)
        rec = _library.state(instance, _booster_recorder(instance))
        x = args[0] if args else kwargs.get("data")
        call = rec.start(operation, x) if rec else None
        if rec is None or call is None:
            return wrapped(*args, **kwargs)
        margin = kwargs.get("output_margin") or kwargs.get("predict_type", "value") == "margin"
        return measure(
            rec,
            call,
            instance,
            wrapped,
            args,
            kwargs,
            nothing if margin else whole,
            rows_from_result=isinstance(x, _dmatrix),
        )

    return wrapper


def _patch(library: Library, module: Any) -> None:
    """Post-import hook of ``xgboost``: wrap the Booster's and the estimators' predict methods."""
    global _dmatrix
    _dmatrix = module.DMatrix
    for name in BOOSTER_METHODS:
        library.wrap(module.Booster, name, _BOOSTER_WRAPPERS[name])
    library.wrap_estimators(module, ESTIMATORS, _ESTIMATOR_WRAPPERS)


_library = Library("xgboost", "XGBoost", _patch)
_BOOSTER_WRAPPERS = {name: _booster_wrapper(name) for name in BOOSTER_METHODS}
_ESTIMATOR_WRAPPERS = {name: estimator_wrapper(_library, name) for name in ESTIMATOR_METHODS}


def patched() -> dict[tuple[type, str], Any]:
    """Every attribute currently patched, with its original object (for tests and diagnostics)."""
    return _library.patched()


class XGBoostInstrumentor(LibraryInstrumentor):
    """Instruments XGBoost predictions (see the module documentation). Never raises."""

    _library = _library
    _enabled = OTEL_ML_XGBOOST_ENABLED
    _instruments = _instruments_xgboost
