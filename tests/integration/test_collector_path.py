"""The collector's pipeline shape, for real: SDK → rotel (OTLP in) → traces and metrics to separate backends.

``collector/otel-collector.yaml`` cannot run here (no otelcol binary), so the same shape runs through the real
``rotel`` collector: OTLP/gRPC in; traces out over OTLP/gRPC to one receiver (Jaeger's place), metrics out over
OTLP/HTTP to another (Prometheus's OTLP receiver's place). The app (this module run as a script) makes real
predictions with a reference, then shifts its inputs so that otel-ml's drift detection fires, and also makes a
low-confidence, a failing and a slow prediction.

Checked at the receivers: the drift-event span, the low-confidence span, the error and the slow span arrive with
their attributes; metrics arrive only at the metrics backend and spans only at the trace backend; the latency and
confidence histograms carry exemplars that point at received spans. Then the tail-sampling policies of
``collector/otel-collector.yaml`` are evaluated on the received traces (a small model of the policy types the
file uses; anything else fails the test): they keep exactly the drift, low-confidence, error and slow traces, and
leave every ordinary prediction to the probabilistic policy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_ml import semconv

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_CONFIG = ROOT / "collector" / "otel-collector.yaml"
SHIFTED = ("mean radius", "mean texture", "worst area")
SLOW_CALL_S = 0.6
APP_TIMEOUT_S = 90


# ============================================================================ the instrumented app (subprocess)


def _run_app() -> int:
    """Real predictions through ``otel_ml.configure()`` (OTLP from the OTEL_* environment); prints what it did."""
    import time

    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import otel_ml

    otel_ml.configure(service_name="collector-path-it")
    data = load_breast_cancer()
    names = [str(n) for n in data.feature_names]
    x_train, _, y_train, _ = train_test_split(data.data, data.target, test_size=0.3, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    # low confidence: the point on the segment between the most confident malignant and benign rows where the
    # (not yet instrumented) model is least sure
    proba = model.predict_proba(data.data)
    a, b = data.data[proba[:, 0].argmax()], data.data[proba[:, 1].argmax()]
    path = np.array([a + t * (b - a) for t in np.linspace(0.0, 1.0, 401)])
    unsure = path[np.argmin(model.predict_proba(path).max(axis=1))][None, :]

    ref = otel_ml.Reference.from_data(x_train, feature_names=names)
    classes = [str(c) for c in data.target_names]
    clf = otel_ml.instrument_model(model, name="cancer", version="1.0.0", classes=classes, reference=ref)
    rng = np.random.default_rng(5)
    ids: dict[str, Any] = {"ordinary": []}

    def rows(n: int) -> np.ndarray:
        return np.asarray(data.data[rng.integers(0, len(data.data), n)])

    for _ in range(8):  # ordinary, unshifted traffic
        clf.predict_proba(rows(50))
        ids["ordinary"].append(otel_ml.last_prediction_id())
    otel_ml.force_flush(timeout=10)  # a drift computation on unshifted rows: nothing crosses

    ids["low_confidence_value"] = float(clf.predict_proba(unsure).max())
    ids["low_confidence"] = otel_ml.last_prediction_id()

    try:
        clf.predict_proba(rows(3)[:, :-1])  # 29 columns: the pipeline raises
    except ValueError:
        ids["error"] = otel_ml.last_prediction_id()

    @otel_ml.instrument(name="slow", version="1", sketch_inputs=False)
    def slow(batch: np.ndarray) -> np.ndarray:
        time.sleep(SLOW_CALL_S)
        return np.tile([0.05, 0.95], (len(batch), 1))

    slow(rows(2))
    ids["slow"] = otel_ml.last_prediction_id()

    shift = [names.index(f) for f in SHIFTED]
    for _ in range(20):  # shifted traffic: 1,000 rows, the drift window is mostly shifted now
        batch = rows(50)
        batch[:, shift] *= 1.5
        clf.predict_proba(batch)
        ids["ordinary"].append(otel_ml.last_prediction_id())
    otel_ml.force_flush(timeout=10)  # drift computed now: the events wait for the model's next span
    clf.predict_proba(rows(50))
    ids["drift"] = otel_ml.last_prediction_id()
    ids["shutdown_ok"] = otel_ml.shutdown(timeout=10)
    print(json.dumps(ids), flush=True)
    return 0


# ============================================================================ a model of the tail-sampling policies

_ATTRIBUTE_CMP = re.compile(r'attributes\["([^"]+)"\]\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)')
_NAME_EQ = re.compile(r'name\s*==\s*"([^"]*)"')
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
    "==": lambda x, y: x == y,
    "!=": lambda x, y: x != y,
}


def _attribute_condition(condition: str) -> Callable[[Mapping[str, Any]], bool]:
    match = _ATTRIBUTE_CMP.fullmatch(condition.strip())
    assert match, f'this test models only `attributes["k"] <op> number` span conditions, not {condition!r}'
    key, op, number = match[1], match[2], float(match[3])

    def check(attributes: Mapping[str, Any]) -> bool:
        value = attributes.get(key)  # OTTL: a missing attribute is nil, and nil < number is false
        return isinstance(value, (int, float)) and not isinstance(value, bool) and _OPS[op](float(value), number)

    return check


def _name_condition(condition: str) -> Callable[[Mapping[str, Any]], bool]:
    match = _NAME_EQ.fullmatch(condition.strip())
    assert match, f'this test models only `name == "..."` span-event conditions, not {condition!r}'
    return lambda event: bool(event["name"] == match[1])


def policy_decisions(policies: Sequence[Mapping[str, Any]], spans: Sequence[Mapping[str, Any]]) -> set[str]:
    """Names of the deterministic policies that keep the trace made of ``spans`` (probabilistic ones excluded)."""
    kept = set()
    for policy in policies:
        kind = policy["type"]
        if kind == "probabilistic":
            continue
        if kind == "status_code":
            codes = set(policy["status_code"]["status_codes"])
            hit = any(s["status"]["code"] in codes for s in spans)
        elif kind == "latency":
            start = min(s["start_time_unix_nano"] for s in spans)
            end = max(s["end_time_unix_nano"] for s in spans)
            hit = (end - start) / 1e6 >= policy["latency"]["threshold_ms"]
        elif kind == "ottl_condition":
            cfg = policy["ottl_condition"]
            span_checks = [_attribute_condition(c) for c in cfg.get("span", [])]
            event_checks = [_name_condition(c) for c in cfg.get("spanevent", [])]
            hit = any(check(s["attributes"]) for s in spans for check in span_checks) or any(
                check(e) for s in spans for e in s["events"] for check in event_checks
            )
        else:
            raise AssertionError(f"policy type {kind!r} is not modelled by this test")
        if hit:
            kept.add(policy["name"])
    return kept


# ============================================================================ the test


def test_pipeline_shape_through_rotel(otlp_receiver_factory: Any, rotel_collector_factory: Any) -> None:
    traces_backend = otlp_receiver_factory()  # Jaeger's place: OTLP/gRPC
    metrics_backend = otlp_receiver_factory()  # Prometheus's OTLP receiver's place: OTLP/HTTP
    rotel = rotel_collector_factory(
        traces_backend.grpc_endpoint,
        extra_args=[
            # a per-signal endpoint is the full URL (like otlphttp's metrics_endpoint)
            "--otlp-exporter-metrics-endpoint", f"{metrics_backend.http_endpoint}/v1/metrics",
            "--otlp-exporter-metrics-protocol", "http",
        ],
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=rotel.grpc_endpoint,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_METRIC_EXPORT_INTERVAL="60000",
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_ML_STRICT="1",
    )
    out = subprocess.run(
        [sys.executable, __file__, "app"], cwd=ROOT, env=env, capture_output=True, timeout=APP_TIMEOUT_S
    )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    ids: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert ids["shutdown_ok"] is True

    expected_spans = len(ids["ordinary"]) + 4
    traces_backend.wait_for_count("span", expected_spans, timeout=20)
    metrics_backend.wait_for(
        lambda recs: any(r.get("name") == semconv.MODEL_DRIFT for r in recs if r.get("kind") == "metric"), timeout=20
    )
    spans = traces_backend.spans()
    by_id = {f"{s['trace_id']}-{s['span_id']}": s for s in spans}
    assert len(spans) == expected_spans
    # separate pipelines: spans only at the trace backend, metrics only at the metrics backend
    assert traces_backend.metrics() == [] and metrics_backend.spans() == []
    assert {s["resource"]["service.name"] for s in spans} == {"collector-path-it"}

    drift_span = by_id[ids["drift"]]
    events = [e for e in drift_span["events"] if e["name"] == semconv.DRIFT_EVENT]
    assert {e["attributes"][semconv.ML_FEATURE_NAME] for e in events} == set(SHIFTED)
    for event in events:
        attrs = event["attributes"]
        assert attrs[semconv.ML_DRIFT_METHOD] == "psi"
        assert attrs[semconv.ML_DRIFT_SCORE] > attrs[semconv.ML_DRIFT_THRESHOLD] == 0.2
        assert attrs[semconv.ML_REFERENCE_ID] == drift_span["attributes"][semconv.ML_REFERENCE_ID]
    assert sum(1 for s in spans for e in s["events"] if e["name"] == semconv.DRIFT_EVENT) == len(SHIFTED)

    low = by_id[ids["low_confidence"]]["attributes"]
    assert low[semconv.ML_PREDICTION_CONFIDENCE_MEAN] == pytest.approx(ids["low_confidence_value"])
    assert low[semconv.ML_PREDICTION_CONFIDENCE_MEAN] < 0.6 and low[semconv.ML_BATCH_SIZE] == 1
    error = by_id[ids["error"]]
    assert error["status"]["code"] == "ERROR" and error["attributes"][semconv.ERROR_TYPE] == "ValueError"
    slow = by_id[ids["slow"]]
    assert (slow["end_time_unix_nano"] - slow["start_time_unix_nano"]) / 1e9 >= SLOW_CALL_S

    # metrics with exemplars that point at spans the trace backend received
    def last_metric(name: str) -> dict[str, Any]:
        return metrics_backend.metrics(name)[-1]

    for name in (semconv.PREDICTION_DURATION, semconv.PREDICTION_CONFIDENCE):
        exemplars = [e for p in last_metric(name)["data_points"] for e in p["exemplars"]]
        assert exemplars, name
        assert all(f"{e['trace_id']}-{e['span_id']}" in by_id for e in exemplars), name
    (drift_point,) = last_metric(semconv.MODEL_DRIFT)["data_points"]
    assert drift_point["value"] == pytest.approx(len(SHIFTED) / 30)
    rank = last_metric(semconv.FEATURE_RANK)
    assert {p["attributes"][semconv.ML_FEATURE_NAME] for p in rank["data_points"]} >= set(SHIFTED)

    # the tail-sampling policies of collector/otel-collector.yaml, applied to these traces
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text(encoding="utf-8"))
    policies = config["processors"]["tail_sampling"]["policies"]
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        traces[span["trace_id"]].append(span)
    kept = {trace_id: policy_decisions(policies, trace) for trace_id, trace in traces.items()}

    def trace_of(prediction_id: str) -> str:
        return str(by_id[prediction_id]["trace_id"])

    assert kept[trace_of(ids["drift"])] == {"drift-events"}
    assert kept[trace_of(ids["low_confidence"])] == {"low-confidence"}
    assert kept[trace_of(ids["error"])] == {"errors"}
    assert kept[trace_of(ids["slow"])] == {"slow-predictions"}
    ordinary = {trace_of(i) for i in ids["ordinary"]}
    assert len(ordinary) == len(ids["ordinary"]) == 28
    assert all(kept[t] == set() for t in ordinary)  # left to the 10 % probabilistic sample


if __name__ == "__main__":
    if sys.argv[1:] == ["app"]:
        raise SystemExit(_run_app())
    raise SystemExit(f"usage: {sys.argv[0]} app")
