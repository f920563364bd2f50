"""Tests for xsteer.evaluation.stats: bootstrap CIs, paired differences, McNemar, Wilson."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from xsteer.errors import InputError
from xsteer.evaluation.stats import (
    CI,
    McNemar,
    bootstrap_ci,
    format_ci,
    mcnemar_exact,
    min_detectable_effect,
    paired_bootstrap_diff,
    spearman_ci,
    student_t_ppf,
    upper_prediction_bound,
    wilson_ci,
)


def _brute_mcnemar_p(b01: int, b10: int) -> float:
    """Reference: two-sided exact binomial p from an explicit Fraction sum."""
    n = b01 + b10
    if n == 0:
        return 1.0
    k = min(b01, b10)
    tail = sum(Fraction(math.comb(n, i), 2**n) for i in range(k + 1))
    return float(min(Fraction(1), 2 * tail))


def _pairs(b01: int, b10: int, n11: int = 0, n00: int = 0) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([0] * b01 + [1] * b10 + [1] * n11 + [0] * n00, dtype=bool)
    b = np.array([1] * b01 + [0] * b10 + [1] * n11 + [0] * n00, dtype=bool)
    return a, b


def test_mcnemar_known_value() -> None:
    a, b = _pairs(10, 2, n11=50, n00=30)
    res = mcnemar_exact(a, b)
    assert (res.b01, res.b10) == (10, 2)
    # 2 * sum_{i<=2} C(12, i) / 2^12 = 2 * 79 / 4096
    assert res.p_value == pytest.approx(0.0386, abs=1e-4)
    assert res.p_value == pytest.approx(2 * 79 / 4096, rel=1e-12)
    assert res.p_value == pytest.approx(_brute_mcnemar_p(10, 2), rel=1e-12)


@pytest.mark.parametrize(
    ("b01", "b10"),
    [(0, 0), (1, 0), (0, 5), (3, 3), (7, 6), (25, 10), (1, 40), (120, 80), (400, 600)],
)
def test_mcnemar_matches_brute_force(b01: int, b10: int) -> None:
    res = mcnemar_exact(*_pairs(b01, b10, n11=5, n00=5))
    assert (res.b01, res.b10) == (b01, b10)
    assert res.p_value == pytest.approx(_brute_mcnemar_p(b01, b10), rel=1e-12, abs=1e-300)


def test_mcnemar_edge_cases() -> None:
    # No discordant pairs -> p = 1.
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == McNemar(0, 0, 1.0)
    # Balanced discordance -> p = 1 (capped).
    assert mcnemar_exact(*_pairs(4, 4)).p_value == 1.0
    # Symmetric in direction.
    assert mcnemar_exact(*_pairs(9, 1)).p_value == mcnemar_exact(*_pairs(1, 9)).p_value
    with pytest.raises(ValueError):
        mcnemar_exact([1, 0], [1])


def test_mcnemar_large_n_is_exact_and_fast() -> None:
    # Thousands of discordant pairs: float 0.5**n underflows; the exact sum does not.
    res = mcnemar_exact(*_pairs(2600, 2400))
    ref = 2 * sum(math.comb(5000, i) for i in range(2401)) / 2**5000  # int / int is correctly rounded
    assert res.p_value == pytest.approx(ref, rel=1e-12)
    assert 0.0 < res.p_value < 0.01
    # Beyond 20k discordant pairs the log-space path is used; it must agree with an exact
    # big-integer sum (built by the recurrence to keep the test fast).
    n, k = 40_000, 19_500
    c, total = 1, 1
    for i in range(k):
        c = c * (n - i) // (i + 1)
        total += c
    res = mcnemar_exact(*_pairs(n - k, k))
    assert res.p_value == pytest.approx(2 * total / 2**n, rel=1e-9)
    assert 0.0 < res.p_value < 1e-3


def test_bootstrap_ci_covers_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    x = rng.random(500) < 0.4
    ci = bootstrap_ci(x, seed=123)
    assert ci.n == 500
    assert ci.estimate == pytest.approx(x.mean())
    assert ci.low < ci.estimate < ci.high
    assert 0.0 <= ci.low and ci.high <= 1.0
    assert bootstrap_ci(x, seed=123) == ci
    assert bootstrap_ci(x.astype(int), seed=123) == ci  # 0/1 ints are accepted
    # Another seed gives a slightly different but consistent interval.
    other = bootstrap_ci(x, seed=124)
    assert other.estimate == ci.estimate
    assert other.low == pytest.approx(ci.low, abs=0.01) and other.high == pytest.approx(ci.high, abs=0.01)


def test_bootstrap_ci_shrinks_with_n() -> None:
    widths = []
    for n in (100, 1_000, 10_000):
        x = np.arange(n) % 10 < 4  # exactly 40 % correct
        ci = bootstrap_ci(x, seed=0)
        widths.append(ci.high - ci.low)
    assert widths[0] > widths[1] > widths[2]
    # Width scales like 1/sqrt(n): ~sqrt(10) per step.
    assert widths[0] / widths[2] == pytest.approx(10.0, rel=0.15)


def test_bootstrap_ci_agrees_with_index_resampling_and_wilson() -> None:
    x = np.arange(400) % 4 == 0  # 25 %
    ci = bootstrap_ci(x, n_boot=20_000, seed=0)
    # Explicit index resampling (the textbook bootstrap) gives the same interval.
    rng = np.random.default_rng(7)
    idx = rng.integers(0, x.size, size=(20_000, x.size))
    lo, hi = np.quantile(x[idx].mean(axis=1), [0.025, 0.975])
    assert ci.low == pytest.approx(lo, abs=0.006)
    assert ci.high == pytest.approx(hi, abs=0.006)
    w = wilson_ci(int(x.sum()), x.size)
    assert ci.low == pytest.approx(w.low, abs=0.01)
    assert ci.high == pytest.approx(w.high, abs=0.01)


def test_bootstrap_ci_degenerate_and_invalid() -> None:
    assert bootstrap_ci([True] * 20) == CI(1.0, 1.0, 1.0, 20)
    assert bootstrap_ci([False] * 20) == CI(0.0, 0.0, 0.0, 20)
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([0.5, 1.0])
    with pytest.raises(ValueError):
        bootstrap_ci([1, 0], alpha=1.5)


def test_paired_bootstrap_diff() -> None:
    a, b = _pairs(60, 20, n11=300, n00=120)  # b better by 40 / 500 = 8 points
    ci = paired_bootstrap_diff(a, b, seed=0)
    assert ci.n == 500
    assert ci.estimate == pytest.approx(b.mean() - a.mean()) == pytest.approx(0.08)
    assert ci.low < ci.estimate < ci.high
    assert ci.low > 0  # significant, like McNemar
    assert mcnemar_exact(a, b).p_value < 0.05
    assert paired_bootstrap_diff(a, b, seed=0) == ci
    # Antisymmetric in the order of the systems.
    rev = paired_bootstrap_diff(b, a, seed=0)
    assert rev.estimate == pytest.approx(-ci.estimate)
    # Identical systems -> a zero-width interval at 0.
    assert paired_bootstrap_diff(a, a) == CI(0.0, 0.0, 0.0, 500)
    # Pairing matters: same marginals, more concordance -> narrower interval.
    a2, b2 = _pairs(40, 0, n11=320, n00=140)
    assert a2.mean() == a.mean() and b2.mean() == b.mean()
    ci2 = paired_bootstrap_diff(a2, b2, seed=0)
    assert (ci2.high - ci2.low) < (ci.high - ci.low)
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1, 0], [1])


def test_paired_bootstrap_matches_index_resampling() -> None:
    a, b = _pairs(30, 15, n11=100, n00=55)
    ci = paired_bootstrap_diff(a, b, n_boot=20_000, seed=0)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, a.size, size=(20_000, a.size))
    diffs = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    assert ci.low == pytest.approx(lo, abs=0.006)
    assert ci.high == pytest.approx(hi, abs=0.006)


def test_wilson_ci() -> None:
    # k=10, n=50, 95 %: the textbook Wilson interval is (0.1124, 0.3304).
    w = wilson_ci(10, 50)
    assert w.estimate == 0.2 and w.n == 50
    assert w.low == pytest.approx(0.1124, abs=1e-4)
    assert w.high == pytest.approx(0.3304, abs=1e-4)
    # The bounds solve |p - phat| = z * sqrt(p (1 - p) / n).
    z = 1.959963984540054
    for bound in (w.low, w.high):
        assert abs(bound - 0.2) == pytest.approx(z * math.sqrt(bound * (1 - bound) / 50), rel=1e-9)
    assert wilson_ci(0, 10).low == 0.0 and wilson_ci(0, 10).high > 0
    assert wilson_ci(10, 10).high == 1.0
    assert wilson_ci(10, 50, alpha=0.01).low < w.low
    with pytest.raises(ValueError):
        wilson_ci(5, 0)
    with pytest.raises(ValueError):
        wilson_ci(6, 5)


def test_format_ci() -> None:
    ci = CI(0.412, 0.385, 0.44, 1000)
    assert format_ci(ci) == "41.2 [38.5, 44.0]"
    assert format_ci(ci, pct=False) == "0.412 [0.385, 0.440]"
    assert format_ci(CI(-0.015, -0.03, 0.0, 10)) == "-1.5 [-3.0, 0.0]"


def test_min_detectable_effect() -> None:
    # (z_0.975 + z_0.8) * sqrt(2p(1-p) / n): 2.80158 * sqrt(0.5 / 100)
    assert min_detectable_effect(0.5, 100) == pytest.approx(0.198102, abs=1e-6)
    # A 300-item run at 30% detects ~10 points, the "CI half-width <= 5 points" is about the CI
    assert min_detectable_effect(0.3, 300) == pytest.approx(0.104826, abs=1e-6)
    # At the floor the discordance is floored at one pair, so nothing reads as infinitely sensitive
    assert min_detectable_effect(0.0, 50) == pytest.approx(2.80158 * math.sqrt(1 / 50 / 50), abs=1e-5)
    assert min_detectable_effect(0.5, 100, power=0.9) > min_detectable_effect(0.5, 100)
    with pytest.raises(InputError):
        min_detectable_effect(0.5, 0)
    with pytest.raises(InputError):
        min_detectable_effect(1.5, 10)


def test_spearman_ci_exact_values_and_ties() -> None:
    assert spearman_ci([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 45.0]).estimate == pytest.approx(1.0)
    assert spearman_ci([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]).estimate == pytest.approx(-1.0)
    # one swapped pair: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert spearman_ci([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]).estimate == pytest.approx(0.8)
    # tied x share the mean rank 1.5: Pearson of (1.5, 1.5, 3, 4) and (1, 2, 3, 4) = 4.5 / sqrt(4.5 * 5)
    ci = spearman_ci([1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], seed=3)
    assert ci.estimate == pytest.approx(4.5 / math.sqrt(22.5))
    assert ci.low <= ci.estimate <= ci.high and ci.n == 4
    assert spearman_ci([1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], seed=3) == ci
    with pytest.raises(InputError, match="at least 3"):
        spearman_ci([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(InputError, match="equal length"):
        spearman_ci([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.parametrize(
    "p, df, expected",
    [
        (0.975, 1, 12.7062047),
        (0.95, 2, 2.9199856),
        (0.99, 3, 4.5407029),
        (0.95, 7, 1.8945786),
        (0.975, 10, 2.2281389),
        (0.05, 7, -1.8945786),
        (0.5, 4, 0.0),
    ],
)
def test_student_t_ppf_matches_tables(p: float, df: int, expected: float) -> None:
    assert student_t_ppf(p, df) == pytest.approx(expected, abs=1e-6)


def test_upper_prediction_bound() -> None:
    # mean 2, sd sqrt(2/3), t(0.95, 3) = 2.3533634: 2 + 2.3533634 * sd * sqrt(1 + 1/4)
    assert upper_prediction_bound([1.0, 2.0, 3.0, 2.0], 0.95) == pytest.approx(
        2 + 2.3533634 * math.sqrt(2 / 3) * math.sqrt(1.25), abs=1e-6
    )
    with pytest.raises(InputError, match="at least 2"):
        upper_prediction_bound([1.0])
    with pytest.raises(InputError, match="df"):
        student_t_ppf(0.9, 0)
