"""Auto-instrumentation for ONNX Runtime: every ``InferenceSession.run`` becomes a prediction.

Usage::

    from otel_ml.instrumentation.onnxruntime import OnnxRuntimeInstrumentor

    OnnxRuntimeInstrumentor().instrument()        # or: opentelemetry-instrument python app.py
    session.run(None, {"input": X})               # span "run breast_cancer_lr" + ml.* metrics
    otel_ml.set_model_info(session, name="fraud", version="7")   # optional; stored beside it, not on it

What is measured: each outermost ``run(output_names, input_feed, run_options=None)`` of an ``InferenceSession``
(the method is defined on the Python class ``onnxruntime.capi.onnxruntime_inference_collection.Session``, which
is wrapped; the C++ session it holds is not touched), with ``ml.operation=run`` and
``ml.model.framework=onnxruntime``:

- model name: ``set_model_info``, an ``ml_model_name`` attribute or ``OTEL_ML_MODEL_NAMES`` (by the class name
  ``InferenceSession`` or by the graph name), else the model's graph name, else its producer name, else
  ``InferenceSession``; version: likewise, else the model's ``model_version`` when it is not 0; references
  (``OTEL_ML_MODEL_REFERENCES``) by the resolved name.
- batch size and input sketches from the first input of ``input_feed`` (its first value), read as the other
  instrumentors read a model input: an N x F numpy array is sketched as F features ``f0..``; other layouts
  and ``OrtValue`` inputs are counted as skipped (``otel_ml.telemetry.dropped{reason}``). Other inputs are not
  read.
- outputs: the first returned output whose name contains ``prob`` (any case, e.g. ``probabilities`` or
  skl2onnx's ``output_probability`` with ``zipmap=False``) is read as class probabilities (N x k rows, or the
  positive class's probability for N): confidence and predicted classes (``0..k-1`` unless
  ``set_model_info(classes=...)``), with ``ml.model.task=classification``. Without such an output nothing is
  read unless ``set_model_info(session, task=..., output=...)`` says how to read the first returned output
  (e.g. ``task="regression"``, or ``output="logits"``). Only numpy arrays are read: sequences and maps (a
  skl2onnx ZipMap) are not.

Configuration: ``OTEL_ML_ONNXRUNTIME_ENABLED`` and the variables of
:mod:`otel_ml.instrumentation.environment_variables`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from otel_ml import semconv
from otel_ml._core import outputs
from otel_ml._core.recorder import Recorder
from otel_ml.instrumentation import registry
from otel_ml.instrumentation.environment_variables import OTEL_ML_ONNXRUNTIME_ENABLED
from otel_ml.instrumentation.library import Library, LibraryInstrumentor, identity, measure, model_spec, nothing
from otel_ml.instrumentation.package import _instruments_onnxruntime

FRAMEWORK = semconv.FRAMEWORK_ONNXRUNTIME
OPERATION = "run"
PROBABILITIES = "prob"
"""An output whose name contains this (in any case) holds class probabilities."""


def _probabilities(names: Sequence[str]) -> int | None:
    """Index of the first output named like probabilities."""
    return next((i for i, name in enumerate(names) if PROBABILITIES in name.lower()), None)


class _Session:
    """A session's cached state: its Recorder and which output holds its predictions."""

    __slots__ = ("declared", "read", "recorder")

    def __init__(self, recorder: Recorder, read: int | None, declared: bool) -> None:
        self.recorder = recorder
        self.read = read  # index of the predictions in run(None, ...)'s result: every output, in order
        self.declared = declared  # set_model_info said how to read the first output

    def output(self, output_names: Sequence[str] | None) -> Callable[[Any], object]:
        """Picks the predictions out of the result of ``run(output_names, ...)``."""
        index = self.read if output_names is None or self.declared else _probabilities(output_names)
        if index is None:
            return nothing

        def pick(result: Any) -> object:
            out = result[index] if isinstance(result, list) and index < len(result) else None
            return out if type(out) is np.ndarray else None

        return pick


def _state(session: Any) -> Callable[[registry.Naming], _Session]:
    """Builds a session's state on its first measured call, from its metadata and output names."""

    def build(naming: registry.Naming) -> _Session:
        meta = session.get_modelmeta()
        version = str(meta.version) if meta.version else ""
        who = identity(naming, session, meta.graph_name or meta.producer_name, version)
        declared = who.info.task is not None or who.info.output is not None
        read = 0 if declared else _probabilities([str(o.name) for o in session.get_outputs()])
        if declared:  # the task/output given to set_model_info replace these in model_spec
            task, output = None, outputs.AUTO
        elif read is not None:
            task, output = semconv.TASK_CLASSIFICATION, outputs.PROBA
        else:
            task, output = None, outputs.NONE
        return _Session(Recorder(model_spec(who, FRAMEWORK, task, output)), read, declared)

    return build


def _run_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Session.run(output_names, input_feed, run_options=None)``: telemetry for an outermost call."""
    if not _library.measuring(instance):
        return wrapped(*args, **kwargs)
    state = _library.state(instance, _state(instance))
    output_names = args[0] if args else kwargs.get("output_names")
    feed = args[1] if len(args) > 1 else kwargs.get("input_feed")
    x = next(iter(feed.values()), None) if isinstance(feed, dict) else None
    call = state.recorder.start(OPERATION, x) if state else None
    if state is None or call is None:
        return wrapped(*args, **kwargs)
    return measure(state.recorder, call, instance, wrapped, args, kwargs, state.output(output_names))


def _patch(library: Library, module: Any) -> None:
    """Post-import hook of ``onnxruntime``: wrap ``run`` on the Python class that defines it."""
    library.wrap_defined(module.InferenceSession, OPERATION, _run_wrapper)


_library = Library("onnxruntime", "ONNX Runtime", _patch)


def patched() -> dict[tuple[type, str], Any]:
    """Every attribute currently patched, with its original object (for tests and diagnostics)."""
    return _library.patched()


class OnnxRuntimeInstrumentor(LibraryInstrumentor):
    """Instruments ONNX Runtime ``InferenceSession.run`` (see the module documentation). Never raises."""

    _library = _library
    _enabled = OTEL_ML_ONNXRUNTIME_ENABLED
    _instruments = _instruments_onnxruntime
