"""Uncertainty for accuracy numbers: bootstrap CIs, paired differences, McNemar, Wilson.

Only numpy and the standard library are required (scipy is never imported), so the
functions run anywhere the evaluator runs.  Inputs are per-item correctness vectors
(bool or 0/1), one entry per evaluation item.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from xsteer.errors import InputError

__all__ = [
    "CI",
    "McNemar",
    "bootstrap_ci",
    "format_ci",
    "mcnemar_exact",
    "paired_bootstrap_diff",
    "spearman_ci",
    "student_t_ppf",
    "upper_prediction_bound",
    "wilson_ci",
]


@dataclass(frozen=True)
class CI:
    """A point estimate with a confidence interval over ``n`` items (fractions, not %)."""

    estimate: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class McNemar:
    """Discordant-pair counts and the exact two-sided McNemar p-value.

    ``b01``: items system A got wrong and B got right; ``b10``: A right, B wrong.
    """

    b01: int
    b10: int
    p_value: float


def _as_bool(x: ArrayLike, name: str) -> np.ndarray:
    """1-D boolean view of a correctness vector; rejects values other than 0/1."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype != np.bool_:
        if a.size and not np.all((a == 0) | (a == 1)):
            raise InputError(f"{name} must contain only booleans or 0/1")
        a = a.astype(bool)
    return a


def _check_boot_args(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise InputError("n_boot must be >= 1")
    if not 0.0 < alpha < 1.0:
        raise InputError("alpha must be in (0, 1)")


def bootstrap_ci(
    correct: ArrayLike, *, n_boot: int = 10_000, alpha: float = 0.05, seed: int | None = 0
) -> CI:
    """Percentile-bootstrap ``1 - alpha`` CI for accuracy (the mean of ``correct``).

    Resampling ``n`` items with replacement from ``k`` correct ones gives a number of
    correct items that is exactly ``Binomial(n, k/n)``, so the bootstrap replicates are
    drawn from that distribution in one vectorized call -- the same distribution as
    index resampling, at O(n_boot) instead of O(n_boot * n).  Reproducible for a fixed
    ``seed`` (``numpy.random.default_rng``).  Raises ``ValueError`` on empty input.
    """
    _check_boot_args(n_boot, alpha)
    a = _as_bool(correct, "correct")
    n = int(a.size)
    if n == 0:
        raise InputError("bootstrap_ci needs at least one item")
    k = int(a.sum())
    rng = np.random.default_rng(seed)
    boot = rng.binomial(n, k / n, size=n_boot) / n
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return CI(k / n, float(low), float(high), n)


def paired_bootstrap_diff(
    a_correct: ArrayLike,
    b_correct: ArrayLike,
    *,
    n_boot: int = 10_000,
    alpha: float = 0.05,
    seed: int | None = 0,
) -> CI:
    """Paired percentile-bootstrap CI for the accuracy difference ``acc(b) - acc(a)``.

    Items are resampled as pairs (both systems saw the same item).  Only the counts of
    the four (a, b) outcome cells matter, and resampling pairs makes those counts
    ``Multinomial(n, cell frequencies)``; the difference is ``(n01 - n10) / n`` with
    ``n01`` = a wrong & b right.  Vectorized and exact in distribution, like
    :func:`bootstrap_ci`.
    """
    _check_boot_args(n_boot, alpha)
    a = _as_bool(a_correct, "a_correct")
    b = _as_bool(b_correct, "b_correct")
    if a.shape != b.shape:
        raise InputError(f"paired inputs differ in length: {a.size} vs {b.size}")
    n = int(a.size)
    if n == 0:
        raise InputError("paired_bootstrap_diff needs at least one item")
    n01 = int(np.sum(~a & b))
    n10 = int(np.sum(a & ~b))
    rest = n - n01 - n10
    rng = np.random.default_rng(seed)
    cells = rng.multinomial(n, [n01 / n, n10 / n, rest / n], size=n_boot)
    boot = (cells[:, 0] - cells[:, 1]) / n
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return CI((n01 - n10) / n, float(low), float(high), n)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties sharing their mean rank (as in Spearman's definition)."""
    ranks = np.argsort(np.argsort(x, axis=-1, kind="stable"), axis=-1).astype(float)
    for idx in np.ndindex(x.shape[:-1]):  # mean rank within each run of ties
        row, r = x[idx], ranks[idx]
        values, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        if len(values) < len(row):
            r[:] = (np.bincount(inverse, weights=r) / counts)[inverse]
    return ranks


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def spearman_ci(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int | None = 0,
) -> CI:
    """Spearman's rank correlation of paired observations with a percentile-bootstrap CI over pairs.

    A resample whose ranks are constant (correlation undefined) is dropped from the CI's quantiles."""
    _check_boot_args(n_boot, alpha)
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError(f"spearman_ci needs two 1-d arrays of equal length, got {a.shape} and {b.shape}")
    if a.size < 3:
        raise InputError(f"spearman_ci needs at least 3 pairs, got {a.size}")
    rho = float(_pearson_rows(_ranks(a[None]), _ranks(b[None]))[0])
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    boot = _pearson_rows(_ranks(a[idx]), _ranks(b[idx]))
    low, high = np.quantile(boot[np.isfinite(boot)], [alpha / 2, 1 - alpha / 2])
    return CI(rho, float(low), float(high), int(a.size))


def _binom_half_cdf(k: int, n: int) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, 1/2)``, computed exactly.

    The tail is an exact integer sum of binomial coefficients (built incrementally,
    C(n, i+1) = C(n, i) * (n - i) / (i + 1)) divided by ``2**n``; Python's int/int true
    division is correctly rounded even for n in the tens of thousands, where a float
    ``0.5**n`` would underflow and a float sum would lose the tail.
    """
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n > _EXACT_INT_MAX_N:
        return _binom_half_cdf_log(k, n)
    c = 1
    total = 1
    for i in range(k):
        c = c * (n - i) // (i + 1)
        total += c
    return total / (1 << n)


# Above this many discordant pairs the exact big-integer sum gets slow (~1 s at 1e5);
# the log-space sum is accurate to ~1e-12 relative and O(k) float work.
_EXACT_INT_MAX_N = 20_000


def _binom_half_cdf_log(k: int, n: int) -> float:
    """``P(X <= k)``, ``X ~ Binomial(n, 1/2)``, as a log-space sum (lgamma + log-sum-exp)."""
    log_terms = np.array(
        [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    ) - n * math.log(2.0)
    m = float(log_terms.max())
    return min(1.0, math.exp(m) * math.fsum(np.exp(log_terms - m).tolist()))


def mcnemar_exact(a_correct: ArrayLike, b_correct: ArrayLike) -> McNemar:
    """Exact (binomial) two-sided McNemar test of paired correctness vectors.

    Under H0 each of the ``n = b01 + b10`` discordant items is equally likely to favour
    either system, so ``b01 ~ Binomial(n, 1/2)``; ``p = min(1, 2 * P(X <= min(b01, b10)))``.
    ``p = 1`` when there are no discordant pairs.
    """
    a = _as_bool(a_correct, "a_correct")
    b = _as_bool(b_correct, "b_correct")
    if a.shape != b.shape:
        raise InputError(f"paired inputs differ in length: {a.size} vs {b.size}")
    b01 = int(np.sum(~a & b))
    b10 = int(np.sum(a & ~b))
    n = b01 + b10
    if n == 0:
        return McNemar(b01, b10, 1.0)
    p = min(1.0, 2.0 * _binom_half_cdf(min(b01, b10), n))
    return McNemar(b01, b10, p)


def _student_t_cdf(t: float, df: int) -> float:
    """Exact CDF of Student's t for an integer ``df`` (Abramowitz & Stegun 26.7.3-4: finite series in
    cos² θ, θ = atan(t / √df)), so no scipy is needed."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/π) (θ + sin θ cos θ (1 + 2/3 cos² θ + 2·4/(3·5) cos⁴ θ + …))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        a = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    else:  # even: sin θ (1 + 1/2 cos² θ + 1·3/(2·4) cos⁴ θ + …)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        a = math.sin(theta) * total
    return (1 + a) / 2


def student_t_ppf(p: float, df: int) -> float:
    """Quantile of Student's t with integer ``df`` >= 1 (bisection on the exact CDF)."""
    if not 0.0 < p < 1.0:
        raise InputError(f"p must be in (0, 1), got {p}")
    if df < 1:
        raise InputError(f"df must be >= 1, got {df}")
    lo, hi = -1.0, 1.0
    while _student_t_cdf(lo, df) > p:
        lo *= 2
    while _student_t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _student_t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def upper_prediction_bound(values: Sequence[float], level: float = 0.95) -> float:
    """One-sided ``level`` upper prediction bound for one more draw from the population ``values`` came from,
    under a normal model: mean + t(level, k - 1) · sd · √(1 + 1/k). With k draws a new one exceeds it with
    probability 1 - ``level`` — unlike the largest of k draws, which a new one exceeds with probability
    1 / (k + 1) (11% for 8)."""
    k = len(values)
    if k < 2:
        raise InputError(f"a prediction bound needs at least 2 draws, got {k}")
    if not 0.0 < level < 1.0:
        raise InputError(f"level must be in (0, 1), got {level}")
    mean = sum(values) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    return mean + student_t_ppf(level, k - 1) * sd * math.sqrt(1 + 1 / k)


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> CI:
    """Wilson score interval for ``k`` successes out of ``n`` (a bootstrap cross-check).

    Better behaved than the Wald interval near 0 and 1; the normal quantile comes from
    ``statistics.NormalDist`` so no scipy is needed.
    """
    if n <= 0:
        raise InputError("n must be positive")
    if not 0 <= k <= n:
        raise InputError("k must be in [0, n]")
    if not 0.0 < alpha < 1.0:
        raise InputError("alpha must be in (0, 1)")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 (k = n) the lower (upper) bound is exactly 0 (1); floating error would
    # otherwise leave it a hair off, e.g. 2.8e-17.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return CI(p, low, high, n)


def format_ci(ci: CI, pct: bool = True, digits: int = 1) -> str:
    """``"41.2 [38.5, 44.0]"``: estimate and bounds, in percent when ``pct``."""
    scale = 100.0 if pct else 1.0
    d = digits if pct else digits + 2  # fractions need two more decimals for the same precision
    return f"{ci.estimate * scale:.{d}f} [{ci.low * scale:.{d}f}, {ci.high * scale:.{d}f}]"


def min_detectable_effect(p: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest accuracy difference (a share, not points) a paired comparison of ``n`` items detects with
    probability ``power`` at two-sided level ``alpha``, when the baseline is right on a share ``p``.

    Normal approximation of McNemar's test with pairs discordant at ``2p(1 - p)`` (a condition whose
    answers are as independent of the baseline's as two coin flips; steering that changes few answers is
    more correlated and detects smaller effects, so this is the conservative figure a reader should see).
    """
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    if not 0.0 <= p <= 1.0:
        raise InputError(f"p must be in [0, 1], got {p}")
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    discordant = max(2 * p * (1 - p), 1 / n)  # at least one discordant pair, or nothing is detectable
    return z * math.sqrt(discordant / n)
