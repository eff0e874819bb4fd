"""The safety net around every otel-ml code path that runs inside a user's call.

An internal error is counted (exported as ``otel_ml.internal.errors{otel_ml.stage}`` by the runtime),
logged at most once per stage per ``OTEL_ML_LOG_INTERVAL`` seconds, and swallowed, so the user's result or
exception passes through untouched. ``OTEL_ML_STRICT=1`` re-raises instead (our test-suite runs strict).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from otel_ml import config

_log = logging.getLogger("otel_ml")


class RateLimitedLog:
    """Logs a message per key at most once per interval; counts the suppressed repeats."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < config.settings.log_interval:
                self._suppressed[key] += 1
                return
            self._last[key] = now
            repeats = self._suppressed.pop(key, 0)
        suffix = f" ({repeats} similar messages suppressed)" if repeats else ""
        _log.warning(message + suffix, *args)

    def reset(self) -> None:
        with self._lock:
            self._last.clear()
            self._suppressed.clear()


log = RateLimitedLog()

_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()


def internal_error(stage: str, exc: BaseException) -> None:
    """Record an internal failure at ``stage``; re-raise it in strict mode."""
    with _counts_lock:
        _counts[stage] += 1
    log.warning(
        "internal:" + stage,
        "otel_ml: internal error in %s (%s); telemetry for this call may be incomplete",
        stage,
        type(exc).__name__,
    )
    if config.settings.strict:
        raise exc


def error_counts() -> dict[str, int]:
    """Internal errors seen so far in this process, by stage (for tests and summaries)."""
    with _counts_lock:
        return dict(_counts)
