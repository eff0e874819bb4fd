"""Auto-instrumentation for PyTorch: the outermost ``nn.Module`` call of each forward becomes a prediction.

Usage::

    from otel_ml.instrumentation.torch import TorchInstrumentor

    TorchInstrumentor().instrument()                 # or: opentelemetry-instrument python app.py
    model.eval()
    with torch.no_grad():
        logits = model(batch)                        # span "__call__ MLP" + ml.* metrics
    otel_ml.set_model_info(model, name="digits", version="2", task="classification")   # optional

What is measured: a call of a module in eval mode (``model.eval()``) that is not inside another measured call;
the submodules it calls produce nothing of their own. Modules in training mode are not counted unless
``instrument(count_training=True)`` / ``OTEL_ML_TORCH_COUNT_TRAINING=true``. ``instrument(models=[MLP, "ResNet"])``
/ ``OTEL_ML_TORCH_MODELS`` restricts it to an allow-list of classes (subclasses included) or class names.
``torch.no_grad()``, ``torch.inference_mode()`` and ``torch.compile``-d modules work as usual (a compiled
module is measured under its original module's class name and settings).

The span and metrics are those of ``otel_ml.instrument`` with ``ml.operation=__call__`` and
``ml.model.framework=torch``:

- batch size: the first dimension of the first input (positional, else the first keyword argument);
- output: a tensor result, a mapping's ``logits`` or the first tensor of a tuple, read as logits by default:
  confidence is the top softmax probability of each row (the sigmoid's, for a single output column) and the
  predicted class its argmax. Per model, ``set_model_info(model, task="regression")`` records the outputs as
  ``ml.prediction.value`` instead, and ``output=`` picks any other reading (``proba`` for a model ending in a
  softmax, ``labels``, ``auto``, ``none``); ``instrument(output=...)`` / ``OTEL_ML_TORCH_OUTPUT`` change the
  default for all models;
- input sketches (unless ``OTEL_ML_SKETCH_INPUTS=false``) from a floating-point first input: an N x F matrix is
  sketched as F features ``f0..``; an N x C x ... tensor (images N x C x H x W, sequences N x C x L, volumes) as
  C features ``channel0..`` whose per-sample value is the channel's mean over the remaining dimensions. Other
  inputs (token ids, dicts) are not sketched. Tensors are read through ``detach()``; CUDA/MPS inputs are not
  copied to the host (and not sketched) unless ``OTEL_ML_TORCH_COPY_DEVICE_INPUTS=true``, which copies only
  the N x F matrix or the N x C channel means. Outputs on a device are not read.

How: ``torch.nn.Module.__call__`` is replaced once, when ``torch`` is imported (at once if it already is, through
a post-import hook otherwise: instrumenting never imports torch itself), by a function that calls the original
through the wrapper (:func:`otel_ml.instrumentation.registry.class_patch`); ``uninstrument()`` puts the original
back. A context variable marks the running measured call, so a nested module call costs one check of it.
Modules are never modified: ``torch.save`` output is unchanged. ``torch.compile`` (dynamo) traces through the
patch in one graph: its first check is ``torch.compiler.is_compiling()``, which dynamo folds to ``True``.
Known limit: ``nn.DataParallel`` runs its replicas in plain threads, which do not see that flag, so each replica
in eval mode counts on its own.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import wrapt
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_ml import config, semconv
from otel_ml._core import guard, outputs, setup
from otel_ml._core.monitor import monitor_options
from otel_ml._core.recorder import ModelSpec, Recorder
from otel_ml.instrumentation import registry
from otel_ml.instrumentation.environment_variables import (
    OTEL_ML_TORCH_COPY_DEVICE_INPUTS,
    OTEL_ML_TORCH_COUNT_TRAINING,
    OTEL_ML_TORCH_ENABLED,
    OTEL_ML_TORCH_MODELS,
    OTEL_ML_TORCH_OUTPUT,
)
from otel_ml.instrumentation.model import _active as _instrument_model_active
from otel_ml.instrumentation.package import _instruments_torch

_log = logging.getLogger("otel_ml")
_get_active = registry.active_call.get
_get_model_active = _instrument_model_active.get

OPERATION = "__call__"
_STATE = "torch"  # registry key of each module's state

# how a module's first input is sketched
_NONE = 0  # not at all
_MATRIX = 1  # N x F floats as F features
_CHANNELS = 2  # N x C x ... floats as C per-channel means


class _Options:
    """What ``instrument()`` was asked for; ``None`` in :data:`_options` means not instrumented."""

    def __init__(
        self,
        naming: registry.Naming,
        output: str,
        count_training: bool,
        copy_device_inputs: bool,
        allow: Sequence[type | str] | None,
    ) -> None:
        self.naming = naming
        self.output = output
        self.count_training = count_training
        self.copy_device_inputs = copy_device_inputs
        self.allow_names = frozenset(a for a in allow if isinstance(a, str)) if allow is not None else None
        self.allow_classes = tuple(a for a in allow or () if isinstance(a, type))
        self._allowed: dict[type, bool] = {}

    def allows(self, module: object) -> bool:
        """Whether calls of ``module`` are predictions under the allow-list (cached per class)."""
        if self.allow_names is None:
            return True
        cls = type(module)
        ok = self._allowed.get(cls)
        if ok is None:
            ok = self._allowed[cls] = cls.__name__ in self.allow_names or issubclass(cls, self.allow_classes)
        return ok


_options: _Options | None = None
_patch: tuple[type, Any, Any] | None = None  # (nn.Module, original __call__, our wrapper)
_patch_lock = threading.Lock()
_hooked = False
_tensor: Any = type(None)  # torch.Tensor once torch is imported


class _Model:
    """A module's cached state: its Recorder and how its inputs are sketched."""

    __slots__ = ("input_kind", "recorder")

    def __init__(self, recorder: Recorder, input_kind: int) -> None:
        self.recorder = recorder
        self.input_kind = input_kind if recorder.monitor is not None else _NONE


def _call_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``nn.Module.__call__``: telemetry for the outermost call of a module in eval mode."""
    if _get_active() is not None:  # a submodule of a measured call: one lookup
        return wrapped(*args, **kwargs)
    options = _options
    if options is None or instance is None or config.settings.disabled or _get_model_active() is not None:
        return wrapped(*args, **kwargs)
    module = instance._orig_mod if type(instance).__name__ == "OptimizedModule" else instance
    if (module.training and not options.count_training) or not options.allows(module):
        return wrapped(*args, **kwargs)
    x = args[0] if args else next(iter(kwargs.values()), None)
    model = registry.cached(module, _STATE) or _model(module, x, options)
    call = model.recorder.start(OPERATION, _features(x, model.input_kind, options)) if model else None
    if model is None or call is None:
        return wrapped(*args, **kwargs)
    tokens = registry.enter(module)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        registry.leave(tokens)
        model.recorder.fail(call, exc)
        raise
    registry.leave(tokens)
    model.recorder.finish(call, _output(result))
    return result


def _features(x: Any, kind: int, options: _Options) -> Any:
    """What the recorder reads of input ``x``: itself, or its N x C channel means (see the module docs)."""
    if kind == _NONE or not isinstance(x, _tensor):
        return x
    try:
        on_host = x.device.type == "cpu"
        if not on_host and not options.copy_device_inputs:
            return x  # read for its batch size only; the sketch counts it as dropped (input_device)
        t = x.detach()
        if kind == _CHANNELS and t.dim() >= 3:
            t = t.float().mean(dim=tuple(range(2, t.dim())))
        return t if on_host else t.cpu()
    except Exception as exc:
        guard.internal_error("torch_input", exc)
        return x


def _output(result: Any) -> Any:
    """The tensor holding the predictions: the result, a mapping's ``logits``, or a tuple's first tensor."""
    if isinstance(result, _tensor):
        return result
    if isinstance(result, Mapping):
        logits = result.get("logits")
        return logits if isinstance(logits, _tensor) else None
    if isinstance(result, (tuple, list)) and result and isinstance(result[0], _tensor):
        return result[0]
    return None


def _input_kind(x: Any) -> int:
    if not isinstance(x, _tensor) or not x.is_floating_point():
        return _NONE
    if x.dim() == 2:
        return _MATRIX
    return _CHANNELS if x.dim() >= 3 else _NONE


def _model(module: Any, x: Any, options: _Options) -> _Model | None:
    try:
        return registry.state(module, _STATE, lambda: _build(module, x, options))
    except Exception as exc:
        guard.internal_error("torch_model", exc)
        return None


def _build(module: Any, x: Any, options: _Options) -> _Model:
    """A module's state, decided on its first measured call (the input layout is read from that call)."""
    identity = options.naming.resolve([module])
    info = identity.info
    kind = _input_kind(x)
    names = [f"channel{i}" for i in range(int(x.shape[1]))] if kind == _CHANNELS else None
    spec = ModelSpec(
        name=identity.name,
        version=identity.version,
        framework=semconv.FRAMEWORK_TORCH,
        task=info.task,
        output=info.output or (outputs.REGRESSION if info.task == semconv.TASK_REGRESSION else options.output),
        classes=info.classes,
        monitor=monitor_options(
            reference=identity.reference, sketch_inputs=False if kind == _NONE else None, feature_names=names
        ),
    )
    return _Model(Recorder(spec), kind)


def _on_torch(module: Any) -> None:
    """Post-import hook of ``torch``: wrap ``nn.Module.__call__`` once."""
    global _patch, _tensor
    if _options is None:
        return
    try:
        with _patch_lock:
            if _patch is not None:
                return
            base = module.nn.Module
            original = base.__dict__["__call__"]
            _tensor = module.Tensor
            compiling = getattr(getattr(module, "compiler", None), "is_compiling", None)
            if compiling is not None:  # dynamo folds it to True: it traces the function patch in one graph
                wrapper = registry.class_patch(original, _call_wrapper, bypass=compiling)
            else:  # a torch without torch.compiler.is_compiling: the wrapt wrapper, which dynamo traces through
                wrapper = registry.ClassWrapper(original, _call_wrapper)
            base.__call__ = wrapper
            _patch = (base, original, wrapper)
    except Exception as exc:  # runs inside the application's `import torch`: never raise there
        _log.warning("otel_ml: torch instrumentation failed (%s); running uninstrumented", type(exc).__name__)


def _restore() -> None:
    global _patch
    with _patch_lock:
        if _patch is None:
            return
        base, original, wrapper = _patch
        if base.__dict__.get("__call__") is wrapper:
            setattr(base, "__call__", original)  # noqa: B010
        else:  # re-wrapped by someone after us: leave theirs; ours passes through while uninstrumented
            _log.debug("otel_ml: nn.Module.__call__ was re-wrapped by someone else; left in place")
        _patch = None


def patched() -> tuple[type, Any] | None:
    """``(nn.Module, original __call__)`` while patched (for tests and diagnostics)."""
    with _patch_lock:
        return (_patch[0], _patch[1]) if _patch is not None else None


def _allow_list(models: Sequence[type | str] | None) -> Sequence[type | str] | None:
    if models is not None:
        return list(models)
    raw = os.environ.get(OTEL_ML_TORCH_MODELS, "")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return names or None


def _output_kind(output: str | None) -> str:
    source = "output=" if output is not None else OTEL_ML_TORCH_OUTPUT + "="
    value = output if output is not None else os.environ.get(OTEL_ML_TORCH_OUTPUT, outputs.LOGITS).strip().lower()
    if value not in outputs.KINDS:
        _log.warning("otel_ml: ignoring %s%r (expected one of %s); using logits", source, value, sorted(outputs.KINDS))
        return outputs.LOGITS
    return value


class TorchInstrumentor(BaseInstrumentor):
    """Instruments PyTorch modules' forwards (see the module documentation).

    ``instrument(models=None, output=None, count_training=None, copy_device_inputs=None)``: an allow-list of
    module classes or class names, how outputs are read, whether training-mode forwards count, whether device
    inputs may be copied to the host for sketching; each defaults to its ``OTEL_ML_TORCH_*`` variable. otel-ml
    records into the providers given to ``otel_ml.configure`` or, without it, the OpenTelemetry globals
    (``tracer_provider``/``meter_provider`` keywords are not used). Never raises: a failure is logged and the
    application runs uninstrumented.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments_torch

    def _instrument(self, **kwargs: Any) -> None:
        global _options, _hooked
        try:
            if not config._bool(os.environ, OTEL_ML_TORCH_ENABLED, True):
                _log.info("otel_ml: torch instrumentation disabled by %s", OTEL_ML_TORCH_ENABLED)
                return
            conflict = get_dependency_conflicts(_instruments_torch)
            if conflict is not None:
                _log.debug("otel_ml: torch not instrumented: %s", conflict)
                return
            count_training = kwargs.get("count_training")
            copy_device_inputs = kwargs.get("copy_device_inputs")
            _options = _Options(
                naming=registry.Naming.from_env(),
                output=_output_kind(kwargs.get("output")),
                count_training=bool(
                    config._bool(os.environ, OTEL_ML_TORCH_COUNT_TRAINING, False)
                    if count_training is None
                    else count_training
                ),
                copy_device_inputs=bool(
                    config._bool(os.environ, OTEL_ML_TORCH_COPY_DEVICE_INPUTS, False)
                    if copy_device_inputs is None
                    else copy_device_inputs
                ),
                allow=_allow_list(kwargs.get("models")),
            )
            # An SDK MeterProvider set by the application or opentelemetry-instrument gets otel-ml's fast path
            # (otel_ml.configure, when called, has done this already, or owns its provider).
            if setup.current() is None and setup.attach_to_meter_provider():
                setup._register_atexit()  # the added reader is flushed by otel_ml.shutdown at exit
            torch = sys.modules.get("torch")
            if torch is not None:
                _on_torch(torch)
            elif not _hooked:
                _hooked = True
                wrapt.register_post_import_hook(_on_torch, "torch")
        except Exception as exc:
            _options = None
            _restore()
            guard.internal_error("instrument", exc)

    def _uninstrument(self, **kwargs: Any) -> None:
        global _options
        _options = None
        _restore()
        registry.forget_states(_STATE)
