"""Calibration and exposure metrics over a batch of top-k lists, vectorised (no user loop).

Lists are (B, K) int item indices, best first, -1 = padding; only the first k columns count.

    miscalibration@k   Steck (2018): KL(p(g|u) || q~(g|u)), q~ = (1 - alpha) q + alpha p, in
                       nats; p = the user's history distribution over categories, q = the list's
                       (each categorised item counts once; p(g|i) uniform over its labels)
    rank_exposure      each item's exposure summed over lists, 1 / log2(rank + 1) at rank r
    exposure_gini@k    Gini index of rank_exposure over the whole catalogue: LensKit's
                       ExposureGini with LogRankWeight(offset=1) (its default weight is
                       geometric; lmrec uses the NDCG discount, as its other metrics do)
    group_exposure@k   each group's share of the rank-weighted exposure
    group_coverage@k   mean over (non-empty) lists of the share of the groups it shows
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lmrec.data.dataset import Sequences
from lmrec.metrics import gini

ALPHA = 0.01  # Steck's smoothing of q, so that KL stays finite


def _cut(top: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(top, dtype=np.int64)
    if t.ndim != 2:
        raise ValueError(f"top must be (B, K), got shape {t.shape}")
    t = t[:, :k]
    return t, t >= 0


def _list_matrix(top: np.ndarray, n_items: int, k: int) -> sp.csr_matrix:
    """(B, n_items) CSR: 1 where the item is in the row's top k (a repeated item counts again)."""
    t, ok = _cut(top, k)
    rows = np.broadcast_to(np.arange(t.shape[0])[:, None], t.shape)[ok]
    return sp.csr_matrix((np.ones(rows.size), (rows, t[ok])), shape=(t.shape[0], n_items))


def _distribution(weights: sp.csr_matrix, item_dist: sp.spmatrix | np.ndarray) -> np.ndarray:
    """(B, G): rows of item_dist averaged with the given (B, n_items) weights, counting only
    categorised items (those whose item_dist row is not all zero); zero rows where none."""
    dist = sp.csr_matrix(item_dist, dtype=np.float64)
    total = (weights @ dist).toarray()
    has = (np.asarray(dist.sum(axis=1)).ravel() > 0).astype(np.float64)
    n = np.asarray(weights @ has).ravel()
    return np.divide(total, n[:, None], out=np.zeros_like(total), where=n[:, None] > 0)


def user_distributions(histories: Sequences | sp.spmatrix, item_dist: sp.spmatrix | np.ndarray
                       ) -> np.ndarray:
    """(B, G) p(g|u): the mean of p(g|i) over each history's categorised items (a Sequences
    counts every event; a (B, n_items) matrix weighs items by its values). Rows sum to 1, or
    are all zero for a history without categorised items."""
    n_items = item_dist.shape[0]
    if isinstance(histories, Sequences):
        lengths = np.diff(histories.indptr)
        rows = np.repeat(np.arange(histories.n_rows), lengths)
        h = sp.csr_matrix((np.ones(rows.size), (rows, histories.items.astype(np.int64))),
                          shape=(histories.n_rows, n_items))
    else:
        h = sp.csr_matrix(histories, dtype=np.float64)
    return _distribution(h, item_dist)


def miscalibration(top: np.ndarray, user_dist: np.ndarray, item_dist: sp.spmatrix | np.ndarray,
                   k: int, alpha: float = ALPHA) -> np.ndarray:
    """(B,) KL(p || (1 - alpha) q + alpha p) in nats, q = the top-k list's category
    distribution; NaN for users whose p is all zero (no categorised history). A list without
    categorised items has q = 0: KL = log(1 / alpha), the worst value."""
    p = np.asarray(user_dist, dtype=np.float64)
    q = _distribution(_list_matrix(top, item_dist.shape[0], k), item_dist)
    qt = (1.0 - alpha) * q + alpha * p
    pos = p > 0
    terms = np.where(pos, p * np.log(np.where(pos, p, 1.0) / np.where(pos, qt, 1.0)), 0.0)
    out = terms.sum(axis=1)
    out[~pos.any(axis=1)] = np.nan
    return out


def rank_weights(k: int) -> np.ndarray:
    """(k,) exposure at ranks 1..k: 1 / log2(rank + 1)."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def rank_exposure(top: np.ndarray, n_items: int, k: int) -> np.ndarray:
    """(n_items,) float64: each item's rank-weighted exposure summed over the lists."""
    t, ok = _cut(top, k)
    w = np.broadcast_to(rank_weights(t.shape[1])[None, :], t.shape)
    return np.bincount(t[ok], weights=w[ok], minlength=n_items).astype(np.float64)


def exposure_gini(top: np.ndarray, n_items: int, k: int) -> float:
    """Gini index of the rank-weighted exposure over all n_items items (0 = equal exposure;
    0.0 when nothing was recommended)."""
    return gini(rank_exposure(top, n_items, k))


def group_exposure(top: np.ndarray, groups: np.ndarray, n_groups: int, k: int) -> np.ndarray:
    """(n_groups,) each group's share of the rank-weighted exposure (NaN when none);
    groups: (n_items,) int codes in [0, n_groups), -1 = in no group."""
    g = np.asarray(groups, dtype=np.int64)
    e = rank_exposure(top, g.size, k)
    ok = g >= 0
    by_group = np.bincount(g[ok], weights=e[ok], minlength=n_groups)
    total = by_group.sum()
    return by_group / total if total > 0 else np.full(n_groups, np.nan)


def group_coverage(top: np.ndarray, groups: np.ndarray, n_groups: int, k: int) -> float:
    """Mean over non-empty lists of (distinct groups in the list's top k) / n_groups (NaN
    without a non-empty list)."""
    t, ok = _cut(top, k)
    g = np.asarray(groups, dtype=np.int64)
    rows = np.broadcast_to(np.arange(t.shape[0])[:, None], t.shape)[ok]
    codes = g[t[ok]]
    has = codes >= 0
    keys = np.unique(rows[has] * n_groups + codes[has])
    per_list = np.bincount(keys // n_groups, minlength=t.shape[0]) / max(n_groups, 1)
    nonempty = ok.any(axis=1)
    return float(per_list[nonempty].mean()) if nonempty.any() else float("nan")
