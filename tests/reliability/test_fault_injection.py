"""Scenario 11: an internal fault at any stage never reaches the user's call.

``tests/unit/core/test_guard.py`` covers the decorator with faults in the output reader, input adapter, attribute
builder, span start and prediction id. This extends it to the other stages (input sketch, drift on the worker,
span attributes, otel-ml's aggregation, the span and metric exporters), ``MemoryError`` included, and to every
way a model gets instrumented: the decorator, ``instrument_model`` on scikit-learn and torch models, and the
``SklearnInstrumentor`` / ``TorchInstrumentor`` auto-instrumentation. Each check: the original is called exactly
once, its result is the very same object, its own exception is the very same exception with its traceback,
otel-ml logs one warning per stage, and ``OTEL_ML_STRICT=1`` raises the injected error instead.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from conftest import ScenarioFigures
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from sklearn.linear_model import LogisticRegression

import otel_ml
from otel_ml import config
from otel_ml._core import guard, recorder, runtime
from otel_ml._core import ledger as ledger_module
from otel_ml._core.aggregation import Aggregator, MergingMetricExporter, VectorHistogram
from otel_ml._core.monitor import InputMonitor
from otel_ml.drift import metrics as drift_metrics
from otel_ml.instrumentation.sklearn import SklearnInstrumentor
from otel_ml.instrumentation.torch import TorchInstrumentor
from otel_ml.testing import InMemoryTelemetry

X = np.random.default_rng(11).normal(size=(400, 20))
Y = (X[:, 0] > 0).astype(int)
REFERENCE = otel_ml.Reference.from_data(X)


class Injected(Exception):
    """A failure injected into otel-ml."""


class UsersOwn(KeyError):
    """The model's own exception."""


@dataclass
class Probe:
    """What the original saw and returned, and the knob to make it raise."""

    calls: list[Any] = field(default_factory=list)
    returned: list[Any] = field(default_factory=list)
    error: BaseException | None = None


class RecordingClassifier(LogisticRegression):
    probe: Probe

    def predict_proba(self, X: Any) -> Any:
        self.probe.calls.append(X)
        if self.probe.error is not None:
            raise self.probe.error
        out = super().predict_proba(X)
        self.probe.returned.append(out)
        return out


class RecordingNet(torch.nn.Module):
    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(20, 2)
        self.probe = probe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.probe.calls.append(x)
        if self.probe.error is not None:
            raise self.probe.error
        out = self.lin(x)
        self.probe.returned.append(out)
        return out


def _decorator(probe: Probe) -> tuple[Callable[[Any], Any], Any]:
    def predict_proba(x: Any) -> Any:
        probe.calls.append(x)
        if probe.error is not None:
            raise probe.error
        out = np.array([[0.2, 0.8]] * len(x))
        probe.returned.append(out)
        return out

    return otel_ml.instrument(name="m", reference=REFERENCE)(predict_proba), X[:1]


def _sklearn_model(probe: Probe) -> tuple[Callable[[Any], Any], Any]:
    clf = RecordingClassifier().fit(X, Y)
    clf.probe = probe
    model = otel_ml.instrument_model(clf, name="m", reference=REFERENCE)
    return model.predict_proba, X[:1]


def _torch_model(probe: Probe) -> tuple[Callable[[Any], Any], Any]:
    net = RecordingNet(probe).eval()
    model = otel_ml.instrument_model(net, name="m", reference=REFERENCE)
    return model, torch.tensor(X[:1], dtype=torch.float32)


def _sklearn_auto(probe: Probe) -> tuple[Callable[[Any], Any], Any]:
    clf = RecordingClassifier().fit(X, Y)
    clf.probe = probe
    otel_ml.set_model_info(clf, name="m", reference=REFERENCE)
    return clf.predict_proba, X[:1]


def _torch_auto(probe: Probe) -> tuple[Callable[[Any], Any], Any]:
    net = RecordingNet(probe).eval()
    otel_ml.set_model_info(net, name="m", reference=REFERENCE)
    return net, torch.tensor(X[:1], dtype=torch.float32)


PATHS = {
    "decorator": _decorator,
    "instrument_model-sklearn": _sklearn_model,
    "instrument_model-torch": _torch_model,
    "SklearnInstrumentor": _sklearn_auto,
    "TorchInstrumentor": _torch_auto,
}


@pytest.fixture
def path(request: pytest.FixtureRequest) -> Iterator[Callable[[Probe], tuple[Callable[[Any], Any], Any]]]:
    name = request.param
    instrumentor: Any = None
    if name == "SklearnInstrumentor":
        instrumentor = SklearnInstrumentor()
    elif name == "TorchInstrumentor":
        instrumentor = TorchInstrumentor()
    if instrumentor is not None:
        instrumentor.instrument()
    try:
        yield PATHS[name]
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()


def _raise(fault: type[BaseException]) -> Callable[..., Any]:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise fault("injected") if fault is Injected else fault()

    return boom


# stage -> (object, attribute) replaced by a raising function; all run inside the user's call
IN_CALL_STAGES: dict[str, tuple[Any, str]] = {
    "input adapter": (recorder.inputs, "batch_size"),
    "input sketch": (InputMonitor, "observe"),
    "output reader": (recorder.outputs, "analyze"),
    "span attribute builder": (recorder.Recorder, "_monitor_details"),
    "error attribute builder": (recorder.attributes, "error_type"),
    "aggregation": (Aggregator, "defer"),  # a call's single values wait for the collection (test below)
}


@pytest.fixture
def lenient(env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_STRICT", "0")
    config.reload()


@pytest.mark.parametrize("path", list(PATHS), indirect=True)
@pytest.mark.parametrize("stage", list(IN_CALL_STAGES))
@pytest.mark.parametrize("fault", [Injected, MemoryError], ids=["exception", "MemoryError"])
def test_user_call_is_untouched_by_an_internal_fault(
    tel: InMemoryTelemetry,
    lenient: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    figures: ScenarioFigures,
    path: Callable[[Probe], tuple[Callable[[Any], Any], Any]],
    stage: str,
    fault: type[BaseException],
) -> None:
    probe = Probe()
    call, x = path(probe)
    call(x)  # first call unfaulted: the model's schema and monitor exist
    probe.calls.clear()
    probe.returned.clear()
    owner, attr = IN_CALL_STAGES[stage]
    monkeypatch.setattr(owner, attr, _raise(fault))
    guard.log.reset()
    before = sum(guard.error_counts().values())
    with caplog.at_level(logging.WARNING, logger="otel_ml"):
        for i in range(5):
            result = call(x)
            assert result is probe.returned[-1]
            assert len(probe.calls) == 2 * i + 1  # exactly once per call
            probe.error = UsersOwn(f"users-own-{i}")
            with pytest.raises(UsersOwn) as caught:
                call(x)
            assert caught.value is probe.error
            frames = traceback.extract_tb(caught.value.__traceback__)
            assert frames[-1].name in ("predict_proba", "forward")  # raised where the user raised it
            probe.error = None
    assert len(probe.calls) == 10
    assert sum(guard.error_counts().values()) > before
    warnings = [r for r in caplog.records if r.name == "otel_ml" and "internal error" in r.getMessage()]
    stages = [r.getMessage().split(" in ")[1].split(" ")[0] for r in warnings]
    assert len(stages) == len(set(stages)), stages  # at most one line per internal stage, however many calls
    from opentelemetry import trace

    assert trace.get_current_span() is trace.INVALID_SPAN  # every span opened was closed and detached
    figures.record("11", "stages x faults x paths checked", f"{len(IN_CALL_STAGES)} x 2 x {len(PATHS)}")


@pytest.mark.parametrize("path", ["decorator", "instrument_model-sklearn", "TorchInstrumentor"], indirect=True)
@pytest.mark.parametrize("stage", ["input sketch", "aggregation", "output reader"])
def test_strict_mode_raises_the_injected_error(
    tel: InMemoryTelemetry,
    monkeypatch: pytest.MonkeyPatch,
    path: Callable[[Probe], tuple[Callable[[Any], Any], Any]],
    stage: str,
) -> None:
    assert config.settings.strict
    probe = Probe()
    call, x = path(probe)
    owner, attr = IN_CALL_STAGES[stage]
    monkeypatch.setattr(owner, attr, _raise(Injected))
    with pytest.raises(Injected):
        call(x)


@pytest.mark.parametrize("path", list(PATHS), indirect=True)
def test_a_fault_applying_a_calls_deferred_metrics_is_counted_at_the_collection(
    tel: InMemoryTelemetry,
    lenient: None,
    monkeypatch: pytest.MonkeyPatch,
    path: Callable[[Probe], tuple[Callable[[Any], Any], Any]],
) -> None:
    """A call's single-value metrics are applied when metrics are collected: a fault there reaches neither the
    user's calls nor the collection, which still exports the rest; it is counted (stage ``metrics``) once per
    record that failed."""
    probe = Probe()
    call, x = path(probe)
    call(x)
    tel.metrics()
    monkeypatch.setattr(VectorHistogram, "record_one", _raise(Injected))
    before = guard.error_counts().get("metrics", 0)
    for _ in range(3):
        assert call(x) is probe.returned[-1]
    assert guard.error_counts().get("metrics", 0) == before  # nothing applied inside the calls
    collected = tel.metrics()
    assert guard.error_counts().get("metrics", 0) == before + 3
    assert "ml.prediction.duration" in collected  # the earlier call's, still exported


@pytest.mark.parametrize("fault", [Injected, MemoryError], ids=["exception", "MemoryError"])
def test_drift_fault_on_the_worker(
    tel: InMemoryTelemetry, lenient: None, monkeypatch: pytest.MonkeyPatch, fault: type[BaseException]
) -> None:
    probe = Probe()
    call, x = _decorator(probe)
    monkeypatch.setattr(drift_metrics, "psi", _raise(fault))
    before = guard.error_counts().get("worker", 0)
    for i in range(300):
        assert call(X[i : i + 1]) is probe.returned[-1]
    otel_ml.force_flush(timeout=10)  # drift runs on the worker: it fails there, counted, the worker survives
    assert guard.error_counts().get("worker", 0) > before
    assert call(x) is probe.returned[-1]
    assert runtime.get().worker.drain(5)


class RaisingSpanExporter(SpanExporter):
    def __init__(self, fault: type[BaseException]) -> None:
        self.fault = fault
        self.calls = 0

    def export(self, spans: Any) -> Any:
        self.calls += 1
        raise self.fault("exporter") if self.fault is Injected else self.fault()

    def shutdown(self) -> None:
        pass


class RaisingMetricExporter(MetricExporter):
    def __init__(self, fault: type[BaseException]) -> None:
        super().__init__()
        self.fault = fault
        self.calls = 0

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.calls += 1
        raise self.fault("exporter") if self.fault is Injected else self.fault()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


@pytest.mark.parametrize("fault", [Injected, MemoryError], ids=["exception", "MemoryError"])
def test_exporter_faults_are_counted_not_raised(
    lenient: None, figures: ScenarioFigures, fault: type[BaseException]
) -> None:
    """otel-ml's span pipeline (ledger + BatchSpanProcessor) and metric pipeline with exporters that raise."""
    rt = runtime.get()
    span_exporter = RaisingSpanExporter(fault)
    ledger = ledger_module.SpanLedger(2048)
    tp = TracerProvider(resource=Resource.create({}), shutdown_on_exit=False)
    counted = ledger_module.ProcessLocalSpanExporter(span_exporter, ledger, None)
    tp.add_span_processor(ledger_module.LedgerSpanProcessor(BatchSpanProcessor(counted), ledger))
    metric_exporter = RaisingMetricExporter(fault)
    reader = PeriodicExportingMetricReader(
        MergingMetricExporter(metric_exporter, rt.aggregator, Resource.create({})), export_interval_millis=1e9
    )
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    rt.use(tp, mp)
    rt.worker.reopen()
    drops_before = rt.drops().get("span_export_failed", 0)
    try:
        probe = Probe()
        call, x = _decorator(probe)
        for _ in range(100):
            assert call(x) is probe.returned[-1]
        assert tp.force_flush(5000)
        mp.force_flush(5000)  # the reader logs the exporter's exception; nothing is raised here either
        assert span_exporter.calls >= 1 and metric_exporter.calls >= 1
        snap = ledger.snapshot()
        assert snap["produced"] == 100 and snap["span_export_failed"] == 100 and snap["unexplained"] == 0, snap
        assert rt.drops()["span_export_failed"] - drops_before == 100
        assert call(x) is probe.returned[-1]
    finally:
        rt.use(None, None)
        reader.shutdown(timeout_millis=1000)
        tp.shutdown()
        rt.aggregator.clear()
    figures.record("11", f"raising exporters ({fault.__name__}): spans counted span_export_failed", 100)
