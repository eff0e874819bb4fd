"""Internal faults never reach the user: same result object, same exception, counted, logged once."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import otel_ml
from otel_ml import config, semconv
from otel_ml._core import guard, outputs, recorder
from otel_ml.testing import InMemoryTelemetry


class Injected(Exception):
    """An internal failure injected into otel-ml."""


def _boom(*args: object, **kwargs: object) -> object:
    raise Injected("internal")


def _oom(*args: object, **kwargs: object) -> object:
    raise MemoryError


STAGES = {
    "output reader": (outputs, "analyze"),
    "input adapter": (recorder.inputs, "batch_size"),
    "attribute builder": (recorder.attributes, "error_type"),
    "span start": (recorder.Recorder, "_operation"),
    "prediction id": (recorder, "format_prediction_id"),
}


@pytest.fixture
def lenient(env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_STRICT", "0")
    config.reload()


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("fault", [_boom, _oom], ids=["exception", "memoryerror"])
def test_result_and_exceptions_pass_through_any_internal_fault(
    tel: InMemoryTelemetry, lenient: None, monkeypatch: pytest.MonkeyPatch, stage: str, fault: object
) -> None:
    owner, attr = STAGES[stage]
    monkeypatch.setattr(owner, attr, fault)
    sentinel = np.array([[0.1, 0.9]])
    calls = []

    @otel_ml.instrument(name="m")
    def predict(x: object) -> np.ndarray:
        calls.append(x)
        return sentinel

    error = KeyError("user's own")

    @otel_ml.instrument(name="m")
    def failing(x: object) -> object:
        calls.append(x)
        raise error

    before = sum(guard.error_counts().values())
    for _ in range(3):
        assert predict([1]) is sentinel
        with pytest.raises(KeyError) as caught:
            failing([2])
        assert caught.value is error
    assert calls == [[1], [2]] * 3  # the original ran exactly once per call
    assert sum(guard.error_counts().values()) > before
    # every span that was opened was also closed and detached
    from opentelemetry import trace

    assert trace.get_current_span() is trace.INVALID_SPAN


def test_internal_errors_are_counted_in_the_self_metric_and_logged_once(
    tel: InMemoryTelemetry, lenient: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(outputs, "analyze", _boom)
    guard.log.reset()
    predict = otel_ml.instrument(name="m")(lambda x: x)
    before = guard.error_counts().get("finish", 0)
    with caplog.at_level(logging.WARNING, logger="otel_ml"):
        for _ in range(100):
            predict([1])
    assert guard.error_counts()["finish"] == before + 100
    warnings = [r for r in caplog.records if "internal error in finish" in r.getMessage()]
    assert len(warnings) == 1
    assert "internal" not in warnings[0].getMessage().split("(")[1]  # the type is logged, not the message
    (point,) = [p for p in tel.points(semconv.INTERNAL_ERRORS) if p.attributes[semconv.OTEL_ML_STAGE] == "finish"]
    assert point.value == before + 100
    assert len(tel.spans()) == 100  # spans were still ended


def test_strict_mode_raises_internal_errors(tel: InMemoryTelemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.settings.strict
    monkeypatch.setattr(outputs, "analyze", _boom)
    predict = otel_ml.instrument(name="m")(lambda x: x)
    with pytest.raises(Injected):
        predict([1])
