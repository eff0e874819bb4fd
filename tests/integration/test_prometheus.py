"""Real SDK metrics in a real Prometheus (Debian 2.42), queried with every PromQL expression we ship.

An instrumented app (this module run as a script: ``python test_prometheus.py serve STATUS_FILE``) serves real
predictions with real otel-ml instrumentation and exposes them with the SDK's Prometheus exporter
(``opentelemetry-exporter-prometheus``), merging otel-ml's own aggregation into every scrape the way
``otel_ml.summary.SummaryReader`` does. Prometheus scrapes it every second on 127.0.0.1 and evaluates the rules of
``collector/prometheus/rules`` every second. The app serves, at once:

* ``cancer 1.0.0`` (stable): a LogisticRegression on breast-cancer rows, unshifted;
* ``cancer 1.1.0`` (canary): the same rows with three features multiplied by 1.5 (``otel_ml.Reference.from_data``
  on the training split is the reference), and every fifth tick a call with 29 columns that raises;
* ``segments 1``: a slow (0.6 s), unsure model on a DataFrame with missing values, an unseen category and strings
  in a numeric column;
* ``tips 1``: a regression, so ``ml.prediction.value`` is exported too.

Prometheus's TSDB is backfilled (``promtool tsdb create-blocks-from openmetrics``) with yesterday's confidence of
``segments`` so that the day-over-day alert has something to compare with.

Then every expression of the rule files and of the Grafana dashboard must parse and return data, the names seen in
Prometheus must be the ones documented in collector/README.md (SDK-exporter column), the counters must equal what
the app counted, and drift and alerts must flag exactly the shifted features / the failing, slow and unsure
models. Naming of the collector path (Prometheus's OTLP receiver) differs only in the `_ratio` suffix of unit-1
gauges and the spelling of ``le="1"``; the rules read both, and collector/prometheus/tests checks the rules on the
collector naming with promtool.

The SDK's Prometheus exporter emits no exemplars (research: real-components.md); exemplars are checked on the
OTLP path in test_collector_path.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import HOST, _tail, _timeout_bin, free_port, missing_component, stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "collector" / "prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
DASHBOARD = ROOT / "collector" / "grafana" / "dashboards" / "ml-model-overview.json"
README = ROOT / "collector" / "README.md"

STABLE, CANARY = "1.0.0", "1.1.0"
SHIFTED = ("mean radius", "mean texture", "worst area")
SHIFT_FACTOR = 1.5
ROWS_PER_TICK = 40
TICK_S = 0.1
PREDICT_S = 5.0
ERROR_EVERY = 5  # the canary's malformed call, every fifth tick
SLOW_CALL_S = 0.6  # segments: above the 0.5 s p99 alert threshold
SEGMENT_ROWS = 50
SEGMENT_NAN, SEGMENT_UNSEEN, SEGMENT_MISMATCH = 5, 3, 2  # per segments call
YESTERDAY_CONFIDENCE = 0.9  # backfilled mean confidence of `segments` a day ago (today ~0.65)
DASHBOARD_MODELS = ("cancer", "segments")
# Grafana's macros, substituted the way Grafana would for a short time range
MACROS = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "5s"}

APP_LIFETIME_S = 120
PROMETHEUS_LIFETIME_S = 120
STARTUP_TIMEOUT_S = 40.0
SETTLE_TIMEOUT_S = 25.0


# ============================================================================ the instrumented app (subprocess)


def _serve(status_path: Path) -> int:
    """The app: real models, real otel-ml, the SDK's Prometheus exporter on 127.0.0.1 (port 0)."""
    import numpy as np
    import pandas as pd
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics.export import MetricsData
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import start_http_server
    from sklearn.base import clone
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import otel_ml
    from otel_ml._core import runtime

    class MergingPrometheusReader(PrometheusMetricReader):
        """The SDK's pull reader, with otel-ml's own aggregation merged into every collection.

        ``force_flush`` collects nothing: a pull reader has nothing to push, and with
        opentelemetry-exporter-prometheus 0.66b2 every extra collection between two scrapes is queued and served
        a second time by the next scrape (duplicate families, which an OpenMetrics scrape rejects).
        """

        def __init__(self) -> None:
            super().__init__()
            self._aggregator = runtime.get().aggregator
            self._aggregator.attach()

        def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
            merged = self._aggregator.merge(metrics_data, Resource.create({}))
            super()._receive_metrics(merged, timeout_millis=timeout_millis, **kwargs)

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            self._aggregator.detach()
            super().shutdown(timeout_millis=timeout_millis, **kwargs)

    def status(line: str) -> None:
        with open(status_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    otel_ml.configure(service_name="prometheus-it", metric_readers=[MergingPrometheusReader()])
    server, _ = start_http_server(0, addr=HOST)
    status(f"READY port={server.server_port}")

    data = load_breast_cancer()
    names = [str(n) for n in data.feature_names]
    classes = [str(c) for c in data.target_names]
    x_train, _, y_train, _ = train_test_split(data.data, data.target, test_size=0.3, random_state=0)
    stable_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    canary_model = clone(stable_model).fit(x_train, y_train)
    ref = otel_ml.Reference.from_data(x_train, feature_names=names)
    stable = otel_ml.instrument_model(stable_model, name="cancer", version=STABLE, classes=classes, reference=ref)
    canary = otel_ml.instrument_model(canary_model, name="cancer", version=CANARY, classes=classes, reference=ref)
    shift_cols = [names.index(f) for f in SHIFTED]

    rng = np.random.default_rng(7)
    seg_reference = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 50.0, 3000),
            "channel": rng.choice(["web", "app", "store"], 3000, p=[0.5, 0.3, 0.2]),
            "age": rng.integers(18, 80, 3000),
        }
    )
    seg_rng = np.random.default_rng(11)

    @otel_ml.instrument(name="segments", version="1", reference=otel_ml.Reference.from_data(seg_reference))
    def score(frame: pd.DataFrame) -> np.ndarray:
        time.sleep(SLOW_CALL_S)
        p = 0.55 + 0.2 * seg_rng.random(len(frame))
        return np.column_stack([1.0 - p, p])

    @otel_ml.instrument(name="tips", version="1", output="regression", sketch_inputs=False)
    def tip(batch: np.ndarray) -> np.ndarray:
        return batch[:, 0] * 0.15

    totals: dict[str, Any] = {
        "rows": Counter(),
        "calls": Counter(),
        "errors": Counter(),
        "classes": Counter(),
        "segments": Counter(),
    }
    go = sys.stdin.readline().strip()
    if go != "go":
        return 1
    stop = threading.Event()

    def segments_loop() -> None:
        srng = np.random.default_rng(3)
        while not stop.is_set():
            frame = pd.DataFrame(
                {
                    "amount": srng.gamma(2.0, 50.0, SEGMENT_ROWS),
                    "channel": srng.choice(["web", "app", "store"], SEGMENT_ROWS),
                    "age": pd.Series(srng.integers(18, 80, SEGMENT_ROWS), dtype=object),
                }
            )
            frame.loc[: SEGMENT_NAN - 1, "amount"] = np.nan
            frame.loc[SEGMENT_ROWS - SEGMENT_UNSEEN :, "channel"] = "kiosk"
            frame.loc[10 : 10 + SEGMENT_MISMATCH - 1, "age"] = "n/a"
            confidence = score(frame).max(axis=1)
            totals["segments"]["calls"] += 1
            totals["segments"]["rows"] += SEGMENT_ROWS
            totals["segments"]["confidence_sum"] += float(confidence.sum())

    worker = threading.Thread(target=segments_loop, name="segments")
    worker.start()
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < PREDICT_S:
        batch = data.data[rng.integers(0, len(data.data), ROWS_PER_TICK)]
        shifted = batch.copy()
        shifted[:, shift_cols] *= SHIFT_FACTOR
        for version, model, rows in ((STABLE, stable, batch), (CANARY, canary, shifted)):
            proba = model.predict_proba(rows)
            totals["rows"][version] += len(rows)
            totals["calls"][version] += 1
            totals["classes"].update(f"{version} {classes[int(i)]}" for i in proba.argmax(axis=1))
        if tick % ERROR_EVERY == 0:
            totals["calls"][CANARY] += 1
            try:
                canary.predict_proba(shifted[:3, :-1])  # 29 columns: the pipeline raises ValueError
            except ValueError:
                totals["errors"][CANARY] += 1
        tip(batch[:10])
        totals["rows"]["tips"] += 10
        tick += 1
        time.sleep(max(0.0, start + tick * TICK_S - time.monotonic()))
    stop.set()
    worker.join(timeout=10)
    otel_ml.force_flush(timeout=10)
    status("DONE " + json.dumps({k: dict(v) for k, v in totals.items()}))
    sys.stdin.readline()  # until the test closes stdin (or `timeout` ends the process)
    otel_ml.shutdown(timeout=2)
    return 0


# ============================================================================ Prometheus helpers


class PromQLError(AssertionError):
    """Prometheus refused a query (parse or execution error)."""


@dataclass
class Prometheus:
    """A running Prometheus on 127.0.0.1 and a small query client."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}") from exc
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; a list of {metric: labels, value: float}."""
        data = self.api("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": float(data["result"][1])}]
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data["result"]]

    def by(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        """Instant query keyed by the values of ``labels``."""
        return {tuple(r["metric"].get(k, "") for k in labels): r["value"] for r in self.query(expr)}

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus: {what} not reached within {timeout}s; log: {_tail(self.log_path)}")
            if self.proc.poll() is not None:
                raise AssertionError(f"Prometheus exited: {_tail(self.log_path)}")
            time.sleep(0.2)


def _backfill_yesterday(tsdb: Path, work: Path) -> None:
    """Yesterday's confidence of `segments` (version 0.9, mean YESTERDAY_CONFIDENCE), written as TSDB blocks."""
    now = int(time.time())
    day = 86_400
    labels = '{ml_model_name="segments",ml_model_version="0.9",ml_operation="predict"}'
    lines = []
    for name, per_minute in (
        ("ml_prediction_confidence_count", 600),
        ("ml_prediction_confidence_sum", 600 * YESTERDAY_CONFIDENCE),
    ):
        for i, ts in enumerate(range(now - day - 90 * 60, now - day + 30 * 60, 60)):
            lines.append(f"{name}{labels} {per_minute * i:.1f} {ts}")
    source = work / "yesterday.om"
    source.write_text("\n".join(lines) + "\n# EOF\n", encoding="utf-8")
    out = subprocess.run(
        [_promtool(), "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing_component("promtool (Debian package prometheus): scripts/install-test-tools.sh")
    return path


def _prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        missing_component("prometheus (Debian package prometheus): scripts/install-test-tools.sh")
    return path


def _start_prometheus(work: Path, target_port: int) -> Prometheus:
    binary = _prometheus_bin()
    tsdb = work / "tsdb"
    tsdb.mkdir()
    _backfill_yesterday(tsdb, work)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [{"job_name": "otel_ml_app", "static_configs": [{"targets": [f"{HOST}:{target_port}"]}]}],
    }
    config_path = work / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = work / "prometheus.log"
    last = ""
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        cmd = [
            _timeout_bin(), "-k", "5", str(PROMETHEUS_LIFETIME_S), binary,
            f"--config.file={config_path}", f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address={HOST}:{port}", "--enable-feature=exemplar-storage", "--log.level=warn",
        ]  # fmt: skip
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        prom = Prometheus(proc, port, log_path)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return prom
            time.sleep(0.1)
        stop_process(proc)
        last = _tail(log_path)
    pytest.fail(f"Prometheus did not become ready: {last}")


# ============================================================================ the running stack


@dataclass
class Stack:
    prom: Prometheus
    totals: dict[str, dict[str, float]]
    scraped_names: set[str] = field(default_factory=set)


def _read_status(path: Path, prefix: str) -> str | None:
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :]
    return None


def _wait_status(path: Path, prefix: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        value = _read_status(path, prefix)
        if value is not None:
            return value
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"app: no {prefix.strip()} within {timeout}s (exit {proc.poll()}): {_tail(log)}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for module in ("opentelemetry.exporter.prometheus", "prometheus_client", "pandas", "sklearn"):
        if importlib.util.find_spec(module) is None:
            missing_component(f"python module {module!r} (pip install -e '.[test]')")
    _prometheus_bin()
    work = tmp_path_factory.mktemp("prometheus")
    status_path, app_log = work / "app.status", work / "app.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_ML_STRICT="1", PYTHONUNBUFFERED="1")
    # A 5 s run makes young series: Prometheus' increase() ignores what a series held at its first scrape and
    # extrapolates each bucket series on its own, so one early chunk of many rows (the default sketch buffer holds
    # up to 2 MiB) skews the 5-minute bucket shares. Rows sketched per call keep the rank series growing
    # smoothly, as they do in a long-running service.
    env["OTEL_ML_SKETCH_BUFFER_ROWS"] = str(ROWS_PER_TICK)
    cmd = [_timeout_bin(), "-k", "5", str(APP_LIFETIME_S), sys.executable, __file__, "serve", str(status_path)]
    with open(app_log, "wb") as log:
        app = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=log, stderr=log)
    prom: Prometheus | None = None
    try:
        port = int(_wait_status(status_path, "READY port=", app, app_log, STARTUP_TIMEOUT_S))
        prom = _start_prometheus(work, port)
        p = prom
        p.wait_for("first scrape of the app", lambda: p.by('up{job="otel_ml_app"}') == {(): 1.0}, STARTUP_TIMEOUT_S)
        assert app.stdin is not None
        app.stdin.write(b"go\n")
        app.stdin.flush()
        totals = json.loads(_wait_status(status_path, "DONE ", app, app_log, STARTUP_TIMEOUT_S))
        expected_rows = {
            ("cancer", STABLE): totals["rows"][STABLE],
            ("cancer", CANARY): totals["rows"][CANARY],
            ("segments", "1"): totals["segments"]["rows"],
            ("tips", "1"): totals["rows"]["tips"],
        }
        rows_expr = "sum by (ml_model_name, ml_model_version) (ml_prediction_count_total)"
        p.wait_for(
            "the app's final counts",
            lambda: p.by(rows_expr, "ml_model_name", "ml_model_version") == expected_rows,
            SETTLE_TIMEOUT_S,
        )
        # the rank histograms are complete too: every row of both versions ranked (rows buffered for sketching
        # reach the worker at a collection, so they can land a scrape after the counts)
        ranked_expr = 'sum by (ml_model_version) (ml_feature_rank_count{ml_feature_name="mean radius"})'
        p.wait_for(
            "every row ranked",
            lambda: (
                p.by(ranked_expr, "ml_model_version")
                == {(STABLE,): totals["rows"][STABLE], (CANARY,): totals["rows"][CANARY]}
            ),
            SETTLE_TIMEOUT_S,
        )
        settled = time.time()
        # rules run every second: wait until the last ones of each group and an alert have results
        p.wait_for(
            "rule results",
            lambda: (
                time.time() > settled + 3  # three evaluations over the complete data
                and bool(p.query('ml:feature_rank:psi5m{ml_model_version="1.1.0"} > 1'))
                and bool(p.query('ALERTS{alertname="MLFeatureDrift"}'))
                and bool(p.query("ml:feature_drift:max"))
            ),
            SETTLE_TIMEOUT_S,
        )
        names = {r["metric"]["__name__"] for r in p.query('group by (__name__) ({__name__=~"ml_.+|otel_ml_.+"})')}
        yield Stack(p, totals, names)
    finally:
        if app.stdin is not None:
            with contextlib.suppress(OSError):
                app.stdin.close()
        stop_process(app)
        if prom is not None:
            stop_process(prom.proc)


# ============================================================================ expressions we ship


def rule_expressions() -> list[tuple[str, str]]:
    """(rule name, expr) of every recording and alerting rule."""
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                labels = rule.get("labels", {})
                name = rule.get("record") or rule["alert"]
                out.append((f"{path.name}:{name}{labels or ''}", rule["expr"]))
    return out


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, expr) of every panel target and every template-variable query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for var in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
        assert match, f"variable {var['name']}: unsupported query {var['query']!r}"
        out.append((f"variable {var['name']}", f"group by ({match[2]}) ({match[1]})"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    return out


def substitute(expr: str, model: str) -> str:
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    return expr.replace("$model", model).replace("$version", ".*")


def readme_names() -> dict[str, tuple[str, str, str]]:
    """OpenTelemetry name → (kind, collector-path name, SDK-exporter name) from collector/README.md's table."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith(("`ml.", "`otel_ml.")):
            rows[cells[0].strip("`")] = (cells[1], cells[3].strip("`"), cells[4].strip("`"))
    return rows


def series_names(kind: str, base: str) -> set[str]:
    return {f"{base}_bucket", f"{base}_sum", f"{base}_count"} if kind == "histogram" else {base}


# ============================================================================ tests


def test_metric_names_are_the_documented_ones(stack: Stack) -> None:
    documented = readme_names()
    assert len(documented) >= 14, documented
    # every metric family the app produces shows up under its documented SDK-exporter name
    not_produced = {"otel_ml.internal.errors"}  # only on internal errors, which a healthy run does not have
    for otel_name, (kind, collector_name, scrape_name) in documented.items():
        if otel_name in not_produced:
            continue
        expected = series_names(kind, scrape_name)
        if otel_name == "ml.prediction.value":
            # prometheus_client leaves out _sum and _count of a histogram with negative bucket bounds
            # (OpenMetrics), and ml.prediction.value's buckets are symmetric around 0
            expected = {f"{scrape_name}_bucket"}
            assert not {f"{scrape_name}_sum", f"{scrape_name}_count"} & stack.scraped_names
        assert expected <= stack.scraped_names, (otel_name, stack.scraped_names)
        # the collector path differs only by the `_ratio` suffix of unit-1 gauges
        assert collector_name in (scrape_name, f"{scrape_name}_ratio"), otel_name
    assert "ml_model_drift" in stack.scraped_names and "ml_model_drift_ratio" not in stack.scraped_names
    # le spelling of the SDK exporter: the top rank bucket is le="1.0" (the collector path writes le="1")
    les = {r["metric"]["le"] for r in stack.prom.query('group by (le) (ml_feature_rank_bucket{le=~"1.*"})')}
    assert les == {"1.0"}


def test_counters_equal_what_the_app_counted(stack: Stack) -> None:
    p, t = stack.prom, stack.totals
    calls = p.by("sum by (ml_model_name, ml_model_version) (ml_prediction_duration_seconds_count)", "ml_model_version")
    assert calls[(STABLE,)] == t["calls"][STABLE] and calls[(CANARY,)] == t["calls"][CANARY]
    errors = p.by('sum by (ml_model_version, error_type) (ml_prediction_duration_seconds_count{error_type!=""})',
                  "ml_model_version", "error_type")  # fmt: skip
    assert errors == {(CANARY, "ValueError"): t["errors"][CANARY]}
    assert t["errors"][CANARY] >= 8
    classes = p.by(
        'sum by (ml_model_version, ml_prediction_class) (ml_prediction_class_total{ml_model_name="cancer"})',
        "ml_model_version",
        "ml_prediction_class",
    )
    assert {f"{v} {c}": n for (v, c), n in classes.items()} == t["classes"]
    seg = t["segments"]
    assert seg["calls"] >= 5
    quality = {
        name: p.by(f'sum by (ml_feature_name) (ml_feature_{name}_total{{ml_model_name="segments"}})', "ml_feature_name")
        for name in ("missing", "unseen_category", "type_mismatch")
    }
    assert quality["missing"] == {("amount",): SEGMENT_NAN * seg["calls"]}
    assert quality["unseen_category"] == {("channel",): SEGMENT_UNSEEN * seg["calls"]}
    assert quality["type_mismatch"] == {("age",): SEGMENT_MISMATCH * seg["calls"]}
    mean = p.query('sum(ml_prediction_confidence_sum{ml_model_name="segments"}) '
                   '/ sum(ml_prediction_confidence_count{ml_model_name="segments"})')  # fmt: skip
    assert mean[0]["value"] == pytest.approx(seg["confidence_sum"] / seg["rows"], rel=1e-9)
    # the malformed canary calls are counted as input_shape_changed drops, one per call
    dropped = p.by("sum by (reason) (otel_ml_telemetry_dropped_total)", "reason")
    assert dropped[("input_shape_changed",)] == t["errors"][CANARY]
    assert dropped[("queue_full",)] == 0


def test_fleet_psi_flags_only_the_shifted_features(stack: Stack) -> None:
    psi = stack.prom.by('ml:feature_rank:psi5m{ml_model_name="cancer"}', "ml_model_version", "ml_feature_name")
    assert len(psi) == 60, sorted(psi)  # 30 features x 2 versions
    for (version, feature), value in psi.items():
        if version == CANARY and feature in SHIFTED:
            assert value > 0.5, (version, feature, value)
        else:
            assert value < 0.1, (version, feature, value)
    # bucket shares of one unshifted feature add up to 1 (per-bucket counts from cumulative `le` series)
    shares = stack.prom.query(
        'sum(ml:feature_rank_bucket:share5m{ml_model_version="1.0.0", ml_feature_name="mean smoothness"})'
    )
    assert shares[0]["value"] == pytest.approx(1.0, abs=1e-6)
    # x1.5 pushes many values above the reference's range: the top bucket holds far more than its 5 %
    top = stack.prom.by(
        'ml:feature_rank_bucket:share5m{ml_feature_name="mean radius", bucket="20"}', "ml_model_version"
    )
    assert top[(CANARY,)] > 0.3 and top[(STABLE,)] < 0.1, top


def test_alerts_fire_exactly_where_the_data_says(stack: Stack) -> None:
    p = stack.prom
    alerts = {
        name: expr
        for group in yaml.safe_load((PROM_DIR / "rules" / "ml-alerts.rules.yml").read_text())["groups"]
        for rule in group["rules"]
        for name, expr in [(rule["alert"], rule["expr"])]
    }
    fired = {name: p.query(expr) for name, expr in alerts.items()}

    def keys(name: str, *labels: str) -> set[tuple[str, ...]]:
        return {tuple(r["metric"].get(k, "") for k in labels) for r in fired[name]}

    assert keys("MLFeatureDrift", "ml_model_version", "ml_feature_name") == {(CANARY, f) for f in SHIFTED}
    # the canary's three shifted features of 30; segments' channel (the unseen "kiosk" category) of 3 features
    model_drift = {r["metric"]["ml_model_name"]: r["value"] for r in fired["MLModelDrift"]}
    assert keys("MLModelDrift", "ml_model_name", "ml_model_version") == {("cancer", CANARY), ("segments", "1")}
    assert model_drift == pytest.approx({"cancer": len(SHIFTED) / 30, "segments": 1 / 3})
    chi2 = p.by('ml:feature_drift:max{ml_model_name="segments", ml_drift_method="chi2"}', "ml_feature_name")
    assert list(chi2) == [("channel",)] and chi2[("channel",)] < 0.01
    assert keys("MLConfidenceDrop", "ml_model_name") == {("segments",)}
    assert 0.6 < fired["MLConfidenceDrop"][0]["value"] < 0.7  # today's mean; yesterday's was 0.9
    assert keys("MLPredictionLatencyP99High", "ml_model_name") == {("segments",)}
    assert keys("MLPredictionErrorRatioHigh", "ml_model_name", "ml_model_version") == {("cancer", CANARY)}
    assert 0.05 < fired["MLPredictionErrorRatioHigh"][0]["value"] < 0.4  # 1 in 6 calls
    assert keys("OtelMLTelemetryDropped", "reason") == {("input_shape_changed",)}
    # and Prometheus's own rule evaluation agrees: each is pending (its `for:` has not elapsed yet)
    p.wait_for(
        "every alert pending",
        lambda: {r["metric"]["alertname"] for r in p.query('ALERTS{alertstate="pending"}')} == set(alerts),
        SETTLE_TIMEOUT_S,
    )


def test_every_rule_expression_parses_and_returns_data(stack: Stack) -> None:
    expressions = rule_expressions()
    assert len(expressions) >= 39  # 22 PSI + 11 model + 6 alerts
    empty = [name for name, expr in expressions if not stack.prom.query(expr)]
    assert empty == []


def test_every_dashboard_expression_parses_and_returns_data(stack: Stack) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 40
    empty = []
    for where, expr in expressions:
        results = [stack.prom.query(substitute(expr, model)) for model in DASHBOARD_MODELS]
        if not any(results):
            empty.append(where)
        for result in results:
            assert all(math.isfinite(r["value"]) or "histogram_quantile" in expr for r in result), (where, result)
    assert empty == []


def test_a_parse_error_is_reported_not_ignored(stack: Stack) -> None:
    with pytest.raises(PromQLError, match="parse error"):
        stack.prom.query("sum(rate(ml_prediction_count_total[5m])")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        raise SystemExit(_serve(Path(sys.argv[2])))
    raise SystemExit(f"usage: {sys.argv[0]} serve STATUS_FILE")
