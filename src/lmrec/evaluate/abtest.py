"""Statistics for online experiments: confidence intervals, A/B differences, interleaving
preferences and sample sizes.

Outcomes are per impression (clicks or conversions on one shown slate, 0, 1, 2, ...), so a
rate such as CTR is a mean over impressions and its interval comes from the normal
approximation to that mean (the central limit theorem; fine from a few hundred impressions,
optimistic below). Undefined quantities (no data, one impression) are NaN, never a guess.

    ci = mean_ci(clicks_per_impression)                   # .mean, .lo, .hi
    ab = diff_test(clicks_control, clicks_treatment)      # .diff, .lo, .hi, .relative, .p_value
    pref = preference_test(wins_a, wins_b, ties)          # interleaving: .preference in [-1, 1]
    n = required_impressions(0.05, 0.22, relative_effect=0.05)   # per arm, for 80% power
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from lmrec.errors import ConfigError


@dataclass(frozen=True)
class MeanCI:
    mean: float
    lo: float
    hi: float
    n: int


@dataclass(frozen=True)
class DiffTest:
    """treatment - control, its interval, diff / control mean, and the two-sided p-value of
    Welch's t-test (unequal variances; `df` its Welch-Satterthwaite degrees of freedom)."""

    diff: float
    lo: float
    hi: float
    relative: float
    p_value: float
    df: float


@dataclass(frozen=True)
class Preference:
    """(wins_a - wins_b) / n over n = wins + ties impressions, in [-1, 1] (> 0 favours A),
    its interval and the two-sided sign-test p-value on the impressions that were not tied."""

    preference: float
    lo: float
    hi: float
    p_value: float
    n: int


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level!r}")
    return float(stats.norm.ppf(0.5 + level / 2))


def _moments(x: np.ndarray | list[float]) -> tuple[int, float, float]:
    """(n, mean, sample variance with ddof 1); NaN where undefined."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    mean = float(x.mean()) if n else math.nan
    var = float(x.var(ddof=1)) if n > 1 else math.nan
    return n, mean, var


def summary_ci(n: np.ndarray, total: np.ndarray, total_sq: np.ndarray, level: float = 0.95
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, lo, hi), each shaped like `n`: the normal interval of the mean of groups given
    only their sizes, sums and sums of squares (many groups at once, e.g. a timeline)."""
    n, s, ss = (np.asarray(v, dtype=np.float64) for v in (n, total, total_sq))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, s / n, np.nan)
        # sample variance from sums; tiny negative rounding clipped to 0
        var = np.where(n > 1, np.maximum(ss - n * mean**2, 0.0) / (n - 1), np.nan)
        half = _z(level) * np.sqrt(var / n)
    return mean, mean - half, mean + half


def mean_ci(x: np.ndarray | list[float], level: float = 0.95) -> MeanCI:
    """The mean of per-impression outcomes `x` (n,) with its normal `level` interval."""
    n, mean, var = _moments(x)
    half = _z(level) * math.sqrt(var / n) if n > 1 else math.nan
    return MeanCI(mean, mean - half, mean + half, n)


def welch(n1: int, m1: float, v1: float, n2: int, m2: float, v2: float,
          level: float = 0.95) -> DiffTest:
    """`diff_test` from summaries: sizes, means and sample variances of control (1) and
    treatment (2)."""
    _z(level)  # refuses a level outside (0, 1)
    diff = m2 - m1
    relative = diff / m1 if n1 and m1 != 0 else math.nan
    if n1 < 2 or n2 < 2:
        return DiffTest(diff, math.nan, math.nan, relative, math.nan, math.nan)
    a, b = v1 / n1, v2 / n2
    se = math.sqrt(a + b)
    if se == 0:  # both arms constant: the difference is exact
        return DiffTest(diff, diff, diff, relative, 1.0 if diff == 0 else 0.0, math.nan)
    df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return DiffTest(diff, diff - half, diff + half, relative, min(p, 1.0), df)


def diff_test(x_control: np.ndarray | list[float], x_treatment: np.ndarray | list[float],
              level: float = 0.95) -> DiffTest:
    """treatment mean - control mean of per-impression outcomes, Welch's t interval and
    two-sided p-value (as `scipy.stats.ttest_ind(treatment, control, equal_var=False)`)."""
    return welch(*_moments(x_control), *_moments(x_treatment), level=level)


def preference_test(wins_a: int, wins_b: int, ties: int, level: float = 0.95) -> Preference:
    """Interleaving outcome over n = wins_a + wins_b + ties impressions: each impression
    scores +1 (A won), -1 (B won) or 0, the preference is their mean with a normal `level`
    interval (clipped to [-1, 1]), and the p-value is the two-sided binomial sign test of
    wins_a against wins_b (ties dropped, as a sign test does)."""
    if min(wins_a, wins_b, ties) < 0:
        raise ConfigError(f"counts must be >= 0, got {wins_a}, {wins_b}, {ties}")
    wa, wb = int(wins_a), int(wins_b)
    n = wa + wb + int(ties)
    decided = wa + wb
    p = float(stats.binomtest(wa, decided, 0.5).pvalue) if decided else 1.0
    if n == 0:
        return Preference(math.nan, math.nan, math.nan, p, 0)
    pref = (wa - wb) / n
    if n < 2:
        return Preference(pref, math.nan, math.nan, p, n)
    var = max(decided - n * pref**2, 0.0) / (n - 1)  # outcomes are +-1 or 0: sum x^2 = decided
    half = _z(level) * math.sqrt(var / n)
    return Preference(pref, max(pref - half, -1.0), min(pref + half, 1.0), p, n)


def required_impressions(base_rate_mean: float, base_sd: float, relative_effect: float,
                         alpha: float = 0.05, power: float = 0.8) -> int:
    """Impressions per arm for a two-sided test at `alpha` to detect, with probability
    `power`, a change of `relative_effect` (0.05: +5%) in a per-impression mean whose control
    value is `base_rate_mean` with standard deviation `base_sd` per impression (both arms
    assumed to share it): n = 2 (z_{1-alpha/2} + z_power)^2 sd^2 / (mean * effect)^2."""
    if not (base_rate_mean > 0 and base_sd > 0 and relative_effect != 0
            and math.isfinite(base_rate_mean * base_sd * relative_effect)):
        raise ConfigError("required_impressions needs base_rate_mean > 0, base_sd > 0 and a "
                          f"non-zero relative_effect, got {base_rate_mean!r}, {base_sd!r}, "
                          f"{relative_effect!r}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ConfigError(f"alpha and power must be in (0, 1), got {alpha!r}, {power!r}")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    delta = base_rate_mean * relative_effect
    return max(2, math.ceil(2 * (z * base_sd / delta) ** 2))
