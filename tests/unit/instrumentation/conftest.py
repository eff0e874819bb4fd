"""What the instrumentor tests share: an ``instrument(**kwargs)`` for this test only, undone at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
