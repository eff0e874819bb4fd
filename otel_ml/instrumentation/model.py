"""``otel_ml.instrument_model``: instrument one model object without touching its class or its ``__dict__``.

The object's ``__class__`` is switched to a generated subclass whose predict methods are ``wrapt``
descriptors around the parent's: ``isinstance`` still holds, ``available_if`` methods stay unavailable where
they were, and ``__reduce_ex__`` names the original class, so a pickled/joblib-dumped model loads in a
process without otel-ml. Objects whose class cannot be switched (C extension types) get a transparent
``wrapt.ObjectProxy`` instead, which pickles as the wrapped object.
"""

from __future__ import annotations

import contextvars
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, SupportsIndex, TypeVar

import wrapt
from opentelemetry.util.types import AttributeValue

from otel_ml import config, semconv
from otel_ml._core import outputs
from otel_ml._core.monitor import DriftEvent, MonitorOptions, monitor_options
from otel_ml._core.recorder import ModelSpec, Recorder
from otel_ml.instrumentation import registry
from otel_ml.instrumentation.decorator import instrument
from otel_ml.sketch.reference import Reference

M = TypeVar("M")

METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function")
_ORIGINAL = "_otel_ml_original_class"
_FRAMEWORKS = {"sklearn": semconv.FRAMEWORK_SKLEARN, "torch": semconv.FRAMEWORK_TORCH}


def framework_of(model: object) -> str:
    """``ml.model.framework`` from the top-level package that defines the model's class."""
    for cls in type(model).__mro__:
        root = cls.__module__.split(".", 1)[0]
        if root in _FRAMEWORKS:
            return _FRAMEWORKS[root]
        if root in ("xgboost", "lightgbm", "onnxruntime", "catboost"):
            return root
    return semconv.FRAMEWORK_CUSTOM


_active: contextvars.ContextVar[object] = contextvars.ContextVar("otel_ml_active_model", default=None)
_get_auto_active = registry.active_call.get


def _method_wrapper(recorder: Recorder, operation: str) -> Callable[..., Any]:
    """The wrapt wrapper for one method: call the original once, record around it.

    A model calling its own instrumented methods (``predict`` → ``decision_function``) is one call: the
    inner one passes straight through. So is a call made inside a call the sklearn/torch auto-instrumentors
    measure (or inside a scikit-learn ``fit``), just as they pass through inside this one: an instrumented
    model that auto-instrumentation also covers (its ``score``, a Pipeline or module holding it) is measured
    once, by the outermost call.
    """
    settings = config

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if (
            settings.settings.disabled
            or _active.get() is instance
            or _get_auto_active() is not None
            or getattr(instance, "training", False) is True
        ):
            return wrapped(*args, **kwargs)
        call = recorder.start(operation, args[0] if args else next(iter(kwargs.values()), None))
        if call is None:
            return wrapped(*args, **kwargs)
        token = _active.set(instance)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _active.reset(token)
            recorder.fail(call, exc)
            raise
        _active.reset(token)
        recorder.finish(call, result, getattr(instance, "classes_", None))
        return result

    return wrapper


def _swap_class(reduced: Any, generated: type, original: type) -> Any:
    """Replace the generated class by the original one in a ``__reduce_ex__`` result, so the pickle is
    byte-for-byte the one of the plain model (pickle checks ``args[0] is obj.__class__``, hence the
    ``__class__`` property below)."""
    if not isinstance(reduced, tuple) or len(reduced) < 2 or not isinstance(reduced[1], tuple):
        return reduced
    args = tuple(original if a is generated else a for a in reduced[1])
    return (reduced[0], args, *reduced[2:])


def _reduce_ex(self: Any, protocol: int) -> Any:
    generated = type(self)
    return _swap_class(super(generated, self).__reduce_ex__(protocol), generated, getattr(generated, _ORIGINAL))


_OBJECT_CLASS = object.__dict__["__class__"]


def _class_property(original: type) -> property:
    """``obj.__class__`` reports the original class (pickle checks it); assigning it still switches the type."""

    def get(self: Any) -> type:
        return original

    def set_(self: Any, value: type) -> None:
        _OBJECT_CLASS.__set__(self, value)

    return property(get, set_)


def _subclass(cls: type, recorder: Recorder, methods: Sequence[str]) -> type:
    namespace: dict[str, Any] = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__slots__": (),
        "__reduce_ex__": _reduce_ex,
        "__class__": _class_property(cls),
        _ORIGINAL: cls,
        "_otel_ml_recorder": recorder,
    }
    for name in methods:
        namespace[name] = wrapt.FunctionWrapper(inspect.getattr_static(cls, name), _method_wrapper(recorder, name))
    return type(cls)(cls.__name__, (cls,), namespace)


class _ModelProxy(wrapt.ObjectProxy):
    """Fallback for objects whose class cannot be switched; pickles as the wrapped object."""

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        return self.__wrapped__.__reduce_ex__(protocol)


def _methods_of(model: object, wanted: Sequence[str] | None) -> list[str]:
    names = list(wanted) if wanted is not None else [*METHODS, "__call__"]
    mro = type(model).__mro__
    found = []
    for name in names:
        if not any(name in vars(klass) for klass in mro):
            continue
        if name == "__call__" and any(m in found for m in METHODS) and wanted is None:
            continue  # a model with predict methods: its __call__ (if any) is not the predict path
        found.append(name)
    return found


def instrument_model(
    model: M,
    name: str | None = None,
    version: str = "",
    *,
    framework: str | None = None,
    task: str | None = None,
    output: str = outputs.AUTO,
    classes: Sequence[object] | None = None,
    confidence: Callable[[Any], Any] | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    methods: Sequence[str] | None = None,
    reference: Reference | str | os.PathLike[str] | None = None,
    sketch_inputs: bool | None = None,
    drift_window: int | None = None,
    feature_names: Sequence[str] | None = None,
    on_drift: Callable[[DriftEvent], Any] | None = None,
    monitor: MonitorOptions | None = None,
) -> M:
    """Instrument ``model``'s predict methods (``predict``, ``predict_proba``, ``predict_log_proba``,
    ``decision_function``, else ``__call__``) and return it; a plain function is decorated instead.

    The same object is returned (its class switched to an instrumented subclass) whenever Python allows it.
    Calling it again re-instruments with the new settings; :func:`uninstrument_model` undoes it. The input
    monitoring options are those of :func:`otel_ml.instrument`; feature names default to the model's
    ``feature_names_in_``.
    """
    if inspect.isfunction(model) or inspect.ismethod(model) or inspect.isbuiltin(model):
        return instrument(
            name=name,
            version=version,
            framework=framework or semconv.FRAMEWORK_CUSTOM,
            task=task,
            output=output,
            classes=classes,
            confidence=confidence,
            attributes=attributes,
            reference=reference,
            sketch_inputs=sketch_inputs,
            drift_window=drift_window,
            feature_names=feature_names,
            on_drift=on_drift,
            monitor=monitor,
        )(model)
    target: Any = uninstrument_model(model)
    if feature_names is None and getattr(target, "feature_names_in_", None) is not None:
        feature_names = [str(n) for n in target.feature_names_in_]
    if task is None and hasattr(target, "classes_"):
        task = semconv.TASK_CLASSIFICATION
    spec = ModelSpec(
        name=name or type(target).__name__,
        version=version,
        framework=framework or framework_of(target),
        task=task,
        output=output,
        classes=classes,
        confidence=confidence,
        attributes=dict(attributes or {}),
        monitor=monitor_options(reference, sketch_inputs, drift_window, feature_names, on_drift, monitor),
    )
    recorder = Recorder(spec)
    found = _methods_of(target, methods)
    if not found:
        raise TypeError(f"{type(target).__name__} has none of the methods {methods or [*METHODS, '__call__']}")
    try:
        target.__class__ = _subclass(type(target), recorder, found)
        return target
    except TypeError:  # e.g. "__class__ assignment only supported for mutable types"
        return _proxy_class(type(target), recorder, found)(target)


def _proxy_method(recorder: Recorder, name: str) -> Callable[..., Any]:
    wrapper = _method_wrapper(recorder, name)

    def method(self: _ModelProxy, *args: Any, **kwargs: Any) -> Any:
        target = self.__wrapped__
        return wrapper(getattr(target, name), target, args, kwargs)

    method.__name__ = name
    return method


def _proxy_class(cls: type, recorder: Recorder, methods: Sequence[str]) -> type:
    namespace: dict[str, Any] = {name: _proxy_method(recorder, name) for name in methods}
    namespace["_otel_ml_recorder"] = recorder
    return type(f"Instrumented{cls.__name__}", (_ModelProxy,), namespace)


def uninstrument_model(model: M) -> M:
    """Undo :func:`instrument_model` (returns the plain model; a no-op for models never instrumented)."""
    if isinstance(model, _ModelProxy):
        return model.__wrapped__
    original = type(model).__dict__.get(_ORIGINAL)
    if original is not None:
        _OBJECT_CLASS.__set__(model, original)
    return model


def recorder_of(model: object) -> Recorder | None:
    """The recorder behind an instrumented model, if any."""
    rec = getattr(type(model), "_otel_ml_recorder", None)
    if rec is None and inspect.isfunction(model):  # a decorated function carries its recorder itself
        rec = getattr(model, "_otel_ml_recorder", None)
    return rec if isinstance(rec, Recorder) else None
