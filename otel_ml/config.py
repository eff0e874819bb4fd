"""Every ``OTEL_ML_*`` environment variable, parsed once into one settings object.

Parsing fails closed: an unreadable value falls back to the safe default (capture options off) with one
warning, never an exception at predict time. Standard ``OTEL_*`` variables (endpoint, protocol, headers,
service name, exemplar filter, export interval) are read by the OpenTelemetry SDK and exporters themselves.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

_log = logging.getLogger("otel_ml")

OTEL_ML_DISABLED = "OTEL_ML_DISABLED"
"""``true`` turns every otel-ml wrapper into a pass-through (no span, no metric)."""
OTEL_ML_STRICT = "OTEL_ML_STRICT"
"""``1``/``true`` re-raises otel-ml's internal errors instead of swallowing them (tests, staging)."""
OTEL_ML_CAPTURE_EXCEPTION_MESSAGE = "OTEL_ML_CAPTURE_EXCEPTION_MESSAGE"
"""``true`` records exception messages on spans; by default only the exception type is recorded."""
OTEL_ML_MAX_CLASS_LABELS = "OTEL_ML_MAX_CLASS_LABELS"
"""Distinct predicted-class labels kept per model (default 50); later ones count as ``__other__``."""
OTEL_ML_MAX_MODELS = "OTEL_ML_MAX_MODELS"
"""Distinct (model name, version) pairs with their own series (default 200); later ones share ``__overflow__``."""
OTEL_ML_ATTRIBUTE_VALUE_MAX_LENGTH = "OTEL_ML_ATTRIBUTE_VALUE_MAX_LENGTH"
"""Longest string attribute otel-ml emits (default 256 characters)."""
OTEL_ML_QUEUE_SIZE = "OTEL_ML_QUEUE_SIZE"
"""Tasks the background worker may hold (default 1024); beyond it work is dropped and counted."""
OTEL_ML_SHUTDOWN_TIMEOUT = "OTEL_ML_SHUTDOWN_TIMEOUT"
"""Seconds the exit-time shutdown may take (default 5, at most 3600)."""
OTEL_ML_LOG_INTERVAL = "OTEL_ML_LOG_INTERVAL"
"""Seconds between two log lines about the same internal problem (default 60)."""
OTEL_ML_SKETCH_INPUTS = "OTEL_ML_SKETCH_INPUTS"
"""``false`` turns input sketching (feature distributions, drift, data quality) off for every model."""
OTEL_ML_DRIFT_WINDOW = "OTEL_ML_DRIFT_WINDOW"
"""Rows in the sliding window drift is computed over (default 5000; 0 = time window only)."""
OTEL_ML_DRIFT_INTERVAL = "OTEL_ML_DRIFT_INTERVAL"
"""Seconds between two drift computations per model (default 10; also computed on ``force_flush``)."""
OTEL_ML_WARMUP_ROWS = "OTEL_ML_WARMUP_ROWS"
"""Rows that become the provisional reference when none is given (default 1000)."""
OTEL_ML_MAX_FEATURES = "OTEL_ML_MAX_FEATURES"
"""Features sketched per model (default 100); further columns are counted as dropped (``feature_limit``)."""
OTEL_ML_CAPTURE_CATEGORIES = "OTEL_ML_CAPTURE_CATEGORIES"
"""``true`` exports categorical feature values (reference top-K) as labels; by default they are ``top<k>``."""
OTEL_ML_ACCURACY_WINDOW = "OTEL_ML_ACCURACY_WINDOW"
"""Seconds of the window ``ml.model.estimated_accuracy`` and ``ml.model.accuracy`` are computed over (300)."""
OTEL_ML_CARDINALITY_LIMIT = "OTEL_ML_CARDINALITY_LIMIT"
"""Series per otel-ml instrument (default 2000); further attribute sets add up in one overflow series."""
OTEL_ML_SKETCH_THREADS = "OTEL_ML_SKETCH_THREADS"
"""Threads sketching the columns of large batches (default min(2, cores); 1 = only the worker thread)."""
OTEL_ML_SKETCH_BUFFER_ROWS = "OTEL_ML_SKETCH_BUFFER_ROWS"
"""Rows buffered on the caller's thread before a vectorised sketch update on the worker (default 16384, at most
65536). The buffer grows as rows arrive and never holds more than 2 MiB (rows x features x 8 bytes): 13,107 rows
of 20 features; lower this to hold less. Buffers are also handed over at every metric export, so a quiet model's
rows are never held longer than one export interval."""

MAX_SHUTDOWN_TIMEOUT = 3600.0
"""Largest accepted ``OTEL_ML_SHUTDOWN_TIMEOUT``: beyond ``threading.TIMEOUT_MAX`` waits raise ``OverflowError``."""
MAX_SKETCH_BUFFER_ROWS = 65536
"""Largest accepted ``OTEL_ML_SKETCH_BUFFER_ROWS`` (the buffer also stays within 2 MiB: ``monitor.BUFFER_VALUES``)."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Settings:
    """otel-ml's configuration as read from the environment."""

    disabled: bool = False
    strict: bool = False
    capture_exception_message: bool = False
    max_class_labels: int = 50
    max_models: int = 200
    attribute_value_max_length: int = 256
    queue_size: int = 1024
    shutdown_timeout: float = 5.0
    log_interval: float = 60.0
    sketch_inputs: bool = True
    drift_window: int = 5000
    drift_interval: float = 10.0
    warmup_rows: int = 1000
    max_features: int = 100
    capture_categories: bool = False
    sketch_buffer_rows: int = 16384
    sketch_threads: int = min(2, os.cpu_count() or 1)
    cardinality_limit: int = 2000
    accuracy_window: float = 300.0


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    _log.warning("otel_ml: ignoring %s=%r (expected true/false); using %s", name, raw, default)
    return default


def _number(env: Mapping[str, str], name: str, default: float, low: float, cast: type, high: float = math.inf) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = cast(raw.strip())
    except ValueError:
        _log.warning("otel_ml: ignoring %s=%r (not a number); using %s", name, raw, default)
        return default
    if not math.isfinite(value) or value < low:
        _log.warning("otel_ml: ignoring %s=%r (below %s); using %s", name, raw, low, default)
        return default
    if value > high:
        _log.warning("otel_ml: ignoring %s=%r (above %s); using %s", name, raw, high, default)
        return default
    return value


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    return Settings(
        disabled=_bool(env, OTEL_ML_DISABLED, False),
        strict=_bool(env, OTEL_ML_STRICT, False),
        capture_exception_message=_bool(env, OTEL_ML_CAPTURE_EXCEPTION_MESSAGE, False),
        max_class_labels=int(_number(env, OTEL_ML_MAX_CLASS_LABELS, 50, 1, int)),
        max_models=int(_number(env, OTEL_ML_MAX_MODELS, 200, 1, int)),
        attribute_value_max_length=int(_number(env, OTEL_ML_ATTRIBUTE_VALUE_MAX_LENGTH, 256, 16, int)),
        queue_size=int(_number(env, OTEL_ML_QUEUE_SIZE, 1024, 1, int)),
        shutdown_timeout=float(_number(env, OTEL_ML_SHUTDOWN_TIMEOUT, 5.0, 0.0, float, MAX_SHUTDOWN_TIMEOUT)),
        log_interval=float(_number(env, OTEL_ML_LOG_INTERVAL, 60.0, 0.0, float)),
        sketch_inputs=_bool(env, OTEL_ML_SKETCH_INPUTS, True),
        drift_window=int(_number(env, OTEL_ML_DRIFT_WINDOW, 5000, 0, int)),
        drift_interval=float(_number(env, OTEL_ML_DRIFT_INTERVAL, 10.0, 0.0, float)),
        warmup_rows=int(_number(env, OTEL_ML_WARMUP_ROWS, 1000, 1, int)),
        max_features=int(_number(env, OTEL_ML_MAX_FEATURES, 100, 1, int)),
        capture_categories=_bool(env, OTEL_ML_CAPTURE_CATEGORIES, False),
        sketch_buffer_rows=int(_number(env, OTEL_ML_SKETCH_BUFFER_ROWS, 16384, 1, int, MAX_SKETCH_BUFFER_ROWS)),
        accuracy_window=float(_number(env, OTEL_ML_ACCURACY_WINDOW, 300.0, 1.0, float)),
        cardinality_limit=int(_number(env, OTEL_ML_CARDINALITY_LIMIT, 2000, 2, int)),
        sketch_threads=int(_number(env, OTEL_ML_SKETCH_THREADS, min(2, os.cpu_count() or 1), 1, int)),
    )


settings: Settings = load()


def reload(env: Mapping[str, str] | None = None) -> Settings:
    """Re-read the environment (tests, or after changing ``os.environ`` at start-up)."""
    global settings
    settings = load(env)
    return settings


# --- configuration warnings, once ------------------------------------------------------------------------------
_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(message: str, *args: object) -> None:
    """Log a configuration warning on otel-ml's logger once per process.

    The same unreadable variable is read again for each signal (traces, metrics), each instrumentor, and in each
    forked child rebuilding its exporters: saying it again adds nothing. (Forked children inherit what was said.)
    """
    text = message % args if args else message
    with _warned_lock:
        if text in _warned:
            return
        _warned.add(text)
    _log.warning(message, *args)


class _OncePerMessage(logging.Filter):
    """Lets the first of identical records (logger, level, message) through and drops the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[str, int, str]] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            key = (record.name, record.levelno, record.getMessage())
        except Exception:  # a record that does not format: let the handlers report it
            return True
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        return True


# Loggers that report unreadable OTEL_* values while the SDK's providers and exporters are built. The SDK and the
# exporters parse some variables once per signal (headers, resource attributes), which repeats the same warning.
_CONFIGURATION_LOGGERS = (
    "otel_ml",
    "opentelemetry.attributes",
    "opentelemetry.util.re",
    "opentelemetry.sdk.resources",
    "opentelemetry.sdk.trace.sampling",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
)


@contextmanager
def configuration_warnings_once() -> Iterator[None]:
    """While active, a warning repeated word for word by the configuration loggers is logged once."""
    existing = list(logging.root.manager.loggerDict)  # one C-level copy: other threads may add loggers
    names = {n for n in existing if n == "otel_ml" or n.startswith("opentelemetry")}
    loggers = [logging.getLogger(n) for n in sorted(names.union(_CONFIGURATION_LOGGERS))]
    once = _OncePerMessage()
    for logger in loggers:
        logger.addFilter(once)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(once)


P = ParamSpec("P")
R = TypeVar("R")


def warnings_once(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: :func:`configuration_warnings_once` around each call of ``fn`` (``otel_ml.configure``)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with configuration_warnings_once():
            return fn(*args, **kwargs)

    return wrapper
