"""Bounded, mergeable frequent-items (top-K) summary for categorical values.

Algorithm: the mergeable Misra-Gries summary (Agarwal et al., "Mergeable Summaries", 2012), the
dual of space-saving.  Each batch is counted exactly (``np.unique`` for typed arrays, a C-level
``Counter`` for object arrays), pre-reduced to at most ``k`` counters, added to the summary and
reduced again: whenever more than ``k`` counters exist, the (k+1)-th largest count is subtracted
from every counter and non-positive ones are dropped.

Error bound: for every item, ``counts()[item] <= true_count <= counts()[item] + max_error`` with
``max_error <= (total - sum(counts())) / (k + 1) <= total / (k + 1)``; items absent from the summary
have ``true_count <= max_error``.  Equivalently, the space-saving estimate ``count + max_error``
over-estimates by at most ``total / k``.  ``other = total - sum(counts())`` is the mass not
attributed to a tracked item, so tracked counts plus ``other`` always add up to ``total``.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import numpy as np

__all__ = ["DEFAULT_TOP_K", "FrequentItems"]

DEFAULT_TOP_K = 64
_FORMAT = "misra-gries-v1"


def _reduce(counts: dict[Any, int], k: int) -> tuple[dict[Any, int], int]:
    """Misra-Gries reduction to at most ``k`` counters; returns the survivors and the decrement."""
    if len(counts) <= k:
        return counts, 0
    values = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
    dec = int(np.partition(values, values.size - k - 1)[values.size - k - 1])
    return {key: c - dec for key, c in counts.items() if c > dec}, dec


def _batch_counts(values: np.ndarray) -> dict[Any, int]:
    """Exact per-value counts of a batch as a dict keyed by plain Python scalars."""
    if values.dtype == object:
        return dict(Counter(values.tolist()))
    keys, cnt = np.unique(values, return_counts=True)
    return dict(zip(keys.tolist(), cnt.tolist(), strict=True))


def _json_key(key: Any) -> Any:
    """Export numpy scalars as Python ones; keys JSON cannot carry (tuples, bytes, inf...) as ``str(key)``."""
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, (str, int)) or (isinstance(key, float) and np.isfinite(key)):
        return key
    return str(key)


def _sort_key(entry: tuple[Any, int]) -> tuple[int, str, str]:
    """Deterministic order: count descending, then type name and repr of the key."""
    return (-entry[1], type(entry[0]).__name__, repr(entry[0]))


class FrequentItems:
    """Top-K frequent items with ``total``, ``other`` and a proven count error bound (see module doc)."""

    __slots__ = ("_counts", "_error", "_k", "_total")

    def __init__(self, k: int = DEFAULT_TOP_K) -> None:
        """Create an empty summary keeping at most ``k`` counters."""
        if k < 1:
            raise ValueError("k must be >= 1")
        self._k = int(k)
        self._counts: dict[Any, int] = {}
        self._total = 0
        self._error = 0

    def update(self, values: np.ndarray) -> None:
        """Count a batch of hashable values (str, bool, int...; equal-hashing keys like 1/True coincide)."""
        arr = np.asarray(values)
        if arr.ndim != 1:
            arr = arr.ravel()
        if arr.size == 0:
            return
        batch, dec = _reduce(_batch_counts(arr), self._k)
        self._total += int(arr.size)
        self._absorb(batch, dec)

    def merge(self, other: FrequentItems) -> None:
        """Fold ``other`` into this summary (``other`` unchanged); errors add, bound stays total/(k+1)."""
        self._total += other._total
        self._absorb(dict(other._counts), other._error)

    def _absorb(self, batch: dict[Any, int], error: int) -> None:
        """Add a reduced batch of counters and re-reduce to ``k`` counters."""
        counts = self._counts
        for key, c in batch.items():
            counts[key] = counts.get(key, 0) + c
        self._counts, dec = _reduce(counts, self._k)
        self._error += error + dec

    @property
    def k(self) -> int:
        """Maximum number of tracked items."""
        return self._k

    @property
    def total(self) -> int:
        """Number of values counted."""
        return self._total

    @property
    def other(self) -> int:
        """Values not attributed to a tracked item (``total - sum(counts)``)."""
        return self._total - sum(self._counts.values())

    @property
    def max_error(self) -> int:
        """Largest possible under-count of any reported count (<= total / (k + 1))."""
        return self._error

    def counts(self) -> dict[Any, int]:
        """Tracked items and their lower-bound counts, most frequent first."""
        return dict(sorted(self._counts.items(), key=_sort_key))

    def top(self, n: int) -> list[tuple[Any, int]]:
        """The ``n`` most frequent tracked items with their counts."""
        return sorted(self._counts.items(), key=_sort_key)[:n]

    @property
    def nbytes(self) -> int:
        """Approximate bytes held: key objects plus an 8-byte counter each."""
        return int(sum(sys.getsizeof(key) + 8 for key in self._counts))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, deterministic form: [key, count] pairs, most frequent first, exotic keys as str."""
        return {
            "format": _FORMAT,
            "k": self._k,
            "total": self._total,
            "error": self._error,
            # ordered by the exported key, so a saved and reloaded summary serialises identically
            "items": [
                [k, c] for k, c in sorted(((_json_key(key), c) for key, c in self._counts.items()), key=_sort_key)
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrequentItems:
        """Rebuild a summary from :meth:`to_dict` output."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"unsupported frequent-items format: {data.get('format')!r}")
        fi = cls(int(data["k"]))
        fi._total = int(data["total"])
        fi._error = int(data["error"])
        for key, c in data["items"]:
            fi._counts[key] = fi._counts.get(key, 0) + int(c)
        if len(fi._counts) > fi._k or fi.other < 0:
            raise ValueError("inconsistent frequent-items summary")
        return fi
