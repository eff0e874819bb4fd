"""The bounded background worker: order, drops, drain/close/reopen, task failures, fork safety."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from otel_ml import config, semconv
from otel_ml._core import guard, runtime
from otel_ml._core.worker import MAX_QUEUED_BYTES, Worker

WAIT = 5.0  # generous upper bound for anything that should happen "at once"


class Drops:
    """The worker's drop callback, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, reason: str, n: int) -> None:
        self.calls.append((reason, n))


class Gate:
    """A task that signals it started, then blocks until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.started.set()
        assert self.release.wait(WAIT), "gate was never released"


@pytest.fixture
def drops() -> Drops:
    return Drops()


@pytest.fixture
def make_worker(drops: Drops) -> Iterator[Callable[[int], Worker]]:
    workers: list[Worker] = []

    def make(capacity: int) -> Worker:
        w = Worker(capacity, drops)
        workers.append(w)
        return w

    yield make
    for w in workers:  # stop the threads this test started
        w.close(0.2)


def _append(out: list[int], i: int) -> Callable[[], None]:
    return lambda: out.append(i)


def test_tasks_run_in_submission_order(make_worker: Callable[[int], Worker], drops: Drops) -> None:
    w = make_worker(1000)
    out: list[int] = []
    for i in range(500):
        assert w.submit(_append(out, i)) is True
    assert w.drain(WAIT) is True
    assert out == list(range(500))
    assert w.completed == 500
    assert w.pending() == 0
    assert drops.calls == [] and w.dropped == 0


def test_tasks_run_on_one_daemon_thread(make_worker: Callable[[int], Worker]) -> None:
    w = make_worker(10)
    threads: list[threading.Thread] = []
    for _ in range(3):
        w.submit(lambda: threads.append(threading.current_thread()))
    assert w.drain(WAIT) is True
    assert len({t.ident for t in threads}) == 1
    (thread,) = set(threads)
    assert thread is not threading.main_thread()
    assert thread.daemon is True
    assert thread.name == "otel_ml-worker"


def test_submit_drops_and_counts_when_the_queue_is_full(make_worker: Callable[[int], Worker], drops: Drops) -> None:
    w = make_worker(2)
    gate = Gate()
    out: list[int] = []
    assert w.submit(gate) is True
    assert gate.started.wait(WAIT)  # the gate left the queue: it is running, the queue is empty
    assert w.submit(_append(out, 1)) is True
    assert w.submit(_append(out, 2)) is True
    assert w.pending() == 3  # two queued + one running
    assert w.submit(_append(out, 3)) is False
    assert w.submit(_append(out, 4)) is False
    assert drops.calls == [(semconv.DROP_QUEUE_FULL, 1), (semconv.DROP_QUEUE_FULL, 1)]
    assert w.dropped == 2
    gate.release.set()
    assert w.drain(WAIT) is True
    assert out == [1, 2]
    assert w.submit(_append(out, 5)) is True  # room again
    assert w.drain(WAIT) is True
    assert out == [1, 2, 5]
    assert w.completed == 4


def test_drain_times_out_while_a_task_is_running(make_worker: Callable[[int], Worker]) -> None:
    w = make_worker(10)
    assert w.drain(0.0) is True  # nothing queued: true at once, even with no time
    gate = Gate()
    w.submit(gate)
    assert gate.started.wait(WAIT)
    t0 = time.monotonic()
    assert w.drain(0.1) is False
    elapsed = time.monotonic() - t0
    assert 0.09 <= elapsed < 2.0
    assert w.drain(0.0) is False
    assert w.pending() == 1
    gate.release.set()
    assert w.drain(WAIT) is True
    assert w.pending() == 0


def test_close_drops_what_is_left_and_later_submits(make_worker: Callable[[int], Worker], drops: Drops) -> None:
    w = make_worker(10)
    gate = Gate()
    out: list[int] = []
    w.submit(gate)
    assert gate.started.wait(WAIT)
    w.submit(_append(out, 1))
    w.submit(_append(out, 2))
    t0 = time.monotonic()
    w.close(0.1)  # the gate outlives the timeout: the two queued tasks are dropped
    assert time.monotonic() - t0 < 2.0
    assert drops.calls == [(semconv.DROP_SHUTDOWN, 2)]
    assert w.submit(_append(out, 3)) is False
    assert drops.calls == [(semconv.DROP_SHUTDOWN, 2), (semconv.DROP_SHUTDOWN, 1)]
    assert w.dropped == 3
    gate.release.set()
    assert w.drain(WAIT) is True
    assert out == []
    assert w.completed == 1  # only the gate ran


def test_close_runs_queued_work_that_fits_in_the_timeout(make_worker: Callable[[int], Worker], drops: Drops) -> None:
    w = make_worker(10)
    out: list[int] = []
    for i in range(5):
        w.submit(_append(out, i))
    w.close(WAIT)
    assert out == [0, 1, 2, 3, 4]
    assert drops.calls == []
    assert w.pending() == 0


def test_reopen_accepts_work_again(make_worker: Callable[[int], Worker], drops: Drops) -> None:
    w = make_worker(10)
    out: list[int] = []
    w.close(1.0)  # never started
    assert w.submit(_append(out, 1)) is False
    w.reopen()
    assert w.submit(_append(out, 2)) is True
    assert w.drain(WAIT) is True
    assert out == [2]
    assert drops.calls == [(semconv.DROP_SHUTDOWN, 1)]


def test_reopen_after_the_thread_exited_runs_new_work(make_worker: Callable[[int], Worker]) -> None:
    w = make_worker(10)
    out: list[int] = []
    w.submit(_append(out, 1))
    assert w.drain(WAIT) is True
    thread = w._thread
    assert thread is not None
    w.close(1.0)
    thread.join(WAIT)  # the closed worker's thread has finished
    assert not thread.is_alive()
    w.reopen()
    assert w.submit(_append(out, 2)) is True
    assert w.drain(0.5) is True
    assert out == [1, 2]


@pytest.mark.parametrize("strict", ["0", "1"], ids=["lenient", "strict"])
def test_a_failing_task_is_counted_and_the_worker_keeps_running(
    make_worker: Callable[[int], Worker], env: pytest.MonkeyPatch, strict: str
) -> None:
    env.setenv(config.OTEL_ML_STRICT, strict)
    config.reload()
    assert config.settings.strict is (strict == "1")
    guard.log.reset()
    w = make_worker(10)
    out: list[int] = []

    def boom() -> None:
        raise ZeroDivisionError("in a task")

    before = guard.error_counts().get("worker", 0)
    w.submit(_append(out, 1))
    w.submit(boom)
    w.submit(_append(out, 2))
    w.submit(boom)
    w.submit(_append(out, 3))
    assert w.drain(WAIT) is True
    assert out == [1, 2, 3]
    assert guard.error_counts().get("worker", 0) - before == 2
    assert w.completed == 5
    assert w.pending() == 0


# -- fork ----------------------------------------------------------------------------------------------------
def _wait_child(pid: int, timeout: float = 20.0) -> int:
    """The child's exit status, killing it when it outlives ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            assert os.WIFEXITED(status), f"child did not exit normally: status {status}"
            return os.WEXITSTATUS(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child did not finish within {timeout} s")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_an_empty_worker(make_worker: Callable[[int], Worker]) -> None:
    w = make_worker(10)
    gate = Gate()
    parent_out: list[str] = []
    w.submit(gate)
    assert gate.started.wait(WAIT)
    w.submit(lambda: parent_out.append("parent"))
    w.submit(lambda: parent_out.append("parent"))
    assert w.pending() == 3
    rt_worker = runtime.get().worker
    rt_gate = Gate()
    assert rt_worker.submit(rt_gate)
    try:
        assert rt_gate.started.wait(WAIT)
        assert rt_worker.pending() >= 1
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            code = 1
            try:
                code = 10
                if rt_worker.pending() != 0:  # reset by the at-fork hook, before any submit
                    os._exit(code)
                code = 11
                child_out: list[str] = []
                if not w.submit(lambda: child_out.append("child")):
                    os._exit(code)
                code = 12
                if not w.drain(5.0) or w.pending() != 0:
                    os._exit(code)
                code = 13
                if child_out != ["child"] or parent_out != []:
                    os._exit(code)
                code = 14
                rt_out: list[str] = []
                if not rt_worker.submit(lambda: rt_out.append("rt")) or not rt_worker.drain(5.0):
                    os._exit(code)
                if rt_out != ["rt"] or rt_worker.pending() != 0:
                    os._exit(code)
                code = 0
            finally:
                os._exit(code)
        assert _wait_child(pid) == 0
    finally:
        rt_gate.release.set()
        gate.release.set()
    assert rt_worker.drain(WAIT) is True
    assert w.drain(WAIT) is True
    assert parent_out == ["parent", "parent"]  # the parent's queue was not touched by the child


def test_the_data_queued_tasks_hold_is_bounded(make_worker: Callable[[int], Worker], drops: Drops) -> None:
    """A stalled worker holds at most MAX_QUEUED_BYTES of input rows: big batches are dropped and counted
    before the task count is reached. One batch larger than that still goes into an empty queue."""
    mib = 1 << 20
    assert 64 * mib == MAX_QUEUED_BYTES
    w = make_worker(1000)
    gate, ran = Gate(), []
    assert w.submit(gate)
    assert gate.started.wait(WAIT)  # running: it holds no queue space
    assert w.submit(lambda: ran.append("a"), 40 * mib)
    assert not w.submit(lambda: ran.append("b"), 30 * mib)  # 70 MiB queued: dropped
    assert w.submit(lambda: ran.append("c"), 24 * mib)  # 64 MiB exactly
    assert w.submit(lambda: ran.append("d"))  # holds no data
    assert drops.calls == [(semconv.DROP_QUEUE_FULL, 1)]
    gate.release.set()
    assert w.drain(WAIT)
    assert ran == ["a", "c", "d"]
    assert w.ledger() == {"offered": 5, "completed": 4, "dropped": 1, "pending": 0}
    assert w.submit(lambda: ran.append("e"), 100 * mib) and w.drain(WAIT)  # an empty queue takes any batch
    assert ran[-1] == "e"
    assert w.submit(lambda: ran.append("f"), 64 * mib) and w.drain(WAIT)  # the bytes went with the tasks
    assert ran[-1] == "f"


def test_offer_queues_when_there_is_room_and_a_refusal_is_not_a_drop(
    make_worker: Callable[[int], Worker], drops: Drops
) -> None:
    """``offer`` is for work the caller can still do itself: a full or closed queue refuses it without counting
    a drop, and only an accepted task enters the ledger (offered == completed + dropped + pending)."""
    w = make_worker(1)
    gate = Gate()
    out: list[int] = []
    assert w.offer(gate) is True
    assert gate.started.wait(WAIT)
    assert w.offer(_append(out, 1)) is True
    assert w.offer(_append(out, 2)) is False  # full: one queued behind the running gate
    assert drops.calls == [] and w.dropped == 0
    assert w.ledger()["offered"] == 2
    gate.release.set()
    assert w.drain(WAIT) is True
    assert out == [1] and w.completed == 2
    w.close(WAIT)
    assert w.offer(_append(out, 3)) is False and drops.calls == [] and w.ledger()["offered"] == 2
