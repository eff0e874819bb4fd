"""A bounded background worker for telemetry work that must not run on the caller's thread.

``submit`` never blocks: when the queue is full the task is dropped and counted
(``otel_ml.telemetry.dropped{reason=queue_full}``). Full means ``capacity`` tasks, or :data:`MAX_QUEUED_BYTES`
of the data the queued tasks hold (input rows to sketch), whichever comes first. The thread starts lazily, is a
daemon, and is recreated empty in a forked child (the parent's pending work belongs to the parent).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable

from otel_ml import semconv
from otel_ml._core import guard

Task = Callable[[], None]
DropCounter = Callable[[str, int], None]

MAX_QUEUED_BYTES = 64 << 20
"""Bytes of data the queued tasks may hold (64 MiB: 32 full 2 MiB input buffers). A task is always accepted into
an empty queue, so one batch larger than this is still sketched."""


class Worker:
    """One daemon thread draining a bounded queue of zero-argument tasks."""

    def __init__(self, capacity: int, on_drop: DropCounter) -> None:
        self.capacity = capacity
        self._on_drop = on_drop
        self._queue: collections.deque[tuple[Task, int]] = collections.deque()
        self._bytes = 0  # held by the queued tasks (not the running one)
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._busy = 0
        self._closed = False
        self._pid = os.getpid()
        self.offered = 0  # every submit: offered == completed + dropped + pending(), exactly
        self.completed = 0
        self.dropped = 0

    def _forked(self) -> None:
        """A fork that skipped the Python fork hooks (or a worker nobody reset): start clean here."""
        if self._pid != os.getpid():
            self._after_fork()

    def submit(self, task: Task, nbytes: int = 0) -> bool:
        """Queue ``task``, which holds ``nbytes`` of data; returns False (and counts the drop) when full or shut
        down."""
        self._forked()
        with self._cond:
            self.offered += 1
            queue = self._queue
            if self._closed or len(queue) >= self.capacity or (queue and self._bytes + nbytes > MAX_QUEUED_BYTES):
                reason = semconv.DROP_SHUTDOWN if self._closed else semconv.DROP_QUEUE_FULL
                self.dropped += 1
                full = True
            else:
                self._enqueue(task, nbytes)
                full = False
        if full:
            self._on_drop(reason, 1)
            return False
        return True

    def offer(self, task: Task) -> bool:
        """Queue ``task`` if there is room; a refusal is no loss (the caller still holds the work and does it
        itself later), so only an accepted task is counted in the ledger."""
        self._forked()
        with self._cond:
            if self._closed or len(self._queue) >= self.capacity:
                return False
            self.offered += 1
            self._enqueue(task, 0)
        return True

    def _enqueue(self, task: Task, nbytes: int) -> None:
        """Queue an accepted task and wake (or start) the thread; called holding ``_cond``."""
        self._queue.append((task, nbytes))
        self._bytes += nbytes
        self._cond.notify()
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otel_ml-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    self._thread = None  # closed and empty: a later reopen() + submit() starts a new thread
                    return
                task, nbytes = self._queue.popleft()
                self._bytes -= nbytes
                self._busy += 1
            try:
                task()
            except Exception as exc:
                with contextlib.suppress(Exception):  # strict mode re-raises: counted; the worker keeps running
                    guard.internal_error("worker", exc)
            finally:
                del task  # do not keep the last task (and the batch it closes over) alive while idle
                with self._cond:
                    self._busy -= 1
                    self.completed += 1
                    self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until every queued task has run; False if ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        self._forked()
        with self._cond:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float) -> None:
        """Finish queued work within ``timeout``, then stop; later submits are dropped and counted."""
        self.drain(timeout)  # resets a forked copy first
        with self._cond:
            self._closed = True
            left = len(self._queue)
            self._queue.clear()
            self._bytes = 0
            self._cond.notify_all()
        if left:
            self.dropped += left
            self._on_drop(semconv.DROP_SHUTDOWN, left)

    def reopen(self) -> None:
        """Accept work again after :meth:`close` (a new pipeline was configured)."""
        self._forked()
        with self._cond:
            self._closed = False

    def pending(self) -> int:
        self._forked()
        with self._cond:
            return len(self._queue) + self._busy

    def ledger(self) -> dict[str, int]:
        """``offered`` tasks, and where each one is: completed, dropped (queue full / shut down) or pending."""
        self._forked()
        with self._cond:
            return {
                "offered": self.offered,
                "completed": self.completed,
                "dropped": self.dropped,
                "pending": len(self._queue) + self._busy,
            }

    def _after_fork(self) -> None:
        """Start clean in a forked child: no inherited tasks, no (dead) inherited thread."""
        self._pid = os.getpid()
        self._queue = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition(threading.Lock())
        self._thread = None
        self._busy = 0
        self.offered = self.completed = self.dropped = 0
