"""Scenarios 15 (attribute bounds) and 16 (cardinality bounds), in-process on otel-ml's own aggregation."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import ScenarioFigures

import otel_ml
from otel_ml import config
from otel_ml._core import recorder, runtime
from otel_ml.testing import InMemoryTelemetry

VALID = (str, bool, int, float)


def _check_value(value: Any, limit: int = 256) -> None:
    if isinstance(value, (list, tuple)):
        assert len({type(v) for v in value}) <= 1, value
        for v in value:
            _check_value(v, limit)
        return
    assert isinstance(value, VALID), type(value)
    if isinstance(value, str):
        assert len(value) <= limit, len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        assert -(2**63) <= value < 2**63
    if isinstance(value, float):
        assert np.isfinite(value)


def test_attribute_bounds(tel: InMemoryTelemetry, figures: ScenarioFigures) -> None:
    names = [f"{i:05d}-" + "n" * 294 for i in range(10_000)]  # 300 characters each
    frame = pd.DataFrame(np.random.default_rng(15).normal(size=(2, 10_000)), columns=names)
    meta = {
        "ml.model.card": "m" * 1_000_000,
        "numbers": list(range(10_000)),
        "mixed": [1, "a", 2.0],
        "numpy_scalar": np.float32(1.5),
        "array": np.arange(10),
        "object": object(),
        "huge_int": 2**80,
        "nan": float("nan"),
        **{f"extra.{i}": i for i in range(500)},
    }
    predict = otel_ml.instrument(name="n" * 1_000_000, version="v" * 1_000_000, attributes=meta, output="proba")(
        lambda x: np.full((len(x), 2), 0.5)
    )
    for _ in range(3):
        predict(frame)
    otel_ml.force_flush(timeout=30)
    spans = tel.spans()
    assert len(spans) == 3
    longest = 0
    for span in spans:
        assert len(span.attributes) <= 128, len(span.attributes)
        assert len(span.name) <= 300
        for key, value in span.attributes.items():
            assert len(key) <= 256
            _check_value(value)
            longest = max(longest, len(value) if isinstance(value, str) else 0)
        for event in span.events:
            for value in event.attributes.values():
                _check_value(value)
    series = 0
    for metric in tel.metrics().values():
        for point in metric.data.data_points:
            series += 1
            for key, value in (point.attributes or {}).items():
                assert len(key) <= 256
                _check_value(value)
    assert runtime.get().drops().get("feature_limit", 0) >= 3 * 9_900  # columns beyond OTEL_ML_MAX_FEATURES
    figures.record("15", "span attributes (max)", max(len(s.attributes) for s in spans))
    figures.record("15", "longest string attribute", longest)
    figures.record("15", "metric series with 10,000 x 300-char features", series)


@pytest.fixture
def many_models(env: pytest.MonkeyPatch) -> None:
    """No model-name cap (OTEL_ML_MAX_MODELS), so that the aggregator's own cardinality limit is what bounds."""
    env.setenv("OTEL_ML_MAX_MODELS", "1000000")
    config.reload()


def _series(tel: InMemoryTelemetry, name: str) -> list[Any]:
    return tel.points(name)


def test_cardinality_of_model_names(tel: InMemoryTelemetry, many_models: None, figures: ScenarioFigures) -> None:
    limit = config.settings.cardinality_limit
    x = np.ones((1, 3))
    calls = 0
    for i in range(5000):
        for version in ("1", "2", "3"):
            predict = otel_ml.instrument(name=f"model-{i}", version=version, sketch_inputs=False, output="proba")(
                lambda x: np.array([[0.3, 0.7]])
            )
            predict(x)
            calls += 1
    collected = tel.metrics()
    for name in ("ml.prediction.count", "ml.prediction.duration", "ml.prediction.confidence"):
        points = _series(tel, name) if name not in collected else list(collected[name].data.data_points)
        assert len(points) <= limit, (name, len(points))
        overflow = [p for p in points if (p.attributes or {}).get("otel.metric.overflow") is True]
        assert len(overflow) == 1, name
        total = sum(getattr(p, "value", None) or getattr(p, "count", 0) for p in points)
        assert total == calls, (name, total)  # nothing lost, nothing counted twice
    figures.record("16", "model series per instrument (cap incl. overflow)", f"{len(points)} ({limit})")
    figures.record("16", "predictions / counted", f"{calls} / {total}")


def test_model_names_capped_by_max_models(tel: InMemoryTelemetry, figures: ScenarioFigures) -> None:
    """The default OTEL_ML_MAX_MODELS=200: later (name, version) pairs share the __overflow__ series."""
    known = len(recorder._models)
    for i in range(400):
        otel_ml.instrument(name=f"capped-{i}", sketch_inputs=False)(lambda x: [0])([[1.0]])
    counts = Counter[str]()
    for p in tel.points("ml.prediction.count"):
        counts[p.attributes["ml.model.name"]] += p.value
    assert counts["__overflow__"] == 400 - max(0, config.settings.max_models - known)
    assert sum(counts.values()) == 400
    figures.record("16", "OTEL_ML_MAX_MODELS=200: predictions in __overflow__", counts["__overflow__"])


def test_cardinality_of_features(tel: InMemoryTelemetry, env: pytest.MonkeyPatch, figures: ScenarioFigures) -> None:
    env.setenv("OTEL_ML_MAX_FEATURES", "10000")
    config.reload()
    limit = config.settings.cardinality_limit
    rng = np.random.default_rng(16)
    reference = otel_ml.Reference.from_data(rng.normal(size=(50, 10_000)), max_features=10_000)
    predict = otel_ml.instrument(name="wide", reference=reference, output="proba")(lambda x: np.full((len(x), 2), 0.5))
    rows = 0
    for _ in range(3):
        predict(rng.normal(size=(20, 10_000)))
        rows += 20
    otel_ml.force_flush(timeout=60)
    points = tel.points("ml.feature.rank")
    assert len(points) <= limit, len(points)
    assert sum(1 for p in points if (p.attributes or {}).get("otel.metric.overflow") is True) == 1
    assert sum(p.count for p in points) == rows * 10_000  # every value ranked, in its series or the overflow one
    figures.record("16", "ml.feature.rank series with 10,000 features", len(points))
    figures.record("16", "ranked values / expected", f"{sum(p.count for p in points)} / {rows * 10_000}")
