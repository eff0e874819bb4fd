"""The span ledger's exporter at the shutdown deadline: an export the interrupt cuts off is a counted failure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_ml._core.ledger import ProcessLocalSpanExporter, SpanLedger


class _ClosingExporter(SpanExporter):
    """Like the gRPC exporter: an export on a closed channel raises ``ValueError``."""

    def __init__(self) -> None:
        self.closed = False
        self.exports = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.exports += 1
        if self.closed:
            raise ValueError("Cannot invoke RPC on closed channel!")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.closed = True


def _exporter() -> tuple[ProcessLocalSpanExporter, _ClosingExporter, SpanLedger]:
    inner, ledger = _ClosingExporter(), SpanLedger(capacity=10)
    for _ in range(4):
        assert ledger.admit()
    return ProcessLocalSpanExporter(inner, ledger, factory=None), inner, ledger


def test_an_export_after_the_interrupt_fails_quietly_and_is_counted() -> None:
    exporter, inner, ledger = _exporter()
    assert exporter.export([object()]) is SpanExportResult.SUCCESS
    exporter.interrupt()  # the shutdown deadline: the channel is closed
    assert exporter.export([object()]) is SpanExportResult.FAILURE
    assert inner.exports == 1  # the closed exporter is not called again
    snapshot = ledger.snapshot()
    assert (snapshot["exported"], snapshot["span_export_failed"], snapshot["queued"]) == (1, 1, 2)
    assert snapshot["unexplained"] == 0


def test_an_export_the_interrupt_closes_under_is_a_counted_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race: the export passed the check, then the interrupt closed the channel before the RPC."""
    exporter, inner, ledger = _exporter()

    def racing(spans: Sequence[Any]) -> SpanExportResult:
        exporter.interrupt()
        return _ClosingExporter.export(inner, spans)

    monkeypatch.setattr(inner, "export", racing)
    assert exporter.export([object(), object()]) is SpanExportResult.FAILURE  # no ValueError for the SDK to log
    assert ledger.snapshot()["span_export_failed"] == 2


def test_before_shutdown_an_exporter_error_reaches_the_sdk() -> None:
    exporter, inner, ledger = _exporter()
    inner.closed = True  # broken, but nobody shut it down: the SDK logs it as it would without otel-ml
    with pytest.raises(ValueError):
        exporter.export([object()])
    assert ledger.snapshot()["span_export_failed"] == 1
