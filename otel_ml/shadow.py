"""Shadow deployments: serve the primary model, run a candidate on the same inputs off the critical path.

    clf_v1 = otel_ml.instrument_model(model_v1, name="fraud", version="1.4.0")
    clf_v2 = otel_ml.instrument_model(model_v2, name="fraud", version="2.0.0")
    predict = otel_ml.shadow(clf_v1.predict_proba, clf_v2.predict_proba, sample=0.25)
    predict(X)          # clf_v1's result, unchanged; clf_v2 runs later on a background thread

Both callables should be instrumented, so each version gets its own spans and ``ml.prediction.*`` series
(split by ``ml.model.version``). The candidate runs in a copy of the caller's context, so its predict span is
in the request's trace, a sibling of the primary's.

Agreement is a counter pair, ``ml.shadow.comparisons{ml.shadow.agreed=true|false}`` (unit
``{comparison}``, one per compared row; attributes ``ml.model.name``, ``ml.model.version`` = the primary's
version, ``ml.shadow.candidate.version``). Counters add up across replicas and windows, which a gauge would
not, so the agreement rate is a PromQL ratio::

    sum by (ml_model_name, ml_model_version, ml_shadow_candidate_version)
        (rate(ml_shadow_comparisons_total{ml_shadow_agreed="true"}[5m]))
      /
    sum by (ml_model_name, ml_model_version, ml_shadow_candidate_version)
        (rate(ml_shadow_comparisons_total[5m]))

What the caller never sees: the candidate's latency (it runs on one daemon thread per shadow, fed by a queue
of at most ``max_pending`` calls; when full the candidate call is skipped and counted as
``otel_ml.telemetry.dropped{reason=shadow_queue_full}``) and its failures (counted as
``shadow_candidate_error``; its own span records the error). The inputs and the primary's result are shared
with the candidate by reference: do not mutate them after the call returns.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import random
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

import numpy as np
from opentelemetry.util.types import AttributeValue

from otel_ml import config, semconv
from otel_ml._core import attributes, guard, outputs, runtime
from otel_ml._core.worker import Worker
from otel_ml.instrumentation.model import recorder_of

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_PENDING = 16

Compare = Callable[[Any, Any], Any]
"""``compare(primary_result, candidate_result)``: a bool, or one bool per row (True = agreed)."""


def default_compare(primary: object, candidate: object) -> np.ndarray:
    """Per-row agreement of two model outputs.

    Probability / score matrices (2-D floats, 2+ columns) agree on a row when their argmax is the same; other
    float outputs when ``np.isclose`` (default tolerances: pass ``compare=`` for a regression tolerance); labels
    when equal. Outputs of different shapes disagree on every row.
    """
    a, b = outputs.to_numpy(primary), outputs.to_numpy(candidate)
    if a is None or b is None:
        try:
            same = bool(primary == candidate)
        except Exception:  # e.g. ambiguous truth values of exotic array types
            same = False
        return np.array([same])
    a = a.reshape(1) if a.ndim == 0 else a
    b = b.reshape(1) if b.ndim == 0 else b
    if a.shape != b.shape:
        return np.zeros(max(a.shape[0], 1), dtype=bool)
    if a.ndim == 2 and a.shape[1] > 1 and a.dtype.kind == "f" and b.dtype.kind == "f":
        return np.asarray(a.argmax(axis=1) == b.argmax(axis=1))
    rows = a.shape[0]
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return np.asarray(np.isclose(a, b)).reshape(rows, -1).all(axis=1).reshape(-1)
    return np.asarray(np.asarray(a == b).reshape(rows, -1).all(axis=1)).reshape(-1)


def _identity(fn: object) -> tuple[str, str] | None:
    """(name, version) of an instrumented model's bound method or instrumented callable object, if any."""
    for owner in (getattr(fn, "__self__", None), fn):
        recorder = recorder_of(owner) if owner is not None else None
        if recorder is not None:
            return recorder.name, recorder.version
    return None


class Shadow(Generic[P, R]):
    """A callable returning ``primary``'s result, with ``candidate`` compared in the background.

    Build it with :func:`shadow`. :meth:`drain` waits for pending candidate calls (batch jobs, tests, before
    ``otel_ml.force_flush()``); :meth:`close` stops the background thread.
    """

    def __init__(
        self,
        primary: Callable[P, R],
        candidate: Callable[P, Any],
        *,
        sample: float = 1.0,
        max_pending: int = DEFAULT_MAX_PENDING,
        compare: Compare | None = None,
        name: str | None = None,
        primary_version: str | None = None,
        candidate_version: str | None = None,
    ) -> None:
        if not callable(primary) or not callable(candidate):
            raise TypeError("shadow() needs two callables")
        if inspect.iscoroutinefunction(primary) or inspect.iscoroutinefunction(candidate):
            raise TypeError("shadow() takes synchronous callables (run async models through a sync wrapper)")
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"sample must be within [0, 1], not {sample!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, not {max_pending!r}")
        self.primary = primary
        self.candidate = candidate
        self.sample = float(sample)
        self.compare: Compare = compare or default_compare
        primary_id, candidate_id = _identity(primary), _identity(candidate)
        model = name or (primary_id[0] if primary_id else None) or str(getattr(primary, "__name__", "model"))
        self.name = attributes.text(model)
        self.primary_version = attributes.text(primary_version or (primary_id[1] if primary_id else ""))
        self.candidate_version = attributes.text(candidate_version or (candidate_id[1] if candidate_id else ""))
        base: dict[str, AttributeValue] = {
            semconv.ML_MODEL_NAME: self.name,
            semconv.ML_MODEL_VERSION: self.primary_version,
            semconv.ML_SHADOW_CANDIDATE_VERSION: self.candidate_version,
        }
        self._series = {
            verdict: (attrs, frozenset(attrs.items()))
            for verdict, attrs in ((v, {**base, semconv.ML_SHADOW_AGREED: v}) for v in (True, False))
        }
        self._worker = Worker(max_pending, self._on_drop)
        self.compared = 0
        """Candidate calls compared so far (rows are counted in the metric)."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """``primary(*args, **kwargs)``, returned (or raised) unchanged; the candidate is only queued."""
        result = self.primary(*args, **kwargs)
        if config.settings.disabled or (self.sample < 1.0 and random.random() >= self.sample):
            return result
        try:
            ctx = contextvars.copy_context()
            self._worker.submit(lambda: self._run_candidate(ctx, result, args, kwargs))
        except Exception as exc:
            guard.internal_error("shadow", exc)
        return result

    def _run_candidate(
        self, ctx: contextvars.Context, result: object, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            out = ctx.run(self.candidate, *args, **kwargs)
        except BaseException:  # the candidate's own span records the error; the shadow thread keeps running
            runtime.get().count_drop(semconv.DROP_SHADOW_CANDIDATE_ERROR)
            return
        try:
            verdicts = np.asarray(self.compare(result, out), dtype=bool).reshape(-1)
            agreed = int(verdicts.sum())
            counter = runtime.get().aggregator.counter(
                semconv.SHADOW_COMPARISONS,
                semconv.SHADOW_COMPARISONS_UNIT,
                "Rows predicted by both the primary and the shadow candidate, by agreement",
            )
            for verdict, n in ((True, agreed), (False, verdicts.size - agreed)):
                attrs, key = self._series[verdict]
                counter.add(n, attrs, key)
            self.compared += 1
        except Exception as exc:
            with contextlib.suppress(Exception):  # strict mode re-raises: counted, and the thread keeps running
                guard.internal_error("shadow", exc)

    def _on_drop(self, reason: str, n: int) -> None:
        reason = semconv.DROP_SHADOW_QUEUE_FULL if reason == semconv.DROP_QUEUE_FULL else reason
        runtime.get().count_drop(reason, n)

    def pending(self) -> int:
        """Candidate calls queued or running."""
        return self._worker.pending()

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queued candidate call has been compared; False if ``timeout`` seconds ran out."""
        return self._worker.drain(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Finish queued candidate calls within ``timeout``, then stop; later candidate calls are skipped."""
        self._worker.close(timeout)


def shadow(
    primary: Callable[P, R],
    candidate: Callable[P, Any],
    *,
    sample: float = 1.0,
    max_pending: int = DEFAULT_MAX_PENDING,
    compare: Compare | None = None,
    name: str | None = None,
    primary_version: str | None = None,
    candidate_version: str | None = None,
) -> Shadow[P, R]:
    """A callable that returns ``primary(x)`` unchanged and runs ``candidate(x)`` in the background.

    ``sample`` is the share of calls also sent to the candidate; at most ``max_pending`` candidate calls wait
    (beyond that they are skipped and counted). ``compare(primary_result, candidate_result)`` returns a bool or
    one bool per row (default: :func:`default_compare`). ``name`` / ``primary_version`` /
    ``candidate_version`` label ``ml.shadow.comparisons``; they default to the identity of models instrumented
    with :func:`otel_ml.instrument_model` (pass them for decorated functions). Candidate failures and latency
    never reach the caller; the primary's exceptions do (and the candidate is then not called).
    """
    return Shadow(
        primary,
        candidate,
        sample=sample,
        max_pending=max_pending,
        compare=compare,
        name=name,
        primary_version=primary_version,
        candidate_version=candidate_version,
    )
