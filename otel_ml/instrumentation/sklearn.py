"""Auto-instrumentation for scikit-learn: every fitted estimator's predictions become otel-ml telemetry.

Usage::

    from otel_ml.instrumentation.sklearn import SklearnInstrumentor

    SklearnInstrumentor().instrument()            # or: opentelemetry-instrument python app.py
    clf.predict_proba(X)                          # span "predict_proba RandomForestClassifier" + ml.* metrics
    otel_ml.set_model_info(clf, name="fraud", version="1.4.0")   # optional; stored beside clf, not on it

What is measured: ``predict``, ``predict_proba``, ``predict_log_proba``, ``decision_function`` and ``score`` of
every ``BaseEstimator`` subclass (scikit-learn's own, and other libraries' and yours) get the telemetry of
``otel_ml.instrument``: one span, ``ml.prediction.*`` metrics, input sketches. Only the outermost call counts: a
Pipeline's steps, a forest's trees, ``predict`` calling ``decision_function``, and predictions an estimator
makes while fitting (cross-validation, calibration, stacking) produce nothing of their own. A Pipeline's span
lists its steps in ``ml.pipeline.steps``; ``instrument(pipeline_step_spans=True)`` (or
``OTEL_ML_SKLEARN_STEP_SPANS=true``) adds one child span per step. The model name is the estimator's class
(a Pipeline's final step's) unless ``otel_ml.set_model_info``, an ``ml_model_name`` attribute or
``OTEL_ML_MODEL_NAMES`` says otherwise; ``ml.model.framework`` is ``sklearn``; feature names come from
``feature_names_in_``. Configuration: :mod:`otel_ml.instrumentation.environment_variables`.

How: classes are patched, never instances. When ``sklearn.base`` is imported (at once if it already is; through a
post-import hook otherwise, so instrumenting never imports scikit-learn itself) every class below ``BaseEstimator``
is found by walking ``__subclasses__()``, and each of the methods above is replaced, on the class that defines it
(mixins such as ``ClassifierMixin.score`` included), by a function that calls the original through the wrapper
(:func:`otel_ml.instrumentation.registry.class_patch`: a forest's trees look their methods up as fast as before);
``available_if`` descriptors are wrapped as they are, in a ``wrapt.FunctionWrapper``, so ``SVC(probability=False)``
still has no ``predict_proba``. Classes defined later (modules imported later, your own estimators, unpickled
models) are patched as they are created, by an ``__init_subclass__`` added to ``BaseEstimator``. ``fit`` is wrapped
only to mark predictions made while fitting. ``joblib.Parallel`` is wrapped so that thread-pool tasks started
inside a measured call (a forest with ``n_jobs=-1``) know they are part of it. ``uninstrument()`` puts back every
original attribute object and removes the ``__init_subclass__`` it added. Instances are never touched: pickles are
byte-for-byte those of an uninstrumented process and load without otel-ml.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import wrapt
from opentelemetry import context, trace
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_ml import config, semconv
from otel_ml._core import attributes, guard, outputs, runtime, setup
from otel_ml._core.monitor import monitor_options
from otel_ml._core.recorder import ModelSpec, Recorder
from otel_ml.instrumentation import registry
from otel_ml.instrumentation.environment_variables import OTEL_ML_SKLEARN_ENABLED, OTEL_ML_SKLEARN_STEP_SPANS
from otel_ml.instrumentation.model import _ORIGINAL, framework_of
from otel_ml.instrumentation.model import _active as _instrument_model_active
from otel_ml.instrumentation.package import _instruments_sklearn

_log = logging.getLogger("otel_ml")

PREDICT_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "score")
"""The methods whose calls are predictions."""
FIT_METHOD = "fit"
_STATE = "sklearn"  # registry key of each estimator's Recorder
_FITTING = "fit"  # registry.active_call value while fitting

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]
_get_active = registry.active_call.get
_get_model_active = _instrument_model_active.get


class _Options:
    """What ``instrument()`` was asked for; ``None`` in :data:`_options` means not instrumented."""

    def __init__(self, step_spans: bool, naming: registry.Naming) -> None:
        self.step_spans = step_spans
        self.naming = naming


_options: _Options | None = None
_patches: dict[tuple[type, str], tuple[Any, Any]] = {}  # (class, attribute) -> (original or None, wrapper)
_patch_lock = threading.RLock()
_hooked: set[str] = set()  # modules with a registered post-import hook (wrapt keeps them for the process)


# --- the wrappers (hot path) ----------------------------------------------------------------------------------
def _predict_wrapper(operation: str) -> Wrapper:
    """The wrapper of one predict method: telemetry for the outermost call, pass-through for nested ones."""
    reads_output = operation != "score"  # score() returns a metric, not predictions

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        active = _get_active()
        if active is not None:  # inside a measured call (a forest's trees, a Pipeline's steps): one lookup
            if type(active) is _Steps:
                return active.call(wrapped, instance, operation, args, kwargs)
            return wrapped(*args, **kwargs)
        options = _options
        if options is None or instance is None or config.settings.disabled or _get_model_active() is not None:
            return wrapped(*args, **kwargs)
        rec = registry.cached(instance, _STATE) or _recorder(instance, options)
        call = rec.start(operation, args[0] if args else next(iter(kwargs.values()), None)) if rec else None
        if rec is None or call is None:
            return wrapped(*args, **kwargs)
        active = _Steps.open(instance) if options.step_spans else instance
        tokens = registry.enter(active, nested_wrappers=type(active) is _Steps)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            registry.leave(tokens)
            rec.fail(call, exc)
            raise
        registry.leave(tokens)
        rec.finish(call, result if reads_output else None, _get(instance, "classes_"))
        return result

    return wrapper


def _fit_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Marks the call as fitting, so predictions made inside it (CV scoring, calibration) are not counted."""
    if _get_active() is not None or _options is None:
        return wrapped(*args, **kwargs)
    tokens = registry.enter(_FITTING)
    try:
        return wrapped(*args, **kwargs)
    finally:
        registry.leave(tokens)


def _step_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``transform`` of Pipeline steps (step-span mode only): a child span when called as a step."""
    active = _get_active()
    if type(active) is _Steps and _options is not None:
        return active.call(wrapped, instance, "transform", args, kwargs)
    return wrapped(*args, **kwargs)


def _parallel_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``joblib.Parallel.__call__``: thread-pool tasks started inside a measured call run as part of it.

    Context variables do not follow work into pool threads, so without this each tree of a
    ``RandomForestClassifier(n_jobs=-1)`` would look like an outermost call. Process backends are left alone
    (those workers are not instrumented).
    """
    active = _get_active()
    if (
        active is None
        or _options is None
        or not args
        or getattr(instance, "n_jobs", 1) == 1
        or not getattr(getattr(instance, "_backend", None), "uses_threads", False)
    ):
        return wrapped(*args, **kwargs)
    tasks = _inherit(args[0], active, context.get_current())
    return wrapped(list(tasks) if hasattr(args[0], "__len__") else tasks, *args[1:], **kwargs)


def _inherit(tasks: Iterable[Any], active: object, ctx: context.Context) -> Iterator[Any]:
    for task in tasks:
        if isinstance(task, tuple) and len(task) == 3 and callable(task[0]):
            yield (_InCall(task[0], active, ctx), task[1], task[2])
        else:
            yield task


class _InCall:
    """A joblib task that runs in a pool thread inside the call (and the trace context) that started it."""

    __slots__ = ("active", "ctx", "func")

    def __init__(self, func: Callable[..., Any], active: object, ctx: context.Context) -> None:
        self.func, self.active, self.ctx = func, active, ctx

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tokens = registry.enter(self.active, nested_wrappers=type(self.active) is _Steps)
        otel_token = context.attach(self.ctx)
        try:
            return self.func(*args, **kwargs)
        finally:
            context.detach(otel_token)
            registry.leave(tokens)


class _Steps:
    """The running top-level Pipeline call in step-span mode: its steps by identity, and their names."""

    __slots__ = ("names", "running")

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.running: set[int] = set()  # steps inside their span: their calls to themselves are part of it

    @classmethod
    def open(cls, estimator: Any) -> object:
        """The ``active_call`` value for a top-level call of ``estimator`` (the estimator unless a Pipeline)."""
        if not _is_pipeline(estimator):
            return estimator
        try:
            steps = cls()
            steps.add(estimator, "")
            return steps
        except Exception as exc:
            guard.internal_error("sklearn_steps", exc)
            return estimator

    def add(self, pipeline: Any, prefix: str) -> None:
        for name, step in pipeline.steps:
            if step is not None and not isinstance(step, str):
                self.names[id(step)] = prefix + str(name)
                _patch_step_class(type(step))

    def call(
        self, wrapped: Callable[..., Any], instance: Any, operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run one step (a child span when ``instance`` is a step of the running Pipeline)."""
        key = id(instance)
        name = self.names.get(key)
        if name is None or key in self.running:
            return wrapped(*args, **kwargs)
        try:
            if _is_pipeline(instance):
                self.add(instance, name + "__")
            span = runtime.get().tracer.start_span(
                semconv.span_name(operation, attributes.text(name)),
                kind=SpanKind.INTERNAL,
                attributes={semconv.ML_PIPELINE_STEP: attributes.text(name), semconv.ML_OPERATION: operation},
            )
            token = context.attach(trace.set_span_in_context(span))
        except Exception as exc:
            guard.internal_error("sklearn_steps", exc)
            return wrapped(*args, **kwargs)
        self.running.add(key)
        try:
            return wrapped(*args, **kwargs)
        except BaseException as exc:
            etype = attributes.error_type(exc)
            span.set_attribute(semconv.ERROR_TYPE, etype)
            span.set_status(Status(StatusCode.ERROR, etype))
            raise
        finally:
            self.running.discard(key)
            context.detach(token)
            span.end()


def _get(estimator: Any, attribute: str) -> Any:
    """``estimator.<attribute>`` or ``None`` (a meta-estimator's delegating property may raise anything)."""
    try:
        return getattr(estimator, attribute, None)
    except Exception:
        return None


# --- per-estimator recorders ----------------------------------------------------------------------------------
def _recorder(estimator: Any, options: _Options) -> Recorder | None:
    try:
        return registry.state(estimator, _STATE, lambda: _build(estimator, options))
    except Exception as exc:
        guard.internal_error("sklearn_model", exc)
        return None


def _is_pipeline(obj: object) -> bool:
    module = sys.modules.get("sklearn.pipeline")
    return module is not None and isinstance(obj, module.Pipeline)


def _final_step(estimator: Any) -> Any:
    """A Pipeline's final estimator (nested Pipelines unfolded); the estimator itself otherwise."""
    while _is_pipeline(estimator):
        last = estimator.steps[-1][1]
        if last is None or isinstance(last, str):
            break
        estimator = last
    return estimator


def _task(estimator: Any) -> str | None:
    base = sys.modules.get("sklearn.base")
    try:
        if base is not None and base.is_classifier(estimator):
            return semconv.TASK_CLASSIFICATION
        if base is not None and base.is_regressor(estimator):
            return semconv.TASK_REGRESSION
    except Exception:  # estimators without scikit-learn tags
        pass
    return semconv.TASK_CLASSIFICATION if hasattr(estimator, "classes_") else None


def _build(estimator: Any, options: _Options) -> Recorder:
    """The Recorder of one estimator: identity, task, Pipeline steps and feature names read once."""
    final = _final_step(estimator)
    identity = options.naming.resolve([estimator] if final is estimator else [estimator, final])
    info = identity.info
    static: dict[str, Any] = {}
    if _is_pipeline(estimator):
        static[semconv.ML_PIPELINE_STEPS] = [str(name) for name, _ in estimator.steps]
    names = _get(estimator, "feature_names_in_")
    spec = ModelSpec(
        name=identity.name,
        version=identity.version,
        framework=framework_of(final),
        task=info.task or _task(estimator),
        output=info.output or outputs.AUTO,
        classes=info.classes,
        attributes=static,
        monitor=monitor_options(
            reference=identity.reference, feature_names=[str(n) for n in names] if names is not None else None
        ),
    )
    return Recorder(spec)


# --- patching -------------------------------------------------------------------------------------------------
def _patchable(attribute: object) -> bool:
    """Functions and method-like descriptors (``available_if``); not properties, class/static methods, types."""
    if inspect.isfunction(attribute):
        return True
    return hasattr(type(attribute), "__get__") and not isinstance(
        attribute, (property, classmethod, staticmethod, type)
    )


def _patch(owner: type, name: str, wrapper: Wrapper, nested: bool = False) -> None:
    """Wrap ``owner.__dict__[name]`` in place (once); remember the original object for ``uninstrument``.
    Unless ``nested``, the wrapper is skipped inside measured calls (see ``registry.wrapping``)."""
    key = (owner, name)
    if key in _patches:
        return
    original = owner.__dict__.get(name)
    if original is None or not _patchable(original):
        return
    wrapped = wrapt.FunctionWrapper(original, wrapper) if nested else registry.class_patch(original, wrapper)
    try:
        setattr(owner, name, wrapped)
    except (TypeError, AttributeError):  # extension types cannot be patched
        return
    _patches[key] = (original, wrapped)


_PREDICT_WRAPPERS = {name: _predict_wrapper(name) for name in PREDICT_METHODS}


def _patch_estimator_class(cls: type) -> None:
    """Wrap the predict methods and ``fit`` that ``cls`` has, on the classes of its MRO that define them."""
    if _ORIGINAL in cls.__dict__:  # instrument_model's per-object subclass: measured by instrument_model
        return
    with _patch_lock:
        for name in (*PREDICT_METHODS, FIT_METHOD):
            owner = next((klass for klass in cls.__mro__ if name in klass.__dict__), None)
            if owner is not None and owner is not object:
                _patch(owner, name, _PREDICT_WRAPPERS[name] if name != FIT_METHOD else _fit_wrapper)


def _patch_step_class(cls: type) -> None:
    """Step-span mode: wrap the ``transform`` a Pipeline step's class has (on first use of such a step)."""
    owner = next((klass for klass in cls.__mro__ if "transform" in klass.__dict__), None)
    if owner is not None and owner is not object and (owner, "transform") not in _patches:
        with _patch_lock:
            _patch(owner, "transform", _step_wrapper)


def _subclasses(base: type) -> Iterator[type]:
    seen: set[type] = set()
    stack = [base]
    while stack:
        sub: type
        for sub in type.__subclasses__(stack.pop()):
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                yield sub


def _hook_new_subclasses(base: Any) -> None:
    """Give ``base`` an ``__init_subclass__`` that patches each estimator class created from now on."""
    key = (base, "__init_subclass__")
    if key in _patches:
        return
    original = base.__dict__.get("__init_subclass__")

    def init_subclass(cls: Any, **kwargs: Any) -> None:
        if original is not None:
            original.__get__(None, cls)(**kwargs)
        else:
            super(base, cls).__init_subclass__(**kwargs)
        if _options is not None:
            try:
                _patch_estimator_class(cls)
            except Exception as exc:  # never break a class definition
                _log.warning("otel_ml: cannot instrument %s (%s)", cls.__qualname__, type(exc).__name__)

    hook: classmethod[Any, Any, None] = classmethod(init_subclass)
    base.__init_subclass__ = hook
    _patches[key] = (original, hook)


def _on_sklearn_base(module: Any) -> None:
    """Post-import hook of ``sklearn.base``: patch every estimator class there is, and hook future ones."""
    if _options is None:
        return
    try:
        base = module.BaseEstimator
        with _patch_lock:
            for cls in (base, *_subclasses(base)):
                _patch_estimator_class(cls)
            _hook_new_subclasses(base)
    except Exception as exc:  # runs inside the application's `import sklearn`: never raise there
        _log.warning("otel_ml: scikit-learn instrumentation failed (%s); running uninstrumented", type(exc).__name__)
        _restore()


def _on_joblib(module: Any) -> None:
    """Post-import hook of ``joblib.parallel``."""
    if _options is None:
        return
    try:
        with _patch_lock:
            _patch(module.Parallel, "__call__", _parallel_wrapper, nested=True)
    except Exception as exc:
        _log.warning("otel_ml: cannot instrument joblib.Parallel (%s)", type(exc).__name__)


def _when_imported(name: str, hook: Callable[[Any], None]) -> None:
    module = sys.modules.get(name)
    if module is not None:
        hook(module)
    elif name not in _hooked:
        _hooked.add(name)
        wrapt.register_post_import_hook(hook, name)


def _restore() -> None:
    """Put back every patched attribute (where it is still ours) and forget the patches."""
    with _patch_lock:
        for (owner, name), (original, wrapper) in _patches.items():
            if owner.__dict__.get(name) is not wrapper:
                # someone wrapped it again after us: leave theirs; ours passes through while uninstrumented
                _log.debug("otel_ml: %s.%s was re-wrapped by someone else; left in place", owner.__qualname__, name)
            elif original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        _patches.clear()


def patched() -> dict[tuple[type, str], Any]:
    """Every attribute currently patched, with its original object (for tests and diagnostics)."""
    with _patch_lock:
        return {key: original for key, (original, _) in _patches.items()}


# --- the instrumentor -----------------------------------------------------------------------------------------
class SklearnInstrumentor(BaseInstrumentor):
    """Instruments scikit-learn estimators' predictions (see the module documentation).

    ``instrument(pipeline_step_spans=None)``: ``True`` adds per-step child spans under a Pipeline's span
    (default: ``OTEL_ML_SKLEARN_STEP_SPANS``). otel-ml records into the providers given to
    ``otel_ml.configure`` or, without it, the OpenTelemetry globals (``tracer_provider``/``meter_provider``
    keywords are not used). Never raises: a failure is logged and the application runs uninstrumented.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments_sklearn

    def _instrument(self, **kwargs: Any) -> None:
        global _options
        try:
            if not config._bool(os.environ, OTEL_ML_SKLEARN_ENABLED, True):
                _log.info("otel_ml: scikit-learn instrumentation disabled by %s", OTEL_ML_SKLEARN_ENABLED)
                return
            conflict = get_dependency_conflicts(_instruments_sklearn)
            if conflict is not None:
                _log.debug("otel_ml: scikit-learn not instrumented: %s", conflict)
                return
            step_spans = kwargs.get("pipeline_step_spans")
            if step_spans is None:
                step_spans = config._bool(os.environ, OTEL_ML_SKLEARN_STEP_SPANS, False)
            _options = _Options(bool(step_spans), registry.Naming.from_env())
            # An SDK MeterProvider set by the application or opentelemetry-instrument gets otel-ml's fast path
            # (otel_ml.configure, when called, has done this already, or owns its provider).
            if setup.current() is None and setup.attach_to_meter_provider():
                setup._register_atexit()  # the added reader is flushed by otel_ml.shutdown at exit
            _when_imported("joblib.parallel", _on_joblib)
            _when_imported("sklearn.base", _on_sklearn_base)
        except Exception as exc:
            _options = None
            _restore()
            guard.internal_error("instrument", exc)

    def _uninstrument(self, **kwargs: Any) -> None:
        global _options
        _options = None
        _restore()
        registry.forget_states(_STATE)
