"""Harness of the reliability suite (issue #7): collectors that fail, apps under load, figures for the docs.

* ``receivers`` — start ``tests/otlp_receiver.py`` in any fault mode, on chosen ports (to restart on the same
  one), with TLS; ``kill`` SIGKILLs one by PID. Everything is stopped by PID at the end of the test.
* ``run_app`` / ``start_app`` — run a script of ``tests/reliability/apps`` in a fresh interpreter (global
  OpenTelemetry providers can be set once per process), bounded by a timeout, stopped by PID; the last stdout
  line is its JSON result.
* ``figures`` — what a test measured, per scenario of the plan (docs: the research notes' section 7). At the end
  of the session the figures are merged into ``tests/reliability/figures.json`` and
  ``tests/reliability/render.py`` writes ``docs/reliability.md`` from it: the committed file is what the last run
  produced.

Every item under this directory is marked ``reliability``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import psutil
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
APPS = HERE / "apps"
FIGURES_JSON = HERE / "figures.json"
DOC = ROOT / "docs" / "reliability.md"
RECEIVER_SCRIPT = ROOT / "tests" / "otlp_receiver.py"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_it = _load(ROOT / "tests" / "integration" / "conftest.py", "_otel_ml_integration_harness")
HOST: str = _it.HOST
free_port: Callable[[], int] = _it.free_port
stop_process: Callable[..., None] = _it.stop_process
ReceiverHandle = _it.OtlpReceiverHandle
render = _load(HERE / "render.py", "_otel_ml_reliability_render")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.reliability)


# --------------------------------------------------------------------------- receivers


@dataclass
class TlsFiles:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA (the wrong one)."""

    ca: Path
    cert: Path
    key: Path
    wrong_ca: Path


class Receivers:
    """Starts OTLP receivers (subprocesses under coreutils ``timeout``) and stops every one of them by PID."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._n = 0
        self._started: list[tuple[subprocess.Popen[bytes], list[IO[bytes]]]] = []

    def start(
        self,
        mode: str = "accept",
        *,
        fault_count: int = 0,
        grpc_port: int = 0,
        http_port: int = 0,
        tls: TlsFiles | None = None,
        lifetime: float = 240.0,
    ) -> Any:
        self._n += 1
        n = self._n
        out_path = self._tmp / f"receiver_{n}.jsonl"
        stdout_path = self._tmp / f"receiver_{n}.stdout"
        log_path = self._tmp / f"receiver_{n}.log"
        out_path.touch()
        cmd = [
            _it._timeout_bin(), "-k", "5", str(int(lifetime) + 15),
            sys.executable, str(RECEIVER_SCRIPT), "--out", str(out_path), "--mode", mode,
            "--lifetime", str(lifetime), "--grpc-port", str(grpc_port), "--http-port", str(http_port),
            "--fault-count", str(fault_count),
        ]  # fmt: skip
        if tls is not None:
            cmd += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
        stdout = open(stdout_path, "wb")  # noqa: SIM115 (closed by stop_process)
        stderr = open(log_path, "wb")  # noqa: SIM115 (closed by stop_process)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        self._started.append((proc, [stdout, stderr]))
        grpc, http = _it._wait_ready(proc, stdout_path, log_path)
        return ReceiverHandle(proc, grpc, http, out_path, log_path, mode)

    def kill(self, handle: Any) -> None:
        """SIGKILL the receiver itself (the child of its ``timeout`` wrapper), by PID: a crashed collector."""
        for child in psutil.Process(handle.pid).children(recursive=True):
            os.kill(child.pid, signal.SIGKILL)
        handle.proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc, logs in reversed(self._started):
            stop_process(proc, logs)


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Receivers]:
    r = Receivers(tmp_path)
    try:
        yield r
    finally:
        r.stop_all()


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connection refused)."""
    return free_port()


def _lines(handle: Any, kind: str) -> Iterator[str]:
    prefix = f'{{"kind":"{kind}"'
    with open(handle.out_path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(prefix) and line.endswith("\n"):
                yield line


_SPAN_ID = re.compile(r'"span_id":"([0-9a-f]{16})"')


def span_ids(handle: Any) -> list[str]:
    """Span ids of every span record, in arrival order (fast: no JSON decoding of 100,000s of spans)."""
    out = []
    for line in _lines(handle, "span"):
        m = _SPAN_ID.search(line)
        if m:
            out.append(m.group(1))
    return out


def records(handle: Any, kind: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(handle, kind)]


def last_metric(handle: Any, name: str, resource_filter: Callable[[dict[str, Any]], bool] | None = None) -> Any:
    """The last record of metric ``name`` (cumulative: the latest is the total)."""
    found = None
    needle = f'"name":"{name}"'
    for line in _lines(handle, "metric"):
        if needle in line:
            rec = json.loads(line)
            if rec["name"] == name and (resource_filter is None or resource_filter(rec["resource"])):
                found = rec
    return found


# --------------------------------------------------------------------------- apps


def app_env(**extra: str) -> dict[str, str]:
    """The environment of an app: no OTEL_* of the developer's shell, otel-ml not strict (production)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_ML_STRICT"] = "0"
    env["PYTHONFAULTHANDLER"] = "1"
    env.update(extra)
    return env


@dataclass
class AppRun:
    """A finished app: its JSON result (last stdout line), stderr, wall time and exit code."""

    result: dict[str, Any]
    stdout: str
    stderr: str
    wall_s: float
    returncode: int
    exited_at: float


@dataclass
class RunningApp:
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    started: float
    files: list[IO[bytes]] = field(default_factory=list)

    def wait(self, timeout: float) -> AppRun:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            tail = self.stderr_path.read_text()[-3000:]
            raise AssertionError(f"app did not finish within {timeout}s: {tail}") from None
        finally:
            for f in self.files:
                f.close()
        exited_at = time.time()
        wall = time.monotonic() - self.started
        stdout = self.stdout_path.read_text(encoding="utf-8", errors="replace")
        stderr = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        result: dict[str, Any] = {}
        for line in reversed(stdout.strip().splitlines()):
            if line.startswith("{"):
                result = json.loads(line)
                break
        return AppRun(result, stdout, stderr, wall, self.proc.returncode, exited_at)


class Apps:
    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._n = 0
        self._running: list[RunningApp] = []

    def start(
        self,
        script: str | Path,
        *,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        python_args: tuple[str, ...] = (),
    ) -> RunningApp:
        self._n += 1
        path = Path(script) if Path(script).is_absolute() else APPS / script
        full_env = app_env(**dict(env or {}))
        if config is not None:
            full_env["RELIABILITY_CONFIG"] = json.dumps(config)
        out = self._tmp / f"app_{self._n}.stdout"
        err = self._tmp / f"app_{self._n}.stderr"
        fo, fe = open(out, "wb"), open(err, "wb")  # noqa: SIM115 (closed in wait)
        proc = subprocess.Popen(
            [sys.executable, *python_args, str(path), *args],
            stdin=subprocess.DEVNULL,
            stdout=fo,
            stderr=fe,
            env=full_env,
            cwd=str(ROOT),
        )
        running = RunningApp(proc, out, err, time.monotonic(), [fo, fe])
        self._running.append(running)
        return running

    def run(self, script: str | Path, *, timeout: float = 120.0, check: bool = True, **kwargs: Any) -> AppRun:
        run = self.start(script, **kwargs).wait(timeout)
        if check:
            assert run.returncode == 0, f"app exited {run.returncode}: {run.stderr[-4000:]}"
            assert run.result, f"app printed no result: {run.stdout[-2000:]} {run.stderr[-4000:]}"
        return run

    def stop_all(self) -> None:
        for app in self._running:
            if app.proc.poll() is None:
                stop_process(app.proc)
            for f in app.files:
                if not f.closed:
                    f.close()


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Apps]:
    a = Apps(tmp_path)
    try:
        yield a
    finally:
        a.stop_all()


def otel_ml_log_lines(stderr: str) -> list[str]:
    """Log lines of otel-ml's own logger in an app's stderr (format ``<time> <LEVEL> <logger> <message>``)."""
    return [line for line in stderr.splitlines() if re.match(r"^[\d.]+ [A-Z]+ otel_ml ", line)]


# --------------------------------------------------------------------------- TLS material


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    for name in ("ca", "wrong_ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=otel-ml test {name}",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"),
        )  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
        "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.cnf"), "-out", str(d / "server.pem"),
    )  # fmt: skip
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "wrong_ca.pem")


# --------------------------------------------------------------------------- figures


class Figures:
    """What the tests measured: by scenario id, then by test node (a re-run replaces that test's figures)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, dict[str, Any]]] = {}
        self.outcomes: dict[str, str] = {}

    def record(self, scenario: str, node: str, key: str, value: Any) -> None:
        self.data.setdefault(scenario, {}).setdefault(node, {})[key] = value


_FIGURES = Figures()


class ScenarioFigures:
    """The ``figures`` fixture: ``figures.record("2", "longest export s", 2.1)``; keys ``row:*`` go to the table."""

    def __init__(self, node: str) -> None:
        self._node = node

    def record(self, scenario: str, key: str, value: Any) -> None:
        _FIGURES.record(scenario, self._node, key, value)

    def note(self, scenario: str) -> None:
        """Associate this test with a scenario without a figure (its outcome still counts)."""
        _FIGURES.data.setdefault(scenario, {}).setdefault(self._node, {})


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> ScenarioFigures:
    return ScenarioFigures(request.node.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    mine = HERE in Path(item.path).resolve().parents
    if mine:
        _SESSION["seconds"] = _SESSION.get("seconds", 0.0) + report.duration  # setup + call + teardown
    if mine and (report.when == "call" or (report.when == "setup" and report.outcome != "passed")):
        outcome = "xfail" if hasattr(report, "wasxfail") else report.outcome
        _FIGURES.outcomes[item.nodeid] = outcome
    return report


_SESSION: dict[str, Any] = {}


def pytest_deselected(items: list[pytest.Item]) -> None:
    _SESSION["deselected"] = _SESSION.get("deselected", 0) + sum(
        1 for item in items if HERE in Path(item.path).resolve().parents
    )


def _whole_directory(session: pytest.Session) -> bool:
    """The session collected every reliability test: a directory at or above this one, nothing deselected."""
    if _SESSION.get("deselected"):
        return False
    for arg in session.config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == HERE or path in HERE.parents:
            return True
    return False


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _FIGURES.outcomes:
        return  # no reliability test ran
    total = sum(1 for item in session.items if HERE in Path(item.path).resolve().parents)
    ran = len(_FIGURES.outcomes)
    previous: dict[str, Any] = {}
    if FIGURES_JSON.exists():
        try:
            previous = json.loads(FIGURES_JSON.read_text())
        except ValueError:
            previous = {}
    scenarios: dict[str, Any] = previous.get("scenarios", {})
    collected = {item.nodeid for item in session.items}
    full = ran == total and total > 0 and _whole_directory(session)
    for sid in list(scenarios):  # a full run forgets tests that no longer exist
        entry = scenarios[sid]
        if full:
            entry["tests"] = {n: o for n, o in entry.get("tests", {}).items() if n in collected}
            entry["figures"] = {n: f for n, f in entry.get("figures", {}).items() if n in collected}
    for sid, by_node in _FIGURES.data.items():
        entry = scenarios.setdefault(sid, {"tests": {}, "figures": {}})
        for node, values in by_node.items():
            entry["figures"][node] = values
            if node in _FIGURES.outcomes:
                entry["tests"][node] = _FIGURES.outcomes[node]
    doc: dict[str, Any] = {
        "scenarios": scenarios,
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "opentelemetry_sdk": _sdk_version(),
        },
        "last_run": previous.get("last_run", {}),
    }
    run_info = {
        "tests": ran,
        "collected": total,
        "seconds": round(_SESSION.get("seconds", 0.0), 1),  # the reliability tests' own time
        "full_suite": full,
        "failed": sum(1 for o in _FIGURES.outcomes.values() if o == "failed"),
    }
    if full or not doc["last_run"]:
        doc["last_run"] = run_info
    FIGURES_JSON.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render.render(doc))


def _sdk_version() -> str:
    from opentelemetry.sdk.version import __version__

    return str(__version__)
