"""Reading confidence, class counts and regression values from every kind of model output."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from otel_ml._core import outputs
from otel_ml._core.outputs import EMPTY, Analysis, analyze, python_labels, resolve_kind

RNG = np.random.default_rng(1234)
PROBA = RNG.dirichlet(np.ones(4), size=50)  # rows of 4 class probabilities
LOGITS = RNG.normal(0.0, 3.0, size=(50, 4))
SCORES_1D = RNG.normal(0.0, 4.0, size=60)


# -- reference computations --------------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _binary_confidence(scores: np.ndarray) -> np.ndarray:
    """max(p, 1 - p) for p = sigmoid(score), computed without cancellation."""
    return _sigmoid(np.abs(scores))


def _class_counts(top: np.ndarray, names: Any = None) -> list[tuple[object, int]]:
    values, counts = np.unique(top, return_counts=True)
    return [(int(v) if names is None else names[int(v)], int(c)) for v, c in zip(values, counts, strict=True)]


def _assert_close(actual: np.ndarray | None, expected: np.ndarray, rtol: float = 1e-12) -> None:
    assert actual is not None
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0.0)


FLOAT32_RTOL = 1e-6  # softmax confidence is computed in the output's own precision (float32 logits stay float32)


# -- resolve_kind ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("requested", "operation", "expected"),
    [
        ("auto", "predict_proba", "proba"),
        ("auto", "predict_log_proba", "log_proba"),
        ("auto", "decision_function", "scores"),
        ("auto", "predict", "auto"),
        ("auto", "__call__", "auto"),
        ("labels", "predict_proba", "labels"),
        ("none", "decision_function", "none"),
        ("regression", "predict", "regression"),
    ],
)
def test_resolve_kind(requested: str, operation: str, expected: str) -> None:
    assert resolve_kind(requested, operation) == expected


def test_kinds_are_the_documented_ones() -> None:
    assert {"auto", "proba", "log_proba", "scores", "logits", "labels", "regression", "none"} == outputs.KINDS


# -- probabilities, scores, logits ---------------------------------------------------------------------------
def test_proba_confidence_is_the_top_class_probability() -> None:
    result = analyze(PROBA, "proba", None, None)
    assert result.values is None
    assert result.confidence is not None
    np.testing.assert_array_equal(result.confidence, PROBA.max(axis=1))
    assert result.class_counts == _class_counts(PROBA.argmax(axis=1))
    assert sum(n for _, n in result.class_counts) == 50


def test_log_proba_is_read_after_exp() -> None:
    result = analyze(np.log(PROBA), "log_proba", None, None)
    _assert_close(result.confidence, PROBA.max(axis=1))
    assert result.class_counts == _class_counts(PROBA.argmax(axis=1))


@pytest.mark.parametrize("kind", ["scores", "logits"])
def test_two_dimensional_scores_and_logits_go_through_softmax(kind: str) -> None:
    result = analyze(LOGITS, kind, None, None)
    expected = _softmax(LOGITS)
    _assert_close(result.confidence, expected.max(axis=1))
    assert result.class_counts == _class_counts(expected.argmax(axis=1))


@pytest.mark.parametrize("kind", ["scores", "logits"])
def test_one_dimensional_scores_and_logits_go_through_sigmoid(kind: str) -> None:
    result = analyze(SCORES_1D, kind, None, None)
    _assert_close(result.confidence, _binary_confidence(SCORES_1D))
    assert result.class_counts == _class_counts((SCORES_1D > 0).astype(int))


def test_one_column_proba_is_the_positive_class_probability() -> None:
    p1 = np.array([[0.9], [0.2], [0.5], [0.65]])
    result = analyze(p1, "proba", ["neg", "pos"], None)
    assert result.confidence is not None
    np.testing.assert_array_equal(result.confidence, [0.9, 0.8, 0.5, 0.65])
    assert result.class_counts == [("neg", 2), ("pos", 2)]  # a 0.5 tie goes to the first class


def test_binary_float32_logits_are_read_in_float64() -> None:
    """Two float32 logits: the class is ``c1 > c0`` exactly (a tie goes to class 0) and the confidence is the
    float64 sigmoid of the gap, so a confident row is not rounded to 1.0 as float32 arithmetic would."""
    c0 = np.array([0.0, 1.5, -2.0, 3.0, 1e-3, 7.25, 0.0, -40.0], dtype=np.float32)
    c1 = np.array([20.0, 1.5, -2.0000002, -3.0, 1e-3, 7.5, -30.0, 40.0], dtype=np.float32)
    c1[4] = np.nextafter(c1[4], np.float32(1.0))  # the smallest float32 win
    logits = np.stack([c0, c1], axis=1)
    result = analyze(logits, "logits", ["no", "yes"], None)
    gap = c1.astype(np.float64) - c0.astype(np.float64)
    _assert_close(result.confidence, 1.0 / (1.0 + np.exp(-np.abs(gap))), rtol=1e-15)
    assert result.confidence is not None and result.confidence.dtype == np.float64
    assert result.confidence[0] < 1.0 and result.confidence[1] == 0.5  # float32 math would give exactly 1.0
    assert result.class_counts == [("no", 4), ("yes", 4)]  # the tie (row 1) is "no", the one-ulp win (row 4) "yes"
    assert 0.5 < result.confidence[4] < 0.5 + 1e-9
    assert result.confidence_sum == pytest.approx(float(result.confidence.sum()), rel=1e-15)


def test_binary_float32_scores_are_read_in_float64() -> None:
    scores = np.array([25.0, -25.0, 0.0, 1e-6, -3.5], dtype=np.float32)
    frozen = scores.copy()
    frozen.flags.writeable = False
    result = analyze(frozen, "scores", None, None)
    _assert_close(result.confidence, _binary_confidence(scores.astype(np.float64)), rtol=1e-15)
    assert result.confidence is not None and (result.confidence < 1.0).all()
    assert result.class_counts == [(0, 3), (1, 2)]
    np.testing.assert_array_equal(frozen, scores)


def test_softmax_is_stable_for_huge_logits() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [-5e5, -5e5 + 2.0, -5e5 + 1.0]])
    result = analyze(logits, "logits", None, None)
    _assert_close(result.confidence, np.array([1.0, _softmax(np.array([[0.0, 2.0, 1.0]]))[0, 1]]))
    assert result.class_counts == [(0, 1), (1, 1)]


# -- labels and regression ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (np.array([2, 0, 2, 1, 2]), [(0, 1), (1, 1), (2, 3)]),
        (np.array([7, 7, 3], dtype=np.uint8), [(3, 1), (7, 2)]),
        (np.array(["cat", "dog", "cat"]), [("cat", 2), ("dog", 1)]),
        (np.array([b"x", b"y", b"x"]), [(b"x", 2), (b"y", 1)]),
        (np.array(["b", 3, None, "b"], dtype=object), [("b", 2), (3, 1), (None, 1)]),
        (np.array([True, False, True]), [(False, 1), (True, 2)]),
        (np.array([[1], [0], [1]]), [(0, 1), (1, 2)]),  # an (n, 1) column of labels
        (["spam", "ham", "spam"], [("ham", 1), ("spam", 2)]),
        ([1, 1, 1], [(1, 3)]),
    ],
    ids=["int", "uint8", "str", "bytes", "object", "bool", "column", "list-str", "list-int"],
)
@pytest.mark.parametrize("kind", ["labels", "auto"])
def test_label_counts(labels: Any, expected: list[tuple[object, int]], kind: str) -> None:
    result = analyze(labels, kind, None, None)
    assert result == Analysis(class_counts=expected)
    assert [type(label) for label, _ in result.class_counts or []] == [type(label) for label, _ in expected]


def test_unhashable_object_labels_are_counted_together() -> None:
    labels = np.empty(4, dtype=object)
    labels[:] = [[1], "x", {"a": 1}, "x"]
    assert analyze(labels, "labels", None, None).class_counts == [("__unhashable__", 2), ("x", 2)]


def test_a_single_unhashable_label_is_counted_like_in_a_batch() -> None:
    batch = analyze([{"label": "POS", "score": 0.9}, {"label": "NEG", "score": 0.8}], "auto", None, None)
    assert batch.class_counts == [("__unhashable__", 2)]
    single = analyze([{"label": "POS", "score": 0.9}], "auto", None, None)
    assert single.class_counts == [("__unhashable__", 1)]


def test_labels_kind_on_a_wide_matrix_gives_no_counts() -> None:
    assert analyze(np.array([[0, 1], [1, 1]]), "labels", None, None) == Analysis(class_counts=None)


@pytest.mark.parametrize(
    "out",
    [np.array([1.5, np.nan, -2.0, np.inf, -np.inf, 0.0]), np.array([[1.5, np.nan], [-2.0, np.inf], [-np.inf, 0.0]])],
    ids=["1d", "2d"],
)
def test_regression_values_are_flattened_and_non_finite_dropped(out: np.ndarray) -> None:
    result = analyze(out, "regression", None, None)
    assert result.confidence is None and result.class_counts is None
    assert result.values is not None
    np.testing.assert_array_equal(result.values, [1.5, -2.0, 0.0])
    assert result.values.dtype == np.float64


def test_regression_reads_integer_outputs_as_floats() -> None:
    result = analyze(np.array([3, -1, 4]), "regression", None, None)
    assert result.values is not None
    np.testing.assert_array_equal(result.values, [3.0, -1.0, 4.0])
    assert result.values.dtype == np.float64


def test_none_reads_nothing() -> None:
    assert analyze(PROBA, "none", None, None) is EMPTY
    assert Analysis(confidence=None, class_counts=None, values=None) == EMPTY


# -- auto guesses ------------------------------------------------------------------------------------------
def test_auto_reads_probability_rows_as_proba() -> None:
    result = analyze(PROBA, "auto", None, None)
    assert result.confidence is not None
    np.testing.assert_array_equal(result.confidence, PROBA.max(axis=1))  # not a softmax of probabilities


def test_auto_tolerates_rounding_in_probability_rows() -> None:
    rows = np.array([[0.3004, 0.7], [0.5, 0.4995]])  # sums 1.0004 and 0.9995: within 1e-3
    result = analyze(rows, "auto", None, None)
    assert result.confidence is not None
    np.testing.assert_array_equal(result.confidence, [0.7, 0.5])


@pytest.mark.parametrize(
    "rows",
    [np.array([[0.2, 0.81], [0.5, 0.5]]), np.array([[-0.5, 1.5], [0.25, 0.75]]), LOGITS],
    ids=["sum-off", "negative", "logits"],
)
def test_auto_reads_other_float_matrices_as_logits(rows: np.ndarray) -> None:
    result = analyze(rows, "auto", None, None)
    expected = _softmax(rows)
    _assert_close(result.confidence, expected.max(axis=1))
    assert result.class_counts == _class_counts(expected.argmax(axis=1))


def test_auto_reads_float_vectors_as_regression_unless_the_task_is_classification() -> None:
    out = np.array([0.0, 1.0, 1.0, 2.5])
    regression = analyze(out, "auto", None, None)
    assert regression.values is not None and regression.class_counts is None
    np.testing.assert_array_equal(regression.values, out)
    assert analyze(out, "auto", None, "regression").values is not None
    assert analyze(out, "auto", None, "classification") == Analysis(class_counts=[(0.0, 1), (1.0, 2), (2.5, 1)])
    column = analyze(out.reshape(-1, 1), "auto", None, None)
    assert column.values is not None
    np.testing.assert_array_equal(column.values, out)


def test_auto_with_a_regression_task_reads_matrices_as_values() -> None:
    result = analyze(PROBA[:3], "auto", None, "regression")
    assert result.confidence is None and result.class_counts is None
    assert result.values is not None
    np.testing.assert_array_equal(result.values, PROBA[:3].reshape(-1))


def test_auto_with_a_classification_task_still_reads_probabilities() -> None:
    result = analyze(PROBA, "auto", None, "classification")
    assert result.confidence is not None
    np.testing.assert_array_equal(result.confidence, PROBA.max(axis=1))


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((3, 4, 2)),
        np.zeros((2, 3, 4), dtype=np.int64),
        np.array([], dtype=np.float64).reshape(0, 0),
    ],
    ids=["3d", "3d-int", "0x0"],
)
def test_auto_reads_nothing_from_unknown_shapes(out: np.ndarray) -> None:
    assert analyze(out, "auto", None, None) == EMPTY


@pytest.mark.parametrize(
    "out",
    [
        np.array([[0, 1], [1, 1], [2, 0]]),
        np.array([[True, False], [False, True]]),
        np.array([["a", "b"], ["c", "d"]]),
        np.array([["a", 1], ["c", 2]], dtype=object),
        np.array([[1 + 2j, 3j], [2j, 1 + 0j]]),
        np.array([1 + 2j, 3j]),
    ],
    ids=["int", "bool", "str", "object", "complex", "complex-1d"],
)
@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
def test_auto_reads_nothing_when_the_guess_is_none(out: np.ndarray) -> None:
    assert outputs._guess(out, None) == "none"
    result = analyze(out, "auto", None, None)
    assert (result.confidence, result.class_counts, result.values) == (None, None, None)


def test_empty_outputs() -> None:
    assert analyze(np.empty((0, 3)), "proba", None, None) == EMPTY
    assert analyze(np.empty((0, 3)), "logits", None, None) == EMPTY
    empty = analyze([], "auto", None, None)
    assert empty.values is not None and empty.values.size == 0


# -- single-row fast path ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "batch"),
    [("proba", PROBA), ("log_proba", np.log(PROBA)), ("logits", LOGITS), ("scores", LOGITS), ("scores", SCORES_1D)],
    ids=["proba", "log_proba", "logits", "scores-2d", "scores-1d"],
)
@pytest.mark.parametrize("classes", [None, ["a", "b", "c", "d"], ["neg", "pos"]], ids=["none", "four", "two"])
def test_single_row_fast_path_equals_the_batch_path(kind: str, batch: np.ndarray, classes: list[str] | None) -> None:
    full = analyze(batch, kind, classes, None)
    assert full.confidence is not None and full.class_counts is not None
    labels: list[object] = []
    for i in range(batch.shape[0]):
        single = analyze(batch[i : i + 1], kind, classes, None)
        assert single.confidence is None and single.class_counts is not None  # one float, no array
        assert single.top is not None and type(single.top) is float
        assert single.top == pytest.approx(full.confidence[i], rel=1e-15, abs=0.0)
        ((label, n),) = single.class_counts
        assert n == 1
        labels.append(label)
    counts = {label: labels.count(label) for label in labels}
    assert dict(full.class_counts) == counts


def test_single_row_labels_and_values_equal_the_batch_path() -> None:
    assert analyze(np.array([3]), "auto", None, None).class_counts == [(3, 1)]
    assert analyze(np.array(["x"]), "auto", None, None).class_counts == [("x", 1)]
    single = analyze(np.array([2.5]), "auto", None, None)
    assert single.values is not None
    np.testing.assert_array_equal(single.values, [2.5])


# -- non-finite rows ---------------------------------------------------------------------------------------
def test_rows_with_nan_probabilities_are_dropped() -> None:
    rows = np.array([[0.2, 0.8], [np.nan, 0.5], [0.6, 0.4], [0.1, np.nan]])
    result = analyze(rows, "proba", None, None)
    assert result.confidence is not None
    np.testing.assert_array_equal(result.confidence, [0.8, 0.6])
    assert result.class_counts == [(0, 1), (1, 1)]


@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")
def test_rows_with_infinite_logits_are_dropped_from_confidence() -> None:
    rows = np.array([[1.0, np.inf, 0.0], [-np.inf, 0.0, 1.0], [np.nan, 0.0, 0.0], [2.0, 1.0, 0.0]])
    result = analyze(rows, "logits", None, None)
    finite = rows[[1, 3]]
    _assert_close(result.confidence, _softmax(np.where(np.isinf(finite), -1e300, finite)).max(axis=1))
    assert result.class_counts == [(0, 1), (2, 1)]


def test_nan_scores_are_dropped() -> None:
    result = analyze(np.array([np.nan, 2.0, -1.0]), "scores", None, None)
    _assert_close(result.confidence, _binary_confidence(np.array([2.0, -1.0])))
    assert result.class_counts == [(0, 1), (1, 1)]


@pytest.mark.parametrize(
    ("kind", "row"),
    [("proba", [[np.nan, 0.5]]), ("logits", [[np.inf, 0.0]]), ("scores", [np.nan]), ("log_proba", [[np.nan, 0.0]])],
)
@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")
def test_a_single_non_finite_row_gives_nothing(kind: str, row: list[Any]) -> None:
    assert analyze(np.array(row), kind, None, None) == EMPTY


def test_all_rows_non_finite_gives_empty_confidence() -> None:
    result = analyze(np.array([[np.nan, 0.5], [np.nan, np.nan]]), "proba", None, None)
    assert result.confidence is not None and result.confidence.size == 0
    assert result.class_counts == []


# -- classes -----------------------------------------------------------------------------------------------
def test_classes_name_the_probability_columns() -> None:
    rows = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.0, 0.9, 0.1]])
    assert analyze(rows, "proba", ["ant", "bee", "cat"], None).class_counts == [("ant", 1), ("bee", 2)]
    assert analyze(rows[:1], "proba", ("ant", "bee", "cat"), None).class_counts == [("bee", 1)]
    numeric = np.array([10, 20, 30])  # e.g. an estimator's classes_
    assert analyze(rows, "proba", numeric, None).class_counts == [(10, 1), (20, 2)]  # type: ignore[arg-type]


def test_classes_of_the_wrong_length_fall_back_to_indices() -> None:
    rows = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    assert analyze(rows, "proba", ["ant", "bee"], None).class_counts == [(0, 1), (1, 1)]
    assert analyze(rows[:1], "proba", ["ant"], None).class_counts == [(1, 1)]


def test_classes_name_binary_scores() -> None:
    assert analyze(np.array([-2.0, 3.0, 0.5]), "scores", ["ham", "spam"], None).class_counts == [
        ("ham", 1),
        ("spam", 2),
    ]


def test_arrays_are_read_without_writing_to_them() -> None:
    for kind, arr in [("proba", PROBA), ("log_proba", np.log(PROBA)), ("logits", LOGITS), ("scores", SCORES_1D)]:
        frozen = arr.copy()
        frozen.flags.writeable = False
        analyze(frozen, kind, None, None)
        np.testing.assert_array_equal(frozen, arr)


# -- torch -------------------------------------------------------------------------------------------------
def _torch_logits(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(42)
    return (torch.randn(*shape, generator=gen) * 3).to(dtype)


def test_torch_leaf_tensor_with_requires_grad_is_read_untouched() -> None:
    t = _torch_logits(8, 5, dtype=torch.float64).requires_grad_(True)
    before = t.detach().clone()
    result = analyze(t, "logits", None, None)
    expected = torch.softmax(before, dim=1)
    _assert_close(result.confidence, expected.max(dim=1).values.numpy())
    assert result.class_counts == _class_counts(expected.argmax(dim=1).numpy())
    assert t.requires_grad is True and t.grad_fn is None and t.grad is None and t.is_leaf
    assert torch.equal(t.detach(), before)


def test_torch_non_leaf_keeps_its_graph() -> None:
    w = _torch_logits(6, 3).requires_grad_(True)
    y = w * 2.0
    grad_fn = y.grad_fn
    result = analyze(y, "logits", None, None)
    _assert_close(
        result.confidence, torch.softmax(y.detach().double(), dim=1).max(dim=1).values.numpy(), rtol=FLOAT32_RTOL
    )
    assert y.requires_grad is True and y.grad_fn is grad_fn
    y.sum().backward()  # the graph still works
    assert w.grad is not None and torch.equal(w.grad, torch.full((6, 3), 2.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_torch_half_precision_is_read_as_float(dtype: torch.dtype) -> None:
    t = _torch_logits(7, 4, dtype=dtype)
    before = t.clone()
    result = analyze(t, "logits", None, None)
    expected = torch.softmax(t.double(), dim=1)
    _assert_close(result.confidence, expected.max(dim=1).values.numpy(), rtol=FLOAT32_RTOL)
    assert result.class_counts == _class_counts(expected.argmax(dim=1).numpy())
    assert t.dtype == dtype and torch.equal(t, before)


def test_torch_non_contiguous_tensor() -> None:
    base = _torch_logits(4, 9)
    t = base.t()  # 9 x 4, a transposed view
    stride = t.stride()
    assert not t.is_contiguous()
    result = analyze(t, "logits", None, None)
    expected = torch.softmax(t.double(), dim=1)
    _assert_close(result.confidence, expected.max(dim=1).values.numpy(), rtol=FLOAT32_RTOL)
    assert result.class_counts == _class_counts(expected.argmax(dim=1).numpy())
    assert not t.is_contiguous() and t.stride() == stride


def test_torch_probabilities_sigmoid_and_labels() -> None:
    probs = torch.softmax(_torch_logits(5, 3, dtype=torch.float64), dim=1)
    auto = analyze(probs, "auto", None, None)
    assert auto.confidence is not None
    np.testing.assert_array_equal(auto.confidence, probs.max(dim=1).values.numpy())
    scores = _torch_logits(6, dtype=torch.float64)
    binary = analyze(scores, "scores", None, None)
    _assert_close(binary.confidence, torch.sigmoid(scores.abs()).numpy())
    assert analyze(torch.tensor([2, 0, 2]), "auto", None, None) == Analysis(class_counts=[(0, 1), (2, 2)])
    assert analyze(torch.tensor([True, True]), "auto", None, None) == Analysis(class_counts=[(True, 2)])


def test_torch_zero_dimensional_tensors() -> None:
    value = analyze(torch.tensor(0.25), "auto", None, None)
    assert value.values is not None
    np.testing.assert_array_equal(value.values, [0.25])
    assert analyze(torch.tensor(3), "auto", None, None).class_counts == [(3, 1)]


# -- pandas ------------------------------------------------------------------------------------------------
def test_pandas_dataframe_of_probabilities() -> None:
    frame = pd.DataFrame(PROBA[:10], columns=["a", "b", "c", "d"])
    result = analyze(frame, "auto", None, None)
    assert result.confidence is not None
    np.testing.assert_array_equal(result.confidence, PROBA[:10].max(axis=1))
    assert result.class_counts == _class_counts(PROBA[:10].argmax(axis=1))


def test_pandas_series_of_labels() -> None:
    result = analyze(pd.Series(["yes", "no", "yes"]), "auto", None, None)
    assert result.class_counts == [("yes", 2), ("no", 1)]  # object labels: counted in order of appearance
    assert analyze(pd.Series([3, 1, 3]), "auto", None, None).class_counts == [(1, 1), (3, 2)]
    assert analyze(pd.DataFrame({"label": [3, 1, 3]}), "auto", None, None).class_counts == [(1, 1), (3, 2)]


def test_pandas_series_of_regression_values() -> None:
    result = analyze(pd.Series([1.5, np.nan, 3.0]), "auto", None, None)
    assert result.values is not None
    np.testing.assert_array_equal(result.values, [1.5, 3.0])


def test_pandas_extension_arrays_are_read() -> None:
    assert analyze(pd.array([1, 2, 2]), "auto", None, None).class_counts == [(1, 1), (2, 2)]


# -- multi-output and scalars ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["auto", "proba", "labels", "regression"])
@pytest.mark.parametrize("container", [list, tuple])
def test_a_list_of_probability_matrices_gives_nothing(kind: str, container: type) -> None:
    out = container([PROBA[:5, :2] / PROBA[:5, :2].sum(axis=1, keepdims=True), PROBA[:5]])
    assert analyze(out, kind, None, None) == EMPTY


@pytest.mark.parametrize(
    ("out", "task", "expected"),
    [
        (np.float64(0.7), None, Analysis(values=np.array([0.7]))),
        (np.array(0.3), None, Analysis(values=np.array([0.3]))),
        (0.25, None, Analysis(values=np.array([0.25]))),
        (np.float64(1.0), "classification", Analysis(class_counts=[(1.0, 1)])),
        (np.int64(2), None, Analysis(class_counts=[(2, 1)])),
        (np.array(5), None, Analysis(class_counts=[(5, 1)])),
        (4, None, Analysis(class_counts=[(4, 1)])),
        ("spam", None, Analysis(class_counts=[("spam", 1)])),
        (True, None, Analysis(class_counts=[(True, 1)])),
        (np.float64(np.nan), None, Analysis(values=np.array([]))),
    ],
    ids=["np.float64", "0d-array", "float", "float-classification", "np.int64", "0d-int", "int", "str", "bool", "nan"],
)
def test_zero_dimensional_outputs(out: object, task: str | None, expected: Analysis) -> None:
    result = analyze(out, "auto", None, task)
    assert result.confidence is None
    assert result.class_counts == expected.class_counts
    if expected.values is None:
        assert result.values is None
    else:
        assert result.values is not None
        np.testing.assert_array_equal(result.values, expected.values)


def test_zero_dimensional_score_goes_through_sigmoid() -> None:
    result = analyze(np.float64(0.3), "scores", None, None)
    assert result.top == pytest.approx(_sigmoid(np.array([0.3]))[0], rel=1e-12)
    assert result.class_counts == [(1, 1)]


@pytest.mark.parametrize("out", [None, object(), {"a": 1}, b"bytes", iter([1, 2])], ids=repr)
def test_unknown_objects_give_nothing(out: object) -> None:
    assert analyze(out, "auto", None, None) == EMPTY


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["python-floats", "numpy"])
@pytest.mark.parametrize("kind", ["proba", "log_proba", "logits"])
def test_a_single_row_with_nan_has_no_confidence_wherever_the_nan_is(kind: str, dtype: type) -> None:
    """numpy's argmax picks a NaN: the batch path drops such a row, and so does the single-row path, whether
    the NaN comes before or after the largest value (Python's max alone would skip a later one)."""
    for row in ([[np.nan, 0.2, 0.7]], [[0.2, 0.7, np.nan]], [[0.7, np.nan, 0.2]]):
        arr = np.array(row, dtype=dtype)
        assert analyze(arr, kind, None, None) == EMPTY
        assert analyze(np.vstack([arr, arr]), kind, None, None).confidence.size == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["python-floats", "numpy"])
def test_single_row_edge_values_match_the_batch_path(dtype: type) -> None:
    """Ties go to the first class, -inf log-probabilities (classes a tree never predicts) are just small, and a
    log-probability too large for ``exp`` gives no confidence instead of an OverflowError."""
    tie = analyze(np.array([[0.4, 0.4, 0.2]], dtype=dtype), "proba", ["a", "b", "c"], None)
    assert tie.class_counts == [("a", 1)] and tie.top == pytest.approx(0.4)
    log = analyze(np.array([[-np.inf, np.log(0.25), np.log(0.75)]], dtype=dtype), "log_proba", None, None)
    assert log.class_counts == [(2, 1)] and log.top == pytest.approx(0.75, rel=1e-6)
    assert analyze(np.array([[1000.0, 0.0]], dtype=dtype), "log_proba", None, None) == EMPTY
    everything_impossible = analyze(np.array([[-np.inf, -np.inf]], dtype=dtype), "log_proba", None, None)
    assert everything_impossible.top == 0.0
    assert analyze(np.array([[np.inf, 0.0]], dtype=dtype), "logits", None, None) == EMPTY
    assert analyze(np.array([[-np.inf, -np.inf]], dtype=dtype), "logits", None, None) == EMPTY


def test_many_classes_in_one_row_take_the_numpy_path_with_the_same_result() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 100))
    full = analyze(logits, "logits", None, None)
    assert full.confidence is not None and full.class_counts is not None
    for i in range(3):
        single = analyze(logits[i : i + 1], "logits", None, None)
        assert single.class_counts is not None and single.top == pytest.approx(full.confidence[i], rel=1e-12)
        assert single.class_counts == [(int(logits[i].argmax()), 1)]


# -- single rows of other dtypes, and class labels ----------------------------------------------------------
@pytest.mark.parametrize(
    "row",
    [np.array([[0, 1, 0]]), np.array([[0.2, 0.7, 0.1]], dtype=">f8"), np.array([[0.2, 0.7, 0.1]], dtype=np.float32)],
    ids=["int", "big-endian-float64", "float32"],
)
def test_a_single_row_of_another_dtype_reads_as_the_batch_path(row: np.ndarray) -> None:
    """Only a native float64 row is read as Python floats; integer, byte-swapped and float32 rows take the numpy
    path (integers as float64, as in a batch) and give the batch path's class and confidence."""
    batch = np.vstack([row, row])
    full = analyze(batch, "proba", ["a", "b", "c"], None)
    single = analyze(row, "proba", ["a", "b", "c"], None)
    assert full.confidence is not None and single.top is not None
    assert single.class_counts == [("b", 1)] and full.class_counts == [("b", 2)]
    assert single.top == pytest.approx(float(full.confidence[0]), rel=1e-7) and single.top == pytest.approx(
        0.7 if row.dtype.kind == "f" else 1.0, rel=1e-6
    )


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        (np.array([0, 1, 2]), [0, 1, 2]),
        (np.array([True, False]), [True, False]),
        (np.array(["cat", "dog"]), ["cat", "dog"]),
        (np.array([0.5, 1.5]), [0.5, 1.5]),
    ],
    ids=["int64", "bool", "str", "float64"],
)
def test_class_labels_become_python_values_with_the_same_text(classes: np.ndarray, expected: list[object]) -> None:
    labels = python_labels(classes)
    assert labels == expected and all(type(v) in (int, bool, str, float) for v in labels)  # type: ignore[union-attr]
    assert [str(v) for v in labels] == [str(v) for v in classes]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "classes",
    [np.array([0.1, 0.2], dtype=np.float32), np.array(["a", 1], dtype=object), np.array([[0, 1]]), ["x", "y"], None],
    ids=["float32", "object", "2-d", "list", "none"],
)
def test_other_class_labels_are_kept_as_they_are(classes: Any) -> None:
    """float32 labels would print differently as Python floats (0.1 as 0.10000000149011612)."""
    assert python_labels(classes) is classes
