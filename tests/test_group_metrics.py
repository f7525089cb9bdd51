"""Calibration and exposure metrics: known answers, loop-based references (LensKit's
ExposureGini transcribed; Steck's miscalibration from the paper's formulas) and invariants."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from lmrec.columns import Role
from lmrec.data.dataset import Sequences
from lmrec.group_metrics import (
    exposure_gini,
    group_coverage,
    group_exposure,
    miscalibration,
    rank_exposure,
    user_distributions,
)
from lmrec.rerank import RerankData


@st.composite
def lists(draw: st.DrawFn, max_items: int = 30) -> tuple[np.ndarray, int, int]:
    """(B, K) top lists of distinct items, -1 padding at the end, with n_items and a cutoff."""
    n_items = draw(st.integers(1, max_items))
    b = draw(st.integers(1, 8))
    width = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    top = np.full((b, width), -1, dtype=np.int64)
    for r in range(b):
        length = int(rng.integers(0, min(width, n_items) + 1))
        top[r, :length] = rng.permutation(n_items)[:length]
    return top, n_items, draw(st.integers(1, width + 2))


# --- exposure ------------------------------------------------------------------------------
def test_rank_exposure_known_answer() -> None:
    top = np.array([[0, 1, 2], [1, -1, -1]])
    got = rank_exposure(top, 4, 2)
    np.testing.assert_allclose(got, [1.0, 1 / math.log2(3) + 1.0, 0.0, 0.0])


def lenskit_exposure_gini(top: np.ndarray, n_items: int, k: int) -> float:
    """LensKit's ExposureGini (lenskit.metrics.ranking._gini) with LogRankWeight(offset=1):
    per list, weight 1 / log2(rank + 1) for ranks 1..len; exposure summed per item over all
    item_count items; lenskit.stats.gini of that vector."""
    exp = np.zeros(n_items, np.float64)
    for row in top:
        recs = [int(i) for i in row[:k] if i >= 0]
        for rank, item in enumerate(recs, start=1):
            exp[item] += 1.0 / math.log2(rank + 1)
    xs = np.sort(exp)
    n = len(xs)
    ranks = np.arange(1, n + 1, dtype=np.float64) * 2 - (n + 1)
    denom = n * np.sum(xs)
    if denom <= 0:  # LensKit warns and returns nan; lmrec says 0 (nothing to be unequal)
        return 0.0
    return max(float(np.sum(xs * ranks) / denom), 0.0)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(case=lists())
def test_exposure_gini_matches_lenskit(case: tuple[np.ndarray, int, int]) -> None:
    top, n_items, k = case
    assert exposure_gini(top, n_items, k) == pytest.approx(
        lenskit_exposure_gini(top, n_items, k), abs=1e-12)


def test_exposure_gini_extremes() -> None:
    assert exposure_gini(np.array([[0], [0], [0]]), 10, 1) == pytest.approx(0.9)  # one item
    assert exposure_gini(np.arange(10)[:, None], 10, 1) == pytest.approx(0.0)  # all alike
    assert exposure_gini(np.full((2, 3), -1), 5, 3) == 0.0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=lists(), n_groups=st.integers(1, 4), seed=st.integers(0, 1000))
def test_group_exposure_is_the_grouped_rank_exposure(case: tuple[np.ndarray, int, int],
                                                     n_groups: int, seed: int) -> None:
    top, n_items, k = case
    groups = np.random.default_rng(seed).integers(0, n_groups, n_items)
    share = group_exposure(top, groups, n_groups, k)
    e = rank_exposure(top, n_items, k)
    if e.sum() == 0:
        assert np.isnan(share).all()
        return
    assert share.sum() == pytest.approx(1.0)
    want = np.array([e[groups == g].sum() for g in range(n_groups)]) / e.sum()
    np.testing.assert_allclose(share, want, atol=1e-12)
    rows = np.random.default_rng(seed).permutation(top.shape[0])
    np.testing.assert_allclose(group_exposure(top[rows], groups, n_groups, k), share)


def test_group_exposure_known_answer_and_ungrouped_items() -> None:
    share = group_exposure(np.array([[0, 1, 2]]), np.array([0, 1, -1]), 2, 3)
    w2 = 1 / math.log2(3)
    np.testing.assert_allclose(share, [1 / (1 + w2), w2 / (1 + w2)])


# --- coverage ------------------------------------------------------------------------------
def test_group_coverage_known_answer() -> None:
    groups = np.array([0, 0, 1, 2, -1])
    top = np.array([[0, 1, 2], [2, 3, 4], [4, -1, -1], [-1, -1, -1]])
    # lists: {0, 1} -> 2/3, {1, 2} -> 2/3, {} (an ungrouped item) -> 0; the empty list skipped
    assert group_coverage(top, groups, 3, 3) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert group_coverage(top, groups, 3, 1) == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert np.isnan(group_coverage(np.full((2, 2), -1), groups, 3, 2))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=lists(), n_groups=st.integers(1, 5), seed=st.integers(0, 1000))
def test_group_coverage_matches_a_loop(case: tuple[np.ndarray, int, int], n_groups: int,
                                       seed: int) -> None:
    top, n_items, k = case
    groups = np.random.default_rng(seed).integers(0, n_groups, n_items)
    shares = [len({int(groups[i]) for i in row[:k] if i >= 0}) / n_groups
              for row in top if (row[:k] >= 0).any()]
    got = group_coverage(top, groups, n_groups, k)
    if not shares:
        assert np.isnan(got)
    else:
        assert got == pytest.approx(float(np.mean(shares)))
        assert 0.0 < got <= 1.0


# --- calibration ---------------------------------------------------------------------------
def steck_kl(top: np.ndarray, hist: list[list[int]], dist: np.ndarray, k: int,
             alpha: float = 0.01) -> list[float]:
    """Steck (2018), eqs. 1-3 with uniform weights, one user at a time."""
    out = []
    for row, h in zip(top, hist, strict=True):
        cat_h = [i for i in h if dist[i].sum() > 0]
        if not cat_h:
            out.append(float("nan"))
            continue
        p = sum(dist[i] for i in cat_h) / len(cat_h)
        cat_l = [int(i) for i in row[:k] if i >= 0 and dist[i].sum() > 0]
        q = sum(dist[i] for i in cat_l) / len(cat_l) if cat_l else np.zeros_like(p)
        qt = (1 - alpha) * q + alpha * p
        out.append(float(sum(p[g] * math.log(p[g] / qt[g]) for g in range(p.size) if p[g] > 0)))
    return out


def test_miscalibration_known_answer() -> None:
    dist = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, 0.0]])
    p = np.array([[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]])
    top = np.array([[0, 1, -1], [0, 3, -1], [0, 1, 2]])
    kl = miscalibration(top, p, dist, 3)
    assert kl[0] == pytest.approx(0.0)  # one of each
    # only item 0 counts (item 3 has no label): q = (1, 0), q~ = (0.995, 0.005)
    assert kl[1] == pytest.approx(0.5 * math.log(0.5 / 0.995) + 0.5 * math.log(0.5 / 0.005))
    assert np.isnan(kl[2])  # no history distribution
    assert miscalibration(np.array([[3, -1]]), p[:1], dist, 2)[0] == pytest.approx(math.log(100))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=lists(), n_labels=st.integers(1, 4), seed=st.integers(0, 1000))
def test_miscalibration_matches_steck_and_ignores_order(case: tuple[np.ndarray, int, int],
                                                        n_labels: int, seed: int) -> None:
    top, n_items, k = case
    rng = np.random.default_rng(seed)
    raw = (rng.random((n_items, n_labels)) < 0.5).astype(float)
    dist = np.divide(raw, raw.sum(1, keepdims=True), out=np.zeros_like(raw),
                     where=raw.sum(1, keepdims=True) > 0)
    hist = [rng.choice(n_items, int(rng.integers(0, 5))).tolist() for _ in range(top.shape[0])]
    seqs = Sequences.from_lists([np.array(h) for h in hist])
    p = user_distributions(seqs, sp.csr_matrix(dist))
    sums = p.sum(1)
    assert np.allclose(sums[sums > 0], 1.0)
    kl = miscalibration(top, p, sp.csr_matrix(dist), k)
    np.testing.assert_allclose(kl, steck_kl(top, hist, dist, k), atol=1e-12)
    assert (kl[~np.isnan(kl)] >= -1e-12).all()
    shuffled = np.array([rng.permutation(row) for row in top[:, :k]])
    np.testing.assert_allclose(miscalibration(shuffled, p, dist, k), kl, atol=1e-12)


def test_user_distributions_from_sequences_and_a_matrix_agree() -> None:
    dist = sp.csr_matrix(np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    seqs = Sequences.from_lists([np.array([0, 1]), np.array([], dtype=np.int64), np.array([2])])
    m = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 0, 1]], dtype=float))
    np.testing.assert_allclose(user_distributions(seqs, dist), [[0.75, 0.25], [0, 0], [0, 1]])
    np.testing.assert_allclose(user_distributions(m, dist), user_distributions(seqs, dist))


def test_item_distribution_is_uniform_over_an_item_s_labels() -> None:
    items = pl.DataFrame({"item": ["a", "b", "c"],
                          "genres": [["x", "y"], ["y", "y"], None]})
    dist, labels = RerankData(items, {"genres": Role.MULTI}, np.ones(3)).item_distribution(
        "genres")
    assert labels == ("x", "y")
    np.testing.assert_allclose(dist.toarray(), [[0.5, 0.5], [0.0, 1.0], [0.0, 0.0]])
