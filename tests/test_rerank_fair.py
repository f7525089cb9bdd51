"""FA*IR (Zehlike et al. 2017): the mtable, its adjusted significance, and the constraint in the
re-ranking pass, checked against independent references.

References: the binomial quantile from math.comb (not scipy), the failure probability by
enumerating every protected/unprotected sequence, the paper's Algorithm 1 (two queues) for the
ranking, and adjusted mtables computed with fairsearchcore 1.0.4 (the authors' package; it no
longer runs under numpy 2 without a patch, so its answers are recorded here rather than imported;
its failure probability leaves out the last position, so only cases where that position adds no
protected item, where both definitions agree, are recorded).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmrec.columns import Role
from lmrec.rerank import RerankData, RerankPipeline, adjusted_mtable
from lmrec.rerank.fair import fail_probability, mtable


def binom_quantile(q: float, n: int, p: float) -> int:
    """The smallest m with P(Binomial(n, p) <= m) >= q, at least 0 (a rounding tolerance: at
    n = 1, p = 0.9, P(0) is 0.1 in exact arithmetic)."""
    cdf = 0.0
    for m in range(n + 1):
        cdf += math.comb(n, m) * p**m * (1 - p) ** (n - m)
        if cdf >= q * (1 - 1e-10):
            return m
    return n


@settings(max_examples=60, deadline=None, derandomize=True)
@given(k=st.integers(1, 60), p=st.floats(0.02, 0.98), alpha=st.floats(0.005, 0.2))
def test_mtable_is_the_binomial_quantile(k: int, p: float, alpha: float) -> None:
    want = [binom_quantile(alpha, i, p) for i in range(1, k + 1)]
    assert mtable(k, p, alpha).tolist() == want


def enumerated_fail_probability(table: list[int], p: float) -> float:
    """Sum over all 2^k protected/unprotected sequences that fall below the table somewhere."""
    fail = 0.0
    for seq in itertools.product((0, 1), repeat=len(table)):
        counts = np.cumsum(seq)
        if (counts < np.asarray(table)).any():
            fail += p ** sum(seq) * (1 - p) ** (len(seq) - sum(seq))
    return fail


@settings(max_examples=40, deadline=None, derandomize=True)
@given(k=st.integers(1, 11), p=st.floats(0.05, 0.95), alpha=st.floats(0.01, 0.3))
def test_fail_probability_matches_enumeration(k: int, p: float, alpha: float) -> None:
    table = mtable(k, p, alpha)
    assert fail_probability(table, p) == pytest.approx(
        enumerated_fail_probability(table.tolist(), p), abs=1e-12)


@pytest.mark.parametrize(("k", "p", "want"), [
    (10, 0.5, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]),
    (20, 0.3, [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3]),
    (30, 0.5, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 6, 6, 6, 7, 7, 8, 8, 8, 9,
               9, 10, 10]),
    (40, 0.2, [0] * 13 + [1] * 8 + [2] * 7 + [3] * 8 + [4] * 4),
    (25, 0.7, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 7, 8, 8, 9, 10, 10, 11, 11, 12, 13,
               13]),
])
def test_adjusted_mtable_matches_fairsearchcore(k: int, p: float, want: list[int]) -> None:
    assert list(adjusted_mtable(k, p, 0.1)) == want


@pytest.mark.parametrize(("k", "p"), [(10, 0.5), (30, 0.3), (50, 0.6), (100, 0.5)])
def test_adjusting_alpha_brings_the_failure_rate_near_alpha(k: int, p: float) -> None:
    plain = mtable(k, p, 0.1)
    adjusted = np.asarray(adjusted_mtable(k, p, 0.1))
    assert (adjusted <= plain).all()  # a smaller alpha asks for fewer protected items
    assert fail_probability(plain, p) > 0.1  # testing every prefix at 0.1 fails too often
    assert abs(fail_probability(adjusted, p) - 0.1) < abs(fail_probability(plain, p) - 0.1)


# --- the constraint in the re-ranking pass ---------------------------------------------------
def reference_fair(scores: np.ndarray, protected: np.ndarray, table: list[int]) -> list[int]:
    """FA*IR's Algorithm 1: two queues by score; a protected item whenever the prefix needs
    one, else the better of the two heads."""
    order = np.argsort(-scores, kind="stable")
    prot = [int(i) for i in order if protected[i]]
    rest = [int(i) for i in order if not protected[i]]
    out: list[int] = []
    for t in range(min(len(table), scores.size)):
        need = sum(protected[out]) < table[t] if out else table[t] > 0
        if prot and (need or not rest or scores[prot[0]] > scores[rest[0]]
                     or (scores[prot[0]] == scores[rest[0]] and prot[0] < rest[0])):
            out.append(prot.pop(0))
        else:
            out.append(rest.pop(0))
    return out


def fair_data(protected: np.ndarray) -> RerankData:
    n = protected.size
    items = pl.DataFrame({"item": [f"i{i}" for i in range(n)],
                          "maker": ["small" if x else "big" for x in protected],
                          "tags": [["indie"] if x else ["major", "x"] for x in protected]})
    return RerankData(items, {"maker": Role.CATEGORICAL, "tags": Role.MULTI}, np.ones(n))


@settings(max_examples=80, deadline=None, derandomize=True)
@given(n=st.integers(2, 60), k=st.integers(1, 25), p=st.sampled_from([0.1, 0.3, 0.5, 0.7]),
       share=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_fair_meets_the_mtable_at_every_prefix_as_algorithm_1_does(
        n: int, k: int, p: float, share: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    protected = rng.random(n) < share
    scores = np.sort(rng.random(n))[::-1]  # best first
    data = fair_data(protected)
    pipe = RerankPipeline.build([f"fair={p}:maker=small"], data)
    out, _ = pipe.rerank(np.arange(n), scores, k, data.user_context(-1, []))
    m = min(k, n)
    table = adjusted_mtable(m, p)
    assert out.tolist() == reference_fair(scores, protected, list(table))
    counts = np.cumsum(protected[out])
    if protected.sum() >= table[-1]:  # enough protected candidates: every prefix holds
        assert (counts >= np.asarray(table)).all()
    for group in (protected, ~protected):  # each group keeps the model's order
        picked = [i for i in out if group[i]]
        assert picked == sorted(picked)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(2, 40), k=st.integers(1, 20), seed=st.integers(0, 10_000))
def test_fair_keeps_a_ranking_that_already_meets_the_table(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    protected = rng.random(n) < 0.5
    table = np.asarray(adjusted_mtable(min(k, n), 0.5))
    if (np.cumsum(protected[: min(k, n)]) < table).any():
        protected[: min(k, n)] = True  # make the model's own order fair
    data = fair_data(protected)
    out, _ = RerankPipeline.build(["fair=0.5:maker=small"], data).rerank(
        np.arange(n), np.linspace(1, 0, n), k, data.user_context(-1, []))
    np.testing.assert_array_equal(out, np.arange(min(k, n)))


def test_fair_lifts_protected_items_into_an_all_unprotected_top() -> None:
    protected = np.arange(30) >= 20  # the ten lowest-scored items are protected
    data = fair_data(protected)
    for spec in ("fair=0.5:maker=small", "fair=0.5:tags=indie"):  # single- and multi-valued
        out, _ = RerankPipeline.build([spec], data).rerank(
            np.arange(30), np.linspace(1, 0, 30), 10, data.user_context(-1, []))
        table = adjusted_mtable(10, 0.5)
        assert (np.cumsum(protected[out]) >= np.asarray(table)).all()
        assert protected[out].sum() == table[-1]  # no more than the table asks


def test_fair_holds_with_soft_objectives_in_the_same_pass() -> None:
    rng = np.random.default_rng(3)
    protected = rng.random(60) < 0.2
    data = fair_data(protected)
    pipe = RerankPipeline.build(["fair=0.6:maker=small", "mmr=0.4", "calibration=0.3:tags"],
                                data)
    out, _ = pipe.rerank(np.arange(60), np.sort(rng.random(60))[::-1], 15,
                         data.user_context(-1, np.array([0, 1, 2])))
    assert (np.cumsum(protected[out]) >= np.asarray(adjusted_mtable(15, 0.6))).all()


def test_long_tail_is_the_default_protected_group() -> None:
    n = 20
    items = pl.DataFrame({"item": [f"i{i}" for i in range(n)]})
    data = RerankData(items, {}, np.arange(n, 0, -1).astype(float))  # item 0 most popular
    assert data.long_tail().tolist() == [False] * 4 + [True] * 16
    out, _ = RerankPipeline.build(["fair=0.9"], data).rerank(
        np.arange(4), np.linspace(1, 0, 4), 4, data.user_context(-1, []))
    np.testing.assert_array_equal(out, np.arange(4))  # no tail item in the pool: order kept
