"""Turn a model's output into per-row confidence, predicted-class counts or regression values.

Output kinds (``output=`` on ``instrument``; ``auto`` picks from the operation and the array):

- ``proba``: rows of class probabilities → confidence = top-class probability, class = argmax.
- ``log_proba``: as ``proba`` after ``exp``.
- ``scores`` / ``logits``: decision scores → softmax (2-D) or sigmoid (1-D binary), then as ``proba``.
- ``labels``: predicted labels → class counts, no confidence.
- ``regression``: numeric predictions → ``ml.prediction.value``.
- ``none``: nothing read from the output.

Arrays are read in place (``np.asarray`` without copies where the input already is an array; torch tensors
through ``detach()``; CUDA tensors are never copied to the host).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

AUTO = "auto"
PROBA = "proba"
LOG_PROBA = "log_proba"
SCORES = "scores"
LOGITS = "logits"
LABELS = "labels"
REGRESSION = "regression"
NONE = "none"
KINDS = frozenset({AUTO, PROBA, LOG_PROBA, SCORES, LOGITS, LABELS, REGRESSION, NONE})

_OPERATION_KINDS = {"predict_proba": PROBA, "predict_log_proba": LOG_PROBA, "decision_function": SCORES}
_ROW_KINDS = frozenset({PROBA, LOG_PROBA, SCORES, LOGITS})  # the kinds read row by row as class scores
_FLOAT64 = np.dtype(np.float64)  # numpy's own descriptor: a native float64 array's dtype is this very object
_PROBA_TOLERANCE = 1e-3
_EXP_MAX = 709.78  # math.exp overflows (raises) above log(largest double)


class Analysis(NamedTuple):
    """What one call's output says: per-row confidence, class counts, regression values (each optional).

    A tuple, not a dataclass: it is built once per call, and a frozen dataclass's constructor costs several
    microseconds more right after the model's own work has evicted the caches."""

    confidence: np.ndarray | None = None
    class_counts: list[tuple[object, int]] | None = None
    values: np.ndarray | None = None
    confidence_sum: float | None = None  # when the reader summed ``confidence`` already
    top: float | None = None  # a single row's confidence, as a float (then ``confidence`` is None)


EMPTY = Analysis()


def to_numpy(out: object) -> np.ndarray | None:
    """A numpy view of ``out`` or ``None`` when reading it would copy device memory or is unsupported."""
    if type(out) is np.ndarray:
        return out
    module = type(out).__module__
    if module.startswith("torch"):
        if not hasattr(out, "detach"):
            return None
        t: Any = out.detach() if out.requires_grad else out  # type: ignore[attr-defined]
        if not t.is_cpu:
            return None
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        return np.asarray(t.numpy())
    if module.split(".")[0] == "pandas":
        return np.asarray(out.to_numpy())  # type: ignore[attr-defined]
    if isinstance(out, (list, tuple)):
        if out and isinstance(out[0], np.ndarray) and out[0].ndim > 1:
            return None  # multi-output classifiers return a list of 2-D arrays: one kind per output
        try:
            arr = np.asarray(out)
        except (ValueError, TypeError):
            return None
        return arr if arr.dtype != object or arr.ndim == 1 else None
    if isinstance(out, np.generic):
        return np.asarray(out)
    if isinstance(out, (int, float, bool, str)):
        return np.asarray([out])
    return None


def python_labels(classes: Sequence[object] | None) -> Sequence[object] | None:
    """A 1-D numpy array of class labels as a list of Python values, where each converts to one with the same
    text (integers, booleans, strings, float64); anything else as it is."""
    if (
        type(classes) is np.ndarray
        and classes.ndim == 1
        and (classes.dtype.kind in "biuU" or classes.dtype == _FLOAT64)
    ):
        labels: list[object] = classes.tolist()
        return labels
    return classes


def resolve_kind(requested: str, operation: str) -> str:
    """The output kind for ``operation`` when the user asked for ``requested``."""
    if requested != AUTO:
        return requested
    return _OPERATION_KINDS.get(operation, AUTO)


def analyze(out: object, kind: str, classes: Sequence[object] | None, task: str | None) -> Analysis:
    """Read confidence / classes / values from ``out`` as output ``kind`` (already resolved)."""
    if kind == NONE:
        return EMPTY
    arr = to_numpy(out)
    if arr is None:
        return EMPTY
    if kind in _ROW_KINDS:  # first, the common online case: one row of class scores
        shape = arr.shape
        if len(shape) == 2 and shape[0] == 1 and shape[1] > 1:
            return _one_row(arr, kind, classes)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if kind == AUTO:
        kind = _guess(arr, task)
        if kind == NONE:
            return EMPTY
    if kind == LABELS:
        return Analysis(class_counts=_label_counts(arr.reshape(-1) if arr.ndim > 1 and arr.shape[1] == 1 else arr))
    if kind == REGRESSION:
        values = np.asarray(arr, dtype=np.float64).reshape(-1)
        return Analysis(values=values[np.isfinite(values)])
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    top_conf = _top(arr, kind)
    if top_conf is None:
        return EMPTY
    top, confidence, k = top_conf
    if top.size == 1:  # one row of a 1-D output: scalars, no temporaries
        return _single(float(confidence[0]), int(top[0]), k, classes)
    names: Sequence[object] = classes if classes is not None and len(classes) == k else range(k)
    total = float(np.add.reduce(confidence))  # finite exactly when every confidence is (they lie in [0, 1])
    if not math.isfinite(total):
        finite = np.isfinite(confidence)
        confidence, top = confidence[finite], top[finite]
        total = float(confidence.sum())
    if top.dtype == np.bool_:  # binary: top is "class 1 wins"
        ones = int(np.count_nonzero(top))
        pairs = ((0, top.size - ones), (1, ones))
        class_counts = [(names[i], n) for i, n in pairs if n]
    else:
        counts = np.bincount(top, minlength=k)
        class_counts = [(names[int(i)], int(counts[i])) for i in np.flatnonzero(counts)]
    return Analysis(confidence=confidence, class_counts=class_counts, confidence_sum=total)


_PYTHON_ROW_CLASSES = 64
"""Up to this many classes, a float64 single row is read as Python floats."""


def _one_row(arr: np.ndarray, kind: str, classes: Sequence[object] | None) -> Analysis:
    """The single-row classifier output (the common online case), ``arr`` of shape ``(1, k)``, ``k > 1``, any
    dtype (integers are read as float64, as in the batch path): scalar arithmetic,
    no index arrays. A float64 row of up to :data:`_PYTHON_ROW_CLASSES` classes is read as Python floats: right
    after a model's own work has evicted the caches, each numpy call costs microseconds, a float operation less
    than one. Either way the result is the batch path's (numpy's argmax: the first maximum; any NaN: none)."""
    if arr.dtype is not _FLOAT64 or arr.shape[1] > _PYTHON_ROW_CLASSES:
        row = arr[0] if arr.dtype.kind == "f" else arr[0].astype(np.float64)
        return _one_row_numpy(row, kind, classes)
    values: list[float] = arr.tolist()[0]
    if math.isnan(sum(values)):  # a NaN (or +inf beside -inf): no confidence, as when argmax picks the NaN
        return EMPTY
    best = max(values)
    i = values.index(best)
    if kind == PROBA:
        c = best
    elif kind == LOG_PROBA:
        c = math.exp(best) if best < _EXP_MAX else math.inf
    elif not math.isfinite(best):  # softmax undefined (+inf, or all -inf)
        return EMPTY
    else:  # softmax of scores / logits
        c = 1.0 / sum([math.exp(v - best) for v in values])
    return _single(c, i, len(values), classes)


def _one_row_numpy(row: np.ndarray, kind: str, classes: Sequence[object] | None) -> Analysis:
    """:func:`_one_row` in the row's own dtype (float32 logits stay float32, as in the batch path)."""
    i = int(row.argmax())
    best = float(row[i])
    if kind == PROBA:
        c = best
    elif kind == LOG_PROBA:
        c = math.exp(best) if best < _EXP_MAX else math.inf
    elif not math.isfinite(best):  # softmax undefined (NaN, +inf, or all -inf): skipped, with no RuntimeWarning
        return EMPTY
    else:  # softmax of scores / logits
        c = 1.0 / float(np.exp(row - row[i]).sum())
    return _single(c, i, row.size, classes)


def _single(c: float, i: int, k: int, classes: Sequence[object] | None) -> Analysis:
    """One row's analysis: confidence ``c`` (none unless finite) for class index ``i`` of ``k``."""
    if not math.isfinite(c):
        return EMPTY
    names: Sequence[object] = classes if classes is not None and len(classes) == k else range(k)
    return Analysis(class_counts=[(names[i], 1)], top=c)


def _guess(arr: np.ndarray, task: str | None) -> str:
    if arr.dtype.kind in "USObi" or arr.dtype.kind == "u":
        return LABELS if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1) else NONE
    if arr.dtype.kind != "f":
        return NONE
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
        return LABELS if task == "classification" else REGRESSION
    if arr.ndim != 2:
        return NONE
    if task == "regression":
        return REGRESSION
    if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0 and np.allclose(arr.sum(axis=1), 1.0, atol=_PROBA_TOLERANCE):
        return PROBA
    return LOGITS


def _top(arr: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(top class per row, its probability as float64, number of classes), without a full probability matrix.

    Binary outputs give the top class as a boolean array ("class 1 wins"), other outputs as indices. Softmax
    confidence is ``1 / sum(exp(x - max))``, in the output's own float type; a binary score's (the sigmoid of
    the gap) is computed in float64.
    """
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
        flat = arr.reshape(-1)
        if flat.size == 0:
            return None
        if kind in (SCORES, LOGITS):  # a binary decision score: sigmoid(|s|) for the predicted side
            return flat > 0, _sigmoid_of_abs(np.copysign(flat, -1.0, dtype=np.float64)), 2
        p1 = np.exp(flat) if kind == LOG_PROBA else flat  # the positive class's probability (or its log)
        return p1 > 0.5, np.asarray(np.maximum(p1, 1.0 - p1), dtype=np.float64), 2
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        return None
    if arr.shape[1] == 2:  # binary: two column compares instead of argmax + gather
        c0, c1 = arr[:, 0], arr[:, 1]
        if kind in (SCORES, LOGITS):  # softmax over two scores = sigmoid of their gap
            gap = np.subtract(c1, c0, dtype=np.float64)  # its sign is exactly c1 > c0's
            top = gap > 0
            np.copysign(gap, -1.0, out=gap)
            return top, _sigmoid_of_abs(gap), 2
        top = c1 > c0
        conf = np.maximum(c0, c1)
        if kind == LOG_PROBA:
            np.exp(conf, out=conf)
        return top, np.asarray(conf, dtype=np.float64), 2
    top = arr.argmax(axis=1)
    best = np.take_along_axis(arr, top[:, None], axis=1)
    if kind == PROBA:
        conf = best.reshape(-1)
    elif kind == LOG_PROBA:
        conf = np.exp(best.reshape(-1))
    else:  # softmax of scores / logits
        conf = 1.0 / np.exp(arr - best).sum(axis=1)
    return top, np.asarray(conf, dtype=np.float64), arr.shape[1]


def _sigmoid_of_abs(neg_abs: np.ndarray) -> np.ndarray:
    """``sigmoid(|s|)`` from a float64 temporary holding ``-|s|``, computed in place in it: inside a predict
    call each numpy call and each fresh array costs microseconds, so the binary path makes no others."""
    np.exp(neg_abs, out=neg_abs)
    neg_abs += 1.0
    return np.divide(1.0, neg_abs, out=neg_abs)


def _label_counts(labels: np.ndarray) -> list[tuple[object, int]] | None:
    if labels.ndim != 1:
        return None
    if labels.size == 1:
        label = labels[0]
        return [(label if getattr(type(label), "__hash__", None) is not None else "__unhashable__", 1)]
    if labels.dtype == object:
        counts: dict[object, int] = {}
        for v in labels.tolist():
            try:
                counts[v] = counts.get(v, 0) + 1
            except TypeError:  # unhashable label
                counts["__unhashable__"] = counts.get("__unhashable__", 0) + 1
        return list(counts.items())
    uniq, n = np.unique(labels, return_counts=True)
    return list(zip(uniq.tolist(), n.tolist(), strict=True))
