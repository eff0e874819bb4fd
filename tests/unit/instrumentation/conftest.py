"""What the instrumentor tests share: an ``instrument(**kwargs)`` for this test only, undone at teardown, and a
way to count how often an instrumentor's wrapper code runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_ml.testing import InMemoryTelemetry

Instrument = Callable[..., InMemoryTelemetry]


@pytest.fixture
def instrumenting(tel: InMemoryTelemetry) -> Iterator[Callable[[BaseInstrumentor], Instrument]]:
    """``instrumenting(SomeInstrumentor())`` is an ``instrument(**kwargs)`` recording into ``tel``; whatever the
    test does, every instrumentor it started is uninstrumented at teardown."""
    started: list[Any] = []

    def bind(inst: Any) -> Instrument:
        started.append(inst)

        def start(**kwargs: Any) -> InMemoryTelemetry:
            inst.instrument(**kwargs)
            return tel

        return start

    try:
        yield bind
    finally:
        for inst in started:
            if inst.is_instrumented_by_opentelemetry:
                inst.uninstrument()


@pytest.fixture
def entries(monkeypatch: pytest.MonkeyPatch) -> Callable[[ModuleType], list[object]]:
    """``entries(module)``: a list that grows by one each time ``module``'s wrappers run (each of them starts
    by reading ``module._get_active``), for this test."""

    def count(module: ModuleType) -> list[object]:
        calls: list[object] = []
        real = module._get_active

        def counting() -> object:
            calls.append(None)
            return real()

        monkeypatch.setattr(module, "_get_active", counting)
        return calls

    return count
