"""Scenario 10: ``otel_ml.shutdown(timeout=2)`` returns within 2.5 s, and the interpreter's exit never hangs,
against a closed port and a blackhole, over gRPC and HTTP, with 5,000 spans queued.

(``tests/unit/core/test_setup.py`` already checks the 2.5 s bound of a bare shutdown; this adds the queued spans,
the exit time, the atexit-only path and the span ledger of what could not be sent.)
"""

from __future__ import annotations

import time

import pytest
from conftest import Apps, Receivers, ScenarioFigures, closed_port

QUEUED = {
    "OTEL_BSP_MAX_QUEUE_SIZE": "8192",  # all 5,000 spans stay queued ...
    "OTEL_BSP_SCHEDULE_DELAY": "60000",  # ... until shutdown
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "8192",
    "OTEL_METRIC_EXPORT_INTERVAL": "60000",
}


def _endpoint(receivers: Receivers, target: str, protocol: str) -> str:
    if target == "closed":
        return f"http://127.0.0.1:{closed_port()}"
    rx = receivers.start("blackhole")
    return rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("target", ["closed", "blackhole"])
def test_shutdown_and_exit_are_bounded(
    apps: Apps, receivers: Receivers, figures: ScenarioFigures, target: str, protocol: str
) -> None:
    endpoint = _endpoint(receivers, target, protocol)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    run = apps.run("shutdown_app.py", args=("explicit", "2"), env={**env, **QUEUED}, timeout=60)
    r = run.result
    exit_s = run.exited_at - r["exit_started"]
    assert r["queued_before"]["queued"] == 5000
    assert r["shutdown_s"] <= 2.5, r
    assert r["shutdown_ok"] is False  # nothing could be sent: it says so
    assert exit_s <= 5.0, exit_s
    ledger = r["ledger"]
    assert ledger["unexplained"] == 0 and ledger["queued"] == ledger["in_flight"] == 0, ledger
    assert ledger["produced"] == 5000 and ledger["exported"] == 0, ledger
    assert ledger["span_already_shutdown"] + ledger["span_export_failed"] == 5000, ledger
    for reason in ("span_already_shutdown", "span_export_failed"):
        assert r["drops"].get(reason, 0) == ledger[reason]
    assert r["after_shutdown_call_us"] < 1000
    assert "Traceback" not in run.stderr
    figures.record(
        "10",
        f"row:{target}/{protocol}",
        {
            "run": f"shutdown(timeout=2), {target}, {protocol}, 5,000 queued",
            "shutdown_s": round(r["shutdown_s"], 2),
            "produced": ledger["produced"],
            "delivered": 0,
            "dropped": {k: ledger[k] for k in ("span_already_shutdown", "span_export_failed") if ledger[k]},
            "unexplained": ledger["unexplained"],
        },
    )
    figures.record("10", f"exit after shutdown s ({target}, {protocol})", round(exit_s, 2))


@pytest.mark.parametrize("target", ["closed", "blackhole"])
def test_exit_without_explicit_shutdown(
    apps: Apps, receivers: Receivers, figures: ScenarioFigures, target: str
) -> None:
    """Only the atexit hook (OTEL_ML_SHUTDOWN_TIMEOUT, default 5 s) stands between the app and its exit."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": _endpoint(receivers, target, "grpc"), **QUEUED}
    started = time.monotonic()
    run = apps.run("shutdown_app.py", args=("atexit",), env=env, timeout=60)
    exit_s = run.exited_at - run.result["exit_started"]
    # the hook may use its whole 5 s budget when nothing answers; the interpreter's own teardown comes on top
    assert exit_s <= 5.0 + 1.0, exit_s
    assert "Traceback" not in run.stderr
    figures.record("10", f"atexit-only exit s ({target}, default OTEL_ML_SHUTDOWN_TIMEOUT=5)", round(exit_s, 2))
    figures.record("10", f"atexit-only process wall s ({target})", round(time.monotonic() - started, 2))
