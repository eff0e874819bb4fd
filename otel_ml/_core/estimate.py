"""Windowed accuracy gauges: the confidence-based estimate before labels arrive, and the realised accuracy after.

``ml.model.estimated_accuracy`` is the mean top-class probability of the rows a model predicted in the last
window (``OTEL_ML_ACCURACY_WINDOW`` seconds, default 300). For a *calibrated* classifier, the expected share of
correct predictions equals its mean confidence, so this is an estimate of accuracy available the moment the
predictions are made. ``ml.model.accuracy`` is the share of ``ml.outcome.correct=true`` among the
classification outcomes recorded (:func:`otel_ml.record_outcome`) in the same kind of window, so the two can
be plotted side by side.

Assumptions, and when the estimate is wrong:

- **Calibration.** Mean confidence equals expected accuracy only for calibrated probabilities (logistic
  regression usually is; boosted trees, SVM scores and deep nets often are not: calibrate them first, e.g.
  ``CalibratedClassifierCV``). Softmax/sigmoid of raw scores (``output="scores"``/``"logits"``) is not
  calibrated in general.
- **No label shift / concept drift.** Calibration is learnt on the training distribution. When P(y) or P(y|x)
  changes, the model stays confident while its accuracy drops: a growing gap between the two gauges is the
  signal to look at (and the reason the realised accuracy is exported next to the estimate).
- **Same rows?** The estimate covers rows *predicted* in the window, the realised accuracy covers outcomes
  *recorded* in the window, i.e. predictions made one label delay earlier. They agree only when the label
  delay is short against the window or the traffic is stationary over the delay.
- **Classifiers only.** It reads the ``ml.prediction.confidence`` histogram, which holds top-class
  probabilities (or whatever a ``confidence=`` callable returns: then the estimate means that).

How it is computed, without touching the hot path: a deriver registered with
:meth:`~otel_ml._core.aggregation.Aggregator.add_deriver` runs before each collection. It reads the cumulative
``(count, sum)`` of every confidence series (:meth:`VectorHistogram.totals`) and the cumulative outcome counts,
sums them per ``(ml.model.name, ml.model.version)``, and keeps a small ring of checkpoints per model (at most
``slots + 2``, one per ``window / slots`` seconds). The windowed mean is ``(sum_now - sum_then) /
(count_now - count_then)`` against the newest checkpoint at least one window old: the window is therefore
between ``window`` and ``window`` plus one collection interval long; before one window has passed it is
"since the series started". A model with no new rows in the window keeps its last value. A cleared series
(a forked child, tests) is detected by its totals going down and restarts that model's ring.

The deriver only runs when otel-ml's aggregation is merged into exports (``otel_ml.configure()`` or
``otel_ml.summary.SummaryReader``): without that, confidences go value by value to SDK instruments and no
totals exist to derive from.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry.sdk.metrics.export import NumberDataPoint
from opentelemetry.util.types import AttributeValue

from otel_ml import config, semconv
from otel_ml._core import guard, runtime
from otel_ml._core.aggregation import Aggregator

DEFAULT_SLOTS = 30

ModelKey = tuple[str, str]


@dataclass(frozen=True)
class Totals:
    """Cumulative counts of one model at one instant."""

    rows: int = 0
    """Rows with a confidence value."""
    confidence_sum: float = 0.0
    outcomes: int = 0
    """Classification outcomes (rows with ``ml.outcome.correct``)."""
    correct: int = 0

    def went_down(self, earlier: Totals) -> bool:
        """True when a cumulative count is lower than ``earlier``'s: the series was cleared in between."""
        return self.rows < earlier.rows or self.outcomes < earlier.outcomes or self.correct < earlier.correct


_ZERO = Totals()


@dataclass(frozen=True)
class WindowValues:
    """What one derivation computed for one model (``None``: no new rows of that kind in the window)."""

    estimated_accuracy: float | None
    accuracy: float | None
    rows: int
    outcomes: int


class AccuracyEstimator:
    """Derives ``ml.model.estimated_accuracy`` and ``ml.model.accuracy`` from otel-ml's cumulative aggregation."""

    def __init__(
        self,
        aggregator: Aggregator,
        window: float = 300.0,
        *,
        slots: int = DEFAULT_SLOTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not window > 0 or slots < 1:
            raise ValueError(f"window must be > 0 and slots >= 1, not {window!r} / {slots!r}")
        self.window = float(window)
        self.slots = int(slots)
        self._aggregator = aggregator
        self._clock = clock
        self._lock = threading.Lock()
        self._rings: dict[ModelKey, collections.deque[tuple[float, Totals]]] = {}
        self._last: dict[ModelKey, Totals] = {}
        self._gauge_keys: dict[ModelKey, tuple[dict[str, AttributeValue], frozenset[tuple[str, AttributeValue]]]] = {}

    # -- reading the aggregation -------------------------------------------------------------------------------
    def totals(self) -> dict[ModelKey, Totals]:
        """Cumulative confidence and outcome totals per (model name, version), read from the aggregator."""
        agg = self._aggregator
        rows: dict[ModelKey, int] = collections.defaultdict(int)
        sums: dict[ModelKey, float] = collections.defaultdict(float)
        outcomes: dict[ModelKey, int] = collections.defaultdict(int)
        correct: dict[ModelKey, int] = collections.defaultdict(int)
        confidence = agg.histogram(
            semconv.PREDICTION_CONFIDENCE,
            semconv.PREDICTION_CONFIDENCE_UNIT,
            "Per-row confidence (top-class probability)",
            semconv.UNIT_INTERVAL_BUCKETS,
        )
        for attrs, n, total in confidence.totals():
            key = _model_key(attrs)
            rows[key] += n
            sums[key] += total
        counter = agg.counter(semconv.OUTCOME_COUNT, semconv.OUTCOME_COUNT_UNIT, OUTCOME_COUNT_DESCRIPTION)
        snapshot = counter.snapshot(time.time_ns())
        for point in snapshot.data.data_points if snapshot is not None else ():
            if not isinstance(point, NumberDataPoint):
                continue
            attrs = point.attributes or {}
            verdict = attrs.get(semconv.ML_OUTCOME_CORRECT)
            if verdict is None:  # regression outcomes carry no verdict
                continue
            key = _model_key(attrs)
            outcomes[key] += int(point.value)
            if verdict is True:
                correct[key] += int(point.value)
        return {key: Totals(rows[key], sums[key], outcomes[key], correct[key]) for key in set(rows) | set(outcomes)}

    # -- the deriver ---------------------------------------------------------------------------------------------
    def derive(self) -> dict[ModelKey, WindowValues]:
        """Checkpoint the totals and set both gauges for every model with new rows in the window."""
        now = self._clock()
        current = self.totals()
        with self._lock:
            values = {key: self._advance(key, cur, now) for key, cur in current.items()}
        agg = self._aggregator
        estimated = agg.gauge(
            semconv.MODEL_ESTIMATED_ACCURACY,
            semconv.ACCURACY_UNIT,
            "Mean top-class probability over the window: the accuracy a calibrated classifier should have",
        )
        realised = agg.gauge(
            semconv.MODEL_ACCURACY,
            semconv.ACCURACY_UNIT,
            "Share of correct classification outcomes recorded over the window",
        )
        for key, v in values.items():
            attrs, attrs_key = self._gauge_attributes(key)
            if v.estimated_accuracy is not None:
                estimated.set(v.estimated_accuracy, attrs, attrs_key)
            if v.accuracy is not None:
                realised.set(v.accuracy, attrs, attrs_key)
        return values

    def __call__(self) -> None:
        """The deriver entry point: never raises (internal errors are counted; strict mode re-raises)."""
        try:
            self.derive()
        except Exception as exc:
            guard.internal_error("estimate", exc)

    def _advance(self, key: ModelKey, cur: Totals, now: float) -> WindowValues:
        ring = self._rings.get(key)
        last = self._last.get(key)
        if ring is None or (last is not None and cur.went_down(last)):
            ring = self._rings[key] = collections.deque(maxlen=self.slots + 2)
        self._last[key] = cur
        cutoff = now - self.window
        while len(ring) >= 2 and ring[1][0] <= cutoff:  # keep exactly one checkpoint older than the window
            ring.popleft()
        base = ring[0][1] if ring and ring[0][0] <= cutoff else _ZERO
        if not ring or now - ring[-1][0] >= self.window / self.slots:
            ring.append((now, cur))
        rows = cur.rows - base.rows
        outcomes = cur.outcomes - base.outcomes
        estimate = (cur.confidence_sum - base.confidence_sum) / rows if rows > 0 else None
        accuracy = (cur.correct - base.correct) / outcomes if outcomes > 0 else None
        return WindowValues(estimate, accuracy, rows, outcomes)

    def _gauge_attributes(
        self, key: ModelKey
    ) -> tuple[dict[str, AttributeValue], frozenset[tuple[str, AttributeValue]]]:
        cached = self._gauge_keys.get(key)
        if cached is None:
            attrs: dict[str, AttributeValue] = {semconv.ML_MODEL_NAME: key[0], semconv.ML_MODEL_VERSION: key[1]}
            cached = self._gauge_keys[key] = (attrs, frozenset(attrs.items()))
        return cached

    def reset(self) -> None:
        """Forget every checkpoint (a forked child starts with empty aggregation)."""
        with self._lock:
            self._rings.clear()
            self._last.clear()


OUTCOME_COUNT_DESCRIPTION = "Rows of ground truth received, by model (and correctness for classification)"


def _model_key(attrs: Mapping[str, AttributeValue]) -> ModelKey:
    return (str(attrs.get(semconv.ML_MODEL_NAME, "")), str(attrs.get(semconv.ML_MODEL_VERSION, "")))


_installed: AccuracyEstimator | None = None
_install_lock = threading.Lock()


def install() -> AccuracyEstimator:
    """Register the process's estimator as a deriver of the runtime's aggregator, once (idempotent).

    Called when :mod:`otel_ml` is imported: the estimate must run whether or not the application calls
    ``otel_ml.configure()`` (it may own its providers and add a ``SummaryReader``), and without a hook in the
    recorder, importing the package is the one step every user takes. It creates otel-ml's runtime at import
    (cheap: no thread, no export) instead of at the first prediction.
    """
    global _installed
    agg = runtime.get().aggregator
    with _install_lock:
        if _installed is None or _installed._aggregator is not agg:
            _installed = AccuracyEstimator(agg, config.settings.accuracy_window)
            agg.add_deriver(_installed)
        return _installed


def installed() -> AccuracyEstimator | None:
    """The process's estimator, if :func:`install` ran."""
    return _installed


def _after_fork() -> None:
    if _installed is not None:
        _installed.reset()
        _installed._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

install()
