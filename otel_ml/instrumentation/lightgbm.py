"""Auto-instrumentation for LightGBM: sklearn-API estimators' and native Boosters' predictions become telemetry.

Usage::

    from otel_ml.instrumentation.lightgbm import LightGBMInstrumentor

    LightGBMInstrumentor().instrument()           # or: opentelemetry-instrument python app.py
    clf.predict_proba(X)                          # span "predict_proba LGBMClassifier" + ml.* metrics
    booster.predict(X)                            # span "predict Booster"
    otel_ml.set_model_info(booster, name="churn", version="3")   # optional; stored beside it, not on it

What is measured, with ``ml.model.framework=lightgbm`` and only the outermost call counting:

- ``predict`` and ``predict_proba`` of ``LGBMClassifier``, ``LGBMRegressor`` and ``LGBMRanker`` (and subclasses
  that do not override them): the same telemetry as the scikit-learn instrumentor gives them (they are
  scikit-learn estimators; with both instrumentors active each call is measured once). The Booster call inside
  is part of it.
- ``Booster.predict``: the name is ``Booster`` unless ``set_model_info``, an ``ml_model_name`` attribute or
  ``OTEL_ML_MODEL_NAMES`` says otherwise; task and output come from the ``objective`` parameter (or an alias of
  it), read once per Booster: ``binary`` outputs are the positive class's probability and ``multiclass`` /
  ``multiclassova`` (and their aliases) rows of class probabilities (confidence, predicted classes ``0..k-1``);
  ranking objectives give scores recorded as values; every other built-in objective (``regression`` is the
  default) regression values; a custom (callable) objective is read as ``auto``. ``raw_score=True`` calls are
  measured without reading their output; calls for leaf indices or contributions (``pred_leaf``,
  ``pred_contrib``) are explanations, not predictions, and pass through.

Inputs sketched: numpy arrays and pandas DataFrames (feature names from the Booster's ``feature_name()`` or the
estimator's ``feature_names_in_``); sparse matrices are counted as skipped (``reason=input_sparse``). A file
path is not read: it is counted as skipped and the batch size is the first dimension of the result.
Configuration: ``OTEL_ML_LIGHTGBM_ENABLED`` and the variables of
:mod:`otel_ml.instrumentation.environment_variables`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from otel_ml import semconv
from otel_ml._core import outputs
from otel_ml._core.recorder import Recorder
from otel_ml.instrumentation import registry
from otel_ml.instrumentation.environment_variables import OTEL_ML_LIGHTGBM_ENABLED
from otel_ml.instrumentation.library import (
    Library,
    LibraryInstrumentor,
    estimator_wrapper,
    identity,
    measure,
    model_spec,
    nothing,
    whole,
)
from otel_ml.instrumentation.package import _instruments_lightgbm

FRAMEWORK = semconv.FRAMEWORK_LIGHTGBM
NAME = "lightgbm.Booster"
"""A native Booster's default model name."""
ESTIMATORS = ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")
"""The sklearn-API classes whose predictions are measured."""
ESTIMATOR_METHODS = ("predict", "predict_proba")
OPERATION = "predict"
_OBJECTIVE_KEYS = ("objective", "objective_type", "app", "application", "loss")  # LightGBM's aliases
_BINARY = frozenset({"binary"})
_MULTICLASS = frozenset({"multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr", "one_vs_all"})
_RANKING = frozenset({"lambdarank", "rank_xendcg", "xendcg", "xe_ndcg", "xe_ndcg_mart", "xendcg_mart"})
# Booster.predict(data, start_iteration, num_iteration, raw_score, pred_leaf, pred_contrib, ...)
_RAW_SCORE = ("raw_score", 3)
_EXPLANATIONS = (("pred_leaf", 4), ("pred_contrib", 5))


def _reading(objective: object) -> tuple[str | None, str]:
    """(task, output kind) of the predictions of a Booster trained with ``objective``."""
    if not isinstance(objective, str):  # a custom objective function
        return None, outputs.AUTO
    if objective in _BINARY or objective in _MULTICLASS:
        return semconv.TASK_CLASSIFICATION, outputs.PROBA
    if objective in _RANKING:
        return None, outputs.REGRESSION
    return semconv.TASK_REGRESSION, outputs.REGRESSION


def _objective(booster: Any) -> object:
    """The Booster's ``objective`` parameter under any of its names; LightGBM's default is ``regression``."""
    params = getattr(booster, "params", None) or {}
    return next((params[key] for key in _OBJECTIVE_KEYS if key in params), "regression")


def _flag(args: tuple[Any, ...], kwargs: dict[str, Any], name_position: tuple[str, int]) -> bool:
    """Whether ``Booster.predict``'s boolean option is set, by keyword or by position."""
    name, position = name_position
    return bool(kwargs.get(name) or (len(args) > position and args[position]))


def _booster_recorder(booster: Any) -> Callable[[registry.Naming], Recorder]:
    """Builds a Booster's Recorder on its first measured call: identity, and task/output from its objective."""

    def build(naming: registry.Naming) -> Recorder:
        task, output = _reading(_objective(booster))
        return Recorder(model_spec(identity(naming, booster, NAME), FRAMEWORK, task, output, booster.feature_name()))

    return build


def _booster_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Booster.predict``: telemetry for an outermost prediction (not for leaf indices or contributions)."""
    if not _library.measuring(instance) or any(_flag(args, kwargs, flag) for flag in _EXPLANATIONS):
        return wrapped(*args, **kwargs)
    rec = _library.state(instance, _booster_recorder(instance))
    x = args[0] if args else kwargs.get("data")
    call = rec.start(OPERATION, x) if rec else None
    if rec is None or call is None:
        return wrapped(*args, **kwargs)
    output = nothing if _flag(args, kwargs, _RAW_SCORE) else whole
    return measure(
        rec, call, instance, wrapped, args, kwargs, output, rows_from_result=isinstance(x, (str, os.PathLike))
    )


def _patch(library: Library, module: Any) -> None:
    """Post-import hook of ``lightgbm``: wrap ``Booster.predict`` and the estimators' predict methods."""
    library.wrap(module.Booster, OPERATION, _booster_wrapper)
    library.wrap_estimators(module, ESTIMATORS, _ESTIMATOR_WRAPPERS)


_library = Library("lightgbm", "LightGBM", _patch)
_ESTIMATOR_WRAPPERS = {name: estimator_wrapper(_library, name) for name in ESTIMATOR_METHODS}


def patched() -> dict[tuple[type, str], Any]:
    """Every attribute currently patched, with its original object (for tests and diagnostics)."""
    return _library.patched()


class LightGBMInstrumentor(LibraryInstrumentor):
    """Instruments LightGBM predictions (see the module documentation). Never raises."""

    _library = _library
    _enabled = OTEL_ML_LIGHTGBM_ENABLED
    _instruments = _instruments_lightgbm
