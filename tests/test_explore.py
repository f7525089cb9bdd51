"""Exploration policies: parsing, exact epsilon-greedy propensities, Plackett-Luce estimates
checked against numerical integration, and sampled slates against their propensities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from lmrec.errors import ConfigError
from lmrec.serve.explore import EpsilonGreedy, Explorer, PlackettLuce, _pl_integral

PROPS = settings(max_examples=60, deadline=None, derandomize=True)
SCORES6 = np.array([2.0, 1.5, 1.4, 0.3, -0.5, -2.0])  # a pool, best first


def brute_force_greedy(n: int, k: int, eps: float) -> np.ndarray:
    """(n, k) P(item i at position j) by enumerating every sequence of picks."""
    table = np.zeros((n, k))

    def walk(left: list[int], j: int, prob: float) -> None:
        if j == k:
            return
        for q, item in enumerate(left):
            pick = eps / len(left) + (1 - eps if q == 0 else 0.0)
            table[item, j] += prob * pick
            walk(left[:q] + left[q + 1:], j + 1, prob * pick)

    walk(list(range(n)), 0, 1.0)
    return table


def pl_exact(mu: np.ndarray, i: int, j: int) -> float:
    """P(item i at position j) under Plackett-Luce, by integrating over item i's Gumbel key
    z the probability that exactly j of the others exceed it (a Poisson-binomial)."""
    others = np.delete(mu, i)

    def integrand(z: float) -> float:
        beat = 1 - np.exp(-np.exp(others - mu[i] - z))  # P(other key > mu_i + z)
        count = np.zeros(j + 1)
        count[0] = 1.0
        for q in beat:
            count[1:] = count[1:] * (1 - q) + count[:-1] * q
            count[0] *= 1 - q
        return float(np.exp(-z - np.exp(-z)) * count[j])

    return integrate.quad(integrand, -8, 40, limit=200, epsabs=1e-13, epsrel=1e-9)[0]


@pytest.mark.parametrize(("spec", "cls", "value", "name"), [
    ("plackett-luce:0.5", PlackettLuce, 0.5, "plackett-luce:T=0.5"),
    ("Plackett-Luce:T=2", PlackettLuce, 2.0, "plackett-luce:T=2.0"),
    ("epsilon-greedy:0.1", EpsilonGreedy, 0.1, "epsilon-greedy:e=0.1"),
    (" epsilon-greedy:E=1 ", EpsilonGreedy, 1.0, "epsilon-greedy:e=1.0"),
])
def test_parse_accepts_both_forms_and_its_own_names(spec: str, cls: type, value: float,
                                                    name: str) -> None:
    explorer = Explorer.parse(spec)
    assert isinstance(explorer, cls)
    assert explorer.name == name
    assert Explorer.parse(explorer.name) == explorer  # the logged policy parses back


@pytest.mark.parametrize("spec", ["", "plackett-luce", "plackett-luce:0", "plackett-luce:-1",
                                  "plackett-luce:nan", "plackett-luce:inf", "epsilon-greedy:0",
                                  "epsilon-greedy:1.5", "epsilon-greedy:x", "softmax:0.5",
                                  "plackett-luce:x=0.5"])
def test_parse_refuses_bad_specs_naming_the_option(spec: str) -> None:
    with pytest.raises(ConfigError, match="--explore") as info:
        Explorer.parse(spec)
    assert "plackett-luce:T" in str(info.value) and "\n" not in str(info.value)


def test_epsilon_greedy_three_items_known_answer() -> None:
    e = 0.3
    p = EpsilonGreedy(e).position_probabilities(np.array([3.0, 2.0, 1.0]), 3)
    # position 0: the best with 1 - e, or any of the 3 at random
    np.testing.assert_allclose(p[:, 0], [1 - e + e / 3, e / 3, e / 3])
    # position 1: after item 0 (prob 1 - 2e/3) item 1 is the best left; after item 1 or 2
    # (e/3 each) item 0 is, and the other one comes second only by a random pick (e/2)
    after0, after1or2 = 1 - 2 * e / 3, e / 3
    np.testing.assert_allclose(p[:, 1], [
        2 * after1or2 * (1 - e / 2),
        after0 * (1 - e / 2) + after1or2 * e / 2,
        after0 * e / 2 + after1or2 * e / 2])
    np.testing.assert_allclose(p[:, 2], 1 - p[:, 0] - p[:, 1])  # the last slot takes the rest


@pytest.mark.parametrize(("n", "k", "eps"), [(5, 3, 0.2), (6, 6, 0.7), (7, 4, 1.0),
                                             (8, 5, 0.5), (6, 2, 0.05)])
def test_epsilon_greedy_table_matches_enumeration(n: int, k: int, eps: float) -> None:
    got = EpsilonGreedy(eps).position_probabilities(np.linspace(1, 0, n), k)
    np.testing.assert_allclose(got, brute_force_greedy(n, k, eps), atol=1e-12)


def test_epsilon_one_is_uniform() -> None:
    p = EpsilonGreedy(1.0).position_probabilities(np.zeros(40), 10)
    np.testing.assert_allclose(p, 1 / 40)


@PROPS
@given(n=st.integers(1, 60), k=st.integers(1, 30), eps=st.floats(0.001, 1.0))
def test_epsilon_greedy_table_is_a_distribution(n: int, k: int, eps: float) -> None:
    p = EpsilonGreedy(eps).position_probabilities(np.zeros(n), k)
    assert p.shape == (n, min(n, k)) and (p >= -1e-15).all()
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-9)  # someone fills each slot
    assert (p.sum(axis=1) <= 1 + 1e-9).all()  # nobody is shown twice
    assert p[0, 0] == max(p[:, 0])  # the best item leads most often


@pytest.mark.parametrize("temperature", [0.3, 1.0])
def test_plackett_luce_estimates_match_the_exact_marginals(temperature: float) -> None:
    scores = np.sort(np.random.default_rng(3).normal(size=12))[::-1]
    got = PlackettLuce(temperature).position_probabilities(scores, 4)
    mu = scores / temperature
    exact = np.array([[pl_exact(mu, i, j) for j in range(4)] for i in range(12)])
    soft = np.exp(mu - mu.max())
    np.testing.assert_allclose(got[:, 0], soft / soft.sum(), rtol=1e-12)  # exact, k = 1
    # deeper positions: 512 Rao-Blackwellised draws, relative RMSE ~3-4%; 25% is ~6 of them
    np.testing.assert_allclose(got[:, 1:], exact[:, 1:], rtol=0.25)
    # every item's estimate shares the same draws, so their errors add up rather than cancel:
    # column sums measured over 100 pools have an RMSE of ~3% around 1
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=0.1)


def test_rare_placements_of_strong_items_are_integrated_exactly() -> None:
    """The best item two places down needs two much weaker items to beat it: the draws
    almost never show that, so the value must come from the numerical integral."""
    scores = np.sort(np.random.default_rng(3).normal(size=12))[::-1]
    mu = scores / 0.3
    got = PlackettLuce(0.3).position_probabilities(scores, 4)
    for i, j in [(0, 2), (0, 3), (1, 3)]:
        assert got[i, j] == pytest.approx(pl_exact(mu, i, j), rel=1e-6)
    for i in range(12):  # the fallback alone, every item and position
        np.testing.assert_allclose(_pl_integral(mu - mu.max(), i, 4),
                                   [pl_exact(mu, i, j) for j in range(4)], rtol=1e-7)


def test_plackett_luce_propensities_depend_only_on_the_pool() -> None:
    pl = PlackettLuce(0.5)
    idx = np.arange(100, 106)
    a = pl.slate(idx, SCORES6, 3, np.random.default_rng(1))
    b = pl.slate(idx, SCORES6, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    table = pl.position_probabilities(SCORES6, 3)
    for seed in range(5):  # whatever is drawn, its propensity is the table's entry
        items, prop = pl.slate(idx, SCORES6, 3, np.random.default_rng(seed))
        np.testing.assert_array_equal(prop, table[items - 100, np.arange(3)])


@pytest.mark.parametrize("explorer", [PlackettLuce(0.7), EpsilonGreedy(0.4)],
                         ids=lambda e: e.name)
def test_sampled_slates_match_their_position_probabilities(explorer: Explorer) -> None:
    rng = np.random.default_rng(7)
    draws, k = 3000, 3
    counts = np.zeros((6, k))
    for _ in range(draws):
        items, _ = explorer.slate(np.arange(6), SCORES6, k, rng)
        assert len(set(items.tolist())) == k  # without replacement
        counts[items, np.arange(k)] += 1
    p = explorer.position_probabilities(SCORES6, k)
    # 4.5 binomial standard errors, plus the estimate's own error for Plackett-Luce
    tol = 4.5 * np.sqrt(p * (1 - p) / draws) + (0.1 * p if isinstance(explorer, PlackettLuce)
                                                else 0.0)
    assert (np.abs(counts / draws - p) <= tol + 1e-3).all(), (counts / draws, p)


def test_epsilon_greedy_slate_is_seeded_and_its_propensities_exact() -> None:
    eg = EpsilonGreedy(0.2)
    idx = np.arange(10, 16)
    items, prop = eg.slate(idx, SCORES6, 4, np.random.default_rng(5))
    again = eg.slate(idx, SCORES6, 4, np.random.default_rng(5))
    np.testing.assert_array_equal(items, again[0])
    exact = brute_force_greedy(6, 4, 0.2)
    np.testing.assert_allclose(prop, exact[items - 10, np.arange(4)], atol=1e-12)


@pytest.mark.parametrize("explorer", [PlackettLuce(1.0), EpsilonGreedy(0.3)],
                         ids=lambda e: e.name)
def test_a_pool_smaller_than_k_is_shown_whole(explorer: Explorer) -> None:
    items, prop = explorer.slate(np.array([7, 3, 9]), np.array([1.0, 0.5, 0.1]), 10,
                                 np.random.default_rng(0))
    assert sorted(items.tolist()) == [3, 7, 9]
    assert prop.shape == (3,) and (prop > 0).all() and (prop <= 1).all()
    empty = explorer.slate(np.array([], dtype=np.int64), np.array([]), 5,
                           np.random.default_rng(0))
    assert empty[0].size == 0 and empty[1].size == 0


def test_greedy_limit_and_hot_limit() -> None:
    """E -> 0 and T -> 0 both give the deterministic top-k, with propensity ~1."""
    for explorer in (EpsilonGreedy(1e-9), PlackettLuce(1e-3)):
        items, prop = explorer.slate(np.arange(6), SCORES6, 4, np.random.default_rng(2))
        np.testing.assert_array_equal(items, [0, 1, 2, 3])
        np.testing.assert_allclose(prop, 1.0, atol=1e-6)


def test_mismatched_or_non_finite_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        PlackettLuce(1.0).slate(np.arange(3), np.zeros(4), 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="finite"):
        EpsilonGreedy(0.1).slate(np.arange(2), np.array([1.0, np.nan]), 2,
                                 np.random.default_rng(0))
