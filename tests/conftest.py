"""Test-suite wide settings: otel-ml runs strict (internal errors raise) unless a test says otherwise."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("OTEL_ML_STRICT", "1")

from collections.abc import Iterator

import pytest

from otel_ml import config
from otel_ml._core import guard, recorder
from otel_ml.testing import InMemoryTelemetry

config.reload()


@pytest.fixture
def tel() -> Iterator[InMemoryTelemetry]:
    """Fresh in-memory providers wired into otel-ml for one test."""
    guard.log.reset()
    gc.collect()  # models of earlier tests (and their input monitors) are gone before this one starts
    telemetry = InMemoryTelemetry()
    try:
        yield telemetry
    finally:
        telemetry.close()
        config.reload()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Set OTEL_ML_* variables for one test and re-read them; restored afterwards."""
    yield monkeypatch
    monkeypatch.undo()
    config.reload()


@pytest.fixture(autouse=True)
def _model_identities() -> Iterator[None]:
    """The process-wide first OTEL_ML_MAX_MODELS (name, version) pairs: a test that creates thousands of models
    (the cardinality scenarios) must not push every later test's models into ``__overflow__``."""
    with recorder._models_lock:
        before = set(recorder._models)
    yield
    with recorder._models_lock:
        recorder._models.clear()
        recorder._models.update(before)
