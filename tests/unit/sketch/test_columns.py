"""to_table on every input kind: names, kinds, values, the no-copy fast path and the Skip reasons."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from otel_ml.sketch.columns import MAX_NAME_LENGTH, Skip, Table, feature_name, host_array, to_table

NUMERIC, CATEGORICAL = "numeric", "categorical"


def table(x: object, names: list[object] | None = None) -> Table:
    got = to_table(x, names)
    assert isinstance(got, Table), got
    return got


def rows_of(x: object) -> list[list[float]]:
    """The fast-path float64 matrix of ``x`` as nested lists."""
    t = table(x)
    assert t.matrix is not None and t.matrix.dtype == np.float64
    return t.matrix.tolist()


def values(t: Table, i: int) -> list[object]:
    """Column ``i`` as a list with NaN spelled "nan" (NaN != NaN would defeat list equality)."""
    return ["nan" if isinstance(v, float) and v != v else v for v in t.column(i).tolist()]


# -- numpy ------------------------------------------------------------------------------------------------
def test_float64_matrix_is_the_input_itself() -> None:
    x = np.arange(15, dtype=np.float64).reshape(5, 3)
    t = table(x)
    assert (t.names, t.kinds, t.rows, t.columns) == (["f0", "f1", "f2"], [NUMERIC] * 3, 5, None)
    assert t.matrix is x and np.shares_memory(t.matrix, x)
    assert np.shares_memory(t.column(1), x) and t.column(1).tolist() == [1.0, 4.0, 7.0, 10.0, 13.0]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.float32, np.bool_])
def test_int_float32_bool_matrices_become_float64(dtype: type) -> None:
    x = np.array([[0, 1], [1, 0], [1, 1]], dtype=dtype)
    t = table(x)
    assert t.matrix is not None and t.matrix.dtype == np.float64 and not np.shares_memory(t.matrix, x)
    assert t.matrix.tolist() == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    assert (t.names, t.kinds, t.rows) == (["f0", "f1"], [NUMERIC, NUMERIC], 3)


def test_one_dimensional_array_is_n_rows_of_one_feature() -> None:
    x = np.array([3.5, -1.0, 2.0])
    t = table(x)
    assert (t.names, t.kinds, t.rows) == (["f0"], [NUMERIC], 3)
    assert t.matrix is not None and t.matrix.shape == (3, 1) and np.shares_memory(t.matrix, x)
    assert t.column(0).tolist() == [3.5, -1.0, 2.0]


@pytest.mark.parametrize("x", [np.array(1.5), np.float64(1.5), np.int32(3), 7, 2.5, True, "text"])
def test_scalars_are_skipped(x: object) -> None:
    assert to_table(x) == Skip("input_scalar")


def test_three_dimensional_array_is_skipped() -> None:
    assert to_table(np.zeros((2, 3, 4))) == Skip("input_ndim")


def test_unsupported_dtype_is_skipped() -> None:
    assert to_table(np.zeros((2, 2), dtype=np.complex128)) == Skip("input_dtype")
    assert to_table(np.array([["2024-01-01"]], dtype="datetime64[D]")) == Skip("input_dtype")


def test_object_matrix_mixed_str_float_none() -> None:
    x = np.array([[1.5, "a", None], [2.5, "b", 3.0], [None, None, "x"]], dtype=object)
    t = table(x)
    assert (t.names, t.kinds, t.rows, t.matrix) == (["f0", "f1", "f2"], [NUMERIC, CATEGORICAL, NUMERIC], 3, None)
    assert [values(t, i) for i in range(3)] == [[1.5, 2.5, None], ["a", "b", None], [None, 3.0, "x"]]
    assert np.shares_memory(t.column(0), x)  # object columns are views, not copies


def test_string_matrix_is_categorical_object_columns() -> None:
    t = table(np.array([["a", "x"], ["b", "y"]]))
    assert (t.kinds, t.rows) == ([CATEGORICAL, CATEGORICAL], 2)
    assert t.column(1).dtype == object and values(t, 1) == ["x", "y"]


def test_memmap_reads_without_copy(tmp_path: pytest.TempPathFactory) -> None:
    mm = np.lib.format.open_memmap(f"{tmp_path}/x.npy", mode="w+", dtype=np.float64, shape=(4, 2))
    mm[:] = [[1, 2], [3, 4], [5, 6], [7, 8]]
    t = table(mm)
    assert t.matrix is not None and np.shares_memory(t.matrix, mm) and t.column(1).tolist() == [2.0, 4.0, 6.0, 8.0]


# -- pandas -----------------------------------------------------------------------------------------------
def test_dataframe_columns_of_every_dtype() -> None:
    df = pd.DataFrame(
        {
            "amount": [1.5, np.nan, 3.0],
            "n_items": np.array([1, 2, 3], dtype=np.int64),
            "country": pd.Categorical(["FR", "DE", "FR"]),
            "note": pd.Series(["a", None, "c"], dtype=object),
            "clicks": pd.array([4, pd.NA, 6], dtype="Int64"),
            "flag": pd.array([True, pd.NA, False], dtype="boolean"),
            "ratio": pd.array([0.5, pd.NA, 1.5], dtype="Float64"),
            "seen": pd.to_datetime(["2024-01-01", "2024-01-02", None]),
        }
    )
    t = table(df)
    assert t.names == list(df.columns) and t.rows == 3
    assert t.kinds == [NUMERIC, NUMERIC, CATEGORICAL, CATEGORICAL, NUMERIC, NUMERIC, NUMERIC, CATEGORICAL]
    assert [values(t, i) for i in range(8)] == [
        [1.5, "nan", 3.0],
        [1.0, 2.0, 3.0],
        ["FR", "DE", "FR"],
        ["a", None, "c"],
        [4.0, "nan", 6.0],  # nullable Int64: NA -> NaN, as float64
        [1.0, "nan", 0.0],  # nullable boolean
        [0.5, "nan", 1.5],
        [None, None, None],  # datetimes are not summarised
    ]
    assert [t.column(i).dtype for i in (0, 1, 4, 5, 6)] == [np.float64] * 5


def test_dataframe_string_dtypes_are_categorical() -> None:
    df = pd.DataFrame({"s": pd.Series(["x", None, "y"], dtype="str"), "t": pd.array(["u", pd.NA, "v"], "string")})
    t = table(df)
    assert t.kinds == [CATEGORICAL, CATEGORICAL]
    assert values(t, 0) == ["x", "nan", "y"] and values(t, 1)[0::2] == ["u", "v"] and values(t, 1)[1] is pd.NA


def test_object_column_starting_with_pd_na_does_not_raise() -> None:
    df = pd.DataFrame({"t": pd.array([pd.NA, "u"], dtype="string")})
    assert table(df).kinds == [CATEGORICAL]


def test_object_column_of_arrays_does_not_raise() -> None:
    assert table(np.array([np.zeros(2), np.ones(2), None], dtype=object)).kinds == [CATEGORICAL]


def test_series_is_one_feature_named_after_it() -> None:
    t = table(pd.Series([1, 2, 3], name="age"))
    assert (t.names, t.kinds, t.rows, values(t, 0)) == (["age"], [NUMERIC], 3, [1.0, 2.0, 3.0])


def test_duplicate_non_str_and_missing_column_names_stay_distinct() -> None:
    df = pd.DataFrame([[1.0, 2.0, 3.0, 4.0]], columns=["a", "a", 7, None])
    assert table(df).names == ["a", "a#1", "7", "f3"]


def test_multiindex_columns_are_joined_with_slashes() -> None:
    df = pd.DataFrame([[1.0, 2.0]], columns=pd.MultiIndex.from_tuples([("price", "eur"), ("price", "usd")]))
    assert table(df).names == ["price/eur", "price/usd"]


def test_long_names_are_bounded_and_distinct() -> None:
    names = table(pd.DataFrame([[1.0, 2.0]], columns=["n" * 100, "n" * 200])).names
    assert names == ["n" * MAX_NAME_LENGTH, "n" * (MAX_NAME_LENGTH - 8) + "#1"]
    assert all(len(n) <= MAX_NAME_LENGTH for n in names)


def test_generated_duplicate_name_cannot_collide() -> None:
    names = table(np.zeros((1, 3)), ["a#2", "a", "a"]).names
    assert len(set(names)) == 3


def test_control_characters_in_names_are_replaced() -> None:
    t = table(np.zeros((1, 4)), ["a\nb", "tab\there", "\x00", ""])
    assert t.names == ["a?b", "tab?here", "?", "f3"]
    assert feature_name("x\x1b[31m", 0) == "x?[31m" and feature_name(None, 5) == "f5"


def test_feature_names_override_derived_names() -> None:
    assert table(np.zeros((2, 3)), ["a", "b"]).names == ["a", "b", "f2"]  # missing ones fall back to f<i>
    df = pd.DataFrame({"x": [1.0], "y": ["k"]})
    t = table(df, ["amount", "kind"])
    assert (t.names, t.kinds, values(t, 1)) == (["amount", "kind"], [NUMERIC, CATEGORICAL], ["k"])
    assert table({"x": [1.0], "y": [2.0]}, ["p", "q"]).names == ["p", "q"]


# -- Python containers ------------------------------------------------------------------------------------
def test_dict_of_columns() -> None:
    t = table({"x": [1.5, 2.5], "y": np.array(["a", "b"]), "z": np.array([1, 2], dtype=np.int32), "w": (None, "q")})
    assert (t.names, t.kinds, t.rows) == (["x", "y", "z", "w"], [NUMERIC, CATEGORICAL, NUMERIC, CATEGORICAL], 2)
    assert [values(t, i) for i in range(4)] == [[1.5, 2.5], ["a", "b"], [1.0, 2.0], [None, "q"]]
    assert t.column(2).dtype == np.float64 and t.column(1).dtype == object


@pytest.mark.parametrize(
    ("x", "reason"),
    [
        ({"x": [1.0, 2.0], "y": [1.0]}, "input_shape"),  # unequal lengths
        ({"x": np.zeros((2, 2))}, "input_shape"),
        ({}, "input_type"),
        ({"x": 1.0}, "input_type"),
        ({"x": pd.Series([1.0])}, "input_type"),
    ],
)
def test_dict_that_is_not_columns_is_skipped(x: object, reason: str) -> None:
    assert to_table(x) == Skip(reason)


@pytest.mark.parametrize("x", [{"x": np.array(1.0)}, {"x": [[1, 2], [3]]}], ids=["0-d", "ragged"])
def test_dict_with_odd_values_is_skipped_not_raised(x: object) -> None:
    assert to_table(x) == Skip("input_shape")


def test_list_of_rows() -> None:
    t = table([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert (t.names, t.kinds, t.rows) == (["f0", "f1"], [NUMERIC, NUMERIC], 3)
    assert t.matrix is not None and t.matrix.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    t = table([("a", None), ("b", 1.5)])
    assert (t.kinds, values(t, 0), values(t, 1)) == ([CATEGORICAL, NUMERIC], ["a", "b"], [None, 1.5])
    assert rows_of([1, 2, 3]) == [[1.0], [2.0], [3.0]]


def test_list_of_mixed_rows_keeps_numbers_numeric() -> None:
    t = table([[1.5, "a"], [2.0, "b"]])
    assert (t.kinds, values(t, 0)) == ([NUMERIC, CATEGORICAL], [1.5, 2.0])


def test_list_inputs_that_are_skipped_or_empty() -> None:
    assert to_table([{"a": 1.0}, {"a": 2.0}]) == Skip("input_type")
    assert to_table([[1.0, 2.0], [3.0]]) == Skip("input_shape")
    empty = table([])
    assert (empty.names, empty.kinds, empty.rows) == ([], [], 0)


# -- other libraries and objects --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.csr_array])
def test_scipy_sparse_is_skipped_without_densifying(make: type, monkeypatch: pytest.MonkeyPatch) -> None:
    x = make(np.eye(3))

    def densify(*_: object, **__: object) -> None:
        raise AssertionError("densified")

    for name in ("toarray", "todense", "__array__"):
        monkeypatch.setattr(type(x), name, densify, raising=False)
    assert to_table(x) == Skip("input_sparse")


def test_generator_is_skipped_and_not_consumed() -> None:
    gen = (float(i) for i in range(3))
    assert to_table(gen) == Skip("input_type")
    assert list(gen) == [0.0, 1.0, 2.0]


def test_unknown_objects_are_skipped() -> None:
    assert to_table(object()) == Skip("input_type")
    assert to_table(None) == Skip("input_type")
    assert table({"d": [dt.date(2024, 1, 1)]}).kinds == [CATEGORICAL]


# -- torch ------------------------------------------------------------------------------------------------
def _torch() -> Any:
    """torch, imported only by the tests that need it (skipped when it is not installed)."""
    return pytest.importorskip("torch")


def test_torch_tensor_requiring_grad_is_read_and_left_untouched() -> None:
    torch = _torch()
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    y = x * 2  # non-leaf with a grad_fn
    before = (x.requires_grad, x.grad_fn, x._version, y.grad_fn, y._version)
    t = table(x)
    assert (t.names, t.kinds, t.rows) == (["f0", "f1", "f2"], [NUMERIC] * 3, 2)
    assert rows_of(x) == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert rows_of(y) == [[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]
    assert (x.requires_grad, x.grad_fn, x._version, y.grad_fn, y._version) == before
    assert x.grad is None and x.dtype == torch.float32 and y.requires_grad


def test_torch_non_contiguous_tensor() -> None:
    torch = _torch()
    base = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    x = base.t()  # 2 x 3, not contiguous
    assert not x.is_contiguous() and x.shape == (2, 3)
    assert rows_of(x) == [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]


def test_torch_bfloat16_float16_and_int_tensors() -> None:
    torch = _torch()
    x = torch.tensor([[0.1, 1000.3], [-2.5, 3.14159]], dtype=torch.bfloat16)
    assert rows_of(x) == x.float().tolist() == [[0.10009765625, 1000.0], [-2.5, 3.140625]]
    assert x.dtype == torch.bfloat16  # the input keeps its dtype
    assert rows_of(torch.tensor([[0.5]], dtype=torch.float16)) == [[0.5]]
    assert rows_of(torch.tensor([1, 2], dtype=torch.int64)) == [[1.0], [2.0]]


def test_torch_scalar_and_3d_tensors_are_skipped() -> None:
    torch = _torch()
    assert to_table(torch.tensor(1.0)) == Skip("input_scalar")
    assert to_table(torch.zeros(2, 2, 2)) == Skip("input_ndim")
    assert to_table(torch.zeros(2, 2, dtype=torch.complex64)) == Skip("input_dtype")


def test_torch_sparse_tensor_is_skipped() -> None:
    torch = _torch()
    assert to_table(torch.eye(3).to_sparse()) == Skip("input_sparse")


def test_host_array_views_numpy_and_cpu_float_tensors_only() -> None:
    arr = np.ones((3, 2))
    assert host_array(arr) is arr
    t = torch.ones(3, 2)
    view = host_array(t)
    assert view is not None and view.dtype == np.float32 and np.shares_memory(view, t.numpy())
    assert host_array(torch.ones(3, 2, dtype=torch.float64)) is not None
    for other in (
        torch.ones(3, 2, requires_grad=True),  # numpy() would raise: the slow path detaches
        torch.ones(3, 2, dtype=torch.float16),
        torch.ones(3, 2, dtype=torch.int64),
        torch.ones(3, 2).to_sparse(),
        [[1.0, 2.0]],
        np.float64(1.0),
    ):
        assert host_array(other) is None
