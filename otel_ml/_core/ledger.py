"""The span ledger: every sampled span otel-ml's pipeline sees is queued, on the wire, exported, or dropped
with a reason — exactly one of them, at any instant (``produced = exported + dropped{reason} + queued + in flight``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import SpanProcessor as _SdkSpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from otel_ml._core import runtime

DROP_SPAN_QUEUE_FULL = "span_queue_full"
DROP_SPAN_EXPORT_FAILED = "span_export_failed"
DROP_SPAN_SHUTDOWN = "span_already_shutdown"
SPAN_DROP_REASONS = (DROP_SPAN_QUEUE_FULL, DROP_SPAN_EXPORT_FAILED, DROP_SPAN_SHUTDOWN)


class SpanLedger:
    """Exact accounting of the sampled spans that reach otel-ml's span pipeline.

    Every span is in exactly one state, and each transition happens under one lock, so at any instant
    ``produced == exported + failed + queue_full + already_shutdown + queued + in_flight``. ``queued`` counts the
    spans handed to the ``BatchSpanProcessor`` and not yet picked up by its exporter; admission is refused (and
    counted as ``span_queue_full``) when it reaches the queue's capacity, so the SDK's own drop-oldest path
    never runs. :meth:`finalize` (at shutdown) turns whatever is still queued into ``span_already_shutdown`` and
    an export still on the wire into ``span_export_failed``: after it, nothing else is sent.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.produced = self.exported = self.failed = self.queue_full = self.already_shutdown = 0
        self.queued = self.in_flight = 0
        self.closed = False
        self.final = False

    def admit(self) -> bool:
        """One sampled span ended: True if it may enter the queue (otherwise it was counted as dropped)."""
        if self._pid != os.getpid():  # a fork that skipped the Python fork hooks (e.g. uWSGI): start clean
            self._reset()
        with self._lock:
            self.produced += 1
            if self.closed:
                self.already_shutdown += 1
                reason = DROP_SPAN_SHUTDOWN
            elif self.queued >= self.capacity:
                self.queue_full += 1
                reason = DROP_SPAN_QUEUE_FULL
            else:
                self.queued += 1
                return True
        runtime.get().count_drop(reason)
        return False

    def begin_export(self, n: int) -> bool:
        """The exporter took ``n`` spans off the queue; False once finalized (they were counted already)."""
        with self._lock:
            if self.final:
                return False
            self.queued -= n
            self.in_flight += n
            return True

    def end_export(self, n: int, ok: bool) -> None:
        with self._lock:
            if self.final:  # abandoned at shutdown: already counted as span_export_failed
                return
            self.in_flight -= n
            if ok:
                self.exported += n
                return
            self.failed += n
        runtime.get().count_drop(DROP_SPAN_EXPORT_FAILED, n)

    def close(self) -> None:
        """Shutdown started: spans ending from now on are dropped as ``span_already_shutdown``."""
        with self._lock:
            self.closed = True

    def finalize(self) -> None:
        """Shutdown is over: count what was left in the queue and on the wire; nothing is exported after this."""
        with self._lock:
            if self.final:
                return
            self.final = self.closed = True
            left, wire = self.queued, self.in_flight
            self.already_shutdown += left
            self.failed += wire
            self.queued = self.in_flight = 0
        rt = runtime.get()
        if left:
            rt.count_drop(DROP_SPAN_SHUTDOWN, left)
        if wire:
            rt.count_drop(DROP_SPAN_EXPORT_FAILED, wire)

    def snapshot(self) -> dict[str, int]:
        """The ledger's counts; ``unexplained`` is 0 by construction (the identity above)."""
        with self._lock:
            counts = {
                "produced": self.produced,
                "exported": self.exported,
                "span_export_failed": self.failed,
                "span_queue_full": self.queue_full,
                "span_already_shutdown": self.already_shutdown,
                "queued": self.queued,
                "in_flight": self.in_flight,
            }
        counts["unexplained"] = counts["produced"] - sum(v for k, v in counts.items() if k != "produced")
        return counts


class LedgerSpanProcessor(_SdkSpanProcessor):
    """Counts and admits each sampled span before the ``BatchSpanProcessor`` (one lock, three integer ops)."""

    def __init__(self, inner: BatchSpanProcessor, ledger: SpanLedger) -> None:
        self._inner = inner
        self._ledger = ledger

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass  # the BatchSpanProcessor does nothing on start either

    def _on_ending(self, span: Any) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None or not ctx.trace_flags.sampled:
            return
        if self._ledger.admit():
            self._inner.on_end(span)

    def shutdown(self) -> None:
        self._ledger.close()
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class ProcessLocalSpanExporter(SpanExporter):
    """The span exporter of one process, counted in the ledger.

    ``factory`` builds the real exporter; a forked child builds its own on its first export instead of using
    the parent's (a gRPC channel must not cross a fork). An exporter passed to ``configure`` (no factory) is
    used as it is.
    """

    def __init__(self, inner: SpanExporter, ledger: SpanLedger, factory: Callable[[], SpanExporter] | None) -> None:
        self._inner = inner
        self._ledger = ledger
        self._factory = factory
        self._pid = os.getpid()
        self._shut = False

    def _current(self) -> SpanExporter:
        if self._pid != os.getpid() and self._factory is not None:
            self._inner, self._pid, self._shut = self._factory(), os.getpid(), False
        return self._inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        n = len(spans)
        if not self._ledger.begin_export(n):
            return SpanExportResult.FAILURE
        ok = False
        try:
            if self._shut:  # interrupted at the shutdown deadline: the exporter is closed
                return SpanExportResult.FAILURE
            result = self._current().export(spans)
            ok = result is SpanExportResult.SUCCESS
            return result
        except Exception:
            if not self._shut:
                raise
            # the channel was closed under this export by the interrupt (gRPC raises ValueError): counted as
            # failed, without the SDK's traceback in the application's log
            return SpanExportResult.FAILURE
        finally:
            self._ledger.end_export(n, ok)

    def shutdown(self) -> None:
        if self._shut:  # the interrupt at the deadline and the processor's own shutdown both land here
            return
        self._shut = True
        if self._pid == os.getpid() or self._factory is None:
            self._inner.shutdown()

    def interrupt(self) -> None:
        """Abandon an export on the wire (shutdown ran out of time): the exporter's own shutdown cancels it."""
        with contextlib.suppress(Exception):
            self.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._current().force_flush(timeout_millis)
