"""Per-feature input summary: quantile sketch (numeric) or frequent items (categorical) + quality counters.

Counters (all kinds): ``count`` rows seen, ``missing`` (None, ``pd.NA``/``NaT`` and float NaN),
``nan`` (float NaN only, a subset of ``missing``), ``type_mismatch`` (values of the wrong type:
lists/dicts/sets/arrays anywhere, strings and other non-numbers in a numeric feature).  Numeric
features also count ``posinf``/``neginf`` (kept out of the sketch) and feed finite values to a
:class:`QuantileSketch`; categorical features feed hashable values to :class:`FrequentItems`.
Float/int/bool arrays take a fully vectorised path; object arrays are classified with one C-level
``map(type, ...)`` pass and a per-type lookup table, then handled with vectorised masks.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

import numpy as np

from otel_ml.sketch.batch import SortedColumns
from otel_ml.sketch.frequent import DEFAULT_TOP_K, FrequentItems
from otel_ml.sketch.quantile import DEFAULT_K, QuantileSketch

__all__ = ["FeatureKind", "FeatureSketch", "numeric_values"]

FeatureKind = Literal["numeric", "categorical"]
_FORMAT = "feature-v1"

_NUMBER, _MISSING, _TEXT, _HASHABLE, _UNHASHABLE = range(5)
_TYPE_CODES: dict[type, int] = {}
_COUNTERS = ("count", "missing", "nan", "posinf", "neginf", "type_mismatch")


def _classify_type(t: type) -> int:
    """Map a Python type to one of the value classes used for object arrays."""
    if t is type(None) or t.__name__ in ("NAType", "NaTType"):
        return _MISSING
    if issubclass(t, (np.bool_, np.integer, np.floating, numbers.Real)):
        return _NUMBER
    if issubclass(t, (str, bytes)):
        return _TEXT
    if t.__hash__ is None:
        return _UNHASHABLE
    return _HASHABLE


def _type_codes(values: list[Any]) -> np.ndarray:
    """Value-class code per element (one C-level pass; unseen types are classified once and cached)."""
    types = list(map(type, values))
    for t in set(types).difference(_TYPE_CODES):
        _TYPE_CODES[t] = _classify_type(t)
    return np.fromiter(map(_TYPE_CODES.__getitem__, types), dtype=np.int8, count=len(types))


def numeric_values(column: np.ndarray) -> tuple[np.ndarray, int, int]:
    """A numeric feature's column as float64, NaN where a value is missing or not a number, with its count of
    missing values and of type mismatches as :class:`FeatureSketch` counts them (one pass over the types)."""
    arr = np.asarray(column).ravel()
    if arr.dtype.kind in "fiub":
        values = arr.astype(np.float64)
        return values, int(np.count_nonzero(np.isnan(values))), 0
    if arr.dtype != object:  # strings, dates, ...: nothing here is a number
        return np.full(arr.size, np.nan), 0, int(arr.size)
    codes = _type_codes(arr.tolist())
    values = np.full(arr.size, np.nan)
    number = codes == _NUMBER
    if number.any():
        values[number] = arr[number].astype(np.float64)
    missing = int(np.count_nonzero(codes == _MISSING)) + int(np.count_nonzero(np.isnan(values[number])))
    return values, missing, int(np.count_nonzero(codes >= _TEXT))


class FeatureSketch:
    """Bounded, mergeable summary of one model input feature (numeric or categorical)."""

    __slots__ = (
        "_count",
        "_frequent",
        "_kind",
        "_missing",
        "_nan",
        "_neginf",
        "_posinf",
        "_quantiles",
        "_type_mismatch",
    )

    def __init__(self, kind: FeatureKind, *, k: int = DEFAULT_K, top_k: int = DEFAULT_TOP_K, seed: int = 0) -> None:
        """Create an empty summary; ``k`` sizes the quantile sketch, ``top_k`` the frequent-items table."""
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"kind must be 'numeric' or 'categorical', got {kind!r}")
        self._kind: FeatureKind = kind
        self._quantiles = QuantileSketch(k=k, seed=seed) if kind == "numeric" else None
        self._frequent = FrequentItems(top_k) if kind == "categorical" else None
        self._count = self._missing = self._nan = 0
        self._posinf = self._neginf = self._type_mismatch = 0

    # ------------------------------------------------------------------ ingest
    def update(self, column: np.ndarray) -> None:
        """Ingest one column of values (float/int/bool/str arrays fast, object arrays classified)."""
        arr = np.asarray(column)
        if arr.ndim != 1:
            arr = arr.ravel()
        self._count += int(arr.size)
        if arr.size == 0:
            return
        if arr.dtype == object:
            self._update_object(arr)
        elif self._kind == "numeric":
            self._update_numeric_typed(arr)
        else:
            self._update_categorical_typed(arr)

    def update_sorted(self, columns: SortedColumns, j: int) -> None:
        """Ingest column ``j`` of a sorted batch (numeric features): the same result as :meth:`update` on the
        unsorted column, without sorting it again."""
        if self._quantiles is None:
            raise TypeError("categorical features take unsorted columns (update)")
        nan, posinf, neginf = int(columns.nan[j]), columns.posinf(j), columns.neginf(j)
        self._count += columns.rows
        self._nan += nan
        self._missing += nan
        self._posinf += posinf
        self._neginf += neginf
        self._quantiles.add_sorted(columns.finite(j), float(columns.mean[j]), float(columns.m2[j]))

    def _update_numeric_typed(self, arr: np.ndarray) -> None:
        """Numeric feature, non-object dtype: floats/ints/bools are numbers, anything else mismatches."""
        if arr.dtype.kind not in "fiub":
            self._type_mismatch += int(arr.size)
            return
        self._add_numbers(arr.astype(np.float64, copy=False))

    def _add_numbers(self, values: np.ndarray) -> None:
        """Count NaN/inf and feed the finite values to the quantile sketch."""
        assert self._quantiles is not None
        finite = np.isfinite(values)
        if not finite.all():
            nan = int(np.count_nonzero(np.isnan(values)))
            pos = int(np.count_nonzero(values == np.inf))
            self._nan += nan
            self._missing += nan
            self._posinf += pos
            self._neginf += int(values.size - np.count_nonzero(finite)) - nan - pos
            values = values[finite]
        self._quantiles.update(values)

    def _update_categorical_typed(self, arr: np.ndarray) -> None:
        """Categorical feature, non-object dtype: float NaN is missing, everything else is a category."""
        assert self._frequent is not None
        if arr.dtype.kind == "f":
            nan = np.isnan(arr)
            n_nan = int(np.count_nonzero(nan))
            if n_nan:
                self._nan += n_nan
                self._missing += n_nan
                arr = arr[~nan]
        self._frequent.update(arr)

    def _update_object(self, arr: np.ndarray) -> None:
        """Object column: classify each value's type once, then handle each class with masks."""
        values = arr.tolist()
        codes = _type_codes(values)
        self._missing += int(np.count_nonzero(codes == _MISSING))
        if self._kind == "numeric":
            is_num = codes == _NUMBER
            self._type_mismatch += int(np.count_nonzero(codes >= _TEXT))
            if is_num.any():
                self._add_numbers(arr[is_num].astype(np.float64))
            return
        assert self._frequent is not None
        self._type_mismatch += int(np.count_nonzero(codes == _UNHASHABLE))
        keep = (codes != _MISSING) & (codes != _UNHASHABLE)
        nums = codes == _NUMBER
        if nums.any():
            # float NaN in a categorical column is missing (NaN != NaN would make each one a new key)
            nan = np.zeros(codes.size, dtype=bool)
            nan[nums] = np.isnan(arr[nums].astype(np.float64))
            n_nan = int(np.count_nonzero(nan))
            self._nan += n_nan
            self._missing += n_nan
            keep &= ~nan
        if keep.any():
            self._frequent.update(arr[keep])

    def merge(self, other: FeatureSketch) -> None:
        """Fold another summary of the same kind into this one (``other`` unchanged)."""
        if other._kind != self._kind:
            raise ValueError(f"cannot merge {other._kind} feature into {self._kind} feature")
        for name in _COUNTERS:
            setattr(self, f"_{name}", getattr(self, f"_{name}") + getattr(other, f"_{name}"))
        if self._quantiles is not None and other._quantiles is not None:
            self._quantiles.merge(other._quantiles)
        if self._frequent is not None and other._frequent is not None:
            self._frequent.merge(other._frequent)

    # ------------------------------------------------------------------ queries
    @property
    def kind(self) -> FeatureKind:
        """Either "numeric" or "categorical"."""
        return self._kind

    @property
    def count(self) -> int:
        """Rows seen (every value, valid or not)."""
        return self._count

    @property
    def missing(self) -> int:
        """None, pd.NA/NaT and float NaN values."""
        return self._missing

    @property
    def nan(self) -> int:
        """Float NaN values (included in ``missing``)."""
        return self._nan

    @property
    def posinf(self) -> int:
        """+inf values (numeric features; not in the sketch)."""
        return self._posinf

    @property
    def neginf(self) -> int:
        """-inf values (numeric features; not in the sketch)."""
        return self._neginf

    @property
    def type_mismatch(self) -> int:
        """Values of a type the feature cannot summarise (e.g. lists, or strings in a numeric feature)."""
        return self._type_mismatch

    @property
    def valid(self) -> int:
        """Values that reached the quantile sketch or frequent-items table."""
        if self._quantiles is not None:
            return self._quantiles.count
        assert self._frequent is not None
        return self._frequent.total

    @property
    def min(self) -> float:
        """Smallest finite value (numeric; NaN when none or categorical)."""
        return self._quantiles.min if self._quantiles is not None else float("nan")

    @property
    def max(self) -> float:
        """Largest finite value (numeric; NaN when none or categorical)."""
        return self._quantiles.max if self._quantiles is not None else float("nan")

    @property
    def quantiles(self) -> QuantileSketch:
        """The quantile sketch of a numeric feature."""
        if self._quantiles is None:
            raise TypeError("categorical features have no quantile sketch")
        return self._quantiles

    @property
    def frequent(self) -> FrequentItems:
        """The frequent-items summary of a categorical feature."""
        if self._frequent is None:
            raise TypeError("numeric features have no frequent-items summary")
        return self._frequent

    @property
    def nbytes(self) -> int:
        """Approximate bytes held: the inner summary plus six 8-byte counters."""
        inner = self._quantiles.nbytes if self._quantiles is not None else self.frequent.nbytes
        return inner + 8 * len(_COUNTERS)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, deterministic representation."""
        out: dict[str, Any] = {"format": _FORMAT, "kind": self._kind}
        out.update({name: getattr(self, f"_{name}") for name in _COUNTERS})
        if self._quantiles is not None:
            out["quantiles"] = self._quantiles.to_dict()
        else:
            out["frequent"] = self.frequent.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSketch:
        """Rebuild a summary from :meth:`to_dict` output."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"unsupported feature sketch format: {data.get('format')!r}")
        fs = cls(data["kind"])
        for name in _COUNTERS:
            setattr(fs, f"_{name}", int(data[name]))
        if fs._kind == "numeric":
            fs._quantiles = QuantileSketch.from_dict(data["quantiles"])
        else:
            fs._frequent = FrequentItems.from_dict(data["frequent"])
        return fs
