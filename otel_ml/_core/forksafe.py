"""Fork safety of the export pipeline: gRPC exports held off a fork, process-local metric exporters, a resource
that renews ``service.instance.id`` in a forked child, and a metric reader the SDK's fork hook leaves alone.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

SERVICE_INSTANCE_ID = "service.instance.id"


class ExportGate:
    """Keeps a fork from happening in the middle of one of otel-ml's gRPC export RPCs.

    gRPC skips its own fork handlers when a thread is inside gRPC at the moment of ``fork()`` ("Other threads are
    currently calling into gRPC, skipping fork() handlers"); the child then inherits a half-copied gRPC core and
    may hang or crash when it uses gRPC. Measured (100 forks while 8 threads predict and the exporters are busy):
    without the gate 13-26 forks skip the handlers, the slowest child needs 3 s to exit and one run in ~8 had a
    child die of SIGSEGV; with the gate, 0 skips and every child exits in ~0.1 s. Before a fork the forking
    thread waits (at most ``FORK_EXPORT_WAIT_S``) for RPCs in flight to finish, and RPCs about to start wait for
    the fork. Retry back-off sleeps are not RPCs: a fork never waits for an endpoint that refuses connections;
    it waits (the bounded time) for one that accepts and never answers.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False

    def enter(self) -> None:
        with self._cond:
            while self._forking:
                self._cond.wait(0.5)
            self._active += 1

    def exit(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def before_fork(self) -> None:
        deadline = time.monotonic() + FORK_EXPORT_WAIT_S
        with self._cond:
            self._forking = True
            while self._active and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()


FORK_EXPORT_WAIT_S = 0.5
fork_gate = ExportGate()


class _GatedStub:
    """A gRPC OTLP stub whose ``Export`` RPCs hold the fork gate (only the RPC: not the retry back-off sleeps)."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def Export(self, *args: Any, **kwargs: Any) -> Any:
        fork_gate.enter()
        try:
            return self._stub.Export(*args, **kwargs)
        finally:
            fork_gate.exit()


def gate_grpc(exporter: Any) -> Any:
    """Route a gRPC OTLP exporter's RPCs through the fork gate (also after it re-creates its channel)."""
    init = getattr(exporter, "_initialize_channel_and_stub", None)
    if getattr(exporter, "_client", None) is None or init is None:
        return exporter  # another exporter version: exports run ungated

    def reinit() -> None:
        init()
        exporter._client = _GatedStub(exporter._client)

    exporter._initialize_channel_and_stub = reinit
    exporter._client = _GatedStub(exporter._client)
    return exporter


class ProcessLocalMetricExporter(MetricExporter):
    """The metric exporter of one process, built lazily in a forked child (see :class:`ProcessLocalSpanExporter`).

    ``like`` gives the temporality/aggregation preferences without building an exporter (fork hook).
    """

    def __init__(
        self,
        factory: Callable[[], MetricExporter],
        inner: MetricExporter | None = None,
        like: MetricExporter | None = None,
    ) -> None:
        first = inner if inner is not None or like is not None else factory()
        template = first if first is not None else like
        super().__init__(
            preferred_temporality=getattr(template, "_preferred_temporality", None),
            preferred_aggregation=getattr(template, "_preferred_aggregation", None),
        )
        self._factory = factory
        self._inner: MetricExporter | None = first
        self._pid = os.getpid()
        self.orphaned = False  # set in a forked child on the parent's copy: it must never send anything

    def _current(self) -> MetricExporter:
        if self._inner is None or self._pid != os.getpid():
            self._inner, self._pid = self._factory(), os.getpid()
        return self._inner

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self.orphaned:
            return MetricExportResult.SUCCESS
        return self._current().export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        if self.orphaned or self._inner is None:
            return True
        return self._current().force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self.orphaned or self._inner is None or self._pid != os.getpid():
            return
        self.orphaned = True  # once: the interrupt at the deadline and the reader's own shutdown both land here
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class ProcessResource(Resource):
    """The pipeline's resource; a forked child gets its own ``service.instance.id`` (unless the app set it).

    Tracers and meters keep a reference to their provider's resource object, so renewing it in place moves
    every one of them, including those other instrumentation created before the fork. SDKs >= 1.45 refresh
    the instance id of their providers after a fork themselves (replacing the provider's resource object, and
    overriding an id the application set); otel-ml then leaves it to them.
    """

    def __init__(self, attributes: Mapping[str, Any], schema_url: str | None, renew_instance_id: bool) -> None:
        super().__init__(dict(attributes), schema_url)
        self.renew_instance_id = renew_instance_id

    def after_fork(self) -> None:
        if self.renew_instance_id:
            attrs = {**self.attributes, SERVICE_INSTANCE_ID: str(uuid.uuid4())}
            Resource.__init__(self, attrs, self.schema_url)


# SDK >= 1.45: TracerProvider/MeterProvider re-detect process-dependent resource attributes after a fork.
SDK_REFRESHES_RESOURCE_AT_FORK = hasattr(TracerProvider, "_handle_fork")


class ExportingPeriodicReader(PeriodicExportingMetricReader):
    """otel-ml's exporting reader. In a forked child it is replaced by a fresh one (:func:`_retarget`), so the
    SDK's own fork hook must not restart this one's ticker thread (which would then log "Cannot call collect")."""

    def _at_fork_reinit(self) -> None:
        pass


def release_if_held(owner: object, attribute: str) -> None:
    """A lock a thread of the parent held at fork time stays locked forever in the child (that thread does not
    exist there); a plain ``threading.Lock`` may be released by any thread, so release it."""
    lock = getattr(owner, attribute, None)
    if lock is not None and hasattr(lock, "locked") and lock.locked():
        with contextlib.suppress(RuntimeError):
            lock.release()
