"""Per-model settings of auto-instrumented models, kept beside the model and never on it.

``otel_ml.set_model_info(model, name=..., version=..., reference=...)`` names a model that the sklearn/torch
instrumentors would otherwise call by its class. The settings, and each model's cached adapter state (its
``Recorder``), live in an identity-keyed weak map: nothing is written to the object, so a pickled, joblib-dumped
or ``torch.save``-d model is byte-for-byte what it is without otel-ml and loads where otel-ml is not installed.
An entry disappears with its model. (Identity, not ``==``/``hash``: two estimators that compare equal are still
two models.)

This module also holds :data:`active_call`, the flag that makes only the outermost instrumented call count.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import threading
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import wrapt

from otel_ml import config, semconv
from otel_ml._core import outputs
from otel_ml.instrumentation.environment_variables import OTEL_ML_MODEL_NAMES, OTEL_ML_MODEL_REFERENCES
from otel_ml.sketch.reference import Reference

T = TypeVar("T")

active_call: contextvars.ContextVar[object] = contextvars.ContextVar("otel_ml_auto_active_call", default=None)
"""Not ``None`` while an auto-instrumented call (or a sklearn ``fit``) runs in this thread/task: calls made
inside it (Pipeline steps, a forest's trees, a module's submodules, predictions made while fitting, and models
instrumented with ``otel_ml.instrument_model``) are part of it and produce no telemetry of their own."""

wrapping: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_ml_auto_wrapping", default=True)
"""``False`` inside a measured call whose nested calls need nothing from the instrumentors' wrappers (see
:func:`enter`). The class patches (:func:`class_patch`) then call the original method directly: a forest's trees
or a network's submodules cost one context-variable read each."""


def class_patch(original: Any, wrapper: Callable[..., Any], bypass: Callable[[], bool] | None = None) -> Any:
    """What the instrumentors put in a class's ``__dict__`` in place of ``original``, calling
    ``wrapper(bound original, instance, args, kwargs)`` (wrapt's wrapper signature) unless :data:`wrapping` is
    ``False`` or ``bypass()`` is true.

    A plain function (``__wrapped__``, name, docstring, signature: the original's) replaces a function. Looking it
    up costs what the original's lookup costs, ~30 ns, where any wrapt proxy's ``__get__`` runs Python or builds a
    bound wrapper, ~300 ns. That counts: each call of a 50-tree forest looks ``predict_proba`` and ``fit``
    (``check_is_fitted``) up on every tree, 100 lookups per call, right after the trees' own work. The function
    has the original's own parameters where they can be reproduced (:func:`_forwarder`), so a nested call (a
    tree's) costs one plain call more, ~30 ns, not the ~200 ns of repacking ``*args, **kwargs``.
    ``bypass`` is checked first: torch passes ``torch.compiler.is_compiling``, which dynamo folds to ``True``
    while it traces, so a compiled module traces straight into the original (one graph, no break at the context
    variable). Any other method-like descriptor (``available_if``, which decides whether the method exists at
    all) is wrapped as it is, in a :class:`ClassWrapper`, which has no ``bypass``.
    """
    if not inspect.isfunction(original):
        return ClassWrapper(original, wrapper)
    patched = _forwarder(original, wrapper, bypass) or _varargs_forwarder(original, wrapper, bypass)
    functools.update_wrapper(patched, original)
    patched._otel_ml_wrapper = wrapper  # type: ignore[attr-defined]  # marks it as ours: is_patch()
    return patched


def _varargs_forwarder(
    original: Callable[..., Any], wrapper: Callable[..., Any], bypass: Callable[[], bool] | None
) -> Callable[..., Any]:
    """The patch for any function: ``*args, **kwargs`` passed on as they came."""
    on = wrapping.get
    bind = types.MethodType

    def patched(*args: Any, **kwargs: Any) -> Any:
        if args and (bypass is None or not bypass()) and on():
            instance = args[0]
            if instance is not None:
                return wrapper(bind(original, instance), instance, args[1:], kwargs)
        return original(*args, **kwargs)

    return patched


_PREFIX = "_otel_ml_"


def _forwarder(
    original: types.FunctionType, wrapper: Callable[..., Any], bypass: Callable[[], bool] | None
) -> types.FunctionType | None:
    """The patch with ``original``'s own parameters and defaults (the same objects), read from its code object
    (what a call binds to, whatever a declared ``__signature__`` says); ``None`` if a name would clash with
    the patch's own. The wrapper then gets the positional parameters after ``self``, defaults included, as
    ``args``, and the keyword-only ones as ``kwargs``: the same call to the original."""
    theirs = original.__code__
    n_positional, n_keyword_only = theirs.co_argcount, theirs.co_kwonlyargcount
    has_varargs, has_varkw = bool(theirs.co_flags & inspect.CO_VARARGS), bool(theirs.co_flags & inspect.CO_VARKEYWORDS)
    names = theirs.co_varnames[: n_positional + n_keyword_only + has_varargs + has_varkw]
    if not n_positional or any(name.startswith(_PREFIX) for name in names):
        return None
    at = iter(names[n_positional + n_keyword_only :])
    var_positional = next(at) if has_varargs else None
    var_keyword = next(at) if has_varkw else None
    # defaults are placeholders in the code: the function takes the original's own __defaults__ / __kwdefaults__
    code = _code(
        names[:n_positional],
        theirs.co_posonlyargcount,
        len(original.__defaults__ or ()),
        names[n_positional : n_positional + n_keyword_only],
        frozenset(original.__kwdefaults__ or ()),
        var_positional,
        var_keyword,
        bypass is not None,
    )
    attributes = {a: getattr(theirs, a) for a in ("co_name", "co_qualname") if hasattr(theirs, a)}  # 3.11+
    namespace = {
        f"{_PREFIX}original": original,
        f"{_PREFIX}wrapper": wrapper,
        f"{_PREFIX}on": wrapping.get,
        f"{_PREFIX}bind": types.MethodType,
        f"{_PREFIX}bypass": bypass,
        "__builtins__": __builtins__,
    }
    # the original's names in tracebacks, not "patched"
    patched = types.FunctionType(code.replace(**attributes), namespace, original.__name__, original.__defaults__)
    patched.__kwdefaults__ = dict(original.__kwdefaults__) if original.__kwdefaults__ else None
    return patched


@functools.lru_cache(maxsize=512)
def _code(
    positional: tuple[str, ...],
    positional_only: int,
    defaults: int,
    keyword_only: tuple[str, ...],
    keyword_defaults: frozenset[str],
    var_positional: str | None,
    var_keyword: str | None,
    bypass: bool,
) -> types.CodeType:
    """The compiled forwarder for one parameter list (compiled once: many methods share ``(self, X)``); the
    ``bypass()`` check is compiled in only where there is one, so a nested call checks nothing else."""
    declared = []
    for i, name in enumerate(positional):
        declared.append(f"{name}=None" if i >= len(positional) - defaults else name)
        if i == positional_only - 1:
            declared.append("/")
    if var_positional is not None or keyword_only:
        declared.append(f"*{var_positional or ''}")
    declared += [f"{name}=None" if name in keyword_defaults else name for name in keyword_only]
    declared += [f"**{var_keyword}"] if var_keyword is not None else []
    self_name, rest = positional[0], list(positional[1:])
    rest += [f"*{var_positional}"] if var_positional is not None else []
    varkw = [f"**{var_keyword}"] if var_keyword is not None else []
    keywords = [f"{name}={name}" for name in keyword_only] + varkw
    as_dict = [f"{name!r}: {name}" for name in keyword_only] + varkw
    source = (
        f"def patched({', '.join(declared)}):\n"
        f"    if {f'{_PREFIX}bypass() or ' if bypass else ''}not {_PREFIX}on() or {self_name} is None:\n"
        f"        return {_PREFIX}original({', '.join([self_name, *rest, *keywords])})\n"
        f"    return {_PREFIX}wrapper({_PREFIX}bind({_PREFIX}original, {self_name}), {self_name}, "
        f"({''.join(f'{a}, ' for a in rest)}), {{{', '.join(as_dict)}}})\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "<otel-ml class patch>", "exec"), namespace)
    code: types.CodeType = namespace["patched"].__code__
    return code


def is_patch(attribute: object) -> bool:
    """Whether ``attribute`` (a class's ``__dict__`` entry) is an otel-ml class patch."""
    if isinstance(attribute, ClassWrapper):
        return True
    return inspect.isfunction(attribute) and hasattr(attribute, "_otel_ml_wrapper")


class ClassWrapper(wrapt.FunctionWrapper):
    """The ``wrapt.FunctionWrapper`` that patches a method-like descriptor other than a function (see
    :func:`class_patch`), and torch's ``nn.Module.__call__`` where ``torch.compiler.is_compiling`` is missing;
    skipped inside measured calls.

    While :data:`wrapping` is ``False``, looking the method up on an instance binds the original itself: no bound
    wrapper is made and no wrapper code runs. ``enabled=wrapping.get`` still covers a bound method taken earlier.
    """

    def __init__(self, wrapped: Any, wrapper: Callable[..., Any]) -> None:
        super().__init__(wrapped, wrapper, enabled=wrapping.get)
        bind = getattr(type(wrapped), "__get__", None)  # as wrapt does: a non-descriptor is returned as it is
        self._self_bind = None if bind is None else functools.partial(bind, wrapped)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if wrapping.get():
            return super().__get__(instance, owner)
        bind = self._self_bind
        return self.__wrapped__ if bind is None else bind(instance, owner)


Tokens = tuple[contextvars.Token[object], contextvars.Token[bool]]


def enter(value: object, nested_wrappers: bool = False) -> Tokens:
    """Mark a measured call (or a fit) as running in this thread/task: :data:`active_call` becomes ``value``;
    nested calls skip the wrappers unless ``nested_wrappers`` (e.g. for Pipeline step spans)."""
    return active_call.set(value), wrapping.set(nested_wrappers)


def leave(tokens: Tokens) -> None:
    """Undo :func:`enter`."""
    wrapping.reset(tokens[1])
    active_call.reset(tokens[0])


NAME_ATTRIBUTE = "ml_model_name"
"""A plain string attribute a model may carry (it survives pickling without otel-ml) naming it."""
VERSION_ATTRIBUTE = "ml_model_version"
"""A plain string attribute a model may carry giving its version."""


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`set_model_info` recorded for one model; ``None`` fields fall back to the defaults."""

    name: str | None = None
    version: str | None = None
    reference: Reference | None = None
    task: str | None = None
    output: str | None = None
    classes: Sequence[object] | None = None


class _Entry:
    __slots__ = ("info", "ref", "states")

    def __init__(self, ref: weakref.ref[Any]) -> None:
        self.ref = ref
        self.info: ModelInfo | None = None
        self.states: dict[str, Any] = {}


_lock = threading.RLock()  # re-entrant: a weakref callback may run (via GC) while this thread holds it
_entries: dict[int, _Entry] = {}


def _drop(key: int, ref: weakref.ref[Any]) -> None:
    with _lock:
        entry = _entries.get(key)
        if entry is not None and entry.ref is ref:
            del _entries[key]


def _find(model: object) -> _Entry | None:
    entry = _entries.get(id(model))
    return entry if entry is not None and entry.ref() is model else None


def _create(model: object) -> _Entry:
    """``model``'s entry, created if needed (``TypeError`` when ``model`` cannot be weakly referenced)."""
    with _lock:
        entry = _find(model)
        if entry is None:
            key = id(model)
            entry = _entries[key] = _Entry(weakref.ref(model, functools.partial(_drop, key)))
        return entry


def set_model_info(
    model: object,
    name: str | None = None,
    version: str | None = None,
    *,
    reference: Reference | str | os.PathLike[str] | None = None,
    task: str | None = None,
    output: str | None = None,
    classes: Sequence[object] | None = None,
) -> None:
    """Name an auto-instrumented model (sklearn estimator or torch module) and say how to read it.

    ``name``/``version`` become ``ml.model.name``/``ml.model.version`` (default: the class name, for a Pipeline
    its final step's, and no version); ``reference`` (a :class:`otel_ml.Reference` or the path of its JSON,
    loaded now) is what input drift is measured against; ``task`` (``classification``/``regression``),
    ``output`` (see ``otel_ml.instrument``) and ``classes`` (labels of the output columns) matter for torch
    modules, whose outputs carry no such information. Nothing is stored on ``model`` itself. Calling it again
    replaces the earlier settings and takes effect on the model's next call.
    """
    if output is not None and output not in outputs.KINDS:
        raise ValueError(f"output must be one of {sorted(outputs.KINDS)}, not {output!r}")
    if task not in (None, semconv.TASK_CLASSIFICATION, semconv.TASK_REGRESSION):
        raise ValueError(f"task must be 'classification', 'regression' or None, not {task!r}")
    if isinstance(reference, (str, os.PathLike)):
        reference = Reference.load(reference)
    info = ModelInfo(name, version, reference, task, output, list(classes) if classes is not None else None)
    try:
        entry = _create(model)
    except TypeError:
        raise TypeError(
            f"{type(model).__name__} objects cannot be weakly referenced, so otel-ml cannot keep settings beside "
            f"them; give the model {NAME_ATTRIBUTE}/{VERSION_ATTRIBUTE} attributes or use OTEL_ML_MODEL_NAMES"
        ) from None
    with _lock:
        entry.info = info
        entry.states.clear()


def model_info(model: object) -> ModelInfo | None:
    """What :func:`set_model_info` recorded for ``model``, if anything."""
    entry = _find(model)
    return entry.info if entry is not None else None


def cached(model: object, key: str) -> Any:
    """``model``'s cached adapter state under ``key``, or ``None`` before it is built: the per-call lookup, one
    dictionary read and a weak reference's check, with no builder closure made for the call."""
    entry = _entries.get(id(model))
    return entry.states.get(key) if entry is not None and entry.ref() is model else None


def state(model: object, key: str, build: Callable[[], T]) -> T:
    """``model``'s cached adapter state under ``key`` (e.g. its Recorder), built on first use.

    Estimators and modules can always be weakly referenced (``BaseEstimator`` and ``nn.Module`` have no
    ``__slots__``); anything else raises ``TypeError`` here, which the adapters count as an internal error."""
    found = cached(model, key)
    if found is not None:
        return found
    with _lock:
        entry = _create(model)
        found = entry.states.get(key)
        if found is None:
            found = entry.states[key] = build()
        return found


def forget_states(key: str) -> None:
    """Drop every model's cached state under ``key`` (on uninstrument: a later instrument starts afresh)."""
    with _lock:
        for entry in _entries.values():
            entry.states.pop(key, None)


def _pairs(env: Mapping[str, str], variable: str) -> dict[str, str]:
    """``a=b,c=d`` → ``{"a": "b", "c": "d"}``; malformed items are skipped with a warning."""
    out: dict[str, str] = {}
    for item in env.get(variable, "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            config.warn_once("otel_ml: ignoring %r in %s (expected key=value)", item, variable)  # once per process
            continue
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Identity:
    """Who a model is on its telemetry, and what its inputs are compared with."""

    name: str
    version: str
    reference: Reference | None
    info: ModelInfo


@dataclass
class Naming:
    """Resolves a model's identity from, in order: ``set_model_info``, ``ml_model_name``/``ml_model_version``
    attributes on the model, :data:`OTEL_ML_MODEL_NAMES` by class name, and finally the class name."""

    names: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    reference_paths: dict[str, str] = field(default_factory=dict)
    _references: dict[str, Reference | None] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Naming:
        """Read :data:`OTEL_ML_MODEL_NAMES` and :data:`OTEL_ML_MODEL_REFERENCES`."""
        env = os.environ if env is None else env
        names: dict[str, tuple[str, str | None]] = {}
        for class_name, value in _pairs(env, OTEL_ML_MODEL_NAMES).items():
            name, sep, version = value.partition(":")
            names[class_name] = (name.strip() or class_name, version.strip() if sep else None)
        return cls(names, _pairs(env, OTEL_ML_MODEL_REFERENCES))

    def resolve(self, candidates: Sequence[object]) -> Identity:
        """The identity of a model described by ``candidates``: the model itself and, for a Pipeline, its final
        step. The first one that says something wins; the default name is the last candidate's class name."""
        infos = [model_info(c) for c in candidates]
        classes = [type(c).__name__ for c in candidates]
        mapped = [self.names[c] for c in classes if c in self.names]
        name = _first(
            *(i.name for i in infos if i is not None),
            *(_attribute(c, NAME_ATTRIBUTE) for c in candidates),
            *(m[0] for m in mapped),
            classes[-1],
        )
        version = _first(
            *(i.version for i in infos if i is not None),
            *(_attribute(c, VERSION_ATTRIBUTE) for c in candidates),
            *(m[1] for m in mapped),
            "",
        )
        info = next((i for i in infos if i is not None), ModelInfo())
        reference = next((i.reference for i in infos if i is not None and i.reference is not None), None)
        if reference is None:
            path = next((self.reference_paths[k] for k in (name, *classes) if k in self.reference_paths), None)
            reference = self._load(path) if path is not None else None
        return Identity(name, version, reference, info)

    def _load(self, path: str) -> Reference | None:
        if path not in self._references:
            try:
                self._references[path] = Reference.load(path)
            except Exception as exc:  # a bad file must not break the model: warm-up reference instead
                config.warn_once("otel_ml: cannot load reference %s (%s); using a warm-up reference", path, exc)
                self._references[path] = None
        return self._references[path]


def _attribute(model: object, attribute: str) -> str | None:
    try:
        value = getattr(model, attribute, None)
    except Exception:  # a model's __getattr__ may raise anything
        return None
    return value if isinstance(value, str) and value else None


def _first(*values: str | None) -> str:
    return next(v for v in values if v is not None)
