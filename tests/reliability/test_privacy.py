"""Scenarios 13 (canary values never exported or logged by default) and 14 (headers, tokens, userinfo, TLS)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Apps, Receivers, ScenarioFigures, TlsFiles, closed_port, records, span_ids

CANARY_STR = "CANARY-7f3a@example.com"
CANARY_FLOAT = "12345.678901"
CANARY_INT = "987654321987"
CANARY_MESSAGE = "CANARY-MSG-5d2e"
VALUE_CANARIES = (CANARY_STR, CANARY_FLOAT, CANARY_INT, CANARY_MESSAGE, "alice@example.com")


def _exported(rx: Any) -> str:
    return Path(rx.out_path).read_text(encoding="utf-8")


def _run_privacy(apps: Apps, rx: Any, **env: str) -> Any:
    return apps.run(
        "privacy_app.py",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            **env,
        },
        timeout=120,
    )


def test_no_canary_is_exported_or_logged_by_default(apps: Apps, receivers: Receivers, figures: ScenarioFigures) -> None:
    rx = receivers.start("accept")
    run = _run_privacy(apps, rx)
    r = run.result
    assert r["user_errors"] == 800  # the model's own exceptions reached the caller, unchanged
    exported = _exported(rx)
    assert len(span_ids(rx)) == 1200 == r["ledger"]["exported"]
    assert any(rec["name"] == "ml.feature.category" for rec in records(rx, "metric"))  # the string was sketched
    found = {c: (c in exported, c in run.stderr) for c in VALUE_CANARIES}
    assert not any(a or b for a, b in found.values()), found
    # exemplars exist and carry only trace ids and the measured value (durations, confidences)
    exemplars = [e for rec in records(rx, "metric") for p in rec["data_points"] for e in p.get("exemplars", [])]
    assert exemplars and all(set(e["filtered_attributes"]) == set() for e in exemplars)
    assert "DEBUG" in run.stderr  # the logs were really at DEBUG
    events = {
        json.dumps(e["attributes"], sort_keys=True)
        for s in records(rx, "span")
        if s["status"]["code"] == "ERROR"
        for e in s["events"]
    }
    assert events == {json.dumps({"exception.message": "<redacted>", "exception.type": "ValueError"})}, events
    figures.record("13", "canary occurrences in OTLP records + DEBUG logs (default)", 0)
    figures.record("13", "exported bytes scanned", len(exported))


def test_opt_in_capture_is_bounded(apps: Apps, receivers: Receivers, figures: ScenarioFigures) -> None:
    rx = receivers.start("accept")
    _run_privacy(apps, rx, OTEL_ML_CAPTURE_EXCEPTION_MESSAGE="true", OTEL_ML_CAPTURE_CATEGORIES="true")
    messages = {
        e["attributes"]["exception.message"]
        for s in records(rx, "span")
        for e in s["events"]
        if e["name"] == "exception"
    }
    (message,) = messages
    assert message.startswith(CANARY_MESSAGE) and len(message) == 256  # OTEL_ML_ATTRIBUTE_VALUE_MAX_LENGTH
    categories = {
        p["attributes"]["ml.feature.category"]
        for rec in records(rx, "metric")
        if rec["name"] == "ml.feature.category"
        for p in rec["data_points"]
    }
    assert CANARY_STR in categories and all(len(c) <= 64 for c in categories)
    figures.record("13", "opt-in exception message length", len(message))


def test_invalid_opt_in_fails_closed(apps: Apps, receivers: Receivers, figures: ScenarioFigures) -> None:
    rx = receivers.start("accept")
    run = _run_privacy(apps, rx, OTEL_ML_CAPTURE_EXCEPTION_MESSAGE="yes please", OTEL_ML_CAPTURE_CATEGORIES="sure")
    exported = _exported(rx)
    assert not any(c in exported for c in VALUE_CANARIES)
    warnings = [line for line in run.stderr.splitlines() if line.startswith("WARNING otel_ml") and "ignoring" in line]
    assert len([w for w in warnings if "OTEL_ML_CAPTURE_EXCEPTION_MESSAGE" in w]) == 1, warnings
    assert len([w for w in warnings if "OTEL_ML_CAPTURE_CATEGORIES" in w]) == 1, warnings
    figures.record("13", "invalid opt-in: warnings per variable", 1)


# --------------------------------------------------------------------------- 14: secrets

TOKEN = "CANARYTOKEN-9c1e"
USER, PASSWORD, QUERY = "canaryuser", "CANARYPASS-31", "CANARYQUERY-55"
SECRETS = (TOKEN, PASSWORD, QUERY, USER)


def _secret_env(base: str, protocol: str) -> dict[str, str]:
    scheme, rest = base.split("://", 1)
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"{scheme}://{USER}:{PASSWORD}@{rest}/?tok={QUERY}",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {TOKEN}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "RELIABILITY_LOG_LEVEL": "DEBUG",
    }


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("target", ["accepting", "closed"])
def test_headers_userinfo_and_query_never_logged(
    apps: Apps, receivers: Receivers, figures: ScenarioFigures, protocol: str, target: str
) -> None:
    if target == "accepting":
        rx = receivers.start("accept")
        base = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
    else:
        rx, base = None, f"http://127.0.0.1:{closed_port()}"
    env = _secret_env(base, protocol)
    if protocol == "grpc":  # a query string means nothing to gRPC: the endpoint is host:port
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = env["OTEL_EXPORTER_OTLP_ENDPOINT"].split("/?")[0]
    run = apps.run(
        "load_app.py",
        config={"rate": 500.0, "duration_s": 4.0, "warmup_s": 1.0, "model": "tiny", "shutdown_timeout": 3.0},
        env=env,
        timeout=90,
    )
    r = run.result
    assert r["errors"] == 0
    leaked = [s for s in SECRETS if s in run.stderr]
    assert not leaked, [line for line in run.stderr.splitlines() if any(s in line for s in SECRETS)][:5]
    assert "DEBUG reliability debug logging on" in run.stderr
    if rx is not None:
        assert r["ledger"]["exported"] == r["ledger"]["produced"] > 0  # userinfo moved to a header: it works
        assert not any(s in _exported(rx) for s in SECRETS)
    else:
        assert r["ledger"]["span_export_failed"] > 0
    figures.record("14", f"secrets in DEBUG logs ({target}, {protocol})", len(leaked))


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("ca", ["right", "wrong"])
def test_tls_with_a_self_signed_ca(
    apps: Apps, receivers: Receivers, figures: ScenarioFigures, tls_files: TlsFiles, protocol: str, ca: str
) -> None:
    rx = receivers.start("accept", tls=tls_files)
    port = rx.grpc_port if protocol == "grpc" else rx.http_port
    run = apps.run(
        "load_app.py",
        config={"rate": 500.0, "duration_s": 3.0, "warmup_s": 1.0, "model": "tiny", "shutdown_timeout": 3.0},
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(tls_files.ca if ca == "right" else tls_files.wrong_ca),
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            # a machine-wide CA bundle (set on many hosts, and on this one) must not override the configured CA
            "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
        },
        timeout=90,
    )
    r = run.result
    ledger = r["ledger"]
    assert r["errors"] == 0
    assert ledger["unexplained"] == 0
    if ca == "right":
        assert ledger["exported"] == ledger["produced"] > 0
        assert len(span_ids(rx)) == ledger["exported"]
    else:
        assert ledger["exported"] == 0 and ledger["span_export_failed"] > 0
        assert r["drops"]["span_export_failed"] == ledger["span_export_failed"]
        assert span_ids(rx) == []
    counts = f"{ledger['exported']} / {ledger['span_export_failed']}"
    figures.record("14", f"TLS {ca} CA, {protocol}: exported / failed", counts)
