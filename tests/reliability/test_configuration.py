"""Scenario 22: bad configuration. Garbage ``OTEL_*`` / ``OTEL_ML_*`` values either fall back to the defaults with at
most one warning per variable, or make initialisation fail fast with an error naming the variable (or its value);
a prediction never raises, and no warning is repeated per call.

``configure()`` sets global providers once per process, so each case runs ``apps/config_app.py`` in a fresh
interpreter (configure, then 2 instrumented models x N calls plus a model raising its own error every 10th).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from conftest import AppRun, Apps, Receivers, ScenarioFigures, closed_port, last_metric, span_ids

from otel_ml import config

N = 100
INIT_PHASES = ("import", "configure", "instrument")  # what the app does before its first prediction


def _run(apps: Apps, env: dict[str, str], **cfg: Any) -> AppRun:
    run = apps.run("config_app.py", env=env, config={"predictions": N, "shutdown_timeout": 1, **cfg}, timeout=90)
    escaped = ("Exception ignored", "Exception in thread", "Error in atexit")  # not even at exit or on a thread
    assert not any(marker in run.stderr for marker in escaped), run.stderr[-3000:]
    return run


def _expected_spans(auto: bool = False) -> int:
    # per iteration: the function and the object (+ the scikit-learn model); the raising model every 10th call;
    # with auto-instrumentation one more scikit-learn call (the app's reference result)
    return N * (3 if auto else 2) + N // 10 + (1 if auto else 0)


def _never_raised(r: dict[str, Any]) -> None:
    """Every prediction returned its model's result; only the model's own errors reached the caller."""
    assert r["caller_error_count"] == 0, r["caller_errors"]
    assert r["wrong_results"] == 0
    assert r["user_errors"] == N // 10
    assert r["internal_errors"] == {}
    predict_logs = [rec for rec in r["records"] if rec["phase"] == "predict" and rec["logger"] == "otel_ml"]
    assert predict_logs == []  # nothing logged per call


def _init_records(r: dict[str, Any]) -> list[dict[str, str]]:
    return [rec for rec in r["records"] if rec["phase"] in INIT_PHASES]


def _per_variable(r: dict[str, Any], needles: dict[str, str]) -> dict[str, int]:
    """How many initialisation log records mention each variable (by its needle: its name or its bad value)."""
    records = _init_records(r)
    return {var: sum(needle in rec["message"] for rec in records) for var, needle in needles.items()}


# --------------------------------------------------------------------------- OTEL_ML_*: fall back, one warning each

# variable -> garbage value; every one of them must fall back to its default
OTEL_ML_GARBAGE = {
    config.OTEL_ML_DISABLED: "perhaps",
    config.OTEL_ML_STRICT: "maybe-strict",
    config.OTEL_ML_CAPTURE_EXCEPTION_MESSAGE: "maybe",
    config.OTEL_ML_CAPTURE_CATEGORIES: "sure",
    config.OTEL_ML_SKETCH_INPUTS: "2",
    config.OTEL_ML_MAX_CLASS_LABELS: "abc",
    config.OTEL_ML_MAX_MODELS: "-1",
    config.OTEL_ML_ATTRIBUTE_VALUE_MAX_LENGTH: "5",
    config.OTEL_ML_QUEUE_SIZE: "-5",
    config.OTEL_ML_SHUTDOWN_TIMEOUT: "1e300",  # was accepted: the exit-time shutdown then raised OverflowError
    config.OTEL_ML_LOG_INTERVAL: "-60",
    config.OTEL_ML_DRIFT_WINDOW: "-1",
    config.OTEL_ML_DRIFT_INTERVAL: "inf",
    config.OTEL_ML_WARMUP_ROWS: "1e3",
    config.OTEL_ML_MAX_FEATURES: "0",
    config.OTEL_ML_SKETCH_BUFFER_ROWS: "1000000000000",  # was accepted: MemoryError on every call's sketch
    config.OTEL_ML_SKETCH_THREADS: "-2",
    config.OTEL_ML_CARDINALITY_LIMIT: "1",
    config.OTEL_ML_ACCURACY_WINDOW: "0",
    # read by the auto-instrumentors' instrument()
    "OTEL_ML_SKLEARN_ENABLED": "yes please",
    "OTEL_ML_TORCH_ENABLED": "nah",
    "OTEL_ML_SKLEARN_STEP_SPANS": "perhaps",
    "OTEL_ML_TORCH_COUNT_TRAINING": "sometimes",
    "OTEL_ML_TORCH_COPY_DEVICE_INPUTS": "2",
    "OTEL_ML_TORCH_OUTPUT": "bogus-output",
    "OTEL_ML_MODEL_NAMES": "no-equals-sign",  # read by both instrumentors: was warned twice
    "OTEL_ML_MODEL_REFERENCES": "LogisticRegression=/nonexistent/ref.json",
}


def test_garbage_otel_ml_values_fall_back_to_defaults(apps: Apps, figures: ScenarioFigures) -> None:
    env = {
        **OTEL_ML_GARBAGE,
        "OTEL_TRACES_EXPORTER": "none",  # spans go to the app's InMemorySpanExporter
        "OTEL_METRICS_EXPORTER": "none",
    }
    run = _run(apps, env, in_memory=True, auto=True)
    r = run.result
    assert r["import_error"] is None and r["configure_error"] is None
    assert r["settings"] == dataclasses.asdict(config.Settings())  # every OTEL_ML_* setting is its default
    needles = {var: var for var in OTEL_ML_GARBAGE}
    needles["OTEL_ML_MODEL_REFERENCES"] = "/nonexistent/ref.json"  # "cannot load reference <path>"
    counts = _per_variable(r, needles)
    assert counts == dict.fromkeys(OTEL_ML_GARBAGE, 1), counts  # exactly one warning per variable
    init = _init_records(r)
    assert all(rec["logger"] == "otel_ml" and rec["level"] == "WARNING" for rec in init), init
    assert len(init) == len(OTEL_ML_GARBAGE)  # and nothing else
    _never_raised(r)
    # the telemetry still works, with the default settings
    expected = _expected_spans(auto=True)
    assert r["spans_in_memory"] == expected
    assert r["ledger"]["produced"] == r["ledger"]["exported"] == expected
    assert r["rows_counted"] == {"config-fn": 2 * N, "config-obj": 2 * N, "LogisticRegression": 2 * N + 2}
    assert r["shutdown_ok"] is True
    figures.record("22", "OTEL_ML_* garbage variables", len(OTEL_ML_GARBAGE))
    figures.record("22", "OTEL_ML_* warnings per bad variable (max)", max(counts.values()))
    figures.record("22", "OTEL_ML_* spans delivered / expected", f"{r['spans_in_memory']}/{expected}")


# --------------------------------------------------------------------------- OTEL_*: fall back, one warning each

# variable -> (garbage value, what its warning contains: the variable or the value; "" = the SDK says nothing)
SDK_GARBAGE: dict[str, tuple[str, str]] = {
    "OTEL_BSP_MAX_QUEUE_SIZE": ("abc", "OTEL_BSP_MAX_QUEUE_SIZE"),
    "OTEL_BSP_SCHEDULE_DELAY": ("-1", "OTEL_BSP_SCHEDULE_DELAY"),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ("0", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    "OTEL_BSP_EXPORT_TIMEOUT": ("nan", "OTEL_BSP_EXPORT_TIMEOUT"),
    "OTEL_METRIC_EXPORT_INTERVAL": ("-1", "OTEL_METRIC_EXPORT_INTERVAL"),
    "OTEL_METRIC_EXPORT_TIMEOUT": ("soon", "export timeout"),  # the SDK: "invalid value for export timeout"
    "OTEL_EXPORTER_OTLP_PROTOCOL": ("bogus-protocol", "bogus-protocol"),  # read per signal: was warned twice
    "OTEL_EXPORTER_OTLP_TIMEOUT": ("abc", "OTEL_EXPORTER_OTLP_TIMEOUT"),  # read per signal: was warned twice
    "OTEL_TRACES_EXPORTER": ("bogus-traces", "OTEL_TRACES_EXPORTER"),
    "OTEL_METRICS_EXPORTER": ("bogus-metrics", "OTEL_METRICS_EXPORTER"),
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": ("bogus", "TEMPORALITY_PREFERENCE"),
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": ("bogus", "HISTOGRAM_AGGREGATION"),
    "OTEL_TRACES_SAMPLER": ("bogus-sampler", "bogus-sampler"),
    "OTEL_RESOURCE_ATTRIBUTES": ("not-a-pair", "not-a-pair"),  # SDK + otel-ml parse: was warned 3 times
    "OTEL_EXPORTER_OTLP_HEADERS": ("not-a-header", "not-a-header"),  # per exporter + otel-ml: was warned 4 times
    "OTEL_SDK_DISABLED": ("maybe", ""),  # only "true" disables
}


def test_garbage_sdk_values_fall_back_with_one_warning_each(
    apps: Apps, receivers: Receivers, figures: ScenarioFigures
) -> None:
    rx = receivers.start("accept")
    env = {var: value for var, (value, _) in SDK_GARBAGE.items()}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = rx.grpc_endpoint  # the protocol falls back to gRPC
    r = _run(apps, env).result
    assert r["import_error"] is None and r["configure_error"] is None
    needles = {var: needle for var, (_, needle) in SDK_GARBAGE.items() if needle}
    counts = _per_variable(r, needles)
    assert all(n <= 1 for n in counts.values()), counts
    init = _init_records(r)
    unexplained = [rec for rec in init if not any(needle in rec["message"] for needle in needles.values())]
    assert unexplained == []
    # the defaults were used
    assert r["pipeline"]["bsp"] == {"max_queue_size": 2048, "schedule_delay_s": 5.0, "max_export_batch_size": 512}
    assert r["pipeline"]["span_queue_capacity"] == 2048
    assert r["pipeline"]["metric_interval_ms"] == [60000.0]
    assert r["pipeline"]["span_exporter"].endswith("proto.grpc.trace_exporter.OTLPSpanExporter")
    assert r["pipeline"]["span_exporter_timeout_s"] == 10.0
    _never_raised(r)
    # and the telemetry arrived, all of it
    expected = _expected_spans()
    ledger = r["ledger"]
    assert ledger["produced"] == ledger["exported"] == expected and ledger["unexplained"] == 0
    assert len(span_ids(rx)) == expected
    count = last_metric(rx, "ml.prediction.count")
    assert sum(p["value"] for p in count["data_points"]) == 4 * N
    assert r["rows_counted"] == {"config-fn": 2 * N, "config-obj": 2 * N}
    figures.record("22", "OTEL_* garbage variables (fall back)", len(SDK_GARBAGE))
    figures.record("22", "OTEL_* warnings per bad variable (max)", max(counts.values()))
    figures.record("22", "OTEL_* spans received / expected", f"{len(span_ids(rx))}/{expected}")


def test_non_boolean_insecure_is_said_once(apps: Apps, receivers: Receivers, figures: ScenarioFigures) -> None:
    """The gRPC exporter reads anything but "true" as false (the spec's rule): ``INSECURE=1`` with an ``http://``
    endpoint means TLS, so every export fails. It was silent; now it is one warning, and the failures are counted."""
    rx = receivers.start("accept")
    env = {
        "OTEL_EXPORTER_OTLP_INSECURE": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": rx.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    r = _run(apps, env).result
    assert r["import_error"] is None and r["configure_error"] is None
    warned = [rec for rec in _init_records(r) if "OTEL_EXPORTER_OTLP_INSECURE" in rec["message"]]
    assert len(warned) == 1 and warned[0]["logger"] == "otel_ml", warned
    _never_raised(r)
    ledger = r["ledger"]
    assert ledger["produced"] == _expected_spans() and ledger["exported"] == 0 and ledger["unexplained"] == 0
    assert span_ids(rx) == []
    figures.record("22", "INSECURE=1 over http://: warnings", len(warned))


# --------------------------------------------------------------------------- fail fast with a clear error

# (variable, value, where initialisation fails, what the error must contain)
FAIL_FAST = [
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "bogus-compression", "configure", "OTEL_EXPORTER_OTLP_COMPRESSION"),
    # the message was only "Invalid IPv6 URL"
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1", "configure", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "abc", "configure", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
    ("OTEL_METRICS_EXEMPLAR_FILTER", "bogus-filter", "configure", "bogus-filter"),  # the SDK names the value only
    # the SDK validates the span limits when opentelemetry.sdk.trace is imported, which `import otel_ml` does
    ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "-1", "import", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"),
]


@pytest.mark.parametrize(("variable", "value", "stage", "needle"), FAIL_FAST, ids=[c[0] for c in FAIL_FAST])
def test_invalid_values_fail_fast_with_a_clear_error(
    apps: Apps, figures: ScenarioFigures, variable: str, value: str, stage: str, needle: str
) -> None:
    r = _run(apps, {variable: value}).result
    if stage == "import":
        assert needle in r["import_error"]["message"], r["import_error"]
        figures.record("22", f"fails at import: {variable}", r["import_error"]["type"])
        return
    assert r["import_error"] is None
    error = r["configure_error"]
    assert error is not None and needle in error["message"], error
    assert r["configure_s"] < 2.0  # fast: no connection attempted
    assert r["pipeline"] == {} and r["ledger"] is None  # nothing half-built is left running
    _never_raised(r)  # the app carries on without telemetry
    assert r["rows_counted"] == {}
    figures.record("22", f"fails at configure: {variable}", error["type"])


# --------------------------------------------------------------------------- an unreadable certificate


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_unreadable_certificate(apps: Apps, figures: ScenarioFigures, protocol: str) -> None:
    path = "/nonexistent/otel-ml-ca.pem"
    env = {
        "OTEL_EXPORTER_OTLP_CERTIFICATE": path,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    r = _run(apps, env).result
    assert r["import_error"] is None and r["configure_error"] is None
    mentions = sum(path in rec["message"] for rec in _init_records(r))
    assert mentions <= 1  # gRPC: the exporter's one "Failed to read file"; HTTP: nothing until an export
    _never_raised(r)
    ledger = r["ledger"]
    assert ledger["produced"] == _expected_spans() and ledger["unexplained"] == 0 and ledger["exported"] == 0
    if protocol == "http/protobuf":  # each export fails at once (no CA bundle), counted
        assert ledger["span_export_failed"] == ledger["produced"]
    figures.record("22", f"unreadable CA ({protocol}): init log lines", mentions)
