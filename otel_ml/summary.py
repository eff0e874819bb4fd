"""An in-process view of otel-ml's metrics: a reader you can add beside OTLP, and a plain-text summary.

    reader = SummaryReader()
    otel_ml.configure(metric_readers=[reader])
    ...
    print(reader.render())   # calls, latency p50/p95/p99, confidence distribution, class counts

Quantiles are estimated from the histogram buckets exactly as Prometheus' ``histogram_quantile`` does
(linear interpolation inside the bucket), so they match what a dashboard would show.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, Metric, MetricsData
from opentelemetry.sdk.resources import Resource

from otel_ml import semconv
from otel_ml._core import runtime


class SummaryReader(InMemoryMetricReader):
    """An in-memory metric reader whose collections include otel-ml's own aggregated metrics."""

    def __init__(self, resource: Resource | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._aggregator = runtime.get().aggregator
        self._resource = resource or Resource.create({})
        self._aggregator.attach()

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        merged = self._aggregator.merge(metrics_data, self._resource)
        super()._receive_metrics(merged, timeout_millis=timeout_millis, **kwargs)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._aggregator.detach()
        super().shutdown(timeout_millis=timeout_millis, **kwargs)

    def collect_metrics(self) -> dict[str, Metric]:
        """Collect now and return every metric by name."""
        data = self.get_metrics_data()
        out: dict[str, Metric] = {}
        for rm in data.resource_metrics if data is not None else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = m
        return out

    def render(self) -> str:
        """A short plain-text summary of every instrumented model seen so far."""
        return render(self.collect_metrics())


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float:
    """The q-quantile of an explicit-bucket histogram, interpolated like Prometheus (``nan`` when empty)."""
    total = sum(counts)
    if total == 0:
        return float("nan")
    rank = q * total
    cumulative = 0
    for i, c in enumerate(counts):
        if cumulative + c >= rank and c > 0:
            if i == len(bounds):  # the +Inf bucket: the highest finite bound, as Prometheus does
                return float(bounds[-1])
            if i == 0 and bounds[0] <= 0:  # no lower bound to interpolate from: Prometheus returns the bound
                return float(bounds[0])
            lower = 0.0 if i == 0 else float(bounds[i - 1])
            return lower + (float(bounds[i]) - lower) * (rank - cumulative) / c
        cumulative += c
    return float(bounds[-1])


def _model_key(attrs: Any) -> str:
    name = attrs.get(semconv.ML_MODEL_NAME, "?")
    version = attrs.get(semconv.ML_MODEL_VERSION, "")
    return f"{name} {version}".strip()


def _merge_points(points: Sequence[HistogramDataPoint]) -> tuple[list[float], list[int], int]:
    bounds = list(points[0].explicit_bounds)
    counts = [0] * (len(bounds) + 1)
    for p in points:
        counts = [a + b for a, b in zip(counts, p.bucket_counts, strict=True)]
    return bounds, counts, sum(p.count for p in points)


def render(metrics: dict[str, Metric]) -> str:
    """Plain-text summary per model: calls, rows, errors, latency quantiles, confidence, classes."""
    per_model: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for name in (
        semconv.PREDICTION_DURATION,
        semconv.PREDICTION_COUNT,
        semconv.PREDICTION_CONFIDENCE,
        semconv.PREDICTION_CLASS,
        semconv.MODEL_DRIFT,
        semconv.FEATURE_DRIFT,
    ):
        metric = metrics.get(name)
        for p in metric.data.data_points if metric is not None else []:
            per_model[_model_key(p.attributes or {})][name].append(p)
    if not per_model:
        return "otel-ml: no predictions recorded."
    lines = []
    for model, data in sorted(per_model.items()):
        durations = data[semconv.PREDICTION_DURATION]
        calls = sum(p.count for p in durations)
        errors = sum(p.count for p in durations if (p.attributes or {}).get(semconv.ERROR_TYPE))
        rows = sum(p.value for p in data[semconv.PREDICTION_COUNT])
        lines.append(f"model {model}: {calls} calls, {rows} rows predicted, {errors} errors")
        if durations:
            bounds, counts, _ = _merge_points(durations)
            q = [histogram_quantile(x, bounds, counts) * 1e3 for x in (0.5, 0.95, 0.99)]
            lines.append(f"  latency   p50 {q[0]:.3f} ms   p95 {q[1]:.3f} ms   p99 {q[2]:.3f} ms")
        conf = data[semconv.PREDICTION_CONFIDENCE]
        if conf:
            bounds, counts, n = _merge_points(conf)
            mean = sum(p.sum for p in conf) / n
            lines.append(f"  confidence mean {mean:.3f} over {n} rows")
            groups = [
                (0.5, sum(counts[:10])),
                (0.8, sum(counts[10:16])),
                (0.9, sum(counts[16:18])),
                (1.0, sum(counts[18:])),
            ]
            lower = 0.0
            for upper, c in groups:
                bar = "#" * round(40 * c / n) if n else ""
                lines.append(f"    ({lower:.2f}, {upper:.2f}]  {c:6d}  {bar}")
                lower = upper
        classes: dict[str, int] = defaultdict(int)
        for p in data[semconv.PREDICTION_CLASS]:
            classes[str((p.attributes or {}).get(semconv.ML_PREDICTION_CLASS))] += int(p.value)
        if classes:
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(classes.items(), key=lambda kv: -kv[1]))
            lines.append(f"  classes   {shown}")
        for p in data[semconv.MODEL_DRIFT]:
            attrs = p.attributes or {}
            psi = sorted(
                (
                    (q.value, (q.attributes or {}).get(semconv.ML_FEATURE_NAME))
                    for q in data[semconv.FEATURE_DRIFT]
                    if (q.attributes or {}).get(semconv.ML_DRIFT_METHOD) == "psi"
                ),
                key=lambda t: -t[0],
            )[:3]
            top = ", ".join(f"{name} {value:.3f}" for value, name in psi)
            lines.append(
                f"  drift     {p.value:.0%} of features drifted vs reference {attrs.get(semconv.ML_REFERENCE_ID)}"
                f" ({attrs.get(semconv.ML_REFERENCE_SOURCE)}); highest PSI: {top}"
            )
    return "\n".join(lines)
