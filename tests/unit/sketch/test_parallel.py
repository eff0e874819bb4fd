"""Column-parallel updates: inline below the threshold, over the pool above it, inline when the pool refuses."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from otel_ml.sketch import parallel


def _sorted_by(values: int, threads: int) -> tuple[list[np.ndarray], set[int]]:
    """Sort 4 random columns through ``for_each``; the columns, and the threads that sorted them."""
    columns = [np.random.default_rng(i).normal(size=100) for i in range(4)]
    seen: set[int] = set()

    def sort(column: np.ndarray) -> None:
        seen.add(threading.get_ident())
        column.sort()

    parallel.for_each(sort, columns, values, threads)
    return columns, seen


def test_a_buffered_batch_runs_inline() -> None:
    """An input monitor's buffer holds at most 2 MiB (262,144 values): it never wakes the pool."""
    assert parallel.MIN_PARALLEL_VALUES == 2 * 262_144
    columns, seen = _sorted_by(parallel.MIN_PARALLEL_VALUES - 1, threads=2)
    assert seen == {threading.get_ident()}
    assert all(np.all(np.diff(c) >= 0) for c in columns)
    _, seen = _sorted_by(10**9, threads=1)  # one thread configured: inline whatever the size
    assert seen == {threading.get_ident()}


def test_a_large_batch_is_spread_over_the_pool() -> None:
    columns, seen = _sorted_by(parallel.MIN_PARALLEL_VALUES, threads=2)
    assert threading.get_ident() not in seen and 1 <= len(seen) <= 2
    assert all(np.all(np.diff(c) >= 0) for c in columns)


def test_a_pool_that_takes_no_more_work_leaves_it_to_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """At interpreter exit ``concurrent.futures`` refuses new work: the batch is still sketched, here."""
    pool = ThreadPoolExecutor(2)
    pool.shutdown()
    monkeypatch.setattr(parallel, "_pool", pool)
    monkeypatch.setattr(parallel, "_pool_size", 2)
    columns, seen = _sorted_by(parallel.MIN_PARALLEL_VALUES, threads=2)
    assert seen == {threading.get_ident()}
    assert all(np.all(np.diff(c) >= 0) for c in columns)


def test_a_failure_in_the_pool_reaches_the_caller() -> None:
    def fail(item: Any) -> None:
        raise ValueError(item)

    with pytest.raises(ValueError):
        parallel.for_each(fail, [1, 2], parallel.MIN_PARALLEL_VALUES, 2)
