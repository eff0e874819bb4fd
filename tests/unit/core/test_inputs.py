"""The batch size of every supported model input, read without copying or consuming it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from otel_ml._core.inputs import batch_size


# -- numpy -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (np.array(3.5), 1),
        (np.float64(2.0), 1),
        (np.int32(7), 1),
        (np.arange(5), 5),
        (np.zeros((4, 3)), 4),
        (np.zeros((2, 3, 4)), 2),
        (np.empty((0, 7)), 0),
        (np.empty(0), 0),
        (np.zeros((10, 4))[::2], 5),  # a strided view
        (np.zeros((3, 6)).T, 6),  # a transposed view
        (np.array(["a", "b", "c"]), 3),
    ],
    ids=["0d", "np.float64", "np.int32", "1d", "2d", "3d", "empty-0xn", "empty-1d", "strided", "transposed", "str"],
)
def test_numpy_arrays(x: object, expected: int) -> None:
    assert batch_size(x) == expected


def test_numpy_memmap(tmp_path: Path) -> None:
    mm = np.memmap(tmp_path / "x.dat", dtype=np.float32, mode="w+", shape=(7, 3))
    try:
        assert type(mm) is not np.ndarray
        assert batch_size(mm) == 7
        read_only = np.memmap(tmp_path / "x.dat", dtype=np.float32, mode="r", shape=(7, 3))
        assert batch_size(read_only) == 7
        del read_only
    finally:
        del mm


def test_read_only_array() -> None:
    x = np.zeros((9, 2))
    x.flags.writeable = False
    assert batch_size(x) == 9
    assert x.flags.writeable is False


# -- Python containers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "expected"),
    [
        ([], 0),
        ([1.0, 2.0, 3.0], 3),
        ([[1, 2], [3, 4], [5, 6], [7, 8]], 4),
        ((), 0),
        ((1, 2), 2),
        (([1, 2, 3],), 1),
        ({"a": [1, 2, 3], "b": [4, 5, 6]}, 3),
        ({"a": np.arange(4), "b": np.arange(4)}, 4),
        ({"a": (1, 2)}, 2),
        ({"a": np.zeros((6, 2))}, 6),
        ({"a": []}, 0),
        ({}, 1),
        ({"a": 5}, 1),
        ({"text": "a sentence"}, 1),
    ],
    ids=[
        "empty-list",
        "list",
        "list-of-rows",
        "empty-tuple",
        "tuple",
        "tuple-of-list",
        "dict-lists",
        "dict-arrays",
        "dict-tuple",
        "dict-2d-array",
        "dict-empty-column",
        "empty-dict",
        "dict-scalar",
        "dict-str",
    ],
)
def test_python_containers(x: object, expected: int) -> None:
    assert batch_size(x) == expected


@pytest.mark.parametrize("x", ["a sentence", b"bytes", 42, 3.5, None, object()], ids=repr)
def test_single_objects_count_as_one_row(x: object) -> None:
    assert batch_size(x) == 1


# -- pandas ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (pd.DataFrame({"a": [1, 2, 3], "b": [4.0, 5.0, 6.0]}), 3),
        (pd.Series([1.0, 2.0, 3.0, 4.0]), 4),
        (pd.DataFrame(), 0),
        (pd.DataFrame({"a": [], "b": []}), 0),
        (pd.Series([], dtype=float), 0),
        (pd.DataFrame(np.zeros((5, 2))).iloc[::2], 3),
    ],
    ids=["dataframe", "series", "empty-dataframe", "empty-with-columns", "empty-series", "sliced"],
)
def test_pandas(x: object, expected: int) -> None:
    assert batch_size(x) == expected


# -- scipy sparse ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make", [sp.csr_matrix, sp.coo_matrix, sp.csr_array, sp.coo_array, sp.csc_matrix], ids=lambda f: f.__name__
)
def test_huge_sparse_matrices_are_not_densified(make: type) -> None:
    rows, cols = np.array([0, 17, 99_999]), np.array([5, 99_999, 0])
    x = make((np.array([1.0, 2.0, 3.0]), (rows, cols)), shape=(100_000, 100_000))  # 80 GB if densified
    assert batch_size(x) == 100_000
    assert x.nnz == 3


def test_sparse_with_no_rows() -> None:
    assert batch_size(sp.csr_matrix((0, 10))) == 0


# -- torch -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (torch.tensor(1.5), 1),
        (torch.zeros(7), 7),
        (torch.zeros(5, 3), 5),
        (torch.zeros(2, 3, 4, 5), 2),
        (torch.zeros(0, 4), 0),
        (torch.zeros(4, 6).t(), 6),
    ],
    ids=["0d", "1d", "2d", "4d", "empty", "transposed"],
)
def test_torch_tensors(x: torch.Tensor, expected: int) -> None:
    assert batch_size(x) == expected


def test_torch_tensor_with_requires_grad() -> None:
    x = torch.zeros(3, 2, requires_grad=True)
    assert batch_size(x) == 3
    assert x.requires_grad is True and x.grad is None


@pytest.mark.parametrize(
    "x",
    [
        {"input_ids": torch.zeros(8, 16, dtype=torch.long), "attention_mask": torch.ones(8, 16)},
        {"age": pd.Series(np.arange(8)), "income": pd.Series(np.arange(8.0))},
    ],
    ids=["torch", "pandas"],
)
def test_dict_of_tensor_or_series_columns(x: dict[str, object]) -> None:
    assert batch_size(x) == 8


# -- objects that must not be touched ----------------------------------------------------------------------
def test_a_generator_counts_as_one_and_is_not_consumed() -> None:
    def rows() -> Iterator[int]:
        yield from range(5)

    gen = rows()
    assert batch_size(gen) == 1
    assert list(gen) == [0, 1, 2, 3, 4]


class Untouchable:
    """A user object whose size must not be asked for."""

    def __init__(self) -> None:
        self.touched: list[str] = []

    def __len__(self) -> int:
        self.touched.append("__len__")
        raise RuntimeError("__len__ must not be called")

    def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
        self.touched.append("__array__")
        raise RuntimeError("__array__ must not be called")

    def __iter__(self) -> Iterator[int]:
        self.touched.append("__iter__")
        raise RuntimeError("__iter__ must not be called")

    @property
    def shape(self) -> tuple[int, ...]:
        self.touched.append("shape")
        raise RuntimeError("shape must not be read")


def test_an_unknown_object_counts_as_one_without_calling_it() -> None:
    x = Untouchable()
    assert batch_size(x) == 1
    assert x.touched == []
    assert batch_size({"col": x}) == 1
    assert x.touched == []
