"""Pure-numpy, bounded, mergeable summaries of model inputs: quantiles, frequent items, features."""

from otel_ml.sketch.feature import FeatureKind, FeatureSketch
from otel_ml.sketch.frequent import DEFAULT_TOP_K, FrequentItems
from otel_ml.sketch.quantile import DEFAULT_K, QuantileSketch, RankCuts, max_items, rank_buckets

__all__ = [
    "DEFAULT_K",
    "DEFAULT_TOP_K",
    "FeatureKind",
    "FeatureSketch",
    "FrequentItems",
    "QuantileSketch",
    "RankCuts",
    "max_items",
    "rank_buckets",
]
