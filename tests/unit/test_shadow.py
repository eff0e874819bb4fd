"""``otel_ml.shadow``: the primary's result unchanged, the candidate compared off the critical path."""

from __future__ import annotations

import copy
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

import otel_ml
from otel_ml import config, semconv
from otel_ml._core import runtime
from otel_ml.shadow import Shadow, default_compare
from otel_ml.testing import InMemoryTelemetry

X, Y = load_breast_cancer(return_X_y=True)
V1 = LogisticRegression(max_iter=5000).fit(X, Y)
V2 = LogisticRegression(max_iter=5000, C=0.001).fit(X, Y)
WAIT_S = 5.0


@pytest.fixture
def shadows() -> Iterator[list[Shadow[Any, Any]]]:
    """Shadows made by a test; closed (bounded) afterwards so no background thread outlives it."""
    made: list[Shadow[Any, Any]] = []
    yield made
    for s in made:
        s.close(timeout=WAIT_S)


def make(shadows: list[Shadow[Any, Any]], *args: Any, **kwargs: Any) -> Shadow[Any, Any]:
    s = otel_ml.shadow(*args, **kwargs)
    shadows.append(s)
    return s


def comparisons(tel: InMemoryTelemetry) -> dict[tuple[str, str, str, bool], int]:
    return {
        (
            p.attributes[semconv.ML_MODEL_NAME],
            p.attributes[semconv.ML_MODEL_VERSION],
            p.attributes[semconv.ML_SHADOW_CANDIDATE_VERSION],
            p.attributes[semconv.ML_SHADOW_AGREED],
        ): p.value
        for p in tel.points(semconv.SHADOW_COMPARISONS)
    }


def _drops() -> dict[str, int]:
    return dict(runtime.get().drops())


def _new_drops(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in runtime.get().drops().items() if v != before.get(k, 0)}


def test_returns_the_primary_result_and_compares_both_versions(
    tel: InMemoryTelemetry, shadows: list[Shadow[Any, Any]]
) -> None:
    primary = otel_ml.instrument_model(copy.deepcopy(V1), name="cancer", version="1")
    candidate = otel_ml.instrument_model(copy.deepcopy(V2), name="cancer", version="2")
    predict = make(shadows, primary.predict_proba, candidate.predict_proba)
    assert (predict.name, predict.primary_version, predict.candidate_version) == ("cancer", "1", "2")

    tracer = tel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("POST /predict") as request:
        out = predict(X[:200])
        primary_id = otel_ml.last_prediction_id()
    np.testing.assert_array_equal(out, V1.predict_proba(X[:200]))
    assert predict.drain(WAIT_S)
    assert otel_ml.last_prediction_id() == primary_id  # the candidate's call does not leak into the caller

    agree = int((V1.predict(X[:200]) == V2.predict(X[:200])).sum())
    assert 0 < agree < 200  # the two versions really differ on some rows
    assert comparisons(tel) == {("cancer", "1", "2", True): agree, ("cancer", "1", "2", False): 200 - agree}
    assert predict.compared == 1

    spans = {s.attributes[semconv.ML_MODEL_VERSION]: s for s in tel.spans() if s.name == "predict_proba cancer"}
    assert set(spans) == {"1", "2"}
    for span in spans.values():  # both versions in the request's trace, children of the request span
        assert span.context.trace_id == request.get_span_context().trace_id
        assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
    counts = {p.attributes[semconv.ML_MODEL_VERSION]: p.value for p in tel.points(semconv.PREDICTION_COUNT)}
    assert counts == {"1": 200, "2": 200}


def test_result_object_is_passed_through_unchanged(shadows: list[Shadow[Any, Any]]) -> None:
    sentinel = object()
    seen: list[tuple[Any, ...]] = []
    predict = make(shadows, lambda x, k=None: sentinel, lambda x, k=None: seen.append((x, k)), name="m")
    x = np.arange(3)
    assert predict(x, k="v") is sentinel
    assert predict.drain(WAIT_S)
    assert len(seen) == 1 and seen[0][0] is x and seen[0][1] == "v"


def test_a_failing_candidate_never_reaches_the_caller(tel: InMemoryTelemetry, shadows: list[Shadow[Any, Any]]) -> None:
    calls = []

    def candidate(x: np.ndarray) -> np.ndarray:
        calls.append(x)
        raise RuntimeError("candidate exploded")

    before = _drops()
    predict = make(shadows, V1.predict, candidate, name="cancer", primary_version="1", candidate_version="2")
    for _ in range(3):
        np.testing.assert_array_equal(predict(X[:5]), V1.predict(X[:5]))
    assert predict.drain(WAIT_S)
    assert len(calls) == 3
    assert _new_drops(before) == {semconv.DROP_SHADOW_CANDIDATE_ERROR: 3}
    assert comparisons(tel) == {}
    # the shadow thread survived: a working candidate is still compared afterwards
    predict.candidate = V1.predict
    predict(X[:5])
    assert predict.drain(WAIT_S)
    assert comparisons(tel) == {("cancer", "1", "2", True): 5, ("cancer", "1", "2", False): 0}


def test_a_slow_candidate_does_not_slow_the_response(tel: InMemoryTelemetry, shadows: list[Shadow[Any, Any]]) -> None:
    def slow(x: np.ndarray) -> np.ndarray:
        time.sleep(1.0)
        return np.asarray(V1.predict(x))

    predict = make(shadows, V1.predict, slow, name="cancer", primary_version="1", candidate_version="slow")
    V1.predict(X[:10])  # warm
    started = time.perf_counter()
    np.testing.assert_array_equal(predict(X[:10]), V1.predict(X[:10]))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.2, f"primary call took {elapsed:.3f}s with a 1 s candidate"
    assert predict.pending() == 1
    assert predict.drain(WAIT_S)
    assert comparisons(tel) == {("cancer", "1", "slow", True): 10, ("cancer", "1", "slow", False): 0}


def test_a_full_queue_skips_the_candidate_and_counts_it(shadows: list[Shadow[Any, Any]]) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[int] = []

    def blocked(x: int) -> int:
        started.set()
        assert release.wait(WAIT_S)
        ran.append(x)
        return x

    before = _drops()
    predict = make(shadows, lambda x: x, blocked, name="m", max_pending=2)
    predict(0)
    assert started.wait(WAIT_S)  # call 0 is running: the queue holds max_pending more
    t0 = time.perf_counter()
    assert [predict(i) for i in range(1, 6)] == [1, 2, 3, 4, 5]
    assert time.perf_counter() - t0 < 0.2
    assert _new_drops(before) == {semconv.DROP_SHADOW_QUEUE_FULL: 3}
    release.set()
    assert predict.drain(WAIT_S)
    assert ran == [0, 1, 2]


def test_primary_exceptions_propagate_and_skip_the_candidate(shadows: list[Shadow[Any, Any]]) -> None:
    calls: list[object] = []

    def primary(x: object) -> object:
        raise KeyError("primary failed")

    predict = make(shadows, primary, calls.append, name="m")
    with pytest.raises(KeyError, match="primary failed"):
        predict(1)
    assert predict.drain(WAIT_S)
    assert calls == []


def test_sampling(shadows: list[Shadow[Any, Any]]) -> None:
    calls: list[int] = []
    never = make(shadows, lambda x: x, calls.append, name="m", sample=0.0)
    for i in range(50):
        never(i)
    assert never.drain(WAIT_S) and calls == []
    always = make(shadows, lambda x: x, calls.append, name="m", sample=1.0, max_pending=100)
    for i in range(50):
        always(i)
    assert always.drain(WAIT_S) and calls == list(range(50))

    calls.clear()
    random.seed(1234)
    expected = [i for i in range(400) if random.random() < 0.25]
    quarter = make(shadows, lambda x: x, calls.append, name="m", sample=0.25, max_pending=400)
    random.seed(1234)
    for i in range(400):
        quarter(i)
    assert quarter.drain(WAIT_S) and calls == expected and 70 < len(expected) < 130


def test_disabled_runs_only_the_primary(shadows: list[Shadow[Any, Any]], env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_DISABLED", "true")
    config.reload()
    calls: list[int] = []
    predict = make(shadows, lambda x: x + 1, calls.append, name="m")
    assert predict(1) == 2
    assert predict.drain(WAIT_S) and calls == []


def test_custom_compare(tel: InMemoryTelemetry, shadows: list[Shadow[Any, Any]]) -> None:
    within = make(
        shadows,
        lambda x: np.asarray(x, dtype=float),
        lambda x: np.asarray(x, dtype=float) + 0.3,
        compare=lambda a, b: np.abs(a - b) < 0.5,
        name="price",
        primary_version="1",
        candidate_version="2",
    )
    within([1.0, 2.0, 3.0])
    assert within.drain(WAIT_S)
    assert comparisons(tel) == {("price", "1", "2", True): 3, ("price", "1", "2", False): 0}


def test_a_failing_compare_is_an_internal_error_not_a_crash(
    tel: InMemoryTelemetry, shadows: list[Shadow[Any, Any]]
) -> None:
    def broken(a: object, b: object) -> bool:
        raise ZeroDivisionError

    predict = make(shadows, lambda x: x, lambda x: x, compare=broken, name="m")
    assert predict(7) == 7
    assert predict.drain(WAIT_S)
    assert comparisons(tel) == {}
    predict.compare = lambda a, b: a == b
    predict(8)
    assert predict.drain(WAIT_S)
    assert sum(comparisons(tel).values()) == 1


def test_validation() -> None:
    with pytest.raises(ValueError):
        otel_ml.shadow(abs, abs, sample=1.5)
    with pytest.raises(ValueError):
        otel_ml.shadow(abs, abs, max_pending=0)
    with pytest.raises(TypeError):
        otel_ml.shadow(abs, 3)  # type: ignore[arg-type]

    async def coroutine(x: int) -> int:
        return x

    with pytest.raises(TypeError):
        otel_ml.shadow(coroutine, abs)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([[0.6, 0.4], [0.7, 0.3]]), [True, False]),  # argmax
        (np.array([1, 0, 2]), np.array([1, 1, 2]), [True, False, True]),  # labels
        (np.array(["a", "b"]), np.array(["a", "c"]), [True, False]),
        (np.array([1.0, 2.0]), np.array([1.0 + 1e-12, 2.5]), [True, False]),  # regression values: isclose
        (np.array([1, 2, 3]), np.array([1, 2]), [False, False, False]),  # shapes differ
        (3, 3, [True]),
        ("x", "y", [False]),
        ({"k": 1}, {"k": 1}, [True]),  # not an array: plain equality
    ],
)
def test_default_compare(a: Any, b: Any, expected: list[bool]) -> None:
    assert default_compare(a, b).tolist() == expected
