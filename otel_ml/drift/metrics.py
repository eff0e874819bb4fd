"""Drift statistics between a reference and a current distribution, in pure numpy.

Numeric features are compared through :class:`~otel_ml.sketch.quantile.QuantileSketch` objects
(or pre-binned counts), categorical features through count dictionaries.  Every function returns
a float (``nan`` when an input is empty) so results can be exported as metrics directly; use
:func:`is_drifted` with :data:`DEFAULT_THRESHOLDS` to turn them into alerts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from otel_ml.sketch.quantile import QuantileSketch

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Chi2Result",
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

DEFAULT_THRESHOLDS: dict[str, float] = {"psi": 0.2, "ks": 0.1, "js": 0.1, "wasserstein": 0.1, "chi2": 0.01}

_FPMIN = 1e-300
_EPS = 1e-15
_MAX_ITER = 100_000
_lgamma = np.frompyfunc(math.lgamma, 1, 1)


def _proportions(counts: Any) -> np.ndarray | None:
    """Counts as float proportions, or None when they sum to zero."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    if np.any(c < 0) or not np.isfinite(c).all():
        raise ValueError("counts must be finite and non-negative")
    total = c.sum()
    return c / total if total > 0 else None


def psi(expected_counts: Any, actual_counts: Any, eps: float = 1e-4) -> float:
    """Population Stability Index sum((a - e) * ln(a / e)) over aligned bins, proportions floored at ``eps``.

    Always >= 0 and 0 iff the (floored) proportions agree; at most ``2 * ln(1/eps)`` (18.4 at the
    default).  Rule of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 drift.  NaN if either is empty.
    """
    e, a = _proportions(expected_counts), _proportions(actual_counts)
    if e is None or a is None:
        return float("nan")
    if e.size != a.size:
        raise ValueError("expected and actual counts must have the same number of bins")
    e, a = np.maximum(e, eps), np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_from_ranks(rank_bucket_counts: Any, eps: float = 1e-4) -> float:
    """PSI of rank-bucket counts (``rank_buckets``) against the uniform 1/n expected under no drift."""
    counts = np.asarray(rank_bucket_counts, dtype=np.float64).ravel()
    return psi(np.ones(counts.size), counts, eps)


def _weights(sketch: QuantileSketch) -> tuple[np.ndarray, np.ndarray]:
    """Sorted retained items and their individual weights."""
    items, cum = sketch.weighted_items()
    return items, np.diff(cum, prepend=0).astype(np.float64)


def psi_from_sketches(ref: QuantileSketch, cur: QuantileSketch, bins: int = 10, eps: float = 1e-4) -> float:
    """PSI over ``bins`` reference-quantile bins [e_i, e_{i+1}) computed from two sketches.

    Inner edges are ``ref.quantile(i / bins)`` for i = 1..bins-1 (duplicates from point masses are
    merged), values are binned with ``np.searchsorted(edges, x, side="right")``; each bin mass is
    off by at most the sketches' rank error, so the result tracks the exact binned PSI closely.
    """
    if ref.count == 0 or cur.count == 0:
        return float("nan")
    edges = np.unique(ref.quantile(np.arange(1, bins) / bins))
    n = edges.size + 1
    counts = []
    for sk in (ref, cur):
        items, w = _weights(sk)
        counts.append(np.bincount(np.searchsorted(edges, items, side="right"), weights=w, minlength=n))
    return psi(counts[0], counts[1], eps)


def ks_from_sketches(ref: QuantileSketch, cur: QuantileSketch) -> float:
    """Kolmogorov-Smirnov statistic sup_x |F_ref(x) - F_cur(x)| in [0, 1] from two sketches.

    Both sketch CDFs are right-continuous step functions jumping only at retained items, so the
    supremum is attained on the union of retained items; it equals the exact two-sample statistic
    up to the two sketches' rank errors.  NaN if either sketch is empty.
    """
    return ks_and_wasserstein(ref, cur)[0]


def js_divergence(p_counts: Any, q_counts: Any) -> float:
    """Jensen-Shannon divergence (base 2) of aligned count vectors, in [0, 1]; 0 iff equal proportions."""
    p, q = _proportions(p_counts), _proportions(q_counts)
    if p is None or q is None:
        return float("nan")
    if p.size != q.size:
        raise ValueError("count vectors must have the same length")
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return float(min(1.0, max(0.0, 0.5 * kl(p) + 0.5 * kl(q))))


def wasserstein_normalised(ref: QuantileSketch, cur: QuantileSketch) -> float:
    """Earth mover's distance W1 = integral |F_ref - F_cur| dx, divided by the reference standard deviation.

    W1 equals the L1 distance between the two quantile functions (the mean shift needed to turn
    one distribution into the other); dividing by the reference std (exact, tracked by the sketch)
    makes it unit-free, so 0.1 means mass moved by a tenth of a standard deviation on average (the
    convention behind the 0.1 default, e.g. Evidently's normed Wasserstein).  For a constant
    reference (std 0) W1 is returned in the feature's own units.  >= 0, 0 when the distributions
    are identical, NaN if either sketch is empty.  W1 weighs tails by distance, so on heavy-tailed
    data the sketch estimate is within a few percent (not a rank-error bound); its sampling noise
    is about 1/sqrt(n) std units, so use >= ~1,000 rows per side with the 0.1 threshold.
    """
    return ks_and_wasserstein(ref, cur)[1]


def ks_and_wasserstein(ref: QuantileSketch, cur: QuantileSketch) -> tuple[float, float]:
    """:func:`ks_from_sketches` and :func:`wasserstein_normalised` from one evaluation of both CDFs on the
    union of the sketches' items (what a drift update needs: half the work of the two calls)."""
    if ref.count == 0 or cur.count == 0:
        return float("nan"), float("nan")
    xs = np.unique(np.concatenate((ref.weighted_items()[0], cur.weighted_items()[0])))
    gap = np.abs(ref.cdf(xs) - cur.cdf(xs))
    w1 = float(np.sum(np.diff(xs) * gap[:-1]))
    scale = ref.std
    return float(gap.max()), (w1 / scale if scale > 0 else w1)


class Chi2Result(NamedTuple):
    """Chi-square homogeneity test outcome."""

    statistic: float
    p_value: float
    dof: int


def chi2(ref_counts: Mapping[Any, float], cur_counts: Mapping[Any, float]) -> Chi2Result:
    """Pearson chi-square test that two categorical count tables come from the same distribution.

    Builds the 2 x K contingency table over the union of categories (categories with zero total
    dropped), statistic = sum((O - E)^2 / E) with E from the margins, dof = K - 1, and the p-value
    ``chi2_sf(statistic, dof)`` in [0, 1].  Drift is signalled by a *small* p-value.  With fewer
    than two categories, or an empty side, the result is (0, 1, 0).  Like every chi-square test it
    assumes expected counts of roughly >= 5 per cell.
    """
    keys = list({**dict.fromkeys(ref_counts), **dict.fromkeys(cur_counts)})
    table = np.array(
        [[float(ref_counts.get(k, 0)) for k in keys], [float(cur_counts.get(k, 0)) for k in keys]],
        dtype=np.float64,
    ).reshape(2, len(keys))
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    if table.shape[1] < 2 or np.any(rows == 0):
        return Chi2Result(0.0, 1.0, 0)
    expected = np.outer(rows, table.sum(axis=0)) / rows.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return Chi2Result(stat, chi2_sf(stat, dof), dof)


def chi2_sf(x: float, dof: float) -> float:
    """Chi-square survival function P(X > x) for ``dof`` degrees of freedom = Q(dof/2, x/2)."""
    return float(gammaincc(dof / 2.0, x / 2.0))


def gammaincc(a: Any, x: Any) -> np.ndarray:
    """Regularized upper incomplete gamma Q(a, x) = Gamma(a, x) / Gamma(a), vectorised, a > 0, x >= 0.

    Uses the power series of P = 1 - Q for x < a + 1 and the Lentz continued fraction of Q
    otherwise (Numerical Recipes 6.2), both to ~1e-15 relative accuracy; the continued fraction
    keeps tiny upper tails accurate rather than rounding them to 0.
    """
    a_arr, x_arr = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(x, dtype=np.float64))
    if np.any(a_arr <= 0) or np.any(x_arr < 0):
        raise ValueError("gammaincc needs a > 0 and x >= 0")
    out = np.ones(a_arr.shape, dtype=np.float64)
    series = (x_arr > 0) & (x_arr < a_arr + 1)
    frac = x_arr >= a_arr + 1
    if series.any():
        out[series] = 1.0 - _lower_series(a_arr[series], x_arr[series])
    if frac.any():
        out[frac] = _upper_fraction(a_arr[frac], x_arr[frac])
    return np.clip(out, 0.0, 1.0)


def _log_prefactor(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log(x^a e^-x / Gamma(a))."""
    return a * np.log(x) - x - _lgamma(a).astype(np.float64)


def _lower_series(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Regularized lower incomplete gamma P(a, x) by its power series (converges fast for x < a + 1)."""
    term = 1.0 / a
    total = term.copy()
    ap = a.copy()
    for _ in range(_MAX_ITER):
        ap += 1.0
        term = term * x / ap
        total += term
        if np.all(np.abs(term) < np.abs(total) * _EPS):
            break
    return np.asarray(total * np.exp(_log_prefactor(a, x)))


def _upper_fraction(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Regularized upper incomplete gamma Q(a, x) by modified Lentz continued fraction (x >= a + 1)."""
    b = x + 1.0 - a
    c = np.full(a.shape, 1.0 / _FPMIN)
    d = 1.0 / b
    h = d.copy()
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b = b + 2.0
        d = an * d + b
        d = np.where(np.abs(d) < _FPMIN, _FPMIN, d)
        c = b + an / c
        c = np.where(np.abs(c) < _FPMIN, _FPMIN, c)
        d = 1.0 / d
        delta = d * c
        h = h * delta
        if np.all(np.abs(delta - 1.0) < _EPS):
            break
    return np.asarray(np.exp(_log_prefactor(a, x)) * h)


def is_drifted(method: str, value: float, thresholds: Mapping[str, float] | None = None) -> bool:
    """Whether a drift value crosses its threshold (NaN, i.e. an empty window, never does).

    For "chi2" the value is a p-value and drift means value < threshold; for the other methods
    the value is a statistic and drift means value > threshold.
    """
    limits = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    if method not in limits:
        raise KeyError(f"unknown drift method {method!r}; expected one of {sorted(limits)}")
    if math.isnan(value):
        return False
    return value < limits[method] if method == "chi2" else value > limits[method]
