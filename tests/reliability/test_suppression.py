"""Scenario 21: suppression and recursion.

* A predict inside ``suppress_instrumentation()`` (or under the SDK's suppress key, as exporters run) produces no
  otel-ml telemetry at all: no span, no metric point, no input sketch, no prediction id; the result is unchanged.
* A model whose predict calls other instrumented models: each inner call is a child span of the outer one, and
  every model counts its own rows once.
* A model instrumented with ``otel_ml.instrument_model`` that the sklearn/torch auto-instrumentation also covers:
  exactly one span and one count per call (``score``, a Pipeline or a module holding it used to give two).
* Exporting telemetry produces no telemetry: an instrumented model called from inside a span/metric exporter (and,
  end to end, from inside the OTLP/HTTP exporter's own HTTP requests) adds nothing; spans exported = predictions.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from conftest import Apps, Receivers, ScenarioFigures, last_metric, records
from opentelemetry import context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import otel_ml
from otel_ml import semconv
from otel_ml.instrumentation.model import recorder_of
from otel_ml.instrumentation.sklearn import SklearnInstrumentor
from otel_ml.instrumentation.torch import TorchInstrumentor
from otel_ml.testing import InMemoryTelemetry

RNG = np.random.default_rng(21)
X = RNG.normal(size=(200, 4))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


@pytest.fixture
def auto() -> Iterator[None]:
    """scikit-learn and torch auto-instrumentation on for one test."""
    sk, th = SklearnInstrumentor(), TorchInstrumentor()
    sk.instrument()
    th.instrument()
    try:
        yield
    finally:
        sk.uninstrument()
        th.uninstrument()


def _rows_by_model(tel: InMemoryTelemetry, collected: dict[str, Any] | None = None) -> dict[str, int]:
    """``ml.prediction.count`` summed per ``ml.model.name``."""
    out: Counter[str] = Counter()
    for point in tel.points(semconv.PREDICTION_COUNT, collected):
        out[str(point.attributes[semconv.ML_MODEL_NAME])] += int(point.value)
    return dict(out)


def _calls_by_model(tel: InMemoryTelemetry, collected: dict[str, Any] | None = None) -> dict[str, int]:
    """``ml.prediction.duration`` histogram counts per ``ml.model.name`` (one per call)."""
    out: Counter[str] = Counter()
    for point in tel.points(semconv.PREDICTION_DURATION, collected):
        out[str(point.attributes[semconv.ML_MODEL_NAME])] += int(point.count)
    return dict(out)


def _ml_points(tel: InMemoryTelemetry) -> dict[str, int]:
    """Data points of every ``ml.*`` metric (predictions, inputs, drift), by metric name."""
    return {name: len(m.data.data_points) for name, m in tel.metrics().items() if name.startswith("ml.")}


# --------------------------------------------------------------------------- suppressed: no telemetry


class _Scorer:
    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x[:, 0] > 0).astype(int)


class _Models:
    """Every way otel-ml measures a predict, each with the same model uninstrumented."""

    def __init__(self) -> None:
        def plain(x: np.ndarray) -> np.ndarray:
            return x.sum(axis=1)

        async def plain_async(x: np.ndarray) -> np.ndarray:
            await asyncio.sleep(0)
            return x.sum(axis=1)

        self.fn = otel_ml.instrument(name="fn")(plain)
        fn_async = otel_ml.instrument(name="async-fn")(plain_async)
        self.obj = otel_ml.instrument_model(_Scorer(), name="obj")
        clf = LogisticRegression().fit(X, Y)  # auto-instrumented
        bare_clf = LogisticRegression().fit(X, Y)
        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()  # auto

        def run_net(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return net(torch.as_tensor(x, dtype=torch.float32)).numpy()

        self.calls: dict[str, tuple[Callable[[np.ndarray], Any], Callable[[np.ndarray], Any]]] = {
            "decorator": (self.fn, plain),
            "decorator (async)": (lambda x: asyncio.run(fn_async(x)), lambda x: asyncio.run(plain_async(x))),
            "instrument_model": (self.obj.predict, _Scorer().predict),
            "sklearn auto": (clf.predict_proba, bare_clf.predict_proba),  # bare_clf: only called suppressed
            "torch auto": (run_net, run_net),
        }


def _suppressed(how: str) -> Any:
    if how == "suppress_instrumentation()":
        return suppress_instrumentation()
    key = context._SUPPRESS_INSTRUMENTATION_KEY if how == "SDK key" else "suppress_instrumentation"

    class _Attached:
        def __enter__(self) -> None:
            self.token = context.attach(context.set_value(key, True))

        def __exit__(self, *exc: object) -> None:
            context.detach(self.token)

    return _Attached()


@pytest.mark.parametrize("how", ["suppress_instrumentation()", "SDK key", "plain key"])
def test_suppressed_predict_produces_no_telemetry(
    tel: InMemoryTelemetry, auto: None, figures: ScenarioFigures, how: str
) -> None:
    models = _Models()
    x = X[:5]
    last_id = otel_ml.last_prediction_id()
    with _suppressed(how):
        for instrumented, _ in models.calls.values():
            for _ in range(20):
                instrumented(x)
    assert tel.spans() == []
    points = _ml_points(tel)
    assert all(n == 0 for n in points.values()), points  # no data point of any ml.* metric
    assert otel_ml.last_prediction_id() == last_id
    for instrumented in (models.fn, models.obj):
        rec = recorder_of(instrumented)
        assert rec is not None and rec.monitor is not None and rec.monitor.rows_observed == 0  # nothing sketched
    with _suppressed(how):  # the results are those of the bare models
        for name, (instrumented, bare) in models.calls.items():
            np.testing.assert_array_equal(instrumented(x), bare(x), err_msg=name)
    assert tel.spans() == []
    # not vacuous: the same calls outside the suppression are measured, once each
    for instrumented, _ in models.calls.values():
        instrumented(x)
    assert len(tel.spans()) == len(models.calls)
    assert _rows_by_model(tel) == {"fn": 5, "async-fn": 5, "obj": 5, "LogisticRegression": 5, "Sequential": 5}
    figures.record("21", f"suppressed ({how}): calls / spans / metric points", f"{len(models.calls) * 20}/0/0")


def test_suppression_inside_an_instrumented_call(tel: InMemoryTelemetry, figures: ScenarioFigures) -> None:
    """A model that calls another one under ``suppress_instrumentation()``: only the outer call is measured."""

    @otel_ml.instrument(name="inner")
    def inner(x: np.ndarray) -> np.ndarray:
        return x[:, 0]

    @otel_ml.instrument(name="outer")
    def outer(x: np.ndarray) -> np.ndarray:
        with suppress_instrumentation():
            return inner(x) * 2

    for _ in range(10):
        outer(X[:3])
    assert [s.name for s in tel.spans()] == ["predict outer"] * 10
    assert _rows_by_model(tel) == {"outer": 30}
    figures.record("21", "suppressed inner calls: spans", 0)


# --------------------------------------------------------------------------- nesting: parented, counted once


def test_nested_models_are_child_spans_counted_once(
    tel: InMemoryTelemetry, auto: None, figures: ScenarioFigures
) -> None:
    @otel_ml.instrument(name="inner-fn")
    def inner_fn(x: np.ndarray) -> np.ndarray:
        return x.sum(axis=1)

    inner_obj = otel_ml.instrument_model(_Scorer(), name="inner-obj")
    clf = LogisticRegression().fit(X, Y)  # auto-instrumented
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, Y)
    otel_ml.set_model_info(pipe, name="pipe")

    @otel_ml.instrument(name="outer")
    def outer(x: np.ndarray) -> np.ndarray:
        return inner_fn(x) + inner_obj.predict(x) + clf.predict(x) + pipe.predict(x)

    tracer = tel.tracer_provider.get_tracer("app")
    n, rows = 50, 3
    requests = []
    for i in range(n):
        with tracer.start_as_current_span(f"request {i}") as request:
            outer(X[i : i + rows])
            requests.append(request.get_span_context())
    spans = [s for s in tel.spans() if not s.name.startswith("request")]
    names = Counter(s.name for s in spans)
    inner_names = ("predict inner-fn", "predict inner-obj", "predict LogisticRegression", "predict pipe")
    assert names == {"predict outer": n, **dict.fromkeys(inner_names, n)}  # no step or tree spans
    outers = {s.context.span_id: s for s in spans if s.name == "predict outer"}
    request_ids = {c.span_id: c.trace_id for c in requests}
    for s in outers.values():
        assert s.parent is not None and s.parent.span_id in request_ids
        assert s.context.trace_id == request_ids[s.parent.span_id]
    children: Counter[int] = Counter()
    for s in spans:
        if s.name in inner_names:
            assert s.parent is not None and s.parent.span_id in outers, s.name
            assert s.context.trace_id == outers[s.parent.span_id].context.trace_id
            children[s.parent.span_id] += 1
    assert set(children.values()) == {len(inner_names)}  # every outer call has its 4 children, no more
    pids = [s.attributes[semconv.ML_PREDICTION_ID] for s in spans]
    assert len(set(pids)) == len(pids)
    collected = tel.metrics()
    models = ("outer", "inner-fn", "inner-obj", "LogisticRegression", "pipe")
    assert _rows_by_model(tel, collected) == dict.fromkeys(models, n * rows)
    assert _calls_by_model(tel, collected) == dict.fromkeys(models, n)
    figures.record("21", "nested: children per outer span", len(inner_names))
    figures.record("21", "nested: rows counted per model / rows predicted", f"{n * rows}/{n * rows}")


# --------------------------------------------------------------------------- instrument_model + auto: one span


def _one_call(tel: InMemoryTelemetry, call: Callable[[], Any]) -> tuple[list[str], dict[str, int]]:
    """The spans and the rows counted (by model) of one call."""
    tel.exporter.clear()
    before = _rows_by_model(tel)
    call()
    after = _rows_by_model(tel)
    rows = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    return [s.name for s in tel.spans()], rows


@pytest.mark.parametrize("order", ["instrument_model first", "auto-instrumentation first"])
def test_instrument_model_covered_by_auto_instrumentation_gives_one_span(
    tel: InMemoryTelemetry, figures: ScenarioFigures, order: str
) -> None:
    sk, th = SklearnInstrumentor(), TorchInstrumentor()
    clf = LogisticRegression().fit(X, Y)
    net = torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()
    if order == "auto-instrumentation first":
        sk.instrument()
        th.instrument()
    otel_ml.instrument_model(clf, name="m")
    otel_ml.instrument_model(net, name="n")
    if order == "instrument_model first":
        sk.instrument()
        th.instrument()
    try:
        pipe = Pipeline([("scale", StandardScaler()), ("clf", clf)])
        outer_net = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
        otel_ml.set_model_info(outer_net, name="outer-net")
        x, t = X[:4], torch.ones((4, 4))
        cases: dict[str, tuple[Callable[[], Any], list[str], dict[str, int]]] = {
            "predict": (lambda: clf.predict(x), ["predict m"], {"m": 4}),
            "predict_proba": (lambda: clf.predict_proba(x), ["predict_proba m"], {"m": 4}),
            "decision_function": (lambda: clf.decision_function(x), ["decision_function m"], {"m": 4}),
            # score() (auto) calls the instrumented predict: one call, measured by the outermost wrapper
            "score": (lambda: clf.score(x, Y[:4]), ["score LogisticRegression"], {"LogisticRegression": 4}),
            "fit of a Pipeline holding it": (lambda: pipe.fit(X, Y), [], {}),
            # the Pipeline (auto) holding the instrumented model: the Pipeline's call
            "Pipeline holding it": (lambda: pipe.predict(x), ["predict LogisticRegression"], {"LogisticRegression": 4}),
            "module": (lambda: net(t), ["__call__ n"], {"n": 4}),
            "module holding it": (lambda: outer_net(t), ["__call__ outer-net"], {"outer-net": 4}),
        }
        worst = 0
        for label, (call, spans, rows) in cases.items():
            got = _one_call(tel, call)
            assert got == (spans, rows), label
            worst = max(worst, len(got[0]))
    finally:
        sk.uninstrument()
        th.uninstrument()
        otel_ml.uninstrument_model(clf)
        otel_ml.uninstrument_model(net)
    figures.record("21", f"instrument_model + auto ({order}): spans per call (max)", worst)


# --------------------------------------------------------------------------- exporting produces no telemetry


class _ScoringSpanExporter(SpanExporter):
    """Keeps the spans, and calls an instrumented model from inside every export."""

    def __init__(self, scorer: Callable[[np.ndarray], Any]) -> None:
        self.scorer = scorer
        self.spans: list[ReadableSpan] = []
        self.exports = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.scorer(np.ones((len(spans), 2)))
        self.exports += 1
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class _ScoringMetricExporter(MetricExporter):
    def __init__(self, scorer: Callable[[np.ndarray], Any]) -> None:
        super().__init__()
        self.scorer = scorer
        self.exports = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.scorer(np.ones((1, 2)))
        self.exports += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def test_exporters_calling_instrumented_code_produce_no_telemetry(
    tel: InMemoryTelemetry, figures: ScenarioFigures
) -> None:
    @otel_ml.instrument(name="scorer")
    def scorer(x: np.ndarray) -> np.ndarray:
        return x.sum(axis=1)

    @otel_ml.instrument(name="model")
    def model(x: np.ndarray) -> np.ndarray:
        return x[:, 0] > 0

    simple, batch = _ScoringSpanExporter(scorer), _ScoringSpanExporter(scorer)
    tel.tracer_provider.add_span_processor(SimpleSpanProcessor(simple))  # exports on the caller's thread
    tel.tracer_provider.add_span_processor(BatchSpanProcessor(batch, schedule_delay_millis=10))
    metric_exporter = _ScoringMetricExporter(scorer)
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=10)
    tel.meter_provider.add_metric_reader(reader)
    tel.meter_provider.get_meter("app").create_counter("app.requests").add(1)  # something to export
    n = 300
    for i in range(n):
        model(X[i % 100 : i % 100 + 2])
    assert tel.tracer_provider.force_flush(10_000)
    reader.force_flush()
    tel.meter_provider.remove_metric_reader(reader)
    assert simple.exports == n and batch.exports >= 1 and metric_exporter.exports >= 1  # the scorer did run
    for exported in (tel.spans(), simple.spans, batch.spans):
        assert [s.name for s in exported] == ["predict model"] * n  # spans exported = predictions, exactly
    assert _rows_by_model(tel) == {"model": 2 * n}  # and no count for the scorer
    assert recorder_of(scorer) is not None and recorder_of(scorer).monitor.rows_observed == 0  # type: ignore[union-attr]
    figures.record("21", "in-process exports calling an instrumented model", simple.exports + batch.exports)
    figures.record("21", "in-process: spans exported / predictions", f"{len(batch.spans)}/{n}")


def test_otlp_http_export_requests_produce_no_telemetry(
    apps: Apps, receivers: Receivers, figures: ScenarioFigures
) -> None:
    rx = receivers.start("accept")
    n, rows = 2000, 3
    run = apps.run(
        "suppression_app.py",
        config={"predictions": n, "rows": rows},
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "256",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        },
        timeout=120,
    )
    r = run.result
    # the exporters' HTTP requests ran the instrumented http-client model, during the run and on flush
    assert r["sends_during_run"] >= 2 and {"traces", "metrics"} <= set(r["send_paths"])
    assert r["flushed"] is True and r["shutdown_ok"] is True
    spans = records(rx, "span")
    assert len(spans) == n and {s["name"] for s in spans} == {"predict_proba model"}  # exported = predictions
    ledger = r["ledger"]
    assert ledger["produced"] == ledger["exported"] == n and ledger["unexplained"] == 0
    count = last_metric(rx, "ml.prediction.count")
    by_model = Counter()
    for p in count["data_points"]:
        by_model[p["attributes"]["ml.model.name"]] += p["value"]
    assert by_model == {"model": n * rows}  # no count for the http-client model
    figures.record("21", "OTLP/HTTP requests that ran an instrumented model", r["sends"])
    figures.record("21", "OTLP/HTTP: spans received / predictions", f"{len(spans)}/{n}")
