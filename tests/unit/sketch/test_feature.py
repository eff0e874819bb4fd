"""Classification counters, merge and serialisation tests for FeatureSketch."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from otel_ml.sketch.feature import FeatureSketch

COUNTERS = ("count", "missing", "nan", "posinf", "neginf", "type_mismatch")


def counters(fs: FeatureSketch) -> dict[str, int]:
    return {name: getattr(fs, name) for name in COUNTERS}


def test_numeric_float_fast_path() -> None:
    rng = np.random.default_rng(0)
    col = rng.normal(size=10_000)
    col[:30] = np.nan
    col[30:35] = np.inf
    col[35:37] = -np.inf
    fs = FeatureSketch("numeric")
    fs.update(col)
    assert counters(fs) == {"count": 10_000, "missing": 30, "nan": 30, "posinf": 5, "neginf": 2, "type_mismatch": 0}
    finite = col[np.isfinite(col)]
    assert fs.valid == finite.size == fs.quantiles.count
    assert (fs.min, fs.max) == (finite.min(), finite.max())


def test_numeric_int_bool_and_string_arrays() -> None:
    fs = FeatureSketch("numeric")
    fs.update(np.array([1, 2, 3], dtype=np.int32))
    fs.update(np.array([True, False]))
    fs.update(np.array(["1.5", "x"]))
    assert counters(fs)["type_mismatch"] == 2
    assert fs.valid == 5 and fs.count == 7
    assert fs.quantiles.weighted_items()[0].tolist() == [0.0, 1.0, 1.0, 2.0, 3.0]


def test_numeric_object_array_classification() -> None:
    col = np.array(
        [1.5, None, "2.0", [1, 2], {"a": 1}, pd.NA, np.nan, np.inf, -np.inf, 3, True, np.float32(2.0), pd.NaT, (1,)],
        dtype=object,
    )
    fs = FeatureSketch("numeric")
    fs.update(col)
    assert counters(fs) == {"count": 14, "missing": 4, "nan": 1, "posinf": 1, "neginf": 1, "type_mismatch": 4}
    assert fs.quantiles.weighted_items()[0].tolist() == [1.0, 1.5, 2.0, 3.0]


def test_categorical_object_array_classification() -> None:
    col = np.array(["a", "b", "a", None, pd.NA, float("nan"), ["x"], 7, True, "a"], dtype=object)
    fs = FeatureSketch("categorical")
    fs.update(col)
    assert counters(fs) == {"count": 10, "missing": 3, "nan": 1, "posinf": 0, "neginf": 0, "type_mismatch": 1}
    assert fs.frequent.counts() == {"a": 3, "b": 1, 7: 1, True: 1}
    assert fs.valid == 6


def test_categorical_typed_arrays() -> None:
    fs = FeatureSketch("categorical", top_k=3)
    fs.update(np.array(["red", "green", "red", "blue"]))
    fs.update(np.array([1.0, np.nan, 1.0]))
    assert fs.missing == 1 and fs.nan == 1 and fs.count == 7
    # 4 distinct values > top_k=3: Misra-Gries subtracts the 4th largest count (1) from every counter
    assert fs.frequent.counts() == {"red": 1, 1.0: 1}
    assert (fs.frequent.other, fs.frequent.max_error, fs.frequent.total) == (4, 1, 6)


def test_pandas_nullable_columns_converted_by_caller() -> None:
    s_float = pd.array([1.0, None, 3.0], dtype="Float64")
    s_str = pd.array(["u", None, "v"], dtype="string")
    num = FeatureSketch("numeric")
    num.update(s_float.to_numpy(dtype=np.float64, na_value=np.nan))
    num.update(s_float.to_numpy(dtype=object))
    cat = FeatureSketch("categorical")
    cat.update(s_str.to_numpy(dtype=object))
    assert (num.count, num.missing, num.valid) == (6, 2, 4)
    assert (cat.count, cat.missing, cat.frequent.counts()) == (3, 1, {"u": 1, "v": 1})


def test_merge_equals_single_pass_and_kind_mismatch() -> None:
    rng = np.random.default_rng(1)
    col = rng.normal(size=5_000)
    col[::100] = np.nan
    whole, a, b = FeatureSketch("numeric"), FeatureSketch("numeric"), FeatureSketch("numeric")
    whole.update(col)
    a.update(col[:2_000])
    b.update(col[2_000:])
    a.merge(b)
    assert counters(a) == counters(whole)
    xs = np.linspace(-3, 3, 61)
    exact = np.searchsorted(np.sort(col[np.isfinite(col)]), xs, side="right") / whole.valid
    assert np.max(np.abs(a.quantiles.cdf(xs) - exact)) <= 0.01
    with pytest.raises(ValueError):
        a.merge(FeatureSketch("categorical"))
    with pytest.raises(TypeError):
        _ = a.frequent


def test_json_round_trip_and_nbytes() -> None:
    rng = np.random.default_rng(2)
    num = FeatureSketch("numeric")
    num.update(rng.lognormal(size=200_000))
    num.update(np.array([None, "x"], dtype=object))
    cat = FeatureSketch("categorical")
    cat.update(rng.choice(np.array(["a", "b", "c"]), 1_000))
    for fs in (num, cat):
        text = json.dumps(fs.to_dict(), allow_nan=False)
        back = FeatureSketch.from_dict(json.loads(text))
        assert json.dumps(back.to_dict(), allow_nan=False) == text
        assert counters(back) == counters(fs)
    assert num.nbytes <= 16 * 1024 + 48
    assert cat.nbytes > 48
