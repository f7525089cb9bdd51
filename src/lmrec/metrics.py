"""Top-k metrics, vectorised over a batch of users (no Python loop over users).

Accuracy metrics follow RecBole 1.2.1 (`recbole.evaluator.metrics`) with binary relevance:

    recall@k     hits@k / |truth|
    precision@k  hits@k / k                 (k, even when fewer than k items were ranked)
    hit@k        1 if hits@k > 0
    mrr@k        1 / rank of the first hit within k, else 0
    ndcg@k       sum_{i<=k} rel_i / log2(i + 1)  /  sum_{i<=min(|truth|, k)} 1 / log2(i + 1)
    map@k        sum_{i<=k} rel_i * precision@i  /  min(|truth|, k)

Per-user values are NaN for users without truth; averages skip them (RecBole evaluates only
users with at least one ground-truth item).

Beyond-accuracy metrics describe the lists as a whole:

    coverage@k    distinct recommended items / n_items
    novelty@k     mean self-information -log2(p_i) of the recommended items, where p_i is the
                  share of training users who interacted with item i (at least 1 / n_users)
    popularity@k  mean training popularity (distinct users) of the recommended items
    diversity@k   intra-list diversity: mean over item pairs in a list of 1 - cosine(f_i, f_j)
    gini@k        Gini index of the exposure (times recommended) over all items
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from lmrec.errors import ConfigError

ACCURACY_METRICS: tuple[str, ...] = ("recall", "precision", "ndcg", "hit", "mrr", "map")
BEYOND_METRICS: tuple[str, ...] = ("coverage", "novelty", "diversity", "popularity", "gini")
ALL_METRICS: tuple[str, ...] = ACCURACY_METRICS + BEYOND_METRICS

_DENSE_GRAM_MAX = 4096  # at most this many distinct recommended items -> dense item-item cosine
_CHUNK_ELEMS = 8_000_000  # elements of a (B, k, d) gather processed at once


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """Sorted distinct cutoffs; each must be >= 1."""
    out = tuple(sorted({int(k) for k in ks}))
    if not out or out[0] < 1:
        raise ConfigError(f"cutoffs k must be positive integers, got {list(ks)}")
    return out


# --- accuracy --------------------------------------------------------------------------------
def hit_matrix(topk_items: np.ndarray, truth: sp.spmatrix) -> np.ndarray:
    """Which recommended items are relevant.

    topk_items: (B, K) int64 item indices, best first, -1 = padding.
    truth: (B, n_items) sparse, row b = the relevant items of the user in row b of topk_items.
    Returns (B, K) bool.
    """
    topk_items = np.asarray(topk_items, dtype=np.int64)
    t = sp.csr_matrix(truth)
    if not t.has_canonical_format:
        t = t.copy()
        t.sum_duplicates()
    t.eliminate_zeros()
    b, n_items = t.shape
    if topk_items.shape[0] != b:
        raise ValueError(f"topk_items has {topk_items.shape[0]} rows, truth has {b}")
    if t.nnz == 0 or topk_items.size == 0:
        return np.zeros(topk_items.shape, dtype=bool)
    rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(t.indptr))
    keys = rows * n_items + t.indices.astype(np.int64)  # ascending: rows, then sorted columns
    query = np.arange(b, dtype=np.int64)[:, None] * n_items + topk_items
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return (keys[pos] == query) & (topk_items >= 0)


def accuracy_from_hits(hits: np.ndarray, n_truth: np.ndarray, ks: Sequence[int]
                       ) -> dict[str, np.ndarray]:
    """Per-user accuracy metrics from a hit matrix.

    hits: (B, K) bool, n_truth: (B,) number of relevant items per user.
    Returns {"recall@k": (B,) float64, ...} for every metric in ACCURACY_METRICS and k in ks;
    NaN where n_truth == 0. Lists shorter than k count the missing ranks as misses.
    """
    ks = check_ks(ks)
    kmax = ks[-1]
    hits = np.asarray(hits, dtype=bool)
    if hits.shape[1] < kmax:
        hits = np.pad(hits, ((0, 0), (0, kmax - hits.shape[1])))
    hits = hits[:, :kmax]
    n_truth = np.asarray(n_truth, dtype=np.int64)
    has = n_truth > 0
    nt = np.where(has, n_truth, 1).astype(np.float64)
    ranks = np.arange(1, kmax + 1, dtype=np.float64)
    disc = 1.0 / np.log2(ranks + 1.0)
    ideal = np.cumsum(disc)
    h = hits.astype(np.float64)
    cum = np.cumsum(h, axis=1)
    dcg = np.cumsum(h * disc, axis=1)
    ap = np.cumsum(h * (cum / ranks), axis=1)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), kmax)  # 0-based rank of first hit
    out: dict[str, np.ndarray] = {}
    nan = np.full(hits.shape[0], np.nan)
    for k in ks:
        c = cum[:, k - 1]
        m = np.minimum(n_truth, k).clip(min=1)
        vals = {
            "recall": c / nt,
            "precision": c / k,
            "ndcg": dcg[:, k - 1] / ideal[m - 1],
            "hit": (c > 0).astype(np.float64),
            "mrr": np.where(first < k, 1.0 / (first + 1.0), 0.0),
            "map": ap[:, k - 1] / m,
        }
        for name, v in vals.items():
            out[f"{name}@{k}"] = np.where(has, v, nan)
    return out


def ranking_metrics(topk_items: np.ndarray, truth: sp.spmatrix, ks: Sequence[int]
                    ) -> dict[str, np.ndarray]:
    """Per-user accuracy metrics: (B, K) lists against (B, n_items) truth -> {name@k: (B,)}."""
    t = sp.csr_matrix(truth)
    t.sum_duplicates()
    n_truth = np.diff(t.indptr)
    return accuracy_from_hits(hit_matrix(topk_items, t), n_truth, ks)


def mean_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Average of each (B,) array over the users where it is defined (not NaN)."""
    out = {}
    for name, v in per_user.items():
        ok = ~np.isnan(v)
        out[name] = float(v[ok].mean()) if ok.any() else float("nan")
    return out


# --- beyond accuracy -------------------------------------------------------------------------
def exposure(topk_items: np.ndarray, n_items: int, k: int) -> np.ndarray:
    """(n_items,) int64: how often each item appears in the top k of the lists (B, K)."""
    top = np.asarray(topk_items)[:, :k]
    return np.bincount(top[top >= 0].ravel(), minlength=n_items).astype(np.int64)


def coverage(topk_items: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-k list."""
    return float((exposure(topk_items, n_items, k) > 0).sum() / max(n_items, 1))


def gini(counts: np.ndarray) -> float:
    """Gini index of a (n,) non-negative exposure vector: 0 = all items equally exposed,
    close to 1 = a few items take all exposure."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = x.size, x.sum()
    if n == 0 or total == 0:
        return 0.0
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def novelty(topk_items: np.ndarray, item_popularity: np.ndarray, n_users: int, k: int
            ) -> np.ndarray:
    """(B,) mean self-information -log2(p_i) of each list's top-k items.

    item_popularity: (n_items,) distinct training users per item; p_i = pop_i / n_users,
    clipped below at 1 / n_users (items never seen in training count as seen once).
    NaN for an empty list.
    """
    n_users = max(int(n_users), 1)
    p = np.maximum(np.asarray(item_popularity, dtype=np.float64), 1.0) / n_users
    info = -np.log2(np.minimum(p, 1.0))
    return _list_mean(topk_items, info, k)


def mean_popularity(topk_items: np.ndarray, item_popularity: np.ndarray, k: int) -> np.ndarray:
    """(B,) mean training popularity of each list's top-k items (NaN for an empty list)."""
    return _list_mean(topk_items, np.asarray(item_popularity, dtype=np.float64), k)


def cooccurrence_features(train_matrix: sp.spmatrix) -> sp.csr_matrix:
    """(n_items, n_users) binary item vectors from a (n_users, n_items) interaction matrix.

    Their cosine is the co-occurrence cosine C_ij / sqrt(C_ii C_jj) with C = X^T X.
    """
    x = sp.csr_matrix(train_matrix, dtype=np.float32, copy=True)
    x.data[:] = 1.0
    return x.T.tocsr()


def intra_list_diversity(topk_items: np.ndarray, item_features: np.ndarray | sp.spmatrix,
                         k: int) -> np.ndarray:
    """(B,) mean pairwise 1 - cosine similarity of the top-k items of each list.

    topk_items: (B, K) int64, -1 = padding. item_features: (n_items, d) dense array or sparse
    matrix (e.g. `cooccurrence_features`). An item with an all-zero feature row has cosine 0
    with every item. NaN for lists with fewer than two items.
    """
    return intra_list_diversity_at(topk_items, item_features, (k,))[k]


def intra_list_diversity_at(topk_items: np.ndarray,
                            item_features: np.ndarray | sp.spmatrix | None,
                            ks: Sequence[int], *, gram: np.ndarray | None = None
                            ) -> dict[int, np.ndarray]:
    """`intra_list_diversity` at several cutoffs, sharing one item-item similarity pass.

    `gram` (n_items, n_items), the cosine matrix from `cosine_gram`, replaces `item_features`
    when given (compute it once to evaluate many batches). Returns {k: (B,) float64}.
    """
    ks = check_ks(ks)
    kmax = ks[-1]
    top = np.asarray(topk_items, dtype=np.int64)[:, :kmax]
    n_rows, width = top.shape
    valid = top >= 0
    # sims[b, j]: sum of cos(p, q) over ordered pairs p != q with both ranks <= j
    sims = np.zeros((n_rows, width))
    if gram is not None:
        sims = _pair_sums(np.where(valid, top, -1), gram=gram)
    elif item_features is None:
        raise ValueError("give item_features or gram")
    elif valid.any():
        used = np.unique(top[valid])
        pos = np.full(item_features.shape[0], -1, dtype=np.int64)
        pos[used] = np.arange(used.size)
        local = np.where(valid, pos[np.where(valid, top, 0)], -1)  # (B, K) rows into `used`
        if sp.issparse(item_features):
            f = _normalise_sparse(sp.csr_matrix(item_features)[used].astype(np.float32))
            if used.size <= _DENSE_GRAM_MAX:
                sims = _pair_sums(local, gram=np.asarray((f @ f.T).toarray()))
            else:  # many distinct items: one sparse row-wise product per position pair
                for p in range(width):
                    for q in range(p + 1, width):
                        ok = (local[:, p] >= 0) & (local[:, q] >= 0)
                        if ok.any():
                            a, b = f[local[ok, p]], f[local[ok, q]]
                            sims[ok, q:] += 2.0 * np.asarray(a.multiply(b).sum(axis=1))
        else:
            f = np.asarray(item_features, dtype=np.float64)[used]
            norms = np.linalg.norm(f, axis=1, keepdims=True)
            sims = _pair_sums(local, vectors=np.divide(f, norms, out=np.zeros_like(f),
                                                       where=norms > 0))
    nv = np.cumsum(valid, axis=1).astype(np.float64)
    out = {}
    for k in ks:
        j = min(k, width) - 1
        out[k] = np.full(n_rows, np.nan)
        if j < 0:
            continue
        n_pairs = nv[:, j] * (nv[:, j] - 1.0)
        ok = n_pairs > 0
        out[k][ok] = 1.0 - sims[ok, j] / n_pairs[ok]
    return out


def cosine_gram(item_features: np.ndarray | sp.spmatrix) -> np.ndarray | None:
    """(n_items, n_items) float32 cosine similarities of the feature rows, or None when the
    catalogue is too large (more than 4096 items) for a dense matrix."""
    n = item_features.shape[0]
    if n > _DENSE_GRAM_MAX:
        return None
    if sp.issparse(item_features):
        f = _normalise_sparse(sp.csr_matrix(item_features).astype(np.float32))
        return np.asarray((f @ f.T).toarray(), dtype=np.float32)
    d = np.asarray(item_features, dtype=np.float32)
    norms = np.linalg.norm(d, axis=1, keepdims=True)
    d = np.divide(d, norms, out=np.zeros_like(d), where=norms > 0)
    return d @ d.T


def _pair_sums(local: np.ndarray, *, gram: np.ndarray | None = None,
               vectors: np.ndarray | None = None) -> np.ndarray:
    """(B, K): at column j, the sum of sim(p, q) over ordered pairs p != q <= j of each row.

    local: (B, K) rows into `gram` (U, U) or `vectors` (U, d); -1 = padding (similarity 0).
    """
    n_rows, width = local.shape
    out = np.zeros((n_rows, width))
    per_row = width * width + (width * vectors.shape[1] if vectors is not None else 0)
    step = max(1, _CHUNK_ELEMS // max(per_row, 1))
    lower = np.tril(np.ones((width, width), dtype=bool), k=-1)  # p < q
    for s in range(0, n_rows, step):
        loc = local[s : s + step]
        ok = loc >= 0
        li = np.maximum(loc, 0)
        if gram is not None:
            g = gram[li[:, :, None], li[:, None, :]]
        else:
            assert vectors is not None
            e = vectors[li]  # (b, K, d)
            g = np.einsum("bkd,bjd->bkj", e, e)
        g = g * ((ok[:, :, None] & ok[:, None, :]) & lower)
        # row q holds sim(q, p) for p < q: pairs completed at rank q, counted twice (ordered)
        out[s : s + step] = 2.0 * np.cumsum(g.sum(axis=2, dtype=np.float64), axis=1)
    return out


def _normalise_sparse(m: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    m = sp.csr_matrix(m, copy=True)
    row_of = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    norms = np.sqrt(np.bincount(row_of, weights=m.data.astype(np.float64) ** 2,
                                minlength=m.shape[0]))
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    m.data = (m.data * inv[row_of]).astype(m.dtype)
    return m


def _list_mean(topk_items: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """(B,) mean of values[item] over each list's top-k items, ignoring -1 padding."""
    top = np.asarray(topk_items, dtype=np.int64)[:, :k]
    valid = top >= 0
    v = np.where(valid, values[np.where(valid, top, 0)], 0.0)
    n = valid.sum(axis=1)
    out = np.full(top.shape[0], np.nan)
    out[n > 0] = v.sum(axis=1)[n > 0] / n[n > 0]
    return out
