"""Input monitoring for one model: feature sketches against a reference, drift scores, data quality.

Caller side (inside the user's predict call): read the input as feature columns and copy rows into a
buffer, ~1-2 µs per row; a full buffer (or a large batch, copied) goes to the background worker. Worker
side, numeric features all at once: one sort of the batch's columns (:class:`SortedColumns`) gives every
feature's ``ml.feature.rank`` histogram (value → F_ref(x), 20 uniform buckets, by binary search of the cut
points) and data-quality counts; the rows go, unsorted, into the features' shared sliding window
(:class:`ColumnSketches` blocks). Categorical features are handled one by one. At most once per
``drift_interval`` seconds (and on flush) the window is summarised and the drift gauges updated. A crossing
of a drift threshold queues one ``ml.drift.detected`` event, attached to the model's next predict span, and
calls the user's ``on_drift`` callback.

Without a reference, the first ``warmup_rows`` rows become a provisional one (``ml.reference.source=warmup``).
Every skipped input is counted in ``otel_ml.telemetry.dropped{reason}``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry.util.types import AttributeValue

from otel_ml import config, semconv
from otel_ml._core import guard, runtime
from otel_ml._core.attributes import text
from otel_ml.drift import metrics as drift
from otel_ml.drift.window import SlidingWindow
from otel_ml.sketch import parallel
from otel_ml.sketch.batch import RankTable, SortedColumns
from otel_ml.sketch.block import ColumnSketches
from otel_ml.sketch.columns import CATEGORICAL, Skip, Table, host_array, to_table
from otel_ml.sketch.feature import FeatureSketch, numeric_values
from otel_ml.sketch.reference import Reference, ReferenceBuilder

NUMERIC_METHODS = ("psi", "ks", "js", "wasserstein")
MIN_DRIFT_ROWS = 100  # rows a window needs before its drift is scored
CATEGORICAL_METHODS = ("chi2", "js")
_RANK_MIDPOINTS = (np.arange(20) + 0.5) / 20
BUFFER_VALUES = 1 << 18
"""Most values (rows x features) a model's input buffer holds: 2 MiB of float64 (13,107 rows of 20 features).

Calls smaller than this are copied into the buffer and reach the worker together: one sort and one pass of
Python per ~2 MiB instead of per call. Worker time that holds the GIL slows the caller's threads, by more than
its own length when they keep releasing the GIL (a forest's trees do), so fewer, larger batches cost less."""
MIN_BUFFER_ROWS = 256
"""A buffer's first size; it doubles as rows arrive. Fewer buffered rows than this go to the worker at a metric
export only once the first has waited ``OTEL_ML_DRIFT_INTERVAL``: a worker job costs the application's busy
threads about the same GIL hand-overs whatever its size, so a short export interval must not turn a trickle of
rows into a job per export, while a model that fills its first buffer between exports keeps that one buffer."""


def buffer_limit(width: int) -> int:
    """Rows the input buffer of ``width`` features holds: ``OTEL_ML_SKETCH_BUFFER_ROWS`` within 2 MiB."""
    return max(1, min(config.settings.sketch_buffer_rows, BUFFER_VALUES // max(width, 1)))


@dataclass(frozen=True)
class DriftEvent:
    """A feature crossing its drift threshold (passed to ``on_drift`` and recorded as a span event)."""

    model: str
    version: str
    feature: str
    method: str
    score: float
    threshold: float
    reference_id: str


@dataclass(frozen=True)
class MonitorOptions:
    """How inputs of one model are sketched and compared; ``None`` fields take the ``OTEL_ML_*`` defaults."""

    reference: Reference | None = None
    sketch_inputs: bool | None = None
    drift_window: int | None = None
    drift_window_seconds: float | None = None
    warmup_rows: int | None = None
    max_features: int | None = None
    feature_names: Sequence[str] | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    on_drift: Callable[[DriftEvent], Any] | None = None
    capture_categories: bool | None = None


def monitor_options(
    reference: Reference | str | os.PathLike[str] | None = None,
    sketch_inputs: bool | None = None,
    drift_window: int | None = None,
    feature_names: Sequence[str] | None = None,
    on_drift: Callable[[DriftEvent], Any] | None = None,
    options: MonitorOptions | None = None,
) -> MonitorOptions:
    """Combine the common keyword arguments with a full :class:`MonitorOptions` (keywords win).

    A ``reference`` path is loaded here, at instrumentation time, so a bad file fails fast and clearly.
    """
    base = options or MonitorOptions()
    if isinstance(reference, (str, os.PathLike)):
        reference = Reference.load(reference)
    changes: dict[str, Any] = {}
    for key, value in (
        ("reference", reference),
        ("sketch_inputs", sketch_inputs),
        ("drift_window", drift_window),
        ("feature_names", feature_names),
        ("on_drift", on_drift),
    ):
        if value is not None:
            changes[key] = value
    return dataclasses.replace(base, **changes) if changes else base


Series = tuple[dict[str, AttributeValue], frozenset[Any]]
"""A metric series: its attributes, and their hashable key."""


def _series(attributes: dict[str, AttributeValue]) -> Series:
    return attributes, frozenset(attributes.items())


class _Feature:
    """Worker-side state of one feature: window, metric series, drift state."""

    def __init__(
        self, name: str, kind: str, model_attrs: dict[str, AttributeValue], window: SlidingWindow[Any] | None
    ) -> None:
        self.name = name
        self.kind = kind
        self.window = window
        attrs = {**model_attrs, semconv.ML_FEATURE_NAME: name}
        self.series = _series(attrs)
        self.drift_series: dict[str, tuple[dict[str, AttributeValue], frozenset[Any]]] = {}
        self.category_series: dict[str, tuple[dict[str, AttributeValue], frozenset[Any]]] = {}
        self.drifted = False


@dataclass
class _Plan:
    """How batches of one schema are processed under one reference."""

    reference: Reference
    names: list[str]
    kinds: list[str]
    numeric: list[tuple[_Feature, int]]
    categorical: list[tuple[_Feature, int]]
    numeric_features: list[_Feature] = field(init=False)
    numeric_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.numeric_features = [feature for feature, _ in self.numeric]
        self.numeric_names = [feature.name for feature in self.numeric_features]


class _Pending:
    """Counts of numeric batches not yet recorded, per feature: rank buckets ``(features, 20)``, missing
    (NaN) values and values outside the reference's range."""

    __slots__ = ("counts", "features", "has_cuts", "missing", "outside")

    def __init__(
        self,
        features: list[_Feature],
        has_cuts: np.ndarray,
        counts: np.ndarray,
        missing: np.ndarray,
        outside: np.ndarray,
    ) -> None:
        """One batch's counts (arrays it owns: they become the running totals)."""
        self.features = features
        self.has_cuts = has_cuts
        self.counts = np.asarray(counts, dtype=np.int64)
        self.missing = np.asarray(missing, dtype=np.int64)
        self.outside = np.asarray(outside, dtype=np.int64)

    def add(self, other: _Pending) -> None:
        self.counts += other.counts
        self.missing += other.missing
        self.outside += other.outside


class InputMonitor:
    """Sketches one model's inputs and exports distribution, drift and data-quality metrics."""

    def __init__(self, model: str, version: str, metric_attributes: Mapping[str, AttributeValue], opts: MonitorOptions):
        s = config.settings
        self.model, self.version = model, version
        self.reference = opts.reference
        self.window_rows = opts.drift_window if opts.drift_window is not None else s.drift_window
        self.window_seconds = opts.drift_window_seconds
        self.warmup_rows = opts.warmup_rows if opts.warmup_rows is not None else s.warmup_rows
        self.max_features = opts.max_features if opts.max_features is not None else s.max_features
        self.capture_categories = (
            opts.capture_categories if opts.capture_categories is not None else s.capture_categories
        )
        self.thresholds = {**drift.DEFAULT_THRESHOLDS, **dict(opts.thresholds)}
        self.on_drift = opts.on_drift
        self._names = list(opts.feature_names) if opts.feature_names is not None else None
        self._model_attrs = dict(metric_attributes)
        self._lock = threading.Lock()
        self._schema: tuple[list[str], list[str]] | None = None
        self._matrix_width = 0  # > 0 once numpy matrices of this width map onto the schema directly
        self._buffer: np.ndarray | None = None
        self._filled = 0
        self._capacity = 0  # rows of the next buffer: its limit once one has filled
        self._spare: np.ndarray | None = None  # a full buffer the worker is done with, reused (no fresh pages)
        self._buffered_since = 0.0  # time.monotonic() when the buffer's first row came
        self._features: dict[str, _Feature] = {}
        self._ranks: tuple[Reference, list[str], RankTable] | None = None
        self._plan: _Plan | None = None
        self._pending: _Pending | None = None
        self._pending_lock = threading.Lock()
        self._numeric_window: tuple[list[str], SlidingWindow[ColumnSketches]] | None = None
        self._warmup = ReferenceBuilder(self._names, max_features=self.max_features) if self.reference is None else None
        self._last_drift = 0.0
        self._rows_since_drift = 0
        self.events: list[DriftEvent] = []
        self.rows_observed = 0
        self.rows_processed = 0
        self.drift_scores: dict[tuple[str, str], float] = {}
        runtime.get().register_monitor(self)

    # -- caller side -----------------------------------------------------------------------------------
    def observe(self, x: object) -> None:
        """Take one call's input (on the caller's thread): buffer rows, hand full batches to the worker."""
        width = self._matrix_width
        arr = host_array(x) if width else None
        if arr is not None:
            shape = arr.shape  # read once: each read of .shape builds a tuple
            if len(shape) == 2 and shape[1] == width and arr.dtype.kind == "f":
                # the hot path: a float matrix with the schema already known (names came from the first call)
                matrix = arr
                if width > self.max_features:  # a wide input: its first max_features columns, the rest counted
                    runtime.get().count_drop(semconv.DROP_FEATURE_LIMIT, width - self.max_features)
                    width = self.max_features
                    matrix = matrix[:, :width]
                rows = shape[0]
                self.rows_observed += rows
                limit = buffer_limit(width)
                if rows < limit:
                    self._buffer_rows(matrix, limit)
                else:
                    self._submit_matrix(np.array(matrix, dtype=np.float64))
                return
        table = to_table(x, self._names or (self.reference.feature_names if self.reference else None))
        if isinstance(table, Skip):
            runtime.get().count_drop(table.reason)
            return
        if table.rows == 0:
            return
        schema = (table.names, table.kinds)
        if self._schema is None:
            with self._lock:
                self._schema = self._schema or (table.names[: self.max_features], table.kinds[: self.max_features])
                if table.matrix is not None and host_array(x) is not None:
                    self._matrix_width = len(table.names)  # wider than max_features too: sliced on the hot path
        if schema[0][: self.max_features] != self._schema[0]:
            runtime.get().count_drop(semconv.DROP_SHAPE_CHANGED)
            return
        if len(table.names) > self.max_features:
            runtime.get().count_drop(semconv.DROP_FEATURE_LIMIT, len(table.names) - self.max_features)
        self.rows_observed += table.rows
        limit = buffer_limit(min(len(table.names), self.max_features))
        if table.matrix is not None and table.rows < limit:
            self._buffer_rows(table.matrix[:, : self.max_features], limit)
        else:
            self._submit(_copy(table, self.max_features))

    def _buffer_rows(self, rows: np.ndarray, limit: int) -> None:
        """Copy ``rows`` into the buffer, which grows by doubling up to ``limit`` rows (:func:`buffer_limit`); a
        full buffer goes to the worker as one batch (many calls' rows, one sort: see :data:`BUFFER_VALUES`)."""
        count, width = rows.shape
        with self._lock:
            buf, filled = self._buffer, self._filled
            end = filled + count
            if buf is not None:
                size, columns = buf.shape
                if end < size <= limit and columns == width:  # room left: most calls
                    buf[filled:end] = rows
                    self._filled = end
                    return
            full: list[np.ndarray] = []
            if buf is not None and (buf.shape[1] != width or buf.shape[0] > limit):  # new width, or settings reloaded
                if filled:
                    full.append(buf[:filled])
                buf, filled = None, 0
            while rows.shape[0]:
                need = filled + rows.shape[0]
                if buf is None:  # a new buffer: its rows' age starts now (growing one keeps its first row's)
                    self._buffered_since = time.monotonic()
                if buf is None or (need > buf.shape[0] and buf.shape[0] < limit):
                    doubled = 2 * buf.shape[0] if buf is not None else 0
                    size = min(limit, max(need, MIN_BUFFER_ROWS, self._capacity, doubled))
                    spare, self._spare = self._spare, None
                    grown = spare if spare is not None and spare.shape == (size, width) else np.empty((size, width))
                    if buf is not None and filled:
                        grown[:filled] = buf[:filled]
                    buf = grown
                n = min(rows.shape[0], buf.shape[0] - filled)
                buf[filled : filled + n] = rows[:n]
                filled += n
                rows = rows[n:]
                if filled == limit:  # a busy model: its next buffer starts at full size
                    full.append(buf)
                    buf, filled, self._capacity = None, 0, limit
            self._buffer, self._filled = buf, filled
        for part in full:
            self._submit_matrix(part, spare=True)

    def _submit_matrix(self, matrix: np.ndarray, spare: bool = False) -> None:
        """Queue a float matrix; with ``spare`` (the buffer, or a view of its first rows) the worker hands the
        buffer back for reuse once done with it."""
        assert self._schema is not None
        names, kinds = self._schema
        self._submit(Table(names, kinds, matrix.shape[0], matrix=matrix), spare)

    def _submit(self, table: Table, spare: bool = False) -> None:
        held = table.matrix.nbytes if table.matrix is not None else sum(c.nbytes for c in table.columns or ())
        runtime.get().worker.submit(lambda: self._process(table, spare), held)

    def flush(self, drift: bool = True) -> None:
        """Hand buffered rows to the worker and, with ``drift``, ask for a drift update (``otel_ml.force_flush``).

        At a metric export (``drift=False``) only the rows move, and fewer than :data:`MIN_BUFFER_ROWS` only once
        the first of them has waited ``OTEL_ML_DRIFT_INTERVAL`` (drift is scored at most that often anyway): each
        job costs the application's busy threads GIL hand-overs (a worker job that releases the GIL dozens of
        times, next to a thread that keeps it, is stretched over many switch intervals, each hand-over waking a
        thread). A quiet model's rows reach the sketches within one interval and one export.

        Either way, the counts of batches the worker has finished are recorded first (:meth:`publish`).
        """
        self.publish()
        with self._lock:
            part = self._buffer[: self._filled] if self._buffer is not None and self._filled else None
            few = not drift and self._filled < MIN_BUFFER_ROWS
            if part is not None and few and time.monotonic() - self._buffered_since < config.settings.drift_interval:
                part = None  # a few young rows: they wait for more, or for their age
            if part is not None:  # handed over as it is (the worker hands the buffer back when done)
                self._buffer, self._filled = None, 0
        if part is not None:
            self._submit_matrix(part, spare=True)
        if drift:
            runtime.get().worker.submit(self._flushed)

    def _flushed(self) -> None:
        """The worker's part of a flush, after the rows it was handed: record every count, score drift."""
        self.publish()
        self._update_drift(force=True)

    def take_events(self) -> list[DriftEvent]:
        """Drift events not yet attached to a span (called by the recorder on the caller's thread)."""
        if not self.events:
            return []
        with self._lock:
            events, self.events = self.events, []
        return events

    # -- worker side -----------------------------------------------------------------------------------
    def _process(self, table: Table, spare: bool = False) -> None:
        if self._warmup is not None:  # the reference builder may keep the rows: no reuse
            spare = False
            need = self.warmup_rows - self._warmup.rows
            self._warmup.add_table(table.slice(0, need))
            if self._warmup.rows < self.warmup_rows or not self._warmup.features:
                return
            self.reference = self._warmup.build(source=semconv.REFERENCE_WARMUP)
            self._warmup = None
            table = table.slice(need, table.rows)
            if table.rows == 0:
                return
        ref = self.reference
        assert ref is not None
        plan = self._plan_of(table, ref)
        kept = self._numeric(table, plan, ref) if plan.numeric else False
        if plan.categorical:
            columns = table.by_column()

            def one(item: tuple[_Feature, int]) -> None:
                feature, i = item
                col = columns.column(i)
                self._categorical(feature, col, ref.features.get(feature.name))
                assert feature.window is not None
                feature.window.update(col)

            parallel.for_each(one, plan.categorical, table.rows * len(plan.categorical), config.settings.sketch_threads)
        self.rows_processed += table.rows
        self._rows_since_drift += table.rows
        if spare and not kept and not plan.categorical and table.matrix is not None:  # done with the buffer: reuse it
            buffer = table.matrix if table.matrix.base is None else table.matrix.base  # not a view of its rows
            with self._lock:  # the caller takes it under the same lock (_buffer_rows)
                self._spare = buffer
        self._update_drift(force=False)

    def _numeric(self, table: Table, plan: _Plan, ref: Reference) -> bool:
        """Every numeric feature at once: one sort of the batch gives their quality counts and rank
        histograms (pending until the next collection: :meth:`publish`); the rows go, unsorted, into the
        features' shared window. True when the window keeps the batch's own matrix (a batch that fits one
        window block whole).

        Everything here runs on the worker, but what holds the GIL costs the application's threads too, several
        times its own length when they keep releasing and retaking it (a forest's trees do): the bookkeeping is
        kept to a few small numpy calls per batch, and the counts are recorded per collection, not per batch."""
        part, counted = self._numeric_part(table, plan.numeric)
        rows = part.shape[0]
        whole = SortedColumns.of(part, _sorter(part.size))
        ranks = self._rank_table(ref, plan.numeric_names)
        found = ranks.search(whole)
        window = self._numeric_window_of(plan.numeric_names)
        now = time.monotonic()
        # the worker owns part; a slice is copied, not to pin it all
        blocks = [(a, b, part if (a, b) == (0, rows) else part[a:b].copy()) for a, b in window.plan(rows, now)]
        counts, outside = ranks.counts(whole, found)
        missing = whole.nan if counted is None else np.where(counted, 0, whole.nan)  # counted: classified already
        self._pend(_Pending(plan.numeric_features, ranks.has_cuts, counts, missing, outside))
        for start, stop, block in blocks:
            window.fill(stop - start, functools.partial(_add_block, rows=block), now)
        return any(block is table.matrix for _, _, block in blocks)

    def _pend(self, batch: _Pending) -> None:
        """Add one numeric batch's counts to the pending ones. Recorded at once when no exporter merges otel-ml's
        aggregation (the SDK's instruments take them; nothing would collect them later)."""
        stale = None
        with self._pending_lock:
            pending = self._pending
            if pending is not None and pending.features is batch.features:
                pending.add(batch)
            else:  # the first batch since the last collection, or of new features (record the old ones now)
                stale, self._pending = pending, batch
        if stale is not None:
            self._record(stale)
        if not runtime.get().aggregator.merging:
            self.publish()

    def publish(self) -> None:
        """Record the numeric batches' pending rank-histogram and quality counts: at every collection (the
        metric export's hand-off), at a flush, or after each batch when no exporter merges otel-ml's metrics.

        Recording is a pass of Python over the features; run once per collection instead of once per batch
        on the worker, it holds the GIL that much less often next to the application's threads."""
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._record(pending)

    def _record(self, pending: _Pending) -> None:
        features = pending.features
        for k in np.flatnonzero(pending.missing):
            self._count(semconv.FEATURE_MISSING, int(pending.missing[k]), features[k])
        for k in np.flatnonzero(pending.outside):
            self._count(semconv.FEATURE_OUT_OF_RANGE, int(pending.outside[k]), features[k])
        ranked = np.flatnonzero(pending.has_cuts & pending.counts.any(axis=1))
        if ranked.size:
            rank = runtime.get().aggregator.histogram(
                semconv.FEATURE_RANK,
                semconv.FEATURE_RANK_UNIT,
                "Input values' rank under the reference CDF",
                semconv.UNIT_INTERVAL_BUCKETS,
            )
            _record_ranks(rank, pending.counts[ranked], [features[k].series for k in ranked])

    def _numeric_part(self, table: Table, work: list[tuple[_Feature, int]]) -> tuple[np.ndarray, np.ndarray | None]:
        """The numeric features' columns as one float matrix (NaN where a value is missing or not a number),
        and which columns had their missing values counted here (object columns, classified value by value)."""
        if table.matrix is not None:
            index = [i for _, i in work]
            whole = index == list(range(table.matrix.shape[1]))
            return (table.matrix if whole else table.matrix[:, index]), None
        part = np.empty((table.rows, len(work)))
        counted = np.zeros(len(work), dtype=bool)
        for k, (feature, i) in enumerate(work):
            col = table.column(i)
            if col.dtype.kind in "fiub":
                part[:, k] = col
                continue
            part[:, k], missing, mismatch = numeric_values(col)
            counted[k] = True
            self._count(semconv.FEATURE_MISSING, missing, feature)
            self._count(semconv.FEATURE_TYPE_MISMATCH, mismatch, feature)
        return part, counted

    def _plan_of(self, table: Table, ref: Reference) -> _Plan:
        """Which of the table's columns are numeric and which categorical, as features (worked out once per
        schema and reference: the same for every batch)."""
        plan = self._plan
        if plan is not None and plan.reference is ref and plan.names == table.names and plan.kinds == table.kinds:
            return plan
        kinds = dict(zip(*self._schema, strict=True)) if self._schema is not None else {}
        work = []
        for i, name in enumerate(table.names):
            ref_kind = ref.features[name].kind if name in ref.features else None
            work.append((self._feature(name, ref_kind or kinds.get(name, table.kinds[i])), i))
        numeric = [item for item in work if item[0].kind != CATEGORICAL]
        categorical = [item for item in work if item[0].kind == CATEGORICAL]
        plan = self._plan = _Plan(ref, list(table.names), list(table.kinds), numeric, categorical)
        return plan

    def _numeric_window_of(self, names: list[str]) -> SlidingWindow[ColumnSketches]:
        """The window shared by the numeric features ``names`` (a new one if they changed)."""
        if self._numeric_window is None or self._numeric_window[0] != names:
            width = len(names)
            window: SlidingWindow[ColumnSketches] = SlidingWindow(
                lambda: ColumnSketches(width),
                max_rows=self.window_rows if self.window_rows else None,
                max_age_s=self.window_seconds,
            )
            self._numeric_window = (names, window)
        return self._numeric_window[1]

    def _rank_table(self, ref: Reference, names: list[str]) -> RankTable:
        """The rank cuts and ranges of these numeric features under ``ref`` (built once per reference)."""
        cached = self._ranks
        if cached is not None and cached[0] is ref and cached[1] == names:
            return cached[2]
        cuts, low, high = [], [], []
        for name in names:
            ref_f = ref.features.get(name)
            numeric = ref_f is not None and ref_f.kind == "numeric" and ref_f.quantiles.count > 0
            cuts.append(ref.rank_cuts(name) if numeric else None)
            low.append(ref_f.min if numeric and ref_f is not None else np.nan)
            high.append(ref_f.max if numeric and ref_f is not None else np.nan)
        table = RankTable(cuts, low, high)
        self._ranks = (ref, names, table)
        return table

    def _feature(self, name: str, kind: str) -> _Feature:
        feature = self._features.get(name)
        if feature is None:
            window: SlidingWindow[Any] | None = None
            if kind == CATEGORICAL:  # numeric features share one window (see _numeric)
                window = SlidingWindow(
                    lambda: FeatureSketch("categorical"),
                    max_rows=self.window_rows if self.window_rows else None,
                    max_age_s=self.window_seconds,
                )
            feature = self._features[name] = _Feature(name, kind, self._model_attrs, window)
        return feature

    def _count(self, name: str, n: int, feature: _Feature) -> None:
        if n:
            runtime.get().aggregator.counter(name, semconv.FEATURE_QUALITY_UNIT, "").add(n, *feature.series)

    def _categorical(self, feature: _Feature, col: np.ndarray, ref_f: FeatureSketch | None) -> None:
        batch = FeatureSketch("categorical")
        batch.update(col)
        self._count(semconv.FEATURE_MISSING, batch.missing, feature)
        self._count(semconv.FEATURE_TYPE_MISMATCH, batch.type_mismatch, feature)
        known = ref_f.frequent.counts() if ref_f is not None and ref_f.kind == "categorical" else {}
        complete = ref_f is not None and ref_f.kind == "categorical" and ref_f.frequent.other == 0
        top = {value: i for i, (value, _) in enumerate(sorted(known.items(), key=lambda kv: -kv[1]))}
        counter = runtime.get().aggregator.counter(
            semconv.FEATURE_CATEGORY, semconv.FEATURE_CATEGORY_UNIT, "Input values per category (reference top-K)"
        )
        unseen = 0
        for value, n in batch.frequent.counts().items():
            if value in top:
                label = text(value, 64) if self.capture_categories else f"top{top[value] + 1}"
            elif complete or not known:
                label, unseen = semconv.CATEGORY_UNSEEN, unseen + n
            else:
                label = semconv.CATEGORY_OTHER
            series = feature.category_series.get(label)
            if series is None:
                series = feature.category_series[label] = _series(
                    {**feature.series[0], semconv.ML_FEATURE_CATEGORY: label}
                )
            counter.add(n, *series)
        if batch.frequent.other:
            series = feature.category_series.get(semconv.CATEGORY_OTHER) or _series(
                {**feature.series[0], semconv.ML_FEATURE_CATEGORY: semconv.CATEGORY_OTHER}
            )
            feature.category_series[semconv.CATEGORY_OTHER] = series
            counter.add(batch.frequent.other, *series)
        if known:
            self._count(semconv.FEATURE_UNSEEN_CATEGORY, unseen, feature)

    def _update_drift(self, force: bool) -> None:
        ref = self.reference
        now = time.monotonic()
        if ref is None or (not force and now - self._last_drift < config.settings.drift_interval):
            return
        if not force and self._rows_since_drift == 0:
            return
        self._last_drift, self._rows_since_drift = now, 0
        agg = runtime.get().aggregator
        gauge = agg.gauge(semconv.FEATURE_DRIFT, semconv.DRIFT_UNIT, "Drift score per feature and method")
        evaluated = drifted = 0
        numeric: dict[str, FeatureSketch] = {}
        if self._numeric_window is not None and self._numeric_window[1].rows() >= MIN_DRIFT_ROWS:
            names, window = self._numeric_window
            snapshot = window.snapshot()
            numeric = {name: snapshot.feature(j) for j, name in enumerate(names)}
        for feature in self._features.values():
            ref_f = ref.features.get(feature.name)
            if feature.window is None:
                current = numeric.get(feature.name)
            else:  # a handful of rows is noise, not drift
                current = feature.window.snapshot() if feature.window.rows() >= MIN_DRIFT_ROWS else None
            if ref_f is None or current is None:
                continue
            scores = _scores(ref_f, current)
            if not scores:
                continue
            for method, score in scores.items():
                self.drift_scores[(feature.name, method)] = score
                series = feature.drift_series.get(method)
                if series is None:
                    series = feature.drift_series[method] = _series(
                        {
                            **feature.series[0],
                            semconv.ML_DRIFT_METHOD: method,
                            semconv.ML_REFERENCE_ID: ref.id,
                            semconv.ML_REFERENCE_SOURCE: ref.source,
                        }
                    )
                gauge.set(score, *series)
            primary = "chi2" if feature.kind == CATEGORICAL else "psi"
            score = scores[primary]
            evaluated += 1
            now_drifted = drift.is_drifted(primary, score, self.thresholds)
            drifted += now_drifted
            if now_drifted and not feature.drifted:
                self._emit(
                    DriftEvent(self.model, self.version, feature.name, primary, score, self.thresholds[primary], ref.id)
                )
            feature.drifted = now_drifted
        if evaluated:
            model_gauge = agg.gauge(semconv.MODEL_DRIFT, semconv.DRIFT_UNIT, "Share of drifted features")
            attrs = {**self._model_attrs, semconv.ML_REFERENCE_ID: ref.id, semconv.ML_REFERENCE_SOURCE: ref.source}
            model_gauge.set(drifted / evaluated, *_series(attrs))

    def _emit(self, event: DriftEvent) -> None:
        with self._lock:
            if len(self.events) < 100:
                self.events.append(event)
        if self.on_drift is not None:
            try:
                self.on_drift(event)
            except Exception as exc:  # the user's callback failing is reported, never propagated
                guard.log.warning("on_drift", "otel_ml: on_drift callback raised %s", type(exc).__name__)


def _scores(ref_f: FeatureSketch, cur: FeatureSketch) -> dict[str, float]:
    """Drift scores of one feature (numeric: psi, ks, js, wasserstein; categorical: chi2 p-value, js)."""
    if ref_f.kind == "numeric" and cur.kind == "numeric":
        r, c = ref_f.quantiles, cur.quantiles
        if r.count == 0 or c.count == 0:
            return {}
        edges = r.quantile(np.arange(1, 10) / 10)
        ref_counts = np.diff(np.concatenate(([0.0], r.cdf(edges), [1.0])))
        cur_counts = np.diff(np.concatenate(([0.0], c.cdf(edges), [1.0])))
        ks, wasserstein = drift.ks_and_wasserstein(r, c)
        return {
            "psi": drift.psi(ref_counts, cur_counts),
            "ks": ks,
            "js": drift.js_divergence(ref_counts, cur_counts),
            "wasserstein": wasserstein,
        }
    if ref_f.kind == "categorical" and cur.kind == "categorical":
        ref_items, cur_items = ref_f.frequent.counts(), cur.frequent.counts()
        if not ref_items or not cur_items:
            return {}
        keys = sorted(set(ref_items) | set(cur_items), key=repr)
        return {
            "chi2": drift.chi2(ref_items, cur_items).p_value,
            "js": drift.js_divergence([ref_items.get(k, 0) for k in keys], [cur_items.get(k, 0) for k in keys]),
        }
    return {}


def _record_ranks(
    rank: Any, counts: np.ndarray, series: list[tuple[dict[str, AttributeValue], frozenset[Any]]]
) -> None:
    """Record rows of 20 PIT bucket counts, one row per feature (plus an empty +Inf bucket: the histogram's
    explicit bounds end at 1.0). Each row has at least one value."""
    hit = counts > 0
    low = hit.argmax(axis=1) / 20
    high = (20 - hit[:, ::-1].argmax(axis=1)) / 20
    with_inf = np.column_stack((counts, np.zeros(len(counts), dtype=counts.dtype)))
    rank.record_rows(with_inf, counts @ _RANK_MIDPOINTS, low, high, series)


def _add_block(sketch: ColumnSketches, rows: np.ndarray) -> None:
    sketch.update(rows)


def _sorter(values: int) -> Callable[[np.ndarray], None] | None:
    """Sorting a large batch's ``(features, rows)`` array in place over the sketch threads (None: inline)."""
    threads = config.settings.sketch_threads
    if threads <= 1 or values < parallel.MIN_PARALLEL_VALUES:
        return None

    def sort(values: np.ndarray) -> None:
        bounds = np.linspace(0, values.shape[0], min(threads, values.shape[0]) + 1).astype(int)
        chunks = [values[a:b] for a, b in itertools.pairwise(bounds) if b > a]
        parallel.for_each(lambda chunk: chunk.sort(axis=1), chunks, values.size, threads)

    return sort


def _copy(table: Table, max_features: int) -> Table:
    """A worker-owned copy of the first ``max_features`` columns (the caller may reuse its input)."""
    names, kinds = table.names[:max_features], table.kinds[:max_features]
    if table.matrix is not None:
        return Table(names, kinds, table.rows, matrix=np.array(table.matrix[:, :max_features], dtype=np.float64))
    assert table.columns is not None
    return Table(names, kinds, table.rows, columns=[np.array(c, copy=True) for c in table.columns[:max_features]])
