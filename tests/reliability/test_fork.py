"""Scenario 8: fork after instrumentation — ``os.fork``, ``multiprocessing`` (fork), gunicorn ``--preload -w 4``,
and forks while 8 threads predict.

Each child must export with its own ``service.instance.id``, nothing of the parent may be exported twice (the
collector receives exactly the parent's spans plus each child's), and every child exits within 10 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS, ROOT, Apps, Receivers, ScenarioFigures, app_env, free_port, records, stop_process

ENV = {
    "OTEL_EXPORTER_OTLP_INSECURE": "true",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "OTEL_METRIC_EXPORT_INTERVAL": "60000",
}


def _by_instance(rx: Any, kind: str = "span") -> Counter[str]:
    return Counter(r["resource"]["service.instance.id"] for r in records(rx, kind))


def _counts(rx: Any) -> dict[str, int]:
    """The last cumulative ml.prediction.count per service.instance.id."""
    last: dict[str, int] = {}
    for rec in records(rx, "metric"):
        if rec["name"] == "ml.prediction.count":
            last[rec["resource"]["service.instance.id"]] = sum(p["value"] for p in rec["data_points"])
    return last


def _reports(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("mode", ["osfork", "mp"])
def test_children_export_their_own_telemetry(
    apps: Apps, receivers: Receivers, figures: ScenarioFigures, tmp_path: Path, mode: str
) -> None:
    rx = receivers.start("accept")
    report = tmp_path / "children.jsonl"
    run = apps.run(
        "fork_app.py", args=(mode, str(report)), env={**ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": rx.grpc_endpoint}
    )
    r = run.result
    children = _reports(report)
    assert len(children) == 4
    assert all(code == 0 and took <= 10 for code, took in r["exits"]), r["exits"]
    parent = r["parent_instance_id"]
    ids = {c["instance_id"] for c in children}
    assert len(ids) == 4 and parent not in ids
    rx.wait_for(lambda recs: sum(1 for x in recs if x.get("kind") == "span") >= 5000, timeout=20)
    spans = _by_instance(rx)
    assert spans == Counter({parent: 1000, **dict.fromkeys(ids, 1000)}), spans  # nothing of the parent twice
    counts = _counts(rx)
    assert counts == {parent: 1000, **dict.fromkeys(ids, 1000)}, counts  # each child counts only its own
    assert r["parent_ledger"]["exported"] == 1000
    figures.record("8", f"{mode}: spans per service.instance.id", sorted(spans.values()))
    figures.record("8", f"{mode}: slowest child exit s", round(max(t for _, t in r["exits"]), 2))


def test_fork_while_eight_threads_predict(
    apps: Apps, receivers: Receivers, figures: ScenarioFigures, tmp_path: Path
) -> None:
    forks = 100
    rx = receivers.start("accept")
    report = tmp_path / "children.jsonl"
    run = apps.run(
        "fork_app.py",
        args=("under_load", str(report), str(forks)),
        env={**ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": rx.grpc_endpoint},
        timeout=240,
    )
    r = run.result
    statuses = Counter(code for code, _ in r["exits"])
    slowest = max(t for _, t in r["exits"])
    figures.record("8", "under load: forks / exit codes", f"{forks} / {dict(statuses)}")
    figures.record("8", "under load: slowest child exit s", round(slowest, 2))
    assert statuses == {0: forks}, (statuses, run.stderr[-3000:])
    assert slowest <= 10
    assert r["parent_threads_alive"] == 0
    children = _reports(report)
    assert len(children) == forks
    assert len({c["instance_id"] for c in children}) == forks
    bad = [c for c in children if not c["ledger"]["produced"] == c["ledger"]["exported"] == 10]
    assert not bad, bad
    spans = _by_instance(rx)
    assert all(spans[c["instance_id"]] == 10 for c in children)
    parent = r["parent_ledger"]
    assert spans[r["parent_instance_id"]] == parent["exported"]
    assert parent["unexplained"] == 0


# --------------------------------------------------------------------------- gunicorn


GUNICORN_APP = APPS / "wsgi_app.py"


def test_gunicorn_preload_workers(apps: Apps, receivers: Receivers, figures: ScenarioFigures, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    rx = receivers.start("accept")
    port = free_port()
    env = app_env(
        **ENV,
        OTEL_EXPORTER_OTLP_ENDPOINT=rx.grpc_endpoint,
        PYTHONPATH=str(APPS) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        RELIABILITY_MASTER_REPORT=str(tmp_path / "master.json"),
    )
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 (closed below)
    # fmt: off
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--preload", "-w", "4", "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "20", "--timeout", "30", "wsgi_app:app",
        ],
        cwd=str(ROOT),
        env=env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    # fmt: on
    try:
        served: Counter[int] = Counter()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    served[json.loads(resp.read())["pid"]] += 1
                break
            except OSError:
                time.sleep(0.1)
        for _ in range(199):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                served[json.loads(resp.read())["pid"]] += 1
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            stop_process(proc)
        log.close()
    logtext = (tmp_path / "gunicorn.log").read_text(errors="replace")
    assert proc.returncode == 0, logtext[-3000:]
    # gunicorn's own account of its workers (listing the master's children races with gunicorn >= 27's
    # control-socket process): 4 booted, and every request was served by one of them
    booted = {int(p) for p in re.findall(r"Booting worker with pid: (\d+)", logtext)}
    assert len(booted) == 4 and set(served) <= booted, (booted, served)
    master = json.loads((tmp_path / "master.json").read_text())
    spans = _by_instance(rx)
    metric_ids = set(_by_instance(rx, "metric"))
    # the master predicted 100 rows at import (preload) and exported them itself, once
    assert spans[master["instance_id"]] == 100, (_debug(rx), master)
    worker_ids = metric_ids - {master["instance_id"]}
    assert len(worker_ids) == 4, (metric_ids, logtext[-2000:])  # every worker exported, under its own id
    assert sum(spans[i] for i in worker_ids) == 200  # one span per request, none of the master's again
    assert sum(spans.values()) == 300
    counts = _counts(rx)
    assert counts[master["instance_id"]] == 100
    assert sum(counts.get(i, 0) for i in worker_ids) == 200
    assert "Traceback" not in logtext
    figures.record("8", "gunicorn: requests per worker", sorted(served.values()))
    figures.record("8", "gunicorn: graceful stop s", round(stop_s, 2))


def _debug(rx: Any) -> str:
    spans = records(rx, "span")
    by_id = Counter(r["resource"]["service.instance.id"][:8] for r in spans)
    unique = Counter(r["resource"]["service.instance.id"][:8] for r in {r["span_id"]: r for r in spans}.values())
    reqs = [(r["request_id"], r["items"], r["outcome"], r["client_alive"]) for r in records(rx, "request")]
    return f"{by_id} unique={unique} requests={reqs}"
