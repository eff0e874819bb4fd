"""Pure-numpy drift statistics (PSI, KS, JS, Wasserstein, chi-square) and sliding windows of sketches."""

from otel_ml.drift.metrics import (
    DEFAULT_THRESHOLDS,
    Chi2Result,
    chi2,
    chi2_sf,
    gammaincc,
    is_drifted,
    js_divergence,
    ks_and_wasserstein,
    ks_from_sketches,
    psi,
    psi_from_ranks,
    psi_from_sketches,
    wasserstein_normalised,
)
from otel_ml.drift.window import SlidingWindow

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Chi2Result",
    "SlidingWindow",
    "chi2",
    "chi2_sf",
    "gammaincc",
    "is_drifted",
    "js_divergence",
    "ks_and_wasserstein",
    "ks_from_sketches",
    "psi",
    "psi_from_ranks",
    "psi_from_sketches",
    "wasserstein_normalised",
]
