"""``@otel_ml.instrument``: telemetry for any predict function, method or ``async def``."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

from opentelemetry.util.types import AttributeValue

from otel_ml import config, semconv
from otel_ml._core import outputs
from otel_ml._core.monitor import DriftEvent, MonitorOptions, monitor_options
from otel_ml._core.recorder import ModelSpec, Recorder
from otel_ml.sketch.reference import Reference

F = TypeVar("F", bound=Callable[..., Any])

KNOWN_OPERATIONS = frozenset({"predict", "predict_proba", "predict_log_proba", "decision_function", "score"})


def _input_position(fn: Callable[..., Any], input_arg: str | None) -> tuple[int, str | None]:
    """Where the model input sits in a call: positional index and keyword name."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 0, input_arg
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if input_arg is not None:
        names = [p.name for p in positional]
        return (names.index(input_arg) if input_arg in names else -1), input_arg
    skip = 1 if positional and positional[0].name in ("self", "cls") else 0
    if len(positional) > skip:
        return skip, positional[skip].name
    return skip, None


def _locate(position: int, keyword: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    if 0 <= position < len(args):
        return args[position]
    if keyword is not None:
        return kwargs.get(keyword)
    return None


@overload
def instrument(fn: F) -> F: ...
@overload
def instrument(
    fn: None = None,
    *,
    name: str | None = None,
    version: str = "",
    framework: str = semconv.FRAMEWORK_CUSTOM,
    operation: str | None = None,
    task: str | None = None,
    output: str = outputs.AUTO,
    classes: Sequence[object] | None = None,
    confidence: Callable[[Any], Any] | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    input_arg: str | None = None,
    reference: Reference | str | os.PathLike[str] | None = None,
    sketch_inputs: bool | None = None,
    drift_window: int | None = None,
    feature_names: Sequence[str] | None = None,
    on_drift: Callable[[DriftEvent], Any] | None = None,
    monitor: MonitorOptions | None = None,
) -> Callable[[F], F]: ...


def instrument(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    version: str = "",
    framework: str = semconv.FRAMEWORK_CUSTOM,
    operation: str | None = None,
    task: str | None = None,
    output: str = outputs.AUTO,
    classes: Sequence[object] | None = None,
    confidence: Callable[[Any], Any] | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    input_arg: str | None = None,
    reference: Reference | str | os.PathLike[str] | None = None,
    sketch_inputs: bool | None = None,
    drift_window: int | None = None,
    feature_names: Sequence[str] | None = None,
    on_drift: Callable[[DriftEvent], Any] | None = None,
    monitor: MonitorOptions | None = None,
) -> Any:
    """Decorate a predict function so each call emits a span and ``ml.prediction.*`` metrics.

    ``name``/``version`` identify the model (name defaults to the function's name); ``operation`` defaults
    to the function's name when it is a known one (``predict_proba`` …), else ``predict``; ``output`` says how
    to read the result (see :mod:`otel_ml._core.outputs`); ``confidence`` maps a result to per-row confidence;
    ``input_arg`` names the parameter holding the model input (default: the first one after ``self``).
    Input monitoring: ``reference`` (a :class:`otel_ml.Reference` or a path to its JSON) is what drift is
    measured against (default: the first ``OTEL_ML_WARMUP_ROWS`` rows); ``drift_window`` rows are compared;
    ``sketch_inputs=False`` turns it off; ``feature_names`` names unnamed columns; ``on_drift`` is called once
    per threshold crossing; ``monitor`` takes every other :class:`MonitorOptions` setting.
    The wrapped function's result and exceptions pass through unchanged.
    """
    options = monitor_options(reference, sketch_inputs, drift_window, feature_names, on_drift, monitor)

    def decorate(f: F) -> F:
        spec = ModelSpec(
            name=name or str(getattr(f, "__name__", "model")),
            version=version,
            framework=framework,
            task=task,
            output=output,
            classes=classes,
            confidence=confidence,
            attributes=dict(attributes or {}),
            monitor=options,
        )
        return wrap_function(f, Recorder(spec), operation, input_arg)

    return decorate(fn) if fn is not None else decorate


def wrap_function(f: F, recorder: Recorder, operation: str | None = None, input_arg: str | None = None) -> F:
    """Wrap ``f`` so each call goes through ``recorder`` (sync or async, signature kept)."""
    fname = getattr(f, "__name__", "")
    op = operation or (fname if fname in KNOWN_OPERATIONS else "predict")
    position, keyword = _input_position(f, input_arg)
    settings = config

    if inspect.iscoroutinefunction(f):

        @functools.wraps(f)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if settings.settings.disabled:
                return await f(*args, **kwargs)
            call = recorder.start(op, _locate(position, keyword, args, kwargs))
            if call is None:
                return await f(*args, **kwargs)
            try:
                result = await f(*args, **kwargs)
            except BaseException as exc:
                recorder.fail(call, exc)
                raise
            recorder.finish(call, result)
            return result

        async_wrapper._otel_ml_recorder = recorder  # type: ignore[attr-defined]
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if settings.settings.disabled:
            return f(*args, **kwargs)
        call = recorder.start(op, _locate(position, keyword, args, kwargs))
        if call is None:
            return f(*args, **kwargs)
        try:
            result = f(*args, **kwargs)
        except BaseException as exc:
            recorder.fail(call, exc)
            raise
        recorder.finish(call, result)
        return result

    wrapper._otel_ml_recorder = recorder  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
