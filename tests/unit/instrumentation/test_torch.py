"""``TorchInstrumentor``: the outermost eval-mode module call, inputs and outputs read right, exact undo."""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits
from torch import nn

import otel_ml
from otel_ml import config, semconv
from otel_ml._core import runtime
from otel_ml.instrumentation import registry
from otel_ml.instrumentation import torch as torch_inst
from otel_ml.instrumentation.sklearn import SklearnInstrumentor
from otel_ml.instrumentation.torch import TorchInstrumentor
from otel_ml.testing import InMemoryTelemetry

_DIGITS, _LABELS = load_digits(return_X_y=True)
DIGITS = torch.tensor(_DIGITS / 16.0, dtype=torch.float32)  # 1797 x 64 in [0, 1]
IMAGES = DIGITS.reshape(-1, 1, 8, 8).repeat(1, 3, 1, 1) * torch.tensor([1.0, 0.5, 2.0]).reshape(1, 3, 1, 1)


class MLP(nn.Module):
    """A small classifier over the 64 digit pixels (10 logits)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_submodules_of_a_measured_call_never_enter_the_wrapper(
    th_tel: InMemoryTelemetry, entries: Callable[[Any], list[object]]
) -> None:
    """The class patch calls the submodules' ``__call__`` directly inside a measured call (``registry.wrapping``)."""
    model = MLP().eval()
    entered = entries(torch_inst)
    with torch.no_grad():
        model(DIGITS[:10])  # MLP, body, Linear, ReLU, Linear: five module calls
    assert len(entered) == 1
    assert [s.name for s in th_tel.spans()] == ["__call__ MLP"]
    with torch.no_grad():
        model.body(DIGITS[:10])  # a submodule on its own is a measured call
    assert len(entered) == 2 and len(th_tel.spans()) == 2


class ConvNet(nn.Module):
    """A small image classifier over N x 3 x 8 x 8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def instrument(instrumenting: Callable[[Any], Callable[..., InMemoryTelemetry]]) -> Callable[..., InMemoryTelemetry]:
    """``instrument(**kwargs)`` instruments torch for this test; undone at teardown whatever happens."""
    return instrumenting(TorchInstrumentor())


@pytest.fixture
def th_tel(instrument: Callable[..., InMemoryTelemetry]) -> InMemoryTelemetry:
    return instrument()


def test_the_outermost_call_is_one_prediction(th_tel: InMemoryTelemetry) -> None:
    model = MLP().eval()
    with torch.no_grad():
        logits = model(DIGITS[:100])
    (span,) = th_tel.spans()  # body, Linear, ReLU, Linear inside it: nothing
    assert span.name == "__call__ MLP"
    assert {k: v for k, v in span.attributes.items() if not k.startswith("ml.prediction.")} == {
        semconv.ML_MODEL_NAME: "MLP",
        semconv.ML_MODEL_VERSION: "",
        semconv.ML_MODEL_FRAMEWORK: "torch",
        semconv.ML_OPERATION: "__call__",
        semconv.ML_BATCH_SIZE: 100,
    }
    expected = torch.softmax(logits, dim=1).max(dim=1).values.double().numpy()
    collected = th_tel.metrics()
    (conf,) = th_tel.points(semconv.PREDICTION_CONFIDENCE, collected)
    assert conf.count == 100
    assert conf.sum == pytest.approx(float(expected.sum()), rel=1e-6)
    assert span.attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(float(expected.min()), rel=1e-6)
    classes = {p.attributes[semconv.ML_PREDICTION_CLASS]: p.value for p in th_tel.points(semconv.PREDICTION_CLASS)}
    top, n = np.unique(logits.argmax(dim=1).numpy(), return_counts=True)
    assert classes == {str(k): int(v) for k, v in zip(top, n, strict=True)}
    (count,) = th_tel.points(semconv.PREDICTION_COUNT, collected)
    assert count.value == 100


def test_grad_modes_and_results_are_unchanged(th_tel: InMemoryTelemetry) -> None:
    model = MLP().eval()
    plain = model.body(DIGITS[:5])  # the Sequential's own call is a (separate) outermost call
    with torch.no_grad():
        a = model(DIGITS[:5])
    with torch.inference_mode():
        b = model(DIGITS[:5])
    c = model(DIGITS[:5])  # eval mode with autograd on: still a prediction, graph intact
    c.sum().backward()
    assert model.body[0].weight.grad is not None
    for out in (a, b, c):
        torch.testing.assert_close(out, plain)
    assert [s.name for s in th_tel.spans()] == ["__call__ Sequential"] + ["__call__ MLP"] * 3


def test_training_mode_is_not_counted_unless_asked(instrument: Callable[..., InMemoryTelemetry]) -> None:
    tel = instrument()
    model = MLP()  # modules start in training mode
    model(DIGITS[:4])
    assert tel.spans() == []
    TorchInstrumentor().uninstrument()
    instrument(count_training=True)
    model(DIGITS[:4])
    assert [s.attributes[semconv.ML_BATCH_SIZE] for s in tel.spans()] == [4]


def test_image_inputs_are_sketched_as_channel_means(
    instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch
) -> None:
    env.setenv("OTEL_ML_WARMUP_ROWS", "40")
    env.setenv("OTEL_ML_SKETCH_BUFFER_ROWS", "8")
    config.reload()
    tel = instrument()
    model = ConvNet().eval()
    with torch.no_grad():
        for start in range(0, 100, 20):
            model(IMAGES[start : start + 20])
    assert [s.attributes[semconv.ML_BATCH_SIZE] for s in tel.spans()] == [20] * 5
    ranks = tel.points(semconv.FEATURE_RANK)
    assert {p.attributes[semconv.ML_FEATURE_NAME]: p.count for p in ranks} == {
        "channel0": 60,
        "channel1": 60,
        "channel2": 60,
    }
    monitor = registry.state(model, "torch", lambda: None).recorder.monitor
    means = IMAGES[:40].mean(dim=(2, 3)).double()  # the warm-up reference: the first 40 rows' channel means
    for c in range(3):
        feature = monitor.reference.features[f"channel{c}"]
        assert (feature.min, feature.max) == pytest.approx((float(means[:, c].min()), float(means[:, c].max())))


def test_feature_matrices_are_sketched_and_token_ids_are_not(th_tel: InMemoryTelemetry) -> None:
    mlp = MLP().eval()
    embed = nn.Sequential(nn.Embedding(100, 8), nn.Flatten(), nn.Linear(40, 2)).eval()
    with torch.no_grad():
        mlp(DIGITS[:3])
        embed(torch.randint(0, 100, (6, 5)))
    assert registry.state(mlp, "torch", lambda: None).recorder.monitor is not None
    assert registry.state(embed, "torch", lambda: None).recorder.monitor is None
    assert [s.attributes[semconv.ML_BATCH_SIZE] for s in th_tel.spans()] == [3, 6]


def test_device_inputs_are_not_copied(th_tel: InMemoryTelemetry) -> None:
    model = nn.Linear(64, 10, device="meta").eval()  # "meta" tensors hold no data: any copy would raise
    before = runtime.get().drops().get("input_device", 0)
    with torch.no_grad():
        model(torch.empty(7, 64, device="meta"))
    (span,) = th_tel.spans()
    assert span.attributes[semconv.ML_BATCH_SIZE] == 7
    assert semconv.ML_PREDICTION_CONFIDENCE_MEAN not in span.attributes  # outputs on a device are not read
    assert runtime.get().drops().get("input_device", 0) == before + 1


def test_outputs_and_per_model_settings(instrument: Callable[..., InMemoryTelemetry]) -> None:
    tel = instrument(output="none")

    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            return {"logits": torch.stack([x[:, 0], -x[:, 0]], dim=1), "hidden": x}

    class Binary(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x[:, :1] * 4 - 2, x

    silent, pair, binary, reg = MLP().eval(), Pair().eval(), Binary().eval(), nn.Linear(64, 1).eval()
    otel_ml.set_model_info(pair, name="pair", output="logits")
    otel_ml.set_model_info(binary, name="binary", version="3", output="logits", classes=["neg", "pos"])
    otel_ml.set_model_info(reg, name="reg", task="regression")  # no confidence: values
    with torch.no_grad():
        silent(DIGITS[:4])
        pair(DIGITS[:4])
        out, _ = binary(DIGITS[:4])
        values = reg(DIGITS[:4])
    spans = {s.attributes[semconv.ML_MODEL_NAME]: s for s in tel.spans()}
    assert semconv.ML_PREDICTION_CONFIDENCE_MEAN not in spans["MLP"].attributes  # output="none" for all
    expected = torch.softmax(torch.stack([DIGITS[:4, 0], -DIGITS[:4, 0]], dim=1), dim=1).max(dim=1).values
    assert spans["pair"].attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(float(expected.min()))
    sigmoid = torch.sigmoid(out[:, 0])
    top = torch.maximum(sigmoid, 1 - sigmoid)
    assert spans["binary"].attributes[semconv.ML_PREDICTION_CONFIDENCE_MIN] == pytest.approx(float(top.min()))
    classes = {
        p.attributes[semconv.ML_PREDICTION_CLASS]: p.value
        for p in tel.points(semconv.PREDICTION_CLASS)
        if p.attributes[semconv.ML_MODEL_NAME] == "binary"
    }
    pos = int((sigmoid > 0.5).sum())
    assert classes == {k: v for k, v in {"neg": 4 - pos, "pos": pos}.items() if v}
    (value,) = tel.points(semconv.PREDICTION_VALUE)
    assert value.count == 4 and value.sum == pytest.approx(float(values.sum()), rel=1e-6)
    assert spans["reg"].attributes[semconv.ML_MODEL_TASK] == "regression"


def test_allow_list_by_class_and_name(instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch) -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = MLP()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mlp(x) * 2

    env.setenv("OTEL_ML_TORCH_MODELS", "ConvNet")
    tel = instrument(models=[MLP])  # the keyword wins over the variable
    with torch.no_grad():
        Wrapper().eval()(DIGITS[:3])  # not on the list: passes through, its MLP inside is the prediction
        ConvNet().eval()(IMAGES[:2])
    assert [s.name for s in tel.spans()] == ["__call__ MLP"]
    TorchInstrumentor().uninstrument()
    instrument()
    with torch.no_grad():
        ConvNet().eval()(IMAGES[:2])
        MLP().eval()(DIGITS[:1])
    assert [s.name for s in tel.spans()] == ["__call__ MLP", "__call__ ConvNet"]


def test_compiled_modules_keep_working(th_tel: InMemoryTelemetry) -> None:
    model = MLP().eval()
    otel_ml.set_model_info(model, name="digits", version="1")
    compiled = torch.compile(model, backend="eager")  # dynamo tracing; no C++ toolchain needed
    with torch.no_grad():
        expected = model(DIGITS[:6])
        got = compiled(DIGITS[:6])
        compiled(DIGITS[:6])
    torch.testing.assert_close(got, expected)
    assert [s.name for s in th_tel.spans()] == ["__call__ digits"] * 3


def test_failures_are_recorded_and_reraised(th_tel: InMemoryTelemetry) -> None:
    model = MLP().eval()
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(DIGITS[:2, :10])
    (span,) = th_tel.spans()
    assert span.attributes[semconv.ERROR_TYPE] == "RuntimeError"


class TorchEstimator(ClassifierMixin, BaseEstimator):
    """A scikit-learn estimator wrapping a torch module (skorch-style): its predict is the one call."""

    def fit(self, x: Any, y: Any) -> TorchEstimator:
        self.module_ = MLP().eval()
        self.classes_ = np.arange(10)
        return self

    def predict(self, x: Any) -> np.ndarray:
        with torch.no_grad():
            return self.module_(torch.as_tensor(x, dtype=torch.float32)).argmax(dim=1).numpy()


def test_sklearn_and_torch_together_count_once(instrument: Callable[..., InMemoryTelemetry]) -> None:
    tel = instrument()
    SklearnInstrumentor().instrument()
    try:
        TorchEstimator().fit(_DIGITS, _LABELS).predict(_DIGITS[:9] / 16.0)
        manual = otel_ml.instrument_model(MLP().eval(), name="manual")
        with torch.no_grad():
            manual(DIGITS[:2])
    finally:
        SklearnInstrumentor().uninstrument()
    assert [s.name for s in tel.spans()] == ["predict TorchEstimator", "__call__ manual"]


def test_uninstrument_restores_module_call_and_saves_are_unchanged(
    instrument: Callable[..., InMemoryTelemetry],
) -> None:
    original = nn.Module.__dict__["__call__"]
    model = MLP().eval()
    before = io.BytesIO()
    torch.save(model, before)
    tel = instrument()
    inst = TorchInstrumentor()
    inst.instrument()  # twice is once
    assert torch_inst.patched() == (nn.Module, original)
    otel_ml.set_model_info(model, name="digits")
    with torch.no_grad():
        model(DIGITS[:3])
    after = io.BytesIO()
    torch.save(model, after)
    assert after.getvalue() == before.getvalue()
    inst.uninstrument()
    assert nn.Module.__dict__["__call__"] is original
    assert torch_inst.patched() is None
    with torch.no_grad():
        model(DIGITS[:3])
    assert len(tel.spans()) == 1


def test_switched_off(instrument: Callable[..., InMemoryTelemetry], env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_ML_TORCH_ENABLED", "0")
    tel = instrument()
    assert torch_inst.patched() is None
    with torch.no_grad():
        MLP().eval()(DIGITS[:2])
    assert tel.spans() == []


def test_dynamo_traces_an_instrumented_module_in_one_graph(th_tel: InMemoryTelemetry) -> None:
    """The ``nn.Module.__call__`` patch checks ``torch.compiler.is_compiling()`` first, which dynamo folds to
    ``True``: it traces straight into the original instead of breaking the graph at the context variable."""
    import torch._dynamo as dynamo

    dynamo.reset()  # frames compiled by earlier tests would be reused, not traced
    model = MLP().eval()
    with torch.no_grad():
        explained = dynamo.explain(model)(DIGITS[:4])
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_a_torch_without_compiler_is_compiling_gets_the_wrapt_wrapper(
    th_tel: InMemoryTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the check dynamo folds, a function patch would split compiled graphs: the wrapt wrapper instead."""

    def patched_call(module: SimpleNamespace) -> Any:
        class Module:
            def __call__(self, x: Any) -> Any:
                return x

        monkeypatch.setattr(torch_inst, "_patch", None)  # as before torch's first import
        torch_inst._on_torch(SimpleNamespace(nn=SimpleNamespace(Module=Module), Tensor=torch.Tensor, **vars(module)))
        return inspect.getattr_static(Module, "__call__")

    old = patched_call(SimpleNamespace(compiler=SimpleNamespace()))
    assert isinstance(old, registry.ClassWrapper)
    new = patched_call(SimpleNamespace(compiler=SimpleNamespace(is_compiling=lambda: False)))
    assert inspect.isfunction(new) and registry.is_patch(new)
