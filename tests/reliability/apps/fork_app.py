"""Fork after instrumentation: ``os.fork``, ``multiprocessing`` (fork start method), and forks while 8 threads predict.

argv[1]: ``osfork`` | ``mp`` | ``under_load``. The parent configures otel-ml (OTLP from the environment),
instruments one function and predicts before forking; every child predicts with the inherited function. Prints
one JSON line: the parent's ``service.instance.id``, what each child reported, how long each took to exit.
"""

from __future__ import annotations

import faulthandler
import json
import multiprocessing
import os
import sys
import threading
import time
from typing import Any

import numpy as np

import otel_ml
from otel_ml._core import runtime, setup

W = np.random.default_rng(5).normal(size=20)


def bare(x: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-(x @ W)))
    return np.stack([1 - p, p], axis=1)


predict = otel_ml.instrument(name="forked", version="1", output="proba")(bare)
ROWS = np.random.default_rng(6).normal(size=(256, 20))


def predict_n(n: int) -> None:
    for k in range(n):
        predict(ROWS[k % 256 : k % 256 + 1])


def instance_id() -> str:
    pipeline = setup.current()
    assert pipeline is not None and pipeline.resource is not None
    return str(pipeline.resource.attributes["service.instance.id"])


def child(n: int, report: str, explicit_shutdown: bool) -> None:
    faulthandler.dump_traceback_later(8, exit=True)  # a hang in the child ends it (non-zero status) in 8 s
    predict_n(n)
    info = {"pid": os.getpid(), "instance_id": instance_id(), "worker_offered": runtime.get().worker.ledger()}
    if explicit_shutdown:
        info["shutdown_ok"] = otel_ml.shutdown(timeout=3)
        info["ledger"] = setup.span_ledger()
    with open(report, "a") as f:
        f.write(json.dumps(info) + "\n")
    faulthandler.cancel_dump_traceback_later()


def wait_child(pid: int, timeout: float) -> tuple[int, float]:
    """(exit status, seconds) of a forked child; a child still alive after ``timeout`` is killed (status -9)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.monotonic() - t0
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -9, time.monotonic() - t0


def main() -> int:
    mode, report = sys.argv[1], sys.argv[2]
    otel_ml.configure(service_name="fork")
    parent_id = instance_id()
    out: dict[str, Any] = {"parent_instance_id": parent_id, "parent_pid": os.getpid()}
    predict_n(1000)
    exits: list[tuple[int, float]] = []
    if mode == "osfork":
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                child(1000, report, explicit_shutdown=True)
                os._exit(0)
            exits.append(wait_child(pid, 10))
    elif mode == "mp":
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=child, args=(1000, report, False)) for _ in range(4)]
        for p in procs:
            t0 = time.monotonic()
            p.start()
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
            exits.append((p.exitcode if p.exitcode is not None else -9, time.monotonic() - t0))
    else:  # under_load: fork while 8 threads predict, many times
        forks = int(sys.argv[3])
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                predict_n(50)

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        for _ in range(forks):
            pid = os.fork()
            if pid == 0:
                child(10, report, explicit_shutdown=True)
                os._exit(0)
            exits.append(wait_child(pid, 10))
        stop.set()
        for t in threads:
            t.join(10)
        out["parent_threads_alive"] = sum(t.is_alive() for t in threads)
    out["exits"] = exits
    out["parent_count"] = None
    out["shutdown_ok"] = otel_ml.shutdown(timeout=10)
    out["parent_ledger"] = setup.span_ledger()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
