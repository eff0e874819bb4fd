"""Fixtures for integration tests against real OTLP servers on 127.0.0.1.

* ``otlp_receiver`` — ``tests/otlp_receiver.py`` (real OTLP/gRPC + OTLP/HTTP server) in a
  subprocess; read back what it received as decoded JSON records.
* ``otlp_receiver_factory`` — start more receivers, e.g. with a fault mode.
* ``rotel_collector`` / ``rotel_collector_factory`` — the real ``rotel-agent`` collector
  from the ``rotel`` wheel, receiving OTLP gRPC + HTTP and exporting OTLP/gRPC onwards.

Every process runs under coreutils ``timeout`` (so it dies by itself even if pytest is
killed) and is stopped by PID in the fixture finalizer. Under ``CI=true`` a missing
component fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

HOST = "127.0.0.1"
RECEIVER_SCRIPT = Path(__file__).resolve().parents[1] / "otlp_receiver.py"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
RECEIVER_LIFETIME_S = 120.0
ROTEL_LIFETIME_S = 120.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as ``integration`` (safety net for ``-m``).

    Test modules here also set ``pytestmark = pytest.mark.integration`` themselves.
    """
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (bind to 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def missing_component(message: str) -> NoReturn:
    """Skip the test locally, but fail it under CI=true (CI must not silently lose coverage)."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"required integration component missing: {message}", pytrace=False)
    pytest.skip(f"integration component missing: {message}")


def _timeout_bin() -> str:
    """Path of coreutils ``timeout``: the second guard that bounds every child's lifetime."""
    path = shutil.which("timeout")
    if path is None:
        missing_component("coreutils `timeout` not found on PATH")
    return path


def _port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 2000) -> str:
    """Last ``limit`` characters of a log file, for failure messages."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return "<no log>"


def _children(pid: int) -> list[int]:
    """PIDs of all descendants of ``pid`` (via psutil when installed)."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def stop_process(proc: subprocess.Popen[bytes], logs: Sequence[IO[bytes]] = ()) -> None:
    """Stop a ``timeout``-wrapped child by PID: SIGTERM, bounded wait, then SIGKILL.

    ``timeout`` forwards SIGTERM to the real server; if it has to be killed, the server
    (its child) is killed by PID as well so nothing is left behind.
    """
    descendants = _children(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
    for pid in descendants:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for log in logs:
        log.close()


# --------------------------------------------------------------------------- OTLP receiver


@dataclass
class OtlpReceiverHandle:
    """A running ``tests/otlp_receiver.py`` and accessors for what it received."""

    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    out_path: Path
    log_path: Path
    mode: str

    @property
    def pid(self) -> int:
        """PID of the ``timeout`` wrapper (SIGTERM to it stops the receiver)."""
        return self.proc.pid

    @property
    def grpc_endpoint(self) -> str:
        """OTLP/gRPC endpoint, e.g. ``http://127.0.0.1:43123`` (use ``insecure=True``)."""
        return f"http://{HOST}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """OTLP/HTTP base URL; append ``/v1/traces``, ``/v1/metrics`` or ``/v1/logs``."""
        return f"http://{HOST}:{self.http_port}"

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All records written so far (optionally of one kind), in arrival order.

        Kinds: ``request``, ``span``, ``metric``, ``log``, ``connection``. A partially
        written last line (no newline yet) is skipped; it shows up on the next call.
        """
        try:
            text = self.out_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            record: dict[str, Any] = json.loads(line)
            if kind is None or record.get("kind") == kind:
                out.append(record)
        return out

    def spans(self, name: str | None = None) -> list[dict[str, Any]]:
        """Span records, optionally only those with this span name."""
        return [r for r in self.records("span") if name is None or r["name"] == name]

    def metrics(self, name: str | None = None) -> list[dict[str, Any]]:
        """Metric records (one per metric per export), optionally filtered by name.

        The SDK exports a metric at every collection (force_flush, shutdown), so one
        instrument can appear several times; with cumulative temporality the last wins.
        """
        return [r for r in self.records("metric") if name is None or r["name"] == name]

    def logs(self) -> list[dict[str, Any]]:
        """Log records."""
        return self.records("log")

    def requests(self, signal: str | None = None) -> list[dict[str, Any]]:
        """Per-request summaries (byte counts, outcome), optionally for one signal."""
        return [r for r in self.records("request") if signal is None or r["signal"] == signal]

    def connections(self) -> list[dict[str, Any]]:
        """Accepted-connection records (written in blackhole mode only)."""
        return self.records("connection")

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], object],
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> list[dict[str, Any]]:
        """Poll until ``predicate(all_records)`` is truthy; return those records.

        Bounded: raises AssertionError after ``timeout`` seconds (or if the receiver died).
        """
        deadline = time.monotonic() + timeout
        while True:
            records = self.records()
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                kinds = [r.get("kind") for r in records]
                raise AssertionError(
                    f"otlp_receiver: condition not met within {timeout}s; {len(records)} records "
                    f"(kinds {sorted(set(map(str, kinds)))}); receiver log: {_tail(self.log_path, 500)}"
                )
            if self.proc.poll() is not None:
                raise AssertionError(f"otlp_receiver exited early: {_tail(self.log_path)}")
            time.sleep(interval)

    def wait_for_count(
        self, kind: str, count: int = 1, name: str | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` records of ``kind`` (and ``name``) arrived; return them."""

        def matching(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in records if r.get("kind") == kind and (name is None or r.get("name") == name)]

        return matching(self.wait_for(lambda rs: len(matching(rs)) >= count, timeout=timeout))

    def clear(self) -> None:
        """Drop everything received so far (the receiver appends, so truncation is safe)."""
        self.out_path.write_bytes(b"")


def _wait_ready(proc: subprocess.Popen[bytes], stdout_path: Path, log_path: Path) -> tuple[int, int]:
    """Wait (bounded) for the ``READY grpc=<port> http=<port>`` line; return the ports."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in stdout_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("READY "):
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                return int(fields["grpc"]), int(fields["http"])
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    stop_process(proc)
    pytest.fail(f"otlp_receiver not ready within {READY_TIMEOUT_S}s (exit {proc.poll()}): {_tail(log_path)}")


@pytest.fixture
def otlp_receiver_factory(tmp_path: Path) -> Iterator[Callable[..., OtlpReceiverHandle]]:
    """Factory ``start(mode="accept", *, fault_count=0, retry_after=None, lifetime=120.0)``.

    Each call starts one receiver subprocess (fresh ports and output file); all of them
    are stopped by PID at the end of the test.
    """
    for module in ("grpc", "opentelemetry.proto"):
        if importlib.util.find_spec(module) is None:
            missing_component(f"python module {module!r} (needed by tests/otlp_receiver.py)")
    timeout_bin = _timeout_bin()
    started: list[tuple[subprocess.Popen[bytes], list[IO[bytes]]]] = []
    counter = iter(range(1, 1000))

    def start(
        mode: str = "accept",
        *,
        fault_count: int = 0,
        retry_after: float | None = None,
        lifetime: float = RECEIVER_LIFETIME_S,
    ) -> OtlpReceiverHandle:
        n = next(counter)
        out_path = tmp_path / f"otlp_receiver_{n}.jsonl"
        stdout_path = tmp_path / f"otlp_receiver_{n}.stdout"
        log_path = tmp_path / f"otlp_receiver_{n}.log"
        out_path.touch()
        cmd = [
            timeout_bin, "-k", "5", str(int(lifetime) + 15),
            sys.executable, str(RECEIVER_SCRIPT),
            "--out", str(out_path), "--mode", mode, "--lifetime", str(lifetime),
            "--grpc-port", "0", "--http-port", "0", "--fault-count", str(fault_count),
        ]  # fmt: skip
        if retry_after is not None:
            cmd += ["--retry-after", str(retry_after)]
        stdout = open(stdout_path, "wb")  # noqa: SIM115 (closed by stop_process)
        stderr = open(log_path, "wb")  # noqa: SIM115 (closed by stop_process)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        started.append((proc, [stdout, stderr]))
        grpc_port, http_port = _wait_ready(proc, stdout_path, log_path)
        return OtlpReceiverHandle(proc, grpc_port, http_port, out_path, log_path, mode)

    try:
        yield start
    finally:
        for proc, logs in reversed(started):
            stop_process(proc, logs)


@pytest.fixture
def otlp_receiver(
    request: pytest.FixtureRequest, otlp_receiver_factory: Callable[..., OtlpReceiverHandle]
) -> OtlpReceiverHandle:
    """A receiver in ``accept`` mode (or the mode given by indirect parametrization)."""
    return otlp_receiver_factory(getattr(request, "param", "accept"))


# --------------------------------------------------------------------------- rotel


@dataclass
class RotelHandle:
    """A running ``rotel-agent`` with OTLP gRPC + HTTP receivers on 127.0.0.1."""

    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log_path: Path
    downstream: str
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """PID of the ``timeout`` wrapper (SIGTERM to it stops rotel)."""
        return self.proc.pid

    @property
    def grpc_endpoint(self) -> str:
        """OTLP/gRPC endpoint of rotel's receiver."""
        return f"http://{HOST}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """OTLP/HTTP base URL of rotel's receiver (append ``/v1/traces`` etc.)."""
        return f"http://{HOST}:{self.http_port}"

    def log(self) -> str:
        """rotel's stdout/stderr so far."""
        return _tail(self.log_path, 100_000)


def rotel_agent_path() -> str:
    """Path of the ``rotel-agent`` binary shipped inside the ``rotel`` wheel."""
    try:
        import rotel
    except ImportError as exc:
        missing_component(f"python package 'rotel' not importable ({exc}); pip install rotel")
    path = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        missing_component(f"rotel-agent binary missing or not executable at {path}")
    return path


@pytest.fixture
def rotel_collector_factory(tmp_path: Path) -> Iterator[Callable[..., RotelHandle]]:
    """Factory ``start(downstream, *, protocol="grpc", extra_args=(), lifetime=120.0)``.

    Starts ``rotel-agent start`` in the foreground under ``timeout`` with receivers on
    free 127.0.0.1 ports, exporting OTLP to ``downstream`` (e.g. a receiver's
    ``grpc_endpoint``) with short batch timeout and retry backoff. Stopped by PID.
    """
    binary = rotel_agent_path()
    timeout_bin = _timeout_bin()
    started: list[tuple[subprocess.Popen[bytes], list[IO[bytes]]]] = []
    counter = iter(range(1, 1000))
    # Never inherit ROTEL_* settings from the developer's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}

    def start(
        downstream: str,
        *,
        protocol: str = "grpc",
        extra_args: Sequence[str] = (),
        lifetime: float = ROTEL_LIFETIME_S,
    ) -> RotelHandle:
        n = next(counter)
        log_path = tmp_path / f"rotel_{n}.log"
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind: retry
            grpc_port, http_port = free_port(), free_port()
            args = [
                "start",
                "--otlp-grpc-endpoint", f"{HOST}:{grpc_port}",
                "--otlp-http-endpoint", f"{HOST}:{http_port}",
                "--exporter", "otlp",
                "--otlp-exporter-endpoint", downstream,
                "--otlp-exporter-protocol", protocol,
                "--otlp-exporter-retry-initial-backoff", "100ms",
                "--otlp-exporter-retry-max-backoff", "500ms",
                "--otlp-exporter-retry-max-elapsed-time", "10s",
                "--otlp-exporter-request-timeout", "3s",
                "--batch-timeout", "100ms",
                "--pid-file", str(tmp_path / f"rotel_{n}.pid"),
                "--log-file", str(tmp_path / f"rotel_{n}.daemon.log"),
                *extra_args,
            ]  # fmt: skip
            cmd = [timeout_bin, "-k", "5", str(int(lifetime)), binary, *args]
            log = open(log_path, "ab")  # noqa: SIM115 (closed by stop_process)
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
            started.append((proc, [log]))
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                if _port_open(grpc_port) and _port_open(http_port):
                    return RotelHandle(proc, grpc_port, http_port, log_path, downstream, args)
                time.sleep(0.05)
            stop_process(proc)
            last_error = _tail(log_path)
            if "error while loading shared libraries" in last_error:
                missing_component(f"rotel-agent cannot run here: {last_error.strip()}")
        pytest.fail(f"rotel-agent did not start listening within {READY_TIMEOUT_S}s: {last_error}")

    try:
        yield start
    finally:
        for proc, logs in reversed(started):
            stop_process(proc, logs)


@pytest.fixture
def rotel_collector(
    otlp_receiver: OtlpReceiverHandle, rotel_collector_factory: Callable[..., RotelHandle]
) -> RotelHandle:
    """rotel receiving OTLP on free ports and exporting OTLP/gRPC to ``otlp_receiver``."""
    return rotel_collector_factory(otlp_receiver.grpc_endpoint)
