"""collector/grafana: the dashboard type-checks against Grafana's published schema; datasources resolve.

* Type check: the dashboard JSON and each panel's ``options`` / ``fieldConfig.defaults.custom`` are written into a
  TypeScript file as literals typed with ``@grafana/schema`` (same version as the Grafana image) and checked with
  ``tsc --strict``. JSON holds an enum's *value*, so enum-typed fields are checked against their values' literal
  types. A deliberately broken copy is checked in the same run and must fail. Tools: ``.tools/node_modules``
  (``scripts/install-test-tools.sh``); missing → skip locally, fail under CI=true.
* Every datasource reference (panels, targets, variables) resolves to a provisioned datasource of the same type,
  and the Prometheus datasource links exemplars to the Jaeger datasource.
* Every PromQL expression parses (``promtool check rules``); tests/integration/test_prometheus.py runs them all
  against a real Prometheus.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "collector" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "ml-model-overview.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
TOOLS = ROOT / ".tools" / "node_modules"
SCHEMA_VERSION = "11.3.1"  # = the grafana/grafana image tag in docker-compose.yml
PANEL_MODULES = {  # panel type → its generated options/field-config types in @grafana/schema
    "timeseries": "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen",
    "stat": "stat/panelcfg/x/StatPanelCfg_types.gen",
    "table": "table/panelcfg/x/TablePanelCfg_types.gen",
    "heatmap": "heatmap/panelcfg/x/HeatmapPanelCfg_types.gen",
}
MACROS = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}


def missing_tool(message: str) -> NoReturn:
    """Skip locally, fail under CI=true (CI must not silently lose coverage)."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"required tool missing: {message}", pytrace=False)
    pytest.skip(f"tool missing: {message}")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    return {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


# ============================================================================ schema type check


def typescript_source(dashboard: dict[str, Any]) -> str:
    lines = ['import type { Dashboard } from "@grafana/schema";']
    for kind, module in PANEL_MODULES.items():
        lines.append(f'import type * as {kind} from "@grafana/schema/dist/esm/raw/composable/{module}";')
    lines.append(
        "// JSON holds an enum's value, never the enum: compare against the values' literal types.\n"
        "type Loose<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T\n"
        "  : T extends ReadonlyArray<infer U> ? Array<Loose<U>> : T extends object ? { [K in keyof T]: Loose<T[K]> }"
        " : T;"
    )
    lines.append(f"export const dashboard: Loose<Dashboard> = {json.dumps(dashboard)};")
    for i, panel in enumerate(dashboard["panels"]):
        kind = panel["type"]
        if kind == "row":
            continue
        assert kind in PANEL_MODULES, f"panel type {kind!r}: add its schema module to PANEL_MODULES"
        lines.append(f"export const options{i}: Loose<{kind}.Options> = {json.dumps(panel['options'])};")
        custom = panel["fieldConfig"]["defaults"].get("custom")
        if custom is not None:
            lines.append(f"export const custom{i}: Loose<{kind}.FieldConfig> = {json.dumps(custom)};")
    return "\n".join(lines) + "\n"


def test_dashboard_type_checks_against_grafana_schema(dashboard: dict[str, Any], tmp_path: Path) -> None:
    tsc = TOOLS / ".bin" / "tsc"
    schema = TOOLS / "@grafana" / "schema" / "package.json"
    if shutil.which("node") is None or not tsc.exists() or not schema.exists():
        missing_tool("node + .tools/node_modules/{typescript,@grafana/schema}: run scripts/install-test-tools.sh")
    assert json.loads(schema.read_text(encoding="utf-8"))["version"] == SCHEMA_VERSION
    (tmp_path / "node_modules").symlink_to(TOOLS)
    (tmp_path / "dashboard.ts").write_text(typescript_source(dashboard), encoding="utf-8")
    broken = json.loads(json.dumps(dashboard))
    first = panels(broken)[0]
    first["gridpos"] = first.pop("gridPos")  # unknown key
    panels(broken)[1]["options"]["colorMode"] = "rainbow"  # not a BigValueColorMode
    (tmp_path / "broken.ts").write_text(typescript_source(broken), encoding="utf-8")
    out = subprocess.run(
        [str(tsc), "--noEmit", "--strict", "--skipLibCheck", "--moduleResolution", "bundler", "--module", "esnext",
         "--target", "es2022", "dashboard.ts", "broken.ts"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    errors = [line for line in out.stdout.splitlines() if re.match(r"\w+\.ts\(\d+,\d+\): error", line)]
    assert [e for e in errors if e.startswith("dashboard.ts")] == [], out.stdout[-3000:]
    # the check can fail: both defects of the broken copy are reported
    assert any("TS2353" in e and "gridpos" in e for e in errors), out.stdout[-3000:]
    assert any("rainbow" in e for e in errors), out.stdout[-3000:]
    assert out.returncode == 2


# ============================================================================ datasources


def datasource_refs(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    refs = [(f"variable {v['name']}", v["datasource"]) for v in dashboard["templating"]["list"]]
    for panel in panels(dashboard):
        refs.append((f"panel {panel['title']!r}", panel["datasource"]))
        refs += [(f"panel {panel['title']!r} target {t['refId']}", t["datasource"]) for t in panel["targets"]]
    return refs


def test_every_datasource_reference_resolves(dashboard: dict[str, Any], datasources: dict[str, Any]) -> None:
    refs = datasource_refs(dashboard)
    assert len(refs) > 60
    for where, ref in refs:
        assert ref["uid"] in datasources, f"{where}: no provisioned datasource with uid {ref['uid']!r}"
        assert ref["type"] == datasources[ref["uid"]]["type"], where
    for annotation in dashboard["annotations"]["list"]:
        assert annotation["datasource"] == {"type": "grafana", "uid": "-- Grafana --"}  # Grafana's built-in


def test_exemplars_link_to_the_jaeger_datasource(datasources: dict[str, Any]) -> None:
    assert {uid: d["type"] for uid, d in datasources.items()} == {"prometheus": "prometheus", "jaeger": "jaeger"}
    prometheus = datasources["prometheus"]
    assert prometheus["isDefault"] is True
    assert prometheus["jsonData"]["exemplarTraceIdDestinations"] == [{"name": "trace_id", "datasourceUid": "jaeger"}]
    assert all(d["editable"] is False and d["access"] == "proxy" for d in datasources.values())


def test_the_provider_loads_the_dashboard_read_only() -> None:
    (provider,) = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file" and provider["disableDeletion"] is True and provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# ============================================================================ content


def test_layout_ids_and_variables(dashboard: dict[str, Any]) -> None:
    assert (dashboard["uid"], dashboard["title"]) == ("ml-model-overview", "ML model overview")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"model", "version"}
    assert variables["model"]["query"] == "label_values(ml_prediction_count_total, ml_model_name)"
    assert "$model" in variables["version"]["query"] and variables["version"]["includeAll"] is True
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
    for panel in panels(dashboard):
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert panel["description"] or "by version" in panel["title"], panel["title"]


def test_the_dashboard_shows_what_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    by_title = {p["title"]: p for p in panels(dashboard)}
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Latency", "Model outputs", "Input drift", "Data quality",
                    "Version comparison (canary vs stable)", "Alerts"]  # fmt: skip
    assert "ml_prediction_count_total" in by_title["Throughput by version"]["targets"][0]["expr"]
    assert 'error_type!=""' in by_title["Error ratio by version"]["targets"][0]["expr"]
    latency = by_title["Prediction latency p50 / p95 / p99 (exemplars link to Jaeger)"]
    assert [t["expr"].split(",")[0] for t in latency["targets"]] == [
        "histogram_quantile(0.5", "histogram_quantile(0.95", "histogram_quantile(0.99",
    ]  # fmt: skip
    assert any(t.get("exemplar") for t in latency["targets"])
    heat = by_title["Confidence distribution over time"]
    assert heat["type"] == "heatmap" and heat["targets"][0]["format"] == "heatmap"
    assert "ml_prediction_confidence_bucket" in heat["targets"][0]["expr"]
    assert "ml_prediction_class_total" in by_title["Predicted class distribution"]["targets"][0]["expr"]
    assert by_title["Per-feature drift"]["type"] == "table"
    assert by_title["Per-feature drift over time (fleet PSI)"]["type"] == "heatmap"
    assert "ml:feature_rank:psi5m" in by_title["Per-feature drift"]["targets"][0]["expr"]
    quality = " ".join(t["expr"] for t in by_title["Data-quality issues per second"]["targets"])
    for check in ("missing", "out_of_range", "unseen_category", "type_mismatch"):
        assert f"ml_feature_{check}_total" in quality
    versions = by_title["Versions side by side (last 5 minutes)"]
    assert len(versions["targets"]) == 8 and all(t["instant"] for t in versions["targets"])


def test_model_metrics_are_filtered_by_the_variables(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            for selector in re.findall(r"(?<![\w:])((?:ml_|ml:)[a-z0-9_:]+)(\{[^}]*\})?", expr):
                name, matchers = selector
                if name in ("ml_model_name", "ml_model_version", "ml_feature_name", "ml_prediction_class"):
                    continue
                assert 'ml_model_name=~"$model"' in matchers, (panel["title"], name)
                assert 'ml_model_version=~"$version"' in matchers, (panel["title"], name)


def expressions(dashboard: dict[str, Any]) -> list[str]:
    out = []
    for var in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
        assert match, var["query"]
        out.append(f"group by ({match[2]}) ({match[1]})")
    out += [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    return out


def test_every_expression_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_tool("promtool (Debian package prometheus): run scripts/install-test-tools.sh")
    exprs = expressions(dashboard)
    assert len(exprs) >= 40
    rules = []
    for i, expr in enumerate(exprs):
        for macro, value in MACROS.items():
            expr = expr.replace(macro, value)
        expr = expr.replace("$model", "cancer").replace("$version", ".*")
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in out.stdout
