"""Every attribute name, metric name, unit and bucket boundary otel-ml emits, in one place.

Naming mirrors the OpenTelemetry GenAI conventions (`{operation} {model}` span names, seconds for durations,
`error.type` on failures) under an `ml.` namespace; otel-ml's own health metrics live under `otel_ml.`.
The README's telemetry table is the human-readable copy of this module.
"""

from __future__ import annotations

SCOPE_NAME = "otel_ml"

# --- span / metric attributes -------------------------------------------------------------------------
ML_MODEL_NAME = "ml.model.name"
ML_MODEL_VERSION = "ml.model.version"
ML_MODEL_FRAMEWORK = "ml.model.framework"
ML_MODEL_TASK = "ml.model.task"
ML_OPERATION = "ml.operation"
ML_BATCH_SIZE = "ml.batch.size"
ML_PREDICTION_ID = "ml.prediction.id"
ML_PREDICTION_CONFIDENCE_MEAN = "ml.prediction.confidence.mean"
ML_PREDICTION_CONFIDENCE_MIN = "ml.prediction.confidence.min"
ML_PREDICTION_CLASS = "ml.prediction.class"
ERROR_TYPE = "error.type"

ML_FEATURE_NAME = "ml.feature.name"
ML_FEATURE_CATEGORY = "ml.feature.category"
ML_DRIFT_METHOD = "ml.drift.method"
ML_DRIFT_SCORE = "ml.drift.score"
ML_DRIFT_THRESHOLD = "ml.drift.threshold"
ML_REFERENCE_ID = "ml.reference.id"
ML_REFERENCE_SOURCE = "ml.reference.source"

# otel-ml self-observability attributes
OTEL_ML_STAGE = "otel_ml.stage"
OTEL_ML_REASON = "reason"

# --- span names and events ----------------------------------------------------------------------------
SPAN_NAME_FORMAT = "{operation} {model}"
EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
REDACTED = "<redacted>"
DRIFT_EVENT = "ml.drift.detected"

# --- metrics ------------------------------------------------------------------------------------------
PREDICTION_DURATION = "ml.prediction.duration"
PREDICTION_DURATION_UNIT = "s"
PREDICTION_COUNT = "ml.prediction.count"
PREDICTION_COUNT_UNIT = "{prediction}"
PREDICTION_CONFIDENCE = "ml.prediction.confidence"
PREDICTION_CONFIDENCE_UNIT = "1"
PREDICTION_CLASS = "ml.prediction.class"
PREDICTION_CLASS_UNIT = "{prediction}"
PREDICTION_VALUE = "ml.prediction.value"
PREDICTION_VALUE_UNIT = "1"

FEATURE_RANK = "ml.feature.rank"
FEATURE_RANK_UNIT = "1"
FEATURE_CATEGORY = "ml.feature.category"
FEATURE_CATEGORY_UNIT = "{value}"
FEATURE_DRIFT = "ml.feature.drift"
MODEL_DRIFT = "ml.model.drift"
DRIFT_UNIT = "1"
FEATURE_MISSING = "ml.feature.missing"
FEATURE_OUT_OF_RANGE = "ml.feature.out_of_range"
FEATURE_UNSEEN_CATEGORY = "ml.feature.unseen_category"
FEATURE_TYPE_MISMATCH = "ml.feature.type_mismatch"
FEATURE_QUALITY_UNIT = "{value}"

INTERNAL_ERRORS = "otel_ml.internal.errors"
INTERNAL_ERRORS_UNIT = "{error}"
TELEMETRY_DROPPED = "otel_ml.telemetry.dropped"
TELEMETRY_DROPPED_UNIT = "{item}"

# --- attribute values ---------------------------------------------------------------------------------
FRAMEWORK_CUSTOM = "custom"
FRAMEWORK_SKLEARN = "sklearn"
FRAMEWORK_TORCH = "torch"
FRAMEWORK_XGBOOST = "xgboost"
FRAMEWORK_LIGHTGBM = "lightgbm"
FRAMEWORK_ONNXRUNTIME = "onnxruntime"
TASK_CLASSIFICATION = "classification"
TASK_REGRESSION = "regression"
CLASS_OVERFLOW = "__other__"
MODEL_OVERFLOW = "__overflow__"

REFERENCE_TRAINING = "training"
REFERENCE_WARMUP = "warmup"
CATEGORY_OTHER = "__other__"
CATEGORY_UNSEEN = "__unseen__"
DRIFT_METHODS = ("psi", "ks", "js", "wasserstein", "chi2")

# drop reasons for otel_ml.telemetry.dropped (input_* reasons come from otel_ml.sketch.columns.Skip)
DROP_QUEUE_FULL = "queue_full"
DROP_SHUTDOWN = "already_shutdown"
DROP_FEATURE_LIMIT = "feature_limit"
DROP_SHAPE_CHANGED = "input_shape_changed"

# --- bucket boundaries ----------------------------------------------------------------------------------
# Model latency: 100 µs (tiny linear models) to 10 s (large batches / deep models), roughly 1-2.5-5 steps.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Probabilities: uniform buckets 0.05 apart over [0, 1] (upper bounds 0.05 … 1.0).
UNIT_INTERVAL_BUCKETS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 21))
# Regression outputs of unknown scale: symmetric 1-2.5-5 steps from 1e-3 to 1e6, and 0.
_POSITIVE = (*(m * 10.0**e for e in range(-3, 6) for m in (1.0, 2.5, 5.0)), 1e6)
VALUE_BUCKETS: tuple[float, ...] = (*(-v for v in reversed(_POSITIVE)), 0.0, *_POSITIVE)


def span_name(operation: str, model: str) -> str:
    """The span name for one predict call, e.g. ``predict_proba fraud``."""
    return f"{operation} {model}"


# --- auto-instrumentation (sklearn Pipelines) -------------------------------------------------------------
ML_PIPELINE_STEPS = "ml.pipeline.steps"
"""Span attribute: the step names of a scikit-learn Pipeline, in order (string array)."""
ML_PIPELINE_STEP = "ml.pipeline.step"
"""Attribute of an opt-in per-step child span: the step's name (``outer__inner`` for nested Pipelines)."""


# --- delayed ground truth, accuracy estimate, shadow deployments (issue #6) -------------------------------
ML_OUTCOME_CORRECT = "ml.outcome.correct"
"""Metric and span attribute (bool): the predicted class equals the actual one (classification outcomes)."""
ML_OUTCOME_ERROR = "ml.outcome.error"
"""Span attribute (double): absolute error of a single-row regression outcome."""
ML_OUTCOME_ROWS = "ml.outcome.rows"
"""Span attribute (int): rows of ground truth carried by one outcome."""
ML_OUTCOME_ACCURACY = "ml.outcome.accuracy"
"""Span attribute (double): share of correct rows of a multi-row classification outcome."""
ML_OUTCOME_ERROR_MEAN = "ml.outcome.error.mean"
"""Span attribute (double): mean absolute error of a multi-row regression outcome."""
ML_SHADOW_AGREED = "ml.shadow.agreed"
"""Metric attribute (bool): the candidate's prediction for a row agreed with the primary's."""
ML_SHADOW_CANDIDATE_VERSION = "ml.shadow.candidate.version"
"""Metric attribute: the candidate's model version (``ml.model.version`` is the primary's)."""

OUTCOME_SPAN_NAME = "ml.outcome"
"""Span of one ground-truth record; it links to the prediction span named by the prediction id."""
OPERATION_OUTCOME = "outcome"

OUTCOME_COUNT = "ml.outcome.count"
OUTCOME_COUNT_UNIT = "{outcome}"
OUTCOME_ERROR = "ml.outcome.error"
OUTCOME_ERROR_UNIT = "1"
MODEL_ACCURACY = "ml.model.accuracy"
MODEL_ESTIMATED_ACCURACY = "ml.model.estimated_accuracy"
ACCURACY_UNIT = "1"
SHADOW_COMPARISONS = "ml.shadow.comparisons"
SHADOW_COMPARISONS_UNIT = "{comparison}"

# Absolute errors of unknown scale: 0, then 1-2.5-5 steps from 1e-3 to 1e6.
ABSOLUTE_ERROR_BUCKETS: tuple[float, ...] = (0.0, *_POSITIVE)

DROP_OUTCOME_INVALID_ID = "outcome_invalid_id"
DROP_OUTCOME_UNKNOWN_MODEL = "outcome_unknown_model"
DROP_OUTCOME_MISSING_PREDICTED = "outcome_missing_predicted"
DROP_OUTCOME_INVALID_VALUE = "outcome_invalid_value"
DROP_SHADOW_QUEUE_FULL = "shadow_queue_full"
DROP_SHADOW_CANDIDATE_ERROR = "shadow_candidate_error"
