"""Delayed ground truth: ``otel_ml.record_outcome`` joins a label to the prediction it belongs to.

Labels usually arrive long after the prediction (a chargeback, a diagnosis, a click), often in another
process such as a label-ingestion job. The prediction id carries everything needed to *link* them::

    ml.prediction.id = "<32-hex trace id>-<16-hex span id>"   # of the predict span

so :func:`record_outcome` emits an ``ml.outcome`` span with a span link to the original predict span (the
trace backend shows the two together) and updates outcome metrics, with no shared database.

**The trade-off, and what the caller must pass.** The id says *where* the prediction is (its span), not
*what* it was: no model name, no version, no predicted value. Those are not on the predict span either (otel-ml
records no raw outputs), and looking them up would need a store shared by every replica and the ingestion
job. So the caller passes them: ``model=`` and ``version=`` (what the service was serving) and ``predicted=``
(what the service returned, e.g. kept beside the id in the response log). This keeps otel-ml stateless and
works across processes, restarts and replicas; the cost is that whoever stores the id also stores the
prediction. (Alternatives: a service-side cache of recent predictions, which works only while the same
replica gets the label within the cache's lifetime — ``examples/service/app.py`` shows one as a convenience —
or a real feature/prediction store.)

Metrics (attributes ``ml.model.name``, ``ml.model.version``):

- ``ml.outcome.count`` (counter, ``{outcome}``): rows of ground truth; classification rows also carry
  ``ml.outcome.correct`` = true/false (both series are created, so the ratio below never lacks a side).
- ``ml.outcome.error`` (histogram, ``1``): absolute error ``|actual - predicted|`` of regression rows, with
  exemplars linking to the ``ml.outcome`` spans.
- ``ml.model.accuracy`` (gauge): realised accuracy over ``OTEL_ML_ACCURACY_WINDOW``, next to the
  confidence-based ``ml.model.estimated_accuracy`` (see :mod:`otel_ml._core.estimate`).

Accuracy over time, fleet-wide, in PromQL::

    sum by (ml_model_name, ml_model_version) (rate(ml_outcome_count_total{ml_outcome_correct="true"}[1h]))
      /
    sum by (ml_model_name, ml_model_version) (rate(ml_outcome_count_total{ml_outcome_correct=~"true|false"}[1h]))

Mean absolute error of a regression model::

    sum by (ml_model_name, ml_model_version) (rate(ml_outcome_error_sum[1h]))
      / sum by (ml_model_name, ml_model_version) (rate(ml_outcome_error_count[1h]))

Rejections never raise in the caller's path (unless ``strict=True``): they return ``False``, are counted in
``otel_ml.telemetry.dropped{reason}`` and logged (rate-limited), with reasons ``outcome_invalid_id``,
``outcome_unknown_model``, ``outcome_missing_predicted`` and ``outcome_invalid_value``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import AttributeValue

from otel_ml import config, semconv
from otel_ml._core import attributes as _attributes
from otel_ml._core import estimate, guard, outputs, runtime
from otel_ml._core.recorder import _metric_identity

_ID = re.compile(r"([0-9a-f]{32})-([0-9a-f]{16})")

__all__ = ["OutcomeRejected", "parse_prediction_id", "record_outcome"]


class OutcomeRejected(ValueError):
    """Raised by ``record_outcome(..., strict=True)`` for an outcome it would otherwise count and drop."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"record_outcome rejected the outcome ({reason}): {detail}")
        self.reason = reason


def parse_prediction_id(prediction_id: str) -> tuple[int, int]:
    """The (trace id, span id) of the predict span a prediction id names; ``ValueError`` when malformed.

    The format is exactly what otel-ml emits: 32 lowercase hex digits, ``-``, 16 lowercase hex digits, neither
    all zeros (W3C: an all-zero trace or span id is invalid).
    """
    match = _ID.fullmatch(prediction_id) if isinstance(prediction_id, str) else None
    if match is None:
        raise ValueError(f"not a prediction id (expected <32 hex>-<16 hex>): {str(prediction_id)[:80]!r}")
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if trace_id == 0 or span_id == 0:
        raise ValueError(f"prediction id has an all-zero trace or span id: {prediction_id!r}")
    return trace_id, span_id


def _rows(value: object) -> np.ndarray | None:
    """``value`` (scalar, list, numpy, pandas, torch) as a 1-D array, or ``None`` when it is not one."""
    arr = outputs.to_numpy(value)
    if arr is None:
        return None
    if arr.ndim == 0:
        return arr.reshape(1)
    if arr.ndim == 2 and arr.shape[1] == 1:
        return arr.reshape(-1)
    return arr if arr.ndim == 1 else None


def _infer_task(actual: np.ndarray) -> str:
    """Floats are regression targets; bools, integers and strings are class labels."""
    return semconv.TASK_REGRESSION if actual.dtype.kind == "f" else semconv.TASK_CLASSIFICATION


def record_outcome(
    prediction_id: str,
    actual: Any,
    *,
    model: str | None = None,
    version: str | None = None,
    predicted: Any = None,
    task: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> bool:
    """Record the ground truth ``actual`` of the prediction ``prediction_id`` (from any process, any time later).

    ``model`` / ``version`` name the model that made the prediction (the id does not encode them) and
    ``predicted`` is the value it returned (the id does not encode that either: see the module docstring for
    why). ``actual`` and ``predicted`` are a scalar each, or equal-length sequences (numpy, pandas, lists,
    torch) for a batch prediction that shared one id. ``task`` is ``"classification"`` (``predicted ==
    actual`` per row) or ``"regression"`` (absolute error per row); by default float values mean regression
    and bools, integers and strings mean classification (pass ``task=`` for integer regression targets).
    ``attributes`` are added to the ``ml.outcome`` span (sanitised).

    Emits one ``ml.outcome`` span, a child of the current context (e.g. the request that delivered the label),
    with a link to the prediction's span, and updates ``ml.outcome.count`` / ``ml.outcome.error``. Returns
    True when recorded. An invalid outcome returns False and is counted in ``otel_ml.telemetry.dropped`` under
    ``outcome_invalid_id``, ``outcome_unknown_model``, ``outcome_missing_predicted`` or
    ``outcome_invalid_value``; with ``strict=True`` it raises :class:`OutcomeRejected` (a ``ValueError``)
    instead. With ``OTEL_ML_DISABLED=true`` nothing is recorded and it returns False.
    """
    if config.settings.disabled:
        return False
    try:
        trace_id, span_id = parse_prediction_id(prediction_id)
    except ValueError as exc:
        return _reject(semconv.DROP_OUTCOME_INVALID_ID, str(exc), strict)
    if not isinstance(model, str) or not model.strip():
        return _reject(
            semconv.DROP_OUTCOME_UNKNOWN_MODEL, "model= is required (the prediction id does not name it)", strict
        )
    if predicted is None:
        return _reject(
            semconv.DROP_OUTCOME_MISSING_PREDICTED,
            "predicted= is required (the prediction id does not carry the predicted value)",
            strict,
        )
    if task not in (None, semconv.TASK_CLASSIFICATION, semconv.TASK_REGRESSION):
        detail = f"task must be 'classification' or 'regression', not {task!r}"
        return _reject(semconv.DROP_OUTCOME_INVALID_VALUE, detail, strict)
    truth, guess = _rows(actual), _rows(predicted)
    if truth is None or guess is None or truth.size == 0 or truth.size != guess.size:
        return _reject(
            semconv.DROP_OUTCOME_INVALID_VALUE,
            "actual and predicted must be scalars or 1-D sequences of the same non-zero length",
            strict,
        )
    task = task or _infer_task(truth)
    errors: np.ndarray | None = None
    correct: np.ndarray | None = None
    if task == semconv.TASK_REGRESSION:
        try:
            errors = np.abs(np.asarray(truth, dtype=np.float64) - np.asarray(guess, dtype=np.float64))
        except (TypeError, ValueError):
            errors = None
        if errors is None or not np.isfinite(errors).all():
            return _reject(semconv.DROP_OUTCOME_INVALID_VALUE, "regression outcomes need finite numeric values", strict)
    else:
        correct = np.fromiter(
            (a == p for a, p in zip(truth.tolist(), guess.tolist(), strict=True)), dtype=bool, count=truth.size
        )
    try:
        _record(trace_id, span_id, prediction_id, model, version or "", task, correct, errors, attributes)
    except Exception as exc:
        guard.internal_error("outcome", exc)
        return False
    return True


def _record(
    trace_id: int,
    span_id: int,
    prediction_id: str,
    model: str,
    version: str,
    task: str,
    correct: np.ndarray | None,
    errors: np.ndarray | None,
    extra: Mapping[str, Any] | None,
) -> None:
    rt = runtime.get()
    estimate.install()  # idempotent: a runtime replaced since import gets its estimator too
    name, version = _attributes.text(model), _attributes.text(version)
    metric_name, metric_version = _metric_identity(name, version)
    rows = int(correct.size if correct is not None else errors.size if errors is not None else 0)
    span_attrs: dict[str, AttributeValue] = {
        **_attributes.mapping(extra),
        semconv.ML_MODEL_NAME: name,
        semconv.ML_MODEL_VERSION: version,
        semconv.ML_MODEL_TASK: task,
        semconv.ML_OPERATION: semconv.OPERATION_OUTCOME,
        semconv.ML_PREDICTION_ID: prediction_id,
        semconv.ML_OUTCOME_ROWS: rows,
    }
    if correct is not None:
        n_correct = int(correct.sum())
        if rows == 1:
            span_attrs[semconv.ML_OUTCOME_CORRECT] = bool(correct[0])
        else:
            span_attrs[semconv.ML_OUTCOME_ACCURACY] = n_correct / rows
    if errors is not None:
        if rows == 1:
            span_attrs[semconv.ML_OUTCOME_ERROR] = float(errors[0])
        else:
            span_attrs[semconv.ML_OUTCOME_ERROR_MEAN] = float(errors.mean())
    link = Link(
        SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
        {semconv.ML_PREDICTION_ID: prediction_id},
    )
    span = rt.tracer.start_span(semconv.OUTCOME_SPAN_NAME, kind=SpanKind.INTERNAL, attributes=span_attrs, links=[link])
    try:
        ctx = span.get_span_context()
        agg = rt.aggregator
        counter = agg.counter(semconv.OUTCOME_COUNT, semconv.OUTCOME_COUNT_UNIT, estimate.OUTCOME_COUNT_DESCRIPTION)
        base: dict[str, AttributeValue] = {semconv.ML_MODEL_NAME: metric_name, semconv.ML_MODEL_VERSION: metric_version}
        if correct is not None:
            n_correct = int(correct.sum())
            for verdict, n in ((True, n_correct), (False, rows - n_correct)):
                attrs = {**base, semconv.ML_OUTCOME_CORRECT: verdict}
                counter.add(n, attrs, frozenset(attrs.items()))
        else:
            assert errors is not None
            key = frozenset(base.items())
            counter.add(rows, base, key)
            histogram = agg.histogram(
                semconv.OUTCOME_ERROR,
                semconv.OUTCOME_ERROR_UNIT,
                "Absolute error of regression predictions, from delayed ground truth",
                semconv.ABSOLUTE_ERROR_BUCKETS,
            )
            if rows == 1:
                histogram.record_one(float(errors[0]), base, key, ctx if ctx.is_valid else None)
            else:
                histogram.record(errors, base, key, ctx if ctx.is_valid else None)
    finally:
        span.end()


def _reject(reason: str, detail: str, strict: bool) -> bool:
    runtime.get().count_drop(reason)
    guard.log.warning("outcome:" + reason, "otel_ml: outcome rejected (%s): %s", reason, detail)
    if strict:
        raise OutcomeRejected(reason, detail)
    return False
