"""The one place a predict call becomes telemetry: its span, ``ml.prediction.*`` metrics and prediction id.

Every adapter (decorator, ``instrument_model``, sklearn/torch instrumentors) calls :meth:`Recorder.start`
before the model and :meth:`Recorder.finish` / :meth:`Recorder.fail` after it. Each of those is guarded: an
internal error is counted and logged (rate-limited), the span is closed, and the user's call is untouched.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from otel_ml import config, semconv
from otel_ml._core import attributes, guard, inputs, outputs, runtime
from otel_ml._core.aggregation import VectorCounter, VectorHistogram
from otel_ml._core.monitor import InputMonitor, MonitorOptions

_SUPPRESS_KEYS = (context._SUPPRESS_INSTRUMENTATION_KEY, "suppress_instrumentation")

_last_prediction_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "otel_ml_last_prediction_id", default=None
)


def last_prediction_id() -> str | None:
    """The ``ml.prediction.id`` of the latest instrumented call made in this thread / async task."""
    return _last_prediction_id.get()


def format_prediction_id(trace_id: int, span_id: int) -> str:
    """A prediction id: the predict span's trace id and span id, so feedback can link back to it."""
    return "%032x-%016x" % (trace_id, span_id)  # noqa: UP031  # printf-style: half an f-string's time here


@dataclass(frozen=True)
class ModelSpec:
    """Who the model is and how to read its outputs; fixed when it is instrumented."""

    name: str
    version: str = ""
    framework: str = semconv.FRAMEWORK_CUSTOM
    task: str | None = None
    output: str = outputs.AUTO
    classes: Sequence[object] | None = None
    confidence: Callable[[Any], Any] | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    monitor: MonitorOptions = field(default_factory=MonitorOptions)

    def __post_init__(self) -> None:
        if self.output not in outputs.KINDS:
            raise ValueError(f"output must be one of {sorted(outputs.KINDS)}, not {self.output!r}")
        if self.task not in (None, semconv.TASK_CLASSIFICATION, semconv.TASK_REGRESSION):
            raise ValueError(f"task must be 'classification', 'regression' or None, not {self.task!r}")


@dataclass(frozen=True)
class _Series:
    """A metric attribute set and its precomputed key."""

    attributes: dict[str, AttributeValue]
    key: frozenset[tuple[str, AttributeValue]]

    @classmethod
    def of(cls, attributes: dict[str, AttributeValue]) -> _Series:
        return cls(attributes, frozenset(attributes.items()))


@dataclass
class _Operation:
    """Per-operation constants, built once per provider generation, with the instruments its calls record
    into (so a call's deferred record needs nothing of its Recorder, which it must not keep alive)."""

    span_name: str
    span_attributes: dict[str, AttributeValue]
    metric_attributes: dict[str, AttributeValue]
    metric_key: frozenset[tuple[str, AttributeValue]]
    kind: str
    duration: VectorHistogram
    count: VectorCounter
    confidence: VectorHistogram
    classes: VectorCounter
    error_attributes: dict[str, _Series] = field(default_factory=dict)
    class_attributes: dict[object, _Series] = field(default_factory=dict)


@dataclass
class Call:
    """One in-flight predict call."""

    op: _Operation
    span: Span
    token: object
    batch: int
    t0: float


_models_lock = threading.Lock()
_models: set[tuple[str, str]] = set()


def _metric_identity(name: str, version: str) -> tuple[str, str]:
    """The (name, version) used on metrics: capped at OTEL_ML_MAX_MODELS distinct pairs per process."""
    key = (name, version)
    with _models_lock:
        if key in _models:
            return key
        if len(_models) < config.settings.max_models:
            _models.add(key)
            return key
    return (semconv.MODEL_OVERFLOW, semconv.MODEL_OVERFLOW)


def _prediction_id(ctx: SpanContext) -> str:
    """The call's ``ml.prediction.id`` (also kept for :func:`last_prediction_id`)."""
    if ctx.is_valid:
        pid = format_prediction_id(ctx.trace_id, ctx.span_id)
    else:  # tracing is off: still unique, but nothing to link feedback to
        pid = format_prediction_id(random.getrandbits(128), random.getrandbits(64))
    _last_prediction_id.set(pid)
    return pid


def _apply(record: tuple[Any, ...]) -> None:
    """A successful call's single-value metrics: its duration, rows, a single row's confidence, class counts."""
    op, elapsed, batch, top, class_series, ctx, at_ns = record
    attrs, key = op.metric_attributes, op.metric_key
    try:
        if top is not None:
            op.confidence.record_one(top, attrs, key, ctx, at_ns)
        if class_series:
            for series, n in class_series:
                op.classes.add(n, series.attributes, series.key)
        op.duration.record_one(elapsed, attrs, key, ctx, at_ns)
        op.count.add(batch, attrs, key)
    except Exception as exc:
        guard.internal_error("metrics", exc)


class Recorder:
    """Builds the telemetry of every call of one model."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.name = attributes.text(spec.name)
        self.version = attributes.text(spec.version)
        self._metric_name, self._metric_version = _metric_identity(self.name, self.version)
        self._static = attributes.mapping(spec.attributes)
        self._generation = -1
        self._ops: dict[str, _Operation] = {}
        self._lock = threading.Lock()
        self._labels: set[object] = set()
        self._labels_of: tuple[object, Sequence[object] | None] = (None, None)
        self.monitor: InputMonitor | None = None
        sketch = spec.monitor.sketch_inputs
        if sketch or (sketch is None and config.settings.sketch_inputs):
            model_attrs = {semconv.ML_MODEL_NAME: self._metric_name, semconv.ML_MODEL_VERSION: self._metric_version}
            self.monitor = InputMonitor(self.name, self.version, model_attrs, spec.monitor)

    # -- binding -------------------------------------------------------------------------------------------
    def _bind(self, rt: runtime.Runtime) -> None:
        agg = rt.aggregator
        self._tracer = rt.tracer
        self._aggregator = agg
        self._duration = agg.histogram(
            semconv.PREDICTION_DURATION,
            semconv.PREDICTION_DURATION_UNIT,
            "Duration of model predict calls",
            semconv.DURATION_BUCKETS,
        )
        self._count = agg.counter(semconv.PREDICTION_COUNT, semconv.PREDICTION_COUNT_UNIT, "Rows predicted")
        self._classes = agg.counter(semconv.PREDICTION_CLASS, semconv.PREDICTION_CLASS_UNIT, "Rows per predicted class")
        self._confidence = agg.histogram(
            semconv.PREDICTION_CONFIDENCE,
            semconv.PREDICTION_CONFIDENCE_UNIT,
            "Per-row confidence (top-class probability)",
            semconv.UNIT_INTERVAL_BUCKETS,
        )
        self._values = agg.histogram(
            semconv.PREDICTION_VALUE, semconv.PREDICTION_VALUE_UNIT, "Per-row regression outputs", semconv.VALUE_BUCKETS
        )
        self._ops = {}
        self._generation = rt.generation

    def _operation(self, operation: str) -> _Operation:
        op = self._ops.get(operation)
        if op is None:
            operation = attributes.text(operation, 64)
            span_attributes: dict[str, AttributeValue] = {
                **self._static,
                semconv.ML_MODEL_NAME: self.name,
                semconv.ML_MODEL_VERSION: self.version,
                semconv.ML_MODEL_FRAMEWORK: self.spec.framework,
                semconv.ML_OPERATION: operation,
            }
            if self.spec.task:
                span_attributes[semconv.ML_MODEL_TASK] = self.spec.task
            metric_attributes: dict[str, AttributeValue] = {
                semconv.ML_MODEL_NAME: self._metric_name,
                semconv.ML_MODEL_VERSION: self._metric_version,
                semconv.ML_OPERATION: operation,
            }
            op = _Operation(
                span_name=semconv.span_name(operation, self.name),
                span_attributes=span_attributes,
                metric_attributes=metric_attributes,
                metric_key=frozenset(metric_attributes.items()),
                kind=outputs.resolve_kind(self.spec.output, operation),
                duration=self._duration,
                count=self._count,
                confidence=self._confidence,
                classes=self._classes,
            )
            self._ops[operation] = op
        return op

    # -- the guarded hot path ------------------------------------------------------------------------------
    def start(self, operation: str, x: object) -> Call | None:
        """Open the span for one call with model input ``x``; ``None`` when suppressed or on an internal error."""
        try:
            current = context.get_current()
            if current.get(_SUPPRESS_KEYS[0]) or current.get(_SUPPRESS_KEYS[1]):
                return None
            rt = runtime.get()
            if self._generation != rt.generation:
                self._bind(rt)
            op = self._ops.get(operation) or self._operation(operation)
            batch = inputs.batch_size(x)
            if self.monitor is not None:
                self._observe(x)
            attrs = dict(op.span_attributes)
            attrs[semconv.ML_BATCH_SIZE] = batch
            # the context read above, passed on: the SDK and set_span_in_context would each read it again
            span = self._tracer.start_span(op.span_name, current, SpanKind.INTERNAL, attrs)
            token = context.attach(trace.set_span_in_context(span, current))
            return Call(op, span, token, batch, time.perf_counter())
        except Exception as exc:
            guard.internal_error("start", exc)
            return None

    def _observe(self, x: object) -> None:
        assert self.monitor is not None
        try:
            self.monitor.observe(x)
        except Exception as exc:  # sketching failed: the span and metrics of this call still record
            guard.internal_error("sketch", exc)

    def _monitor_details(self, monitor: InputMonitor, span: Span, attrs: dict[str, AttributeValue]) -> None:
        """The active reference on the span, and any drift crossing queued since the last call."""
        ref = monitor.reference
        if ref is not None:
            attrs[semconv.ML_REFERENCE_ID] = ref.id
            attrs[semconv.ML_REFERENCE_SOURCE] = ref.source
        for event in monitor.take_events():
            span.add_event(
                semconv.DRIFT_EVENT,
                {
                    semconv.ML_FEATURE_NAME: event.feature,
                    semconv.ML_DRIFT_METHOD: event.method,
                    semconv.ML_DRIFT_SCORE: event.score,
                    semconv.ML_DRIFT_THRESHOLD: event.threshold,
                    semconv.ML_REFERENCE_ID: event.reference_id,
                },
            )

    def finish(self, call: Call, result: object, classes: Sequence[object] | None = None) -> None:
        """Record a successful call's metrics and close its span."""
        elapsed = time.perf_counter() - call.t0
        try:
            self._finish(call, result, elapsed, classes)
        except Exception as exc:
            self._close(call)
            guard.internal_error("finish", exc)

    def fail(self, call: Call, exc: BaseException) -> None:
        """Record a failed call (status ERROR, ``error.type``, redacted exception event) and close its span."""
        elapsed = time.perf_counter() - call.t0
        try:
            self._fail(call, exc, elapsed)
        except Exception as internal:
            self._close(call)
            guard.internal_error("fail", internal)

    def _finish(self, call: Call, result: object, elapsed: float, classes: Sequence[object] | None) -> None:
        op, span = call.op, call.span
        analysis = self._analyze(op, result, classes)
        ctx = span.get_span_context()
        span_attrs: dict[str, AttributeValue] = {semconv.ML_PREDICTION_ID: _prediction_id(ctx)}
        attrs, key = op.metric_attributes, op.metric_key
        conf, top = analysis.confidence, analysis.top
        if top is not None:  # a single row: the per-call path, no arrays (its value is recorded in _apply)
            span_attrs[semconv.ML_PREDICTION_CONFIDENCE_MEAN] = span_attrs[semconv.ML_PREDICTION_CONFIDENCE_MIN] = top
        elif conf is not None and conf.size:
            total = analysis.confidence_sum if analysis.confidence_sum is not None else float(np.add.reduce(conf))
            low = float(np.minimum.reduce(conf))  # the ufunc itself: ndarray.min runs a Python wrapper first
            span_attrs[semconv.ML_PREDICTION_CONFIDENCE_MEAN] = total / conf.size
            span_attrs[semconv.ML_PREDICTION_CONFIDENCE_MIN] = low
            self._confidence.record(conf, attrs, key, ctx, total=total, low=low)
        if analysis.values is not None and analysis.values.size:
            self._values.record(analysis.values, attrs, key, ctx)
        series = None
        if analysis.class_counts:
            series = [(self._class_series(op, label), n) for label, n in analysis.class_counts]
        record = (op, elapsed, call.batch, top, series, ctx, time.time_ns())
        agg = self._aggregator
        if agg.merging:  # applied before the next collection (Aggregator.defer says why)
            agg.defer(_apply, record)
        else:  # values go to SDK instruments, whose collection knows nothing of ours: now
            _apply(record)
        if self.monitor is not None:
            self._monitor_details(self.monitor, span, span_attrs)
        span.set_attributes(span_attrs)
        self._close(call)

    def _fail(self, call: Call, exc: BaseException, elapsed: float) -> None:
        op, span = call.op, call.span
        etype = attributes.error_type(exc)
        message = attributes.text(str(exc)) if config.settings.capture_exception_message else semconv.REDACTED
        span_attrs: dict[str, AttributeValue] = {
            semconv.ML_PREDICTION_ID: _prediction_id(span.get_span_context()),
            semconv.ERROR_TYPE: etype,
        }
        if self.monitor is not None:
            self._monitor_details(self.monitor, span, span_attrs)
        span.set_attributes(span_attrs)
        span.add_event(semconv.EXCEPTION_EVENT, {semconv.EXCEPTION_TYPE: etype, semconv.EXCEPTION_MESSAGE: message})
        span.set_status(Status(StatusCode.ERROR, etype))
        series = op.error_attributes.get(etype)
        if series is None:
            series = _Series.of({**op.metric_attributes, semconv.ERROR_TYPE: etype})
            if len(op.error_attributes) < 64:
                op.error_attributes[etype] = series
        self._duration.record_one(elapsed, series.attributes, series.key, span.get_span_context())
        self._close(call)

    def _close(self, call: Call) -> None:
        try:
            context.detach(call.token)  # type: ignore[arg-type]
        finally:
            call.span.end()

    def _analyze(self, op: _Operation, result: object, classes: Sequence[object] | None) -> outputs.Analysis:
        spec = self.spec
        if spec.confidence is not None:
            conf = np.asarray(spec.confidence(result), dtype=np.float64).reshape(-1)
            return outputs.Analysis(confidence=conf[np.isfinite(conf)])
        # explicit classes= win over the model's own classes_
        return outputs.analyze(
            result, op.kind, self._class_labels(classes if spec.classes is None else spec.classes), spec.task
        )

    def _class_labels(self, classes: Sequence[object] | None) -> Sequence[object] | None:
        """``classes`` as Python values (:func:`outputs.python_labels`), converted once per ``classes_`` array: a
        numpy scalar label costs microseconds to make, hash and compare on every call."""
        seen, labels = self._labels_of
        if classes is not seen:
            labels = outputs.python_labels(classes)
            self._labels_of = (classes, labels)  # one tuple: a concurrent call reads a matching pair
        return labels

    def _class_series(self, op: _Operation, label: object) -> _Series:
        series = op.class_attributes.get(label)
        if series is not None:
            return series
        with self._lock:
            if label not in self._labels and len(self._labels) >= config.settings.max_class_labels:
                value = semconv.CLASS_OVERFLOW
            else:
                self._labels.add(label)
                value = attributes.text(label, 64)
        series = _Series.of({**op.metric_attributes, semconv.ML_PREDICTION_CLASS: value})
        if value != semconv.CLASS_OVERFLOW:
            op.class_attributes[label] = series
        return series
