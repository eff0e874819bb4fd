"""What the XGBoost, LightGBM and ONNX Runtime instrumentors share, so each module only says what to patch.

They follow the scikit-learn instrumentor: methods are patched on the class that defines them
(:func:`otel_ml.instrumentation.registry.class_patch`), never on instances; the patching happens when the library
is imported (at once if it already is, through a post-import hook otherwise, so instrumenting never imports a
library); only the outermost measured call counts (:data:`otel_ml.instrumentation.registry.active_call`), so a
sklearn-API estimator's inner ``Booster.predict`` produces nothing of its own and an estimator that the
scikit-learn instrumentor wraps as well is measured once, by whichever wrapper is outermost; ``uninstrument()``
puts back every original attribute object where our wrapper is still the one in place (a wrapper that someone
wrapped again after us stays, passing straight through while uninstrumented).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Collection
from typing import Any, ClassVar, TypeVar

import wrapt
from opentelemetry.instrumentation.dependencies import DependencyConflict, get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_ml import config, semconv
from otel_ml._core import guard, outputs, setup
from otel_ml._core.monitor import monitor_options
from otel_ml._core.recorder import Call, ModelSpec, Recorder
from otel_ml.instrumentation import registry
from otel_ml.instrumentation import sklearn as sk
from otel_ml.instrumentation.model import _active as _instrument_model_active

_log = logging.getLogger("otel_ml")
_get_active = registry.active_call.get
_get_model_active = _instrument_model_active.get

T = TypeVar("T")
Wrapper = sk.Wrapper


class Library:
    """One instrumented library: its naming while instrumented (``None``: not instrumented) and its patches."""

    def __init__(self, module: str, title: str, patch: Callable[[Library, Any], None]) -> None:
        self.module = module  # the import name, also the registry key of its models' state
        self.title = title
        self.naming: registry.Naming | None = None
        self._patch = patch
        self._patches: dict[tuple[type, str], tuple[Any, Any]] = {}  # (class, attribute) -> (original, wrapper)
        self._lock = threading.RLock()
        self._hooked = False  # wrapt keeps a post-import hook for the process: register it once

    # -- instrument / uninstrument ---------------------------------------------------------------------------
    def start(self, naming: registry.Naming) -> None:
        """Patch the library now if it is imported, else when it is."""
        self.naming = naming
        module = sys.modules.get(self.module)
        if module is not None:
            self._on_import(module)
        elif not self._hooked:
            self._hooked = True
            wrapt.register_post_import_hook(self._on_import, self.module)

    def _on_import(self, module: Any) -> None:
        """Patch the library's classes; runs inside the application's import of it, so it never raises."""
        if self.naming is None:
            return
        try:
            with self._lock:
                self._patch(self, module)
        except Exception as exc:
            _log.warning(
                "otel_ml: %s instrumentation failed (%s); running uninstrumented", self.title, type(exc).__name__
            )
            self.restore()

    def stop(self) -> None:
        """Uninstrument: restore every patched attribute and forget the models' cached state."""
        self.naming = None
        self.restore()
        registry.forget_states(self.module)

    # -- patches ---------------------------------------------------------------------------------------------
    def wrap(self, owner: type, name: str, wrapper: Wrapper) -> None:
        """Wrap ``owner.__dict__[name]`` in place, once; remember the original object for :meth:`restore`."""
        with self._lock:
            original = owner.__dict__.get(name)
            if (owner, name) in self._patches or original is None or not sk._patchable(original):
                return
            wrapped = registry.class_patch(original, wrapper)  # skipped when nested
            setattr(owner, name, wrapped)
            self._patches[(owner, name)] = (original, wrapped)

    def wrap_defined(self, cls: type, name: str, wrapper: Wrapper) -> None:
        """Wrap method ``name`` of ``cls`` on the class of its MRO that defines it, if that is the library's."""
        owner = next((klass for klass in cls.__mro__ if name in klass.__dict__), None)
        if owner is not None and owner.__module__.split(".", 1)[0] == self.module:
            self.wrap(owner, name, wrapper)

    def wrap_estimators(self, module: Any, class_names: Collection[str], wrappers: dict[str, Wrapper]) -> None:
        """Wrap each method of ``wrappers`` on each of the library's estimator classes that ``module`` has."""
        for class_name in class_names:
            cls = getattr(module, class_name, None)
            if isinstance(cls, type):
                for name, wrapper in wrappers.items():
                    self.wrap_defined(cls, name, wrapper)

    def restore(self) -> None:
        """Put back every patched attribute (where it is still ours) and forget the patches."""
        with self._lock:
            for (owner, name), (original, wrapper) in self._patches.items():
                if owner.__dict__.get(name) is wrapper:
                    setattr(owner, name, original)
                else:  # someone wrapped it again after us: leave theirs; ours passes through while uninstrumented
                    _log.debug("otel_ml: %s.%s was re-wrapped by someone else; left in place", owner.__qualname__, name)
            self._patches.clear()

    def patched(self) -> dict[tuple[type, str], Any]:
        """Every attribute currently patched, with its original object (for tests and diagnostics)."""
        with self._lock:
            return {key: original for key, (original, _) in self._patches.items()}

    # -- the hot path ----------------------------------------------------------------------------------------
    def measuring(self, instance: object) -> bool:
        """Whether a call of ``instance`` is a prediction to measure: instrumented, enabled, not nested."""
        return (
            _get_active() is None
            and self.naming is not None
            and instance is not None
            and not config.settings.disabled
            and _get_model_active() is None
        )

    def state(self, model: object, build: Callable[[registry.Naming], T]) -> T | None:
        """``model``'s cached state (built on its first measured call); ``None`` on an internal error."""
        naming = self.naming
        if naming is None:  # uninstrumented since measuring() was asked
            return None
        try:
            return registry.state(model, self.module, lambda: build(naming))
        except Exception as exc:
            guard.internal_error(self.module + "_model", exc)
            return None


def first_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The model input of a ``predict(X, ...)``-like call: its first positional, else first keyword, argument."""
    return args[0] if args else next(iter(kwargs.values()), None)


def whole(result: Any) -> Any:
    """The predictions of a call that returns nothing else."""
    return result


def nothing(result: Any) -> None:
    """No predictions to read (margins, or a result that is not a tensor)."""
    return None


def measure(
    recorder: Recorder,
    call: Call,
    instance: object,
    wrapped: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    output: Callable[[Any], object] = whole,
    classes: Any = None,
    rows_from_result: bool = False,
) -> Any:
    """Run the model as the active call (nested instrumented calls pass through) and record its outcome.

    ``output`` picks the predictions out of the result and must not raise; ``rows_from_result`` takes the batch
    size from the result's first dimension, for inputs whose rows cannot be read cheaply (an XGBoost ``DMatrix``,
    a LightGBM file path).
    """
    tokens = registry.enter(instance)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        registry.leave(tokens)
        recorder.fail(call, exc)
        raise
    registry.leave(tokens)
    if rows_from_result:
        shape = getattr(result, "shape", None)
        if isinstance(shape, tuple) and shape:
            call.batch = int(shape[0])
            call.span.set_attribute(semconv.ML_BATCH_SIZE, call.batch)
    recorder.finish(call, output(result), classes)
    return result


def estimator_wrapper(library: Library, operation: str) -> Wrapper:
    """``predict``/``predict_proba`` of a sklearn-API estimator (``XGBClassifier``, ``LGBMRegressor`` …).

    The Recorder is the one the scikit-learn instrumentor builds for the same estimator (name, task, feature
    names from ``feature_names_in_``; ``ml.model.framework`` from the estimator's package), so the span is the
    same whichever of the two instrumentors measures the call.
    """

    def build(estimator: Any) -> Callable[[registry.Naming], Recorder]:
        """Builds the estimator's Recorder on its first measured call."""
        return lambda naming: sk._build(estimator, sk._Options(False, naming))

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not library.measuring(instance):
            return wrapped(*args, **kwargs)
        rec = library.state(instance, build(instance))
        call = rec.start(operation, first_argument(args, kwargs)) if rec else None
        if rec is None or call is None:
            return wrapped(*args, **kwargs)
        return measure(rec, call, instance, wrapped, args, kwargs, classes=sk._get(instance, "classes_"))

    return wrapper


def identity(naming: registry.Naming, model: object, default: str, version: str = "") -> registry.Identity:
    """``model``'s identity, with ``default`` (and ``version``) where it would get its bare class name (and none).

    A native model's class name says little (XGBoost's and LightGBM's are both ``Booster``), so ``default`` is
    e.g. ``xgboost.Booster`` or an ONNX graph's name; ``OTEL_ML_MODEL_NAMES`` and ``OTEL_ML_MODEL_REFERENCES``
    may use it as well as the class name.
    """
    resolved = naming.resolve([model])
    if resolved.name != type(model).__name__ or not default:  # set_model_info, an attribute or a mapping named it
        return resolved
    name, mapped_version = naming.names.get(default, (default, None))
    reference = resolved.reference
    if reference is None and name in naming.reference_paths:
        reference = naming._load(naming.reference_paths[name])
    return registry.Identity(name, resolved.version or mapped_version or version, reference, resolved.info)


def model_spec(
    identity: registry.Identity,
    framework: str,
    task: str | None,
    output: str,
    feature_names: Collection[str] | None = None,
) -> ModelSpec:
    """The spec of a native model (a Booster, an ONNX session) whose task and output kind it says itself.

    ``otel_ml.set_model_info(model, task=..., output=...)`` wins: a different task drops the model's own output
    kind (regression values, or ``auto``), an ``output`` replaces it.
    """
    info = identity.info
    if info.task is not None and info.task != task:
        task = info.task
        output = outputs.REGRESSION if task == semconv.TASK_REGRESSION else outputs.AUTO
    return ModelSpec(
        name=identity.name,
        version=identity.version,
        framework=framework,
        task=task,
        output=info.output or output,
        classes=info.classes,
        monitor=monitor_options(
            reference=identity.reference, feature_names=list(feature_names) if feature_names is not None else None
        ),
    )


class LibraryInstrumentor(BaseInstrumentor):
    """The ``instrument()``/``uninstrument()`` steps of the XGBoost, LightGBM and ONNX Runtime instrumentors.

    Never raises: a failure is logged and the application runs uninstrumented. otel-ml records into the
    providers given to ``otel_ml.configure`` or, without it, the OpenTelemetry globals (``tracer_provider``/
    ``meter_provider`` keywords are not used).
    """

    _library: ClassVar[Library]
    _enabled: ClassVar[str]  # the OTEL_ML_<LIBRARY>_ENABLED variable
    _instruments: ClassVar[tuple[str, ...]]  # distributions, any one of which in its range will do

    def instrumentation_dependencies(self) -> Collection[str]:
        """The supported distributions; any one of them installed in its range is enough."""
        return self._instruments

    def _check_dependency_conflicts(self) -> DependencyConflict | None:
        """A conflict only when none of the distributions (``xgboost`` or ``xgboost-cpu`` …) is in range."""
        conflicts = [get_dependency_conflicts([dependency]) for dependency in self._instruments]
        return None if any(c is None for c in conflicts) else conflicts[0]

    def _instrument(self, **kwargs: Any) -> None:
        library = self._library
        try:
            if not config._bool(os.environ, self._enabled, True):
                _log.info("otel_ml: %s instrumentation disabled by %s", library.title, self._enabled)
                return
            conflict = self._check_dependency_conflicts()
            if conflict is not None:
                _log.debug("otel_ml: %s not instrumented: %s", library.title, conflict)
                return
            naming = registry.Naming.from_env()
            # An SDK MeterProvider set by the application or opentelemetry-instrument gets otel-ml's fast path
            # (otel_ml.configure, when called, has done this already, or owns its provider).
            if setup.current() is None and setup.attach_to_meter_provider():
                setup._register_atexit()  # the added reader is flushed by otel_ml.shutdown at exit
            library.start(naming)
        except Exception as exc:
            library.stop()
            guard.internal_error("instrument", exc)

    def _uninstrument(self, **kwargs: Any) -> None:
        self._library.stop()
