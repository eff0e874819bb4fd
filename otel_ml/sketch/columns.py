"""Model inputs as named feature columns, without densifying or copying more than needed (pure numpy).

``to_table`` accepts numpy arrays, pandas DataFrames/Series, lists of rows, dicts of columns, torch tensors
and returns a :class:`Table`: either one float64 ``matrix`` (the fast path: numeric 2-D input) or a list of
per-feature ``columns`` (float64 for numeric features, object for categorical ones). Inputs it will not
read (sparse matrices, 0-d scalars, arrays of 3+ dimensions, CUDA tensors unless allowed, iterators,
list of dicts) give a :class:`Skip` with a reason; nothing here ever raises for a user's odd input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_NAME_LENGTH = 64

NUMERIC = "numeric"
CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Table:
    """A batch of rows as feature columns: ``matrix`` (n x f float64) or ``columns`` (one array each)."""

    names: list[str]
    kinds: list[str]
    rows: int
    matrix: np.ndarray | None = None
    columns: list[np.ndarray] | None = None

    def by_column(self) -> Table:
        """The same table with each feature contiguous in memory (one transpose instead of strided passes)."""
        if self.matrix is None or self.matrix.shape[1] < 2 or self.matrix.flags.f_contiguous:
            return self
        return Table(self.names, self.kinds, self.rows, matrix=np.asfortranarray(self.matrix))

    def slice(self, start: int, stop: int) -> Table:
        """Rows ``start:stop`` (views, no copy)."""
        if self.matrix is not None:
            part = self.matrix[start:stop]
            return Table(self.names, self.kinds, part.shape[0], matrix=part)
        assert self.columns is not None
        cols = [c[start:stop] for c in self.columns]
        return Table(self.names, self.kinds, len(cols[0]) if cols else 0, columns=cols)

    def copy(self) -> Table:
        """A table owning its data."""
        if self.matrix is not None:
            return Table(self.names, self.kinds, self.rows, matrix=self.matrix.copy())
        assert self.columns is not None
        return Table(self.names, self.kinds, self.rows, columns=[c.copy() for c in self.columns])

    def column(self, i: int) -> np.ndarray:
        """Feature ``i`` as a 1-D array (a view into ``matrix`` on the fast path)."""
        if self.matrix is not None:
            return self.matrix[:, i]
        assert self.columns is not None
        return self.columns[i]


def concat(tables: Sequence[Table]) -> Table:
    """Tables with the same columns, one after the other (a matrix when every part is one)."""
    first = tables[0]
    if any(t.names != first.names for t in tables):
        raise ValueError("the column set changed between batches")
    rows = sum(t.rows for t in tables)
    if all(t.matrix is not None for t in tables):
        return Table(first.names, first.kinds, rows, matrix=np.concatenate([t.matrix for t in tables]))
    cols = [np.concatenate([t.column(i) for t in tables]) for i in range(len(first.names))]
    return Table(first.names, first.kinds, rows, columns=cols)


@dataclass(frozen=True)
class Skip:
    """Why an input was not sketched (exported as a drop reason)."""

    reason: str


def feature_name(raw: object, index: int) -> str:
    """A bounded, printable feature name (``f<index>`` when there is none)."""
    if raw is None:
        return f"f{index}"
    name = raw if isinstance(raw, str) else "/".join(map(str, raw)) if isinstance(raw, tuple) else str(raw)
    name = "".join(ch if ch.isprintable() else "?" for ch in name[: MAX_NAME_LENGTH * 2])
    return name[:MAX_NAME_LENGTH] or f"f{index}"


def _names(raw: Sequence[object] | None, count: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for i in range(count):
        name = feature_name(raw[i] if raw is not None and i < len(raw) else None, i)
        suffix = i
        base = name
        while name in seen:  # duplicate column names stay distinguishable
            name = f"{base[: MAX_NAME_LENGTH - 8]}#{suffix}"
            suffix += len(seen) + 1
        seen.add(name)
        out.append(name)
    return out


def _matrix(arr: np.ndarray, names: Sequence[object] | None) -> Table | Skip:
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)  # n rows of one feature, consistent with the batch size (first dimension)
    if arr.ndim != 2:
        return Skip("input_ndim")
    kind = arr.dtype.kind
    if kind in "fiub":
        matrix = arr if arr.dtype == np.float64 else arr.astype(np.float64)
        return Table(_names(names, arr.shape[1]), [NUMERIC] * arr.shape[1], arr.shape[0], matrix=matrix)
    if kind in "OUS":
        cols = [arr[:, i].astype(object) if kind != "O" else arr[:, i] for i in range(arr.shape[1])]
        return _from_columns(cols, _names(names, arr.shape[1]), arr.shape[0])
    return Skip("input_dtype")


def _column_kind(col: np.ndarray) -> str:
    if col.dtype.kind in "fiub":
        return NUMERIC
    if col.dtype != object or col.size == 0:
        return CATEGORICAL
    first = next((v for v in col[: min(col.size, 64)].tolist() if not _is_missing(v)), None)
    return NUMERIC if isinstance(first, (int, float, np.number)) and not isinstance(first, bool) else CATEGORICAL


def _is_missing(v: object) -> bool:
    """None, pandas NA/NaT, or a float NaN (decided by type: ``v == v`` raises on NA and arrays)."""
    if v is None or type(v).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(v, float) and v != v


def _from_columns(cols: list[np.ndarray], names: list[str], rows: int) -> Table:
    kinds = [_column_kind(c) for c in cols]
    out = [
        c.astype(np.float64) if k == NUMERIC and c.dtype.kind in "iub" else c for c, k in zip(cols, kinds, strict=True)
    ]
    return Table(names, kinds, rows, columns=out)


def _pandas(x: Any) -> Table | Skip:
    if type(x).__name__ == "Series":
        x = x.to_frame()
    if type(x).__name__ != "DataFrame":
        return Skip("input_type")
    cols: list[np.ndarray] = []
    for _, series in x.items():
        dtype = series.dtype
        kind = getattr(dtype, "kind", "O")
        if getattr(dtype, "name", "") == "category":
            cols.append(np.asarray(series.astype(object).to_numpy(), dtype=object))
        elif kind in "fiub" and type(dtype).__module__.startswith("numpy"):
            cols.append(series.to_numpy())
        elif kind in "iufb":  # pandas nullable Int64/Float64/boolean: NA becomes NaN
            cols.append(series.to_numpy(dtype=np.float64, na_value=np.nan))
        elif kind == "M":  # datetimes are not features we summarise
            cols.append(np.full(len(series), None, dtype=object))
        else:
            cols.append(np.asarray(series.to_numpy(dtype=object), dtype=object))
    return _from_columns(cols, _names(list(x.columns), len(cols)), len(x))


_PLAIN = frozenset({int, float, bool, str, bytes, type(None)})


def _plain_value(v: object) -> bool:
    return type(v) in _PLAIN or isinstance(v, np.generic)


def _plain_rows(x: list[Any] | tuple[Any, ...]) -> bool:
    """A list of plain values, or of rows (lists, tuples, exact ndarrays) of plain values: safe for np.asarray."""
    for item in x:
        if _plain_value(item) or type(item) is np.ndarray:
            continue
        if type(item) not in (list, tuple) or not all(map(_plain_value, item)):
            return False
    return True


def host_array(x: object) -> np.ndarray | None:
    """``x`` as a numpy array without copying: itself, or a float CPU torch tensor's view (that needs no
    grad); ``None`` for anything else. What the monitor's per-call fast path accepts."""
    if type(x) is np.ndarray:
        return x
    if not type(x).__module__.startswith("torch"):
        return None
    t: Any = x
    if getattr(t, "is_cpu", False) and not t.requires_grad and str(t.dtype) in _HOST_FLOATS and not t.is_sparse:
        return np.asarray(t.numpy())
    return None


_HOST_FLOATS = ("torch.float32", "torch.float64")


def to_table(x: Any, feature_names: Sequence[object] | None = None, allow_device_copy: bool = False) -> Table | Skip:
    """Read ``x`` as feature columns (see module docstring); ``feature_names`` override derived ones."""
    if type(x) is np.ndarray:
        return _matrix(x, feature_names) if x.ndim else Skip("input_scalar")
    module = type(x).__module__
    if module.split(".")[0] == "pandas":  # "pandas" in pandas 3, "pandas.core.frame" before
        table = _pandas(x)
        if isinstance(table, Table) and feature_names is not None:
            return Table(_names(feature_names, len(table.names)), table.kinds, table.rows, columns=table.columns)
        return table
    if module.startswith("scipy.sparse"):
        return Skip("input_sparse")
    if isinstance(x, (np.generic, int, float, bool, str)):
        return Skip("input_scalar")
    if module.startswith("torch"):
        detach = getattr(x, "detach", None)
        if detach is None:
            return Skip("input_type")
        t = detach()
        if str(getattr(t, "layout", "torch.strided")) != "torch.strided":
            return Skip("input_sparse")
        if t.device.type != "cpu":
            if not allow_device_copy:
                return Skip("input_device")
            t = t.cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        return _matrix(np.asarray(t.numpy()), feature_names) if t.dim() else Skip("input_scalar")
    if isinstance(x, np.ndarray):  # subclasses: memmap, matrix
        return _matrix(np.asarray(x), feature_names) if x.ndim else Skip("input_scalar")
    if isinstance(x, dict):
        if not x or not all(isinstance(v, (list, tuple, np.ndarray)) for v in x.values()):
            return Skip("input_type")
        try:
            cols = [np.asarray(v) if not isinstance(v, np.ndarray) else v for v in x.values()]
        except (ValueError, TypeError):  # ragged columns
            return Skip("input_shape")
        if any(c.ndim != 1 for c in cols) or len({len(c) for c in cols}) != 1:
            return Skip("input_shape")
        names = _names(feature_names if feature_names is not None else list(x.keys()), len(cols))
        return _from_columns([c if c.dtype.kind in "fiubO" else c.astype(object) for c in cols], names, len(cols[0]))
    if isinstance(x, (list, tuple)):
        if not x:
            return Table([], [], 0, matrix=np.empty((0, 0)))
        if not _plain_rows(x):  # np.asarray would call __array__/__len__/__iter__ of the user's own objects
            return Skip("input_type")
        try:
            arr = np.asarray(x)
            if arr.dtype.kind in "US":  # mixed numbers and strings: keep each value's own type
                arr = np.asarray(x, dtype=object)
        except (ValueError, TypeError):
            return Skip("input_shape")
        return _matrix(arr, feature_names) if arr.ndim else Skip("input_scalar")
    return Skip("input_type")
