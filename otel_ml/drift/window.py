"""Sliding windows of recent values kept as a ring of mergeable sub-window sketches.

A window is split into ``n_blocks`` blocks, each its own sketch (e.g. a
:class:`~otel_ml.sketch.feature.FeatureSketch`).  New rows go to the newest block; a block is
closed when it holds ``max_rows / n_blocks`` rows (count window) or is ``max_age_s / n_blocks`` old
(time window); when more than ``n_blocks`` blocks exist the oldest is dropped, and in a time window
any block whose first row is older than ``max_age_s`` is dropped too.  A query merges the live
blocks, so memory is ``n_blocks`` sketches whatever the stream length and expiry is exact at block
granularity: a count window holds between ``max_rows - block_rows + 1`` and ``max_rows`` of the most
recent rows (fewer only before that many were seen); a time window never holds a row older than
``max_age_s`` and always holds every row younger than ``max_age_s - max_age_s / n_blocks``.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

__all__ = ["SlidingWindow"]


class MergeableSketch(Protocol):
    """What a window needs from a block sketch."""

    def update(self, values: np.ndarray) -> None:
        """Ingest a batch of values."""

    def merge(self, other: Any) -> None:
        """Fold another sketch of the same type into this one."""

    @property
    def nbytes(self) -> int:
        """Bytes held by the sketch."""


S = TypeVar("S", bound=MergeableSketch)


@dataclass
class _Block(Generic[S]):
    """One sub-window: its sketch, row count and the clock time of its first row."""

    sketch: S
    rows: int
    started: float


def _add(sketch: MergeableSketch, values: np.ndarray) -> None:
    sketch.update(values)


class SlidingWindow(Generic[S]):
    """Count- and/or time-bounded window over the latest rows of one feature, as merged block sketches."""

    def __init__(
        self,
        factory: Callable[[], S],
        *,
        max_rows: int | None = 5000,
        max_age_s: float | None = None,
        n_blocks: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Window of at most ``max_rows`` rows and/or ``max_age_s`` s; ``factory`` makes empty sketches."""
        if max_rows is None and max_age_s is None:
            raise ValueError("set max_rows, max_age_s or both")
        if n_blocks < 1 or (max_rows is not None and max_rows < n_blocks):
            raise ValueError("need n_blocks >= 1 and max_rows >= n_blocks")
        if max_age_s is not None and max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self._factory = factory
        self._n_blocks = n_blocks
        self._block_rows = math.ceil(max_rows / n_blocks) if max_rows is not None else None
        self._max_age = max_age_s
        self._span = max_age_s / n_blocks if max_age_s is not None else None
        self._clock = clock
        self._blocks: deque[_Block[S]] = deque()

    @property
    def block_rows(self) -> int | None:
        """Rows per block in a count window (None for a time-only window)."""
        return self._block_rows

    @property
    def nbytes(self) -> int:
        """Bytes held by the live block sketches."""
        return int(sum(b.sketch.nbytes for b in self._blocks))

    def update(self, column: np.ndarray, now: float | None = None) -> None:
        """Append a column of rows (all stamped ``now``, default the clock's time) and evict old blocks."""
        arr = np.asarray(column)
        if arr.ndim != 1:
            arr = arr.ravel()
        now = self._clock() if now is None else now
        for start, stop in self.plan(int(arr.size), now):
            self.fill(stop - start, functools.partial(_add, values=arr[start:stop]), now)

    def plan(self, n: int, now: float) -> list[tuple[int, int]]:
        """Row ranges of an ``n``-row batch stamped ``now`` in the blocks they go to, oldest first.

        Expires old blocks first. Rows before the first range would be evicted by the batch's own later rows
        (a batch longer than the window): they are skipped, and every current block is dropped. The caller
        then passes each range, in order, to :meth:`fill` with the same ``now``, which lets it prepare a
        block's rows (e.g. sort them) before they reach the sketch.
        """
        self._expire(now)
        if n <= 0:
            return []
        if self._block_rows is None:
            return [(0, n)]
        room = self._room(now)
        pos = 0
        full_blocks = math.ceil((n - room) / self._block_rows)
        if full_blocks >= self._n_blocks:
            # Every current block would be evicted: skip straight to the rows that survive.
            self._blocks.clear()
            pos = room + (full_blocks - self._n_blocks) * self._block_rows
            room = 0
        ranges = []
        while pos < n:
            take = min(n - pos, room or self._block_rows)
            ranges.append((pos, pos + take))
            pos, room = pos + take, 0
        return ranges

    def fill(self, rows: int, update: Callable[[S], None], now: float) -> None:
        """File ``rows`` rows, one range of :meth:`plan`, into their block: ``update`` adds them to its sketch."""
        block = self._open_block(now)
        if self._block_rows is not None and block.rows + rows > self._block_rows:
            raise ValueError("rows do not fit the block: pass the ranges of plan() in order, with its now")
        update(block.sketch)
        block.rows += rows

    def _room(self, now: float) -> int:
        """Rows the newest block can still take before a new block must be opened."""
        if not self._blocks or self._block_rows is None:
            return 0
        last = self._blocks[-1]
        if self._span is not None and now - last.started >= self._span:
            return 0
        return self._block_rows - last.rows

    def _open_block(self, now: float) -> _Block[S]:
        """The newest block if it has room, else a fresh one (dropping the oldest beyond ``n_blocks``)."""
        if self._blocks:
            last = self._blocks[-1]
            fits = self._block_rows is None or last.rows < self._block_rows
            if fits and (self._span is None or now - last.started < self._span):
                return last
        self._blocks.append(_Block(self._factory(), 0, now))
        while len(self._blocks) > self._n_blocks:
            self._blocks.popleft()
        return self._blocks[-1]

    def _expire(self, now: float) -> None:
        """Drop blocks whose first row is older than ``max_age_s``."""
        if self._max_age is None:
            return
        while self._blocks and now - self._blocks[0].started > self._max_age:
            self._blocks.popleft()

    def rows(self) -> int:
        """Rows currently in the window (after time-based expiry)."""
        self._expire(self._clock())
        return int(sum(b.rows for b in self._blocks))

    def snapshot(self) -> S:
        """A fresh sketch equal to the merge of all live blocks (the window's contents)."""
        self._expire(self._clock())
        merged = self._factory()
        for block in self._blocks:
            merged.merge(block.sketch)
        return merged

    def clear(self) -> None:
        """Drop every block."""
        self._blocks.clear()
