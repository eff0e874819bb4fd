"""Scenario 12: hostile model inputs, through the decorator and through sklearn/torch auto-instrumentation.

Every input kind of the plan (CUDA needs a GPU: not here) goes through five paths: the decorator around a
fitted ``LogisticRegression.predict``, around a torch ``nn.Linear`` forward, around a model that ignores its
input (so that otel-ml's own reading of the input is exercised even where a real model refuses it), and the
``SklearnInstrumentor`` / ``TorchInstrumentor`` auto-instrumentation. The suite runs strict (``OTEL_ML_STRICT=1``),
so any internal error of otel-ml would surface as a different result. Checks: the same output (or the same
exception type and message) as the uninstrumented call; the input is unchanged (bytes, flags, dtype, version
counter, ``grad_fn``, generator state); no non-finite value reaches an exported data point; an unsupported input
is one counted skip with at most one log line.
"""

from __future__ import annotations

import copy
import inspect
import logging
import pickle
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import scipy.sparse
import torch
from conftest import ScenarioFigures
from sklearn.linear_model import LogisticRegression

import otel_ml
from otel_ml._core import runtime
from otel_ml.instrumentation.sklearn import SklearnInstrumentor
from otel_ml.instrumentation.torch import TorchInstrumentor
from otel_ml.testing import InMemoryTelemetry

RNG = np.random.default_rng(12)
TRAIN = RNG.normal(size=(300, 20))
CLF = LogisticRegression().fit(TRAIN, (TRAIN[:, 0] > 0).astype(int))
torch.manual_seed(0)
NET = torch.nn.Linear(20, 2).eval()
COLS = [f"c{i}" for i in range(20)]


class Hostile:
    """An object whose every dunder a library might call raises."""

    def __len__(self) -> int:
        raise RuntimeError("__len__ called")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("__array__ called")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ called")

    def __iter__(self) -> Any:
        raise RuntimeError("__iter__ called")


_HOSTILE = Hostile()


def _rows(n: int = 4) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 20))


def _with(values: Any) -> np.ndarray:
    x = _rows()
    x[0, :3] = values
    return x


def _sparse() -> Any:
    """10^5 x 10^5 CSR at density 1e-6 (10,000 non-zeros), built without the dense index space."""
    rng = np.random.default_rng(4)
    rows, cols = rng.integers(0, 100_000, 10_000), rng.integers(0, 100_000, 10_000)
    return scipy.sparse.csr_matrix((rng.normal(size=10_000), (rows, cols)), shape=(100_000, 100_000))


def _gen() -> Iterator[list[float]]:
    yield from _rows().tolist()


def _memmap() -> np.ndarray:
    path = f"/tmp/otel_ml_hostile_{id(object())}.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(4, 20))
    mm[:] = _rows()
    mm.flush()
    return np.load(path, mmap_mode="r")


def _readonly() -> np.ndarray:
    x = _rows()
    x.setflags(write=False)
    return x


# kind -> builder of a fresh input; unsupported kinds name the drop reason they must be counted under
KINDS: dict[str, Callable[[], Any]] = {
    "nan": lambda: _with(np.nan),
    "inf": lambda: _with([np.inf, -np.inf, np.inf]),
    "none_in_object_column": lambda: pd.DataFrame(
        {**{c: _rows()[:, i] for i, c in enumerate(COLS[:19])}, "c19": ["a", None, "b", None]}
    ),
    "pd_NA_nullable": lambda: pd.DataFrame(
        {
            **{c: _rows()[:, i] for i, c in enumerate(COLS[:18])},
            "c18": pd.array([1, pd.NA, 3, pd.NA], dtype="Int64"),
            "c19": pd.array([True, pd.NA, False, True], dtype="boolean"),
        }
    ),
    "empty_batch": lambda: np.empty((0, 20)),
    "one_dimensional": lambda: _rows()[0],
    "single_row": lambda: _rows(1),
    "zero_d_scalar": lambda: np.array(3.0),
    "three_d": lambda: np.ones((2, 20, 3)),
    "object_mixed": lambda: np.array([[1.0, "a", [1, 2]] + [0.0] * 17] * 2, dtype=object),
    "categorical_unseen": lambda: pd.DataFrame(
        {
            **{c: _rows()[:, i] for i, c in enumerate(COLS[:19])},
            "c19": pd.Categorical(["x", "y", "never-seen", "x"], categories=["x", "y", "never-seen"]),
        }
    ),
    "tz_datetimes": lambda: pd.DataFrame(
        {
            **{c: _rows()[:, i] for i, c in enumerate(COLS[:19])},
            "c19": pd.date_range("2026-01-01", periods=4, freq="h", tz="Europe/Berlin"),
        }
    ),
    "sparse_huge": lambda: _sparse(),
    "list_of_dicts": lambda: [dict(zip(COLS, r, strict=True)) for r in _rows().tolist()],
    "dict_of_lists": lambda: {c: _rows()[:, i].tolist() for i, c in enumerate(COLS)},
    "non_str_columns": lambda: pd.DataFrame(_rows(), columns=list(range(20))),
    "duplicate_columns": lambda: pd.DataFrame(_rows(), columns=["a"] * 20),
    "multiindex_columns": lambda: pd.DataFrame(
        _rows(), columns=pd.MultiIndex.from_tuples([(f"g{i // 5}", f"f{i}") for i in range(20)])
    ),
    "ten_thousand_columns": lambda: np.random.default_rng(2).normal(size=(3, 10_000)),
    "strings_1mb": lambda: pd.DataFrame(
        {**{c: _rows()[:, i] for i, c in enumerate(COLS[:19])}, "c19": ["x" * 1_000_000] * 4}
    ),
    "extreme_numbers": lambda: np.array([[1e308, 5e-324, float(2**64)] + [0.0] * 17, [-1e308] + [1e-310] * 19]),
    "int_2_64_object": lambda: np.array([[2**64, -(2**70)] + [1] * 18], dtype=object),
    "read_only": _readonly,
    "non_contiguous": lambda: np.asfortranarray(np.random.default_rng(3).normal(size=(8, 40)))[::2, ::2],
    "memmap": _memmap,
    "generator": _gen,
    "hostile_object": lambda: _HOSTILE,
    "list_with_hostile": lambda: [_HOSTILE, [1.0] * 20],
    "torch_requires_grad": lambda: torch.ones((3, 20), requires_grad=True),
    "torch_bfloat16": lambda: torch.ones((3, 20), dtype=torch.bfloat16),
}
UNSUPPORTED = {
    "sparse_huge": "input_sparse",
    "zero_d_scalar": "input_scalar",
    "three_d": "input_ndim",
    "generator": "input_type",
    "list_of_dicts": "input_type",
    "hostile_object": "input_type",
}


def _fingerprint(x: Any) -> Any:
    """What must not change: contents, dtype, shape, strides, flags, version counter, grad_fn, generator state."""
    if isinstance(x, torch.Tensor):
        return (x.detach().clone(), x.dtype, x.device, x.requires_grad, x.grad_fn, x._version, x.stride())
    if isinstance(x, np.ndarray):
        flags = (x.flags.writeable, x.flags.c_contiguous, x.flags.f_contiguous, x.flags.owndata)
        contents = tuple(id(v) for v in x.ravel()) if x.dtype == object else x.tobytes()
        return (type(x), x.dtype, x.shape, x.strides, flags, contents)
    if isinstance(x, pd.DataFrame):
        return (x.copy(deep=True), tuple(map(str, x.dtypes)), x.columns.copy())
    if scipy.sparse.issparse(x):
        return (x.data.tobytes(), x.indices.tobytes(), x.indptr.tobytes(), x.shape)
    if inspect.isgenerator(x):
        return inspect.getgeneratorstate(x)
    if x is _HOSTILE:
        return id(x)
    if isinstance(x, list) and any(v is _HOSTILE for v in x):
        return tuple(id(v) for v in x)
    return pickle.dumps(x)


def _same_fingerprint(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and a and isinstance(a[0], torch.Tensor):
        return torch.equal(a[0], b[0]) and a[1:] == b[1:]
    if isinstance(a, tuple) and a and isinstance(a[0], pd.DataFrame):
        return a[0].equals(b[0]) and a[1] == b[1] and a[2].equals(b[2])
    return bool(a == b)


def _outcome(fn: Callable[[Any], Any], x: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(x)
    except Exception as exc:
        return "raised", (type(exc), str(exc))


def _same_outcome(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "raised":  # messages may name the input object: compare them without its address
        return a[1][0] is b[1][0] and re.sub(r"0x[0-9a-f]+", "0x", a[1][1]) == re.sub(r"0x[0-9a-f]+", "0x", b[1][1])
    x, y = a[1], b[1]
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x.detach(), y.detach())
    if isinstance(x, np.ndarray):
        return isinstance(y, np.ndarray) and x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
    return bool(x == y)


IGNORE = np.zeros((1, 2))


def _ignore(x: Any) -> np.ndarray:
    return IGNORE


def _decorated(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def predict(x: Any) -> Any:
        return fn(x)

    return otel_ml.instrument(name="h")(predict)


def _paths() -> dict[str, tuple[Callable[[], Callable[[Any], Any]], Callable[[], Callable[[Any], Any]], Any]]:
    """path -> (make bare callable, make instrumented callable, instrumentor class or None)."""
    return {
        "decorator-sklearn": (
            lambda: CLF.predict,
            lambda: otel_ml.instrument(name="h")(copy.deepcopy(CLF).predict),
            None,
        ),
        "decorator-torch": (lambda: NET, lambda: otel_ml.instrument(name="h")(copy.deepcopy(NET)), None),
        "decorator-ignores-input": (
            lambda: lambda x: IGNORE,
            lambda: otel_ml.instrument(name="h")(lambda x: IGNORE),
            None,
        ),
        "SklearnInstrumentor": (lambda: CLF.predict, lambda: copy.deepcopy(CLF).predict, SklearnInstrumentor),
        "TorchInstrumentor": (lambda: NET, lambda: copy.deepcopy(NET), TorchInstrumentor),
    }


_CASES = [pytest.param(kind, path, id=f"{kind}-{path}") for kind in KINDS for path in _paths()]


@pytest.mark.parametrize("kind,path", _CASES)
def test_hostile_input(
    tel: InMemoryTelemetry,
    caplog: pytest.LogCaptureFixture,
    figures: ScenarioFigures,
    kind: str,
    path: str,
) -> None:
    make_bare, make_instrumented, instrumentor_cls = _paths()[path]
    x_bare = KINDS[kind]()
    bare = _outcome(make_bare(), x_bare)
    instrumentor = instrumentor_cls() if instrumentor_cls is not None else None
    if instrumentor is not None:
        instrumentor.instrument()
    try:
        instrumented = make_instrumented()
        x = KINDS[kind]()
        before = _fingerprint(x)
        drops_before = runtime.get().drops()
        rss_before = psutil.Process().memory_info().rss
        with caplog.at_level(logging.DEBUG, logger="otel_ml"):
            got = _outcome(instrumented, x)
            rss_after = psutil.Process().memory_info().rss
            for _ in range(2):  # repeated: still one log line at most per reason
                _outcome(instrumented, KINDS[kind]())
        after = _fingerprint(x)
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()
    assert _same_outcome(bare, got), (bare, got)
    assert _same_fingerprint(before, after), f"{kind}: input changed"
    if kind == "sparse_huge":
        assert rss_after - rss_before < 5 * 1024 * 1024  # never densified (that would be 80 GB)
        figures.record("12", "sparse 10^5 x 10^5: RSS Δ MB", round((rss_after - rss_before) / 2**20, 2))
    drops = {k: v - drops_before.get(k, 0) for k, v in runtime.get().drops().items() if v != drops_before.get(k, 0)}
    if kind in UNSUPPORTED and path == "decorator-ignores-input":
        assert drops == {UNSUPPORTED[kind]: 3}, drops  # one counted skip per call
    lines = [r for r in caplog.records if r.name == "otel_ml"]
    assert len(lines) <= 1, [r.getMessage() for r in lines]
    _assert_finite(tel)
    figures.record("12", "input kinds x paths", f"{len(KINDS)} x {len(_paths())}")


def _assert_finite(tel: InMemoryTelemetry) -> None:
    """No NaN/inf reached a data point (otel-ml filters before its aggregation and before any SDK instrument)."""
    for metric in tel.metrics().values():
        for p in metric.data.data_points:
            for attr in ("sum", "min", "max", "value"):
                v = getattr(p, attr, None)
                if v is not None:
                    assert np.isfinite(v), (metric.name, attr, v)


def test_non_finite_values_are_counted_as_missing(tel: InMemoryTelemetry, figures: ScenarioFigures) -> None:
    predict = otel_ml.instrument(name="nan-count", reference=otel_ml.Reference.from_data(TRAIN))(lambda x: IGNORE)
    x = _rows(300)
    x[:, 0] = np.nan
    x[:10, 1] = np.inf
    predict(x)
    otel_ml.force_flush(timeout=10)
    missing = {p.attributes["ml.feature.name"]: p.value for p in tel.points("ml.feature.missing")}
    assert missing.get("f0") == 300, missing
    _assert_finite(tel)
    figures.record("12", "NaN feature values counted in ml.feature.missing", missing.get("f0"))
