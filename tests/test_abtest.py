"""A/B statistics, cross-checked against scipy.stats and by hypothesis properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lmrec.errors import ConfigError
from lmrec.evaluate.abtest import (
    diff_test,
    mean_ci,
    preference_test,
    required_impressions,
    summary_ci,
)

PROPS = settings(max_examples=80, deadline=None, derandomize=True)
counts = st.lists(st.integers(0, 4), min_size=2, max_size=60)  # clicks per impression


def test_mean_ci_is_the_normal_interval() -> None:
    x = np.array([0, 1, 0, 0, 2, 1, 0, 0, 0, 1], dtype=float)
    ci = mean_ci(x)
    half = stats.norm.ppf(0.975) * x.std(ddof=1) / math.sqrt(x.size)
    assert (ci.mean, ci.lo, ci.hi, ci.n) == pytest.approx((0.5, 0.5 - half, 0.5 + half, 10))
    narrow = mean_ci(x, level=0.5)
    assert ci.lo < narrow.lo < narrow.hi < ci.hi


def test_undefined_intervals_are_nan() -> None:
    empty, one = mean_ci([]), mean_ci([3.0])
    assert math.isnan(empty.mean) and empty.n == 0
    assert one.mean == 3.0 and math.isnan(one.lo) and math.isnan(one.hi)
    with pytest.raises(ConfigError, match="level"):
        mean_ci([1.0, 2.0], level=1.0)


def test_summary_ci_agrees_with_mean_ci_per_group() -> None:
    rng = np.random.default_rng(0)
    groups = [rng.poisson(0.3, size=n).astype(float) for n in (5, 50, 500)]
    mean, lo, hi = summary_ci(np.array([g.size for g in groups]),
                              np.array([g.sum() for g in groups]),
                              np.array([(g**2).sum() for g in groups]))
    for j, g in enumerate(groups):
        ci = mean_ci(g)
        assert (mean[j], lo[j], hi[j]) == pytest.approx((ci.mean, ci.lo, ci.hi), rel=1e-9)


def test_diff_test_matches_scipy_welch() -> None:
    rng = np.random.default_rng(1)
    control = rng.poisson(0.10, size=400).astype(float)
    treatment = rng.poisson(0.16, size=300).astype(float)
    got = diff_test(control, treatment)
    ref = stats.ttest_ind(treatment, control, equal_var=False)
    lo, hi = ref.confidence_interval(0.95)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert (got.lo, got.hi) == pytest.approx((lo, hi), rel=1e-9)
    assert got.df == pytest.approx(ref.df, rel=1e-9)
    assert got.diff == pytest.approx(treatment.mean() - control.mean())
    assert got.relative == pytest.approx(got.diff / control.mean())


@PROPS
@given(a=counts, b=counts)
def test_diff_test_properties(a: list[int], b: list[int]) -> None:
    ab, ba = diff_test(a, b), diff_test(b, a)
    assert 0.0 <= ab.p_value <= 1.0
    assert ab.p_value == pytest.approx(ba.p_value, abs=1e-12)  # symmetric
    assert ab.diff == pytest.approx(-ba.diff)
    assert ab.lo <= ab.diff <= ab.hi
    assert (ab.lo, ab.hi) == pytest.approx((-ba.hi, -ba.lo))
    if np.var(a) > 0 or np.var(b) > 0:  # scipy answers NaN when both arms are constant
        with warnings.catch_warnings():  # scipy warns when one arm is constant
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = stats.ttest_ind(b, a, equal_var=False)
        assert ab.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


@PROPS
@given(x=counts, level=st.floats(0.5, 0.999))
def test_mean_ci_contains_the_mean(x: list[int], level: float) -> None:
    ci = mean_ci(x, level)
    assert ci.lo <= ci.mean <= ci.hi


def test_constant_arms_give_an_exact_difference() -> None:
    same = diff_test([0, 0, 0], [0, 0])
    assert same.diff == 0 and same.p_value == 1.0 and (same.lo, same.hi) == (0, 0)
    apart = diff_test([0, 0, 0], [1, 1])
    assert apart.diff == 1 and apart.p_value == 0.0
    assert math.isnan(diff_test([1.0], [1.0, 2.0]).p_value)  # one impression: no variance
    assert math.isnan(diff_test([0, 0], [1, 1]).relative)  # relative to a zero control


def test_preference_matches_the_sign_test() -> None:
    got = preference_test(60, 40, 100)
    assert got.preference == pytest.approx(20 / 200) and got.n == 200
    assert got.p_value == pytest.approx(stats.binomtest(60, 100, 0.5).pvalue)
    outcomes = np.array([1] * 60 + [-1] * 40 + [0] * 100, dtype=float)
    ci = mean_ci(outcomes)
    assert (got.lo, got.hi) == pytest.approx((ci.lo, ci.hi))


@PROPS
@given(wa=st.integers(0, 300), wb=st.integers(0, 300), ties=st.integers(0, 300))
def test_preference_properties(wa: int, wb: int, ties: int) -> None:
    ab, ba = preference_test(wa, wb, ties), preference_test(wb, wa, ties)
    assert 0.0 <= ab.p_value <= 1.0 and ab.p_value == pytest.approx(ba.p_value)
    if wa + wb + ties >= 2:
        assert -1.0 <= ab.lo <= ab.preference <= ab.hi <= 1.0
        assert ab.preference == pytest.approx(-ba.preference)
    if wa == wb:
        assert ab.p_value == 1.0


def test_preference_edge_cases() -> None:
    none = preference_test(0, 0, 0)
    assert none.n == 0 and none.p_value == 1.0 and math.isnan(none.preference)
    assert preference_test(0, 0, 10).preference == 0.0
    with pytest.raises(ConfigError):
        preference_test(-1, 0, 0)


def test_required_impressions_reaches_the_power() -> None:
    mean, sd, effect = 0.1, 0.3, 0.1
    n = required_impressions(mean, sd, effect)
    z = stats.norm.ppf(0.975)

    def power(m: int) -> float:  # of the two-sided z test with m impressions per arm
        shift = mean * effect / (sd * math.sqrt(2 / m))
        return float(stats.norm.cdf(shift - z) + stats.norm.cdf(-shift - z))

    assert n == 14128  # 2 * (1.95996 + 0.84162)^2 * 0.09 / 0.01^2
    assert power(n) >= 0.8 > power(n - 1)
    assert required_impressions(mean, sd, -effect) == n  # a drop is as hard to see
    assert required_impressions(mean, sd, effect, power=0.9) > n
    for bad in ((0.0, 0.3, 0.1), (0.1, 0.0, 0.1), (0.1, 0.3, 0.0), (0.1, 0.3, math.inf)):
        with pytest.raises(ConfigError):
            required_impressions(*bad)
    with pytest.raises(ConfigError, match="alpha"):
        required_impressions(mean, sd, effect, alpha=1.5)
