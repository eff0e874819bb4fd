"""collector/: the OpenTelemetry Collector config, Prometheus config, rules and rule tests, and the names table.

* ``collector/otel-collector.yaml`` is checked structurally against the component types of the pinned contrib
  version (explicit lists below), its pipelines, the SDK's default ports and otel-ml's attribute/event names.
* ``collector/prometheus`` is checked with the real ``promtool`` (Debian package ``prometheus``):
  ``check config``, ``check rules`` and ``test rules`` on ``collector/prometheus/tests``. Under CI=true a missing
  promtool fails the tests; locally they skip (``scripts/install-test-tools.sh`` installs it).
* The collector-path metric names documented in collector/README.md are recomputed from otel_ml.semconv with a
  port of the OTLP → Prometheus naming rules (Prometheus's otlptranslator ``normalizeName``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

import pytest
import yaml

from otel_ml import semconv

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = ROOT / "collector"
COLLECTOR_CONFIG = COLLECTOR / "otel-collector.yaml"
PROM_DIR = COLLECTOR / "prometheus"
RULES = PROM_DIR / "rules"
README = COLLECTOR / "README.md"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
COMPOSE = ROOT / "docker-compose.yml"

COLLECTOR_VERSION = "0.114.0"
# Component types of otelcol-contrib 0.114.0 that this config may use (a curated subset of the distribution's
# manifest; a type missing here fails the test, so extend the list only from that version's components).
KNOWN_COMPONENTS: dict[str, set[str]] = {
    "receivers": {
        "otlp", "prometheus", "hostmetrics", "filelog", "jaeger", "zipkin", "kafka", "k8s_cluster", "k8sobjects",
        "kubeletstats", "docker_stats", "journald", "syslog", "statsd", "fluentforward", "httpcheck", "opencensus",
        "otlpjsonfile", "redis", "postgresql", "mysql", "nginx",
    },
    "processors": {
        "batch", "memory_limiter", "tail_sampling", "probabilistic_sampler", "attributes", "resource",
        "resourcedetection", "filter", "transform", "k8sattributes", "groupbyattrs", "groupbytrace",
        "metricstransform", "cumulativetodelta", "deltatocumulative", "deltatorate", "redaction", "span", "interval",
    },
    "exporters": {
        "otlp", "otlphttp", "debug", "nop", "file", "prometheus", "prometheusremotewrite", "kafka", "loadbalancing",
        "zipkin", "elasticsearch", "clickhouse",
    },
    "extensions": {
        "health_check", "pprof", "zpages", "basicauth", "bearertokenauth", "oauth2client", "headers_setter",
        "file_storage", "oidc",
    },
    "connectors": {"forward", "spanmetrics", "count", "routing", "servicegraph", "exceptions", "failover"},
}  # fmt: skip
# Policy types of the tail_sampling processor in 0.114.0.
TAIL_SAMPLING_POLICIES = {
    "always_sample", "latency", "numeric_attribute", "probabilistic", "status_code", "string_attribute",
    "rate_limiting", "span_count", "trace_state", "boolean_attribute", "ottl_condition", "and", "composite",
}  # fmt: skip
SIGNALS = ("traces", "metrics", "logs")


def missing_tool(message: str) -> NoReturn:
    """Skip locally, fail under CI=true (CI must not silently lose coverage)."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"required tool missing: {message}", pytrace=False)
    pytest.skip(f"tool missing: {message}")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing_tool("promtool (Debian package prometheus): run scripts/install-test-tools.sh")
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(COLLECTOR_CONFIG)
    return loaded


def component_type(component_id: str) -> str:
    """``otlp/jaeger`` → ``otlp``."""
    return component_id.split("/", 1)[0]


def alert_rules() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule for group in load_yaml(RULES / "ml-alerts.rules.yml")["groups"] for rule in group["rules"]
    }


# ============================================================================ collector config


def test_the_pinned_collector_version_is_the_one_the_lists_describe() -> None:
    image = load_yaml(COMPOSE)["services"]["otel-collector"]["image"]
    assert image == f"otel/opentelemetry-collector-contrib:{COLLECTOR_VERSION}"
    assert COLLECTOR_VERSION in COLLECTOR_CONFIG.read_text(encoding="utf-8").splitlines()[0]


def test_every_component_type_exists_in_the_pinned_version(config: dict[str, Any]) -> None:
    assert set(config) <= {*KNOWN_COMPONENTS, "service"}
    for kind, components in config.items():
        if kind == "service":
            continue
        unknown = {c for c in components if component_type(c) not in KNOWN_COMPONENTS[kind]}
        assert unknown == set(), f"{kind}: not components of contrib {COLLECTOR_VERSION}: {unknown}"
    for policy in config["processors"]["tail_sampling"]["policies"]:
        assert policy["type"] in TAIL_SAMPLING_POLICIES, policy
        assert policy["type"] in policy, f"policy {policy['name']}: settings go under the key {policy['type']!r}"


def test_every_pipeline_component_is_defined_and_every_definition_used(config: dict[str, Any]) -> None:
    service = config["service"]
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in service["pipelines"].items():
        assert component_type(name) in SIGNALS, name
        assert set(pipeline) <= {"receivers", "processors", "exporters"}, name
        assert pipeline["receivers"] and pipeline["exporters"], name
        for kind in used:
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), f"pipeline {name}: {kind[:-1]} {component!r} undefined"
                used[kind].add(component)
    for kind, names in used.items():
        assert set(config.get(kind) or {}) == names, f"{kind} defined but never used: {set(config[kind]) - names}"
    assert set(service["extensions"]) == set(config["extensions"])


def test_metrics_never_pass_through_tail_sampling(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    traces, metrics = pipelines["traces"], pipelines["metrics"]
    assert traces["processors"] == ["memory_limiter", "tail_sampling", "batch/traces"]
    assert metrics["processors"] == ["memory_limiter", "batch/metrics"]
    assert traces["exporters"] == ["otlp/jaeger"] and metrics["exporters"] == ["otlphttp/prometheus"]
    assert traces["receivers"] == metrics["receivers"] == ["otlp"]


def test_receivers_listen_on_the_sdk_default_ports(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    for key in list(os.environ):
        if key.startswith("OTEL_EXPORTER_OTLP"):
            monkeypatch.delenv(key)
    grpc_default = int(GrpcExporter()._endpoint.rsplit(":", 1)[1])
    http_default = urlparse(HttpExporter()._endpoint).port
    assert (grpc_default, http_default) == (4317, 4318)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == f"0.0.0.0:{grpc_default}"  # all interfaces: inside its container
    assert protocols["http"]["endpoint"] == f"0.0.0.0:{http_default}"
    assert config["extensions"]["health_check"]["endpoint"] == "0.0.0.0:13133"


def test_tail_sampling_keeps_errors_slow_unsure_and_drifting_traces(config: dict[str, Any]) -> None:
    tail = config["processors"]["tail_sampling"]
    policies = {p["name"]: p for p in tail["policies"]}
    assert set(policies) == {"errors", "slow-predictions", "low-confidence", "drift-events", "baseline"}
    assert policies["errors"]["status_code"]["status_codes"] == ["ERROR"]
    # a slow prediction is one the p99 latency alert is about
    alert = alert_rules()["MLPredictionLatencyP99High"]["expr"]
    match = re.fullmatch(r"ml:prediction_duration_seconds:p99_5m > ([0-9.]+)", alert.strip())
    assert match, alert
    assert policies["slow-predictions"]["latency"]["threshold_ms"] == round(float(match[1]) * 1000)
    (low,) = policies["low-confidence"]["ottl_condition"]["span"]
    assert low == f'attributes["{semconv.ML_PREDICTION_CONFIDENCE_MEAN}"] < 0.6'
    (drift,) = policies["drift-events"]["ottl_condition"]["spanevent"]
    assert drift == f'name == "{semconv.DRIFT_EVENT}"'
    for name in ("low-confidence", "drift-events"):
        assert policies[name]["ottl_condition"]["error_mode"] == "ignore"
    assert 0 < policies["baseline"]["probabilistic"]["sampling_percentage"] < 100
    assert tail["decision_wait"] == "10s"


def test_exporters_point_at_jaeger_and_prometheus_otlp(config: dict[str, Any]) -> None:
    exporters = config["exporters"]
    assert exporters["otlp/jaeger"] == {"endpoint": "jaeger:4317", "tls": {"insecure": True}}
    assert exporters["otlphttp/prometheus"]["endpoint"] == "http://prometheus:9090/api/v1/otlp"
    reader = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert reader == {"host": "0.0.0.0", "port": 8888}


# ============================================================================ Prometheus: promtool


def run_promtool(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_check_config() -> None:
    out = run_promtool("check", "config", PROM_DIR / "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 3 rule files found" in out.stdout
    assert "is valid prometheus config file syntax" in out.stdout


def test_promtool_check_rules() -> None:
    files = sorted(RULES.glob("*.yml"))
    assert [f.name for f in files] == ["ml-alerts.rules.yml", "ml-psi.rules.yml", "ml-recording.rules.yml"]
    out = run_promtool("check", "rules", *files)
    assert out.returncode == 0, out.stdout + out.stderr
    found = [int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", out.stdout)]
    assert found == [6, 22, 11], out.stdout


def test_promtool_test_rules() -> None:
    tests = sorted((PROM_DIR / "tests").glob("*.test.yml"))
    assert [t.name for t in tests] == ["feature-drift.test.yml", "serving.test.yml"]
    out = run_promtool("test", "rules", *[t.name for t in tests], cwd=PROM_DIR / "tests")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(tests), out.stdout


def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The rule tests can fail: the same test with a wrong PSI expectation is reported."""
    source = (PROM_DIR / "tests" / "feature-drift.test.yml").read_text(encoding="utf-8")
    wrong = source.replace("value: 0.4158883083359672", "value: 0.1", 1)
    assert wrong != source
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES, rules_dir)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "wrong.test.yml").write_text(wrong, encoding="utf-8")
    out = run_promtool("test", "rules", "wrong.test.yml", cwd=tmp_path / "tests")
    assert out.returncode == 1
    assert "ml:feature_rank:psi5m" in out.stdout + out.stderr


def test_every_alert_is_covered_by_a_rule_test() -> None:
    tested = set()
    for path in (PROM_DIR / "tests").glob("*.test.yml"):
        for case in load_yaml(path)["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert tested == set(alert_rules())


# ============================================================================ rules: structure


def go_float(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): how the collector path spells ``le``."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def test_psi_rules_follow_the_rank_buckets_of_semconv() -> None:
    (group,) = load_yaml(RULES / "ml-psi.rules.yml")["groups"]
    rules = group["rules"]
    assert rules[0]["record"] == "ml:feature_rank_bucket:increase5m"
    assert "increase(ml_feature_rank_bucket[5m])" in rules[0]["expr"]
    shares = [r for r in rules if r["record"] == "ml:feature_rank_bucket:share5m"]
    bounds = semconv.UNIT_INTERVAL_BUCKETS
    assert len(shares) == len(bounds) == 20
    selector = re.compile(r'ml:feature_rank_bucket:increase5m\{le(=~?)"([^"]+)"\}')
    for i, rule in enumerate(shares):
        assert rule["labels"] == {"bucket": f"{i + 1:02d}"}
        matchers = selector.findall(rule["expr"])
        denominator = matchers[-1]
        assert denominator == ("=", "+Inf"), rule["expr"]
        wanted = [bounds[i]] if i == 0 else [bounds[i], bounds[i - 1]]
        assert len(matchers) == len(wanted) + 1, rule["expr"]
        for (op, value), bound in zip(matchers, wanted, strict=False):
            spellings = {go_float(bound), repr(float(bound))}  # collector path and SDK exporter
            pattern = value.replace("\\\\", "\\") if op == "=~" else re.escape(value)
            assert {s for s in spellings if re.fullmatch(pattern, s)} == spellings, (rule["expr"], spellings)
    psi = rules[-1]
    assert psi["record"] == "ml:feature_rank:psi5m"
    assert "clamp_min(ml:feature_rank_bucket:share5m, 0.0001) - 0.05" in psi["expr"]
    assert "ln(clamp_min(ml:feature_rank_bucket:share5m, 0.0001) / 0.05)" in psi["expr"]


def github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_a_runbook_section_and_annotations() -> None:
    anchors = {
        github_anchor(line[3:]) for line in RUNBOOKS.read_text(encoding="utf-8").splitlines() if line.startswith("## ")
    }
    alerts = alert_rules()
    assert set(alerts) == {
        "MLFeatureDrift", "MLModelDrift", "MLConfidenceDrop", "MLPredictionLatencyP99High",
        "MLPredictionErrorRatioHigh", "OtelMLTelemetryDropped",
    }  # fmt: skip
    for name, rule in alerts.items():
        annotations = rule["annotations"]
        assert annotations["runbook"] == f"docs/runbooks.md#{name.lower()}"
        assert name.lower() in anchors, f"docs/runbooks.md has no section for {name}"
        assert annotations["summary"] and annotations["description"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert re.fullmatch(r"\d+m", rule["for"]), name
    assert anchors == {a.lower() for a in alerts}
    assert "offset 1d" in alerts["MLConfidenceDrop"]["expr"]
    assert 'error_type!=""' in load_yaml(RULES / "ml-recording.rules.yml")["groups"][0]["rules"][2]["expr"]


# ============================================================================ metric names


UNIT_MAP = {"d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
            "ns": "nanoseconds", "By": "bytes", "1": "", "%": "percent"}  # fmt: skip
PER_UNIT_MAP = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}


def prometheus_name(name: str, unit: str, kind: str) -> str:
    """Port of the OTLP → Prometheus ``normalizeName`` used by Prometheus's OTLP receiver (and the collector's
    prometheus/prometheusremotewrite exporters) with suffixes on: unit suffix, ``_total`` for counters, ``_ratio``
    for unit-"1" gauges. ``kind``: counter, gauge or histogram (a histogram's series add _bucket/_sum/_count)."""
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", name) if t]
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    if main and not re.search(r"[{}]", main):
        prom = "_".join(t for t in re.split(r"[^A-Za-z0-9]+", UNIT_MAP.get(main, main)) if t)
        if prom and prom not in tokens:
            tokens.append(prom)
    if per and not re.search(r"[{}]", per):
        prom = "_".join(t for t in re.split(r"[^A-Za-z0-9]+", PER_UNIT_MAP.get(per, per)) if t)
        if prom and prom not in tokens:
            tokens += ["per", prom]
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    return "_".join(tokens)


def test_the_naming_port_reproduces_known_translations() -> None:
    # examples from the OpenTelemetry ↔ Prometheus compatibility specification and the translator's tests
    assert prometheus_name("http.server.request.duration", "s", "histogram") == "http_server_request_duration_seconds"
    assert prometheus_name("system.cpu.utilization", "1", "gauge") == "system_cpu_utilization_ratio"
    assert prometheus_name("http.requests", "{request}", "counter") == "http_requests_total"
    assert prometheus_name("net.io", "By/s", "gauge") == "net_io_bytes_per_second"
    assert prometheus_name("foo.total", "1", "counter") == "foo_total"


SEMCONV_METRICS: dict[str, tuple[str, str]] = {  # OpenTelemetry name → (kind, unit), from otel_ml.semconv
    semconv.PREDICTION_DURATION: ("histogram", semconv.PREDICTION_DURATION_UNIT),
    semconv.PREDICTION_COUNT: ("counter", semconv.PREDICTION_COUNT_UNIT),
    semconv.PREDICTION_CONFIDENCE: ("histogram", semconv.PREDICTION_CONFIDENCE_UNIT),
    semconv.PREDICTION_CLASS: ("counter", semconv.PREDICTION_CLASS_UNIT),
    semconv.PREDICTION_VALUE: ("histogram", semconv.PREDICTION_VALUE_UNIT),
    semconv.FEATURE_RANK: ("histogram", semconv.FEATURE_RANK_UNIT),
    semconv.FEATURE_CATEGORY: ("counter", semconv.FEATURE_CATEGORY_UNIT),
    semconv.FEATURE_DRIFT: ("gauge", semconv.DRIFT_UNIT),
    semconv.MODEL_DRIFT: ("gauge", semconv.DRIFT_UNIT),
    semconv.FEATURE_MISSING: ("counter", semconv.FEATURE_QUALITY_UNIT),
    semconv.FEATURE_OUT_OF_RANGE: ("counter", semconv.FEATURE_QUALITY_UNIT),
    semconv.FEATURE_UNSEEN_CATEGORY: ("counter", semconv.FEATURE_QUALITY_UNIT),
    semconv.FEATURE_TYPE_MISMATCH: ("counter", semconv.FEATURE_QUALITY_UNIT),
    semconv.TELEMETRY_DROPPED: ("counter", semconv.TELEMETRY_DROPPED_UNIT),
    semconv.INTERNAL_ERRORS: ("counter", semconv.INTERNAL_ERRORS_UNIT),
}


def readme_table() -> dict[str, list[str]]:
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith(("`ml.", "`otel_ml.")):
            rows[cells[0].strip("`")] = [c.strip("`") for c in cells[1:]]
    return rows


def test_readme_names_match_the_translation_of_semconv() -> None:
    table = readme_table()
    assert set(table) == set(SEMCONV_METRICS)
    for otel_name, (kind, unit) in SEMCONV_METRICS.items():
        doc_kind, doc_unit, collector_name, scrape_name = table[otel_name]
        assert (doc_kind, doc_unit) == (kind, unit), otel_name
        assert collector_name == prometheus_name(otel_name, unit, kind), otel_name
        # the SDK's Prometheus exporter maps unit "1" to nothing: no _ratio
        assert scrape_name == (collector_name.removesuffix("_ratio") if kind == "gauge" else collector_name)


def series_of(kind: str, name: str) -> set[str]:
    return {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}


def test_rules_and_dashboard_use_only_documented_metric_names() -> None:
    table = readme_table()
    known = set().union(*(series_of(row[0], row[2]) | series_of(row[0], row[3]) for row in table.values()))
    texts = [p.read_text(encoding="utf-8") for p in RULES.glob("*.yml")]
    texts.append((COLLECTOR / "grafana" / "dashboards" / "ml-model-overview.json").read_text(encoding="utf-8"))
    used = set()
    for text in texts:
        used |= set(re.findall(r"(?<![\w:])((?:ml|otel_ml)_[a-z_]+)\b", text))
    # label names are not metric names
    labels = {"ml_model_name", "ml_model_version", "ml_feature_name", "ml_drift_method", "ml_prediction_class",
              "ml_operation", "ml_reference_id"}  # fmt: skip
    # the drift gauges are read through `{__name__=~"ml_model_drift(_ratio)?"}`: the regex's literal part
    assert used - labels <= known, (used - labels) - known
    assert {"ml_model_drift", "ml_feature_drift"} <= used
