"""The approximate search loops of `lmrec.serve.retrieval.ItemIndex` (HNSW, and the compressed
indexes of `lmrec.serve.codes`) and the row helpers they share with its exact search: top-k
of score rows, ragged exclusion rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, m) scores -> best-first (B, min(k, m)) positions and values; -inf becomes -1."""
    from lmrec.models.ranking import top_k as ranking_top_k

    return ranking_top_k(scores, k)


def flatten_rows(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-row arrays -> (row number, value) pairs, both int64."""
    sizes = np.fromiter((r.size for r in rows), np.int64, len(rows))
    values = np.concatenate(rows) if rows else np.empty(0, np.int64)
    return np.repeat(np.arange(len(rows)), sizes), values.astype(np.int64, copy=False)


def member(cand: np.ndarray, rows: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """(P, f) bool: cand[p, j] is one of rows[p]'s items (vectorised over all rows)."""
    row_of, items = flatten_rows(rows)
    keys = np.unique(row_of * n_items + items)
    cand_keys = np.arange(cand.shape[0])[:, None] * n_items + cand
    return np.isin(cand_keys, keys)


# --- search ---------------------------------------------------------------------------------
_SUBSET_SHARE = 4  # flat scan: a filter allowing at most 1/4 of the items decodes them


def search_codes(index: Any, q: np.ndarray, k: int, excl: list[np.ndarray] | None,
                 allow: np.ndarray | None, out_i: np.ndarray, out_s: np.ndarray) -> None:
    """`ItemIndex.search` over a compressed or ivf index (`index`, an ItemIndex) into out_*.

    Each row fetches k + its exclusions (scaled by the allowed share) from faiss, drops the
    excluded and disallowed candidates, and fetches twice as many while fewer than k survive,
    or while the weakest fetched score ties the k-th (an unfetched item may share it, and a
    smaller index wins a tie). A flat scan sees every item, so its answer is complete; an ivf
    row whose probed lists ran dry is searched again over all lists. A selective filter
    decodes the allowed items and scores them exactly instead (`ItemIndex._search_exact`):
    for a flat scan when it allows at most 1/4 of the items (decoding costs a few scans per
    item), for an ivf index when its probed lists would hold fewer than twice the allowed
    items a row needs."""
    import faiss

    n, b = index.n_items, q.shape[0]
    n_allowed = n if allow is None else int(allow.sum())
    if n_allowed == 0:
        return
    n_excl = np.zeros(b, np.int64) if excl is None else np.array([e.size for e in excl])
    ivf = index.kind == "ivf"
    if allow is not None:
        if ivf:
            reached = n_allowed * index.nprobe / index.params["nlist"]
            selective = reached < 2 * (k + int(n_excl.max()))
        else:
            selective = _SUBSET_SHARE * n_allowed <= n
        if selective:
            index._search_exact(q, k, excl, allow, np.arange(b), out_i, out_s)
            return
    fetch = np.ceil((k + n_excl) * (n / n_allowed)).astype(np.int64)
    # rows that scan every code: always for a flat index, after running dry for an ivf one
    everything = np.full(b, not ivf)
    pending = np.arange(b)
    faiss.omp_set_num_threads(index.search_threads)
    while pending.size:
        fetch[pending] = np.minimum(fetch[pending], n)
        done = np.zeros(pending.size, bool)
        grow = np.zeros(pending.size, bool)
        for full_scan in (False, True):
            sel = np.flatnonzero(everything[pending] == full_scan)
            if not sel.size:
                continue
            rows = pending[sel]
            f = int(fetch[rows].max())
            if ivf:
                dist, cand = _search_ivf(index._faiss, q[rows], f,
                                         index.params["nlist"] if full_scan else index.nprobe)
            else:
                dist, cand = index._faiss.search(q[rows], f)  # best first
            weakest = dist[:, -1].copy()
            filled = (cand >= 0).all(axis=1)
            order = np.argsort(np.where(cand < 0, n, cand), axis=1, kind="stable")
            cand = np.take_along_axis(cand, order, 1)  # by item index: ties to the smaller
            dist = np.take_along_axis(dist, order, 1)
            valid = cand >= 0
            if allow is not None:
                valid &= allow[np.maximum(cand, 0)]
            if excl is not None:
                valid &= ~member(cand, [excl[i] for i in rows], n)
            scores = np.where(valid, dist, -np.inf).astype(np.float32)
            n_valid = valid.sum(axis=1)
            idx, vals = top_k(scores, k)
            kth = vals[:, -1] if vals.shape[1] == k else np.full(rows.size, np.inf)
            more = filled & (f < n)  # faiss had more to give
            tie = more & (n_valid >= k) & (weakest >= kth)
            ok = ((n_valid >= k) & ~tie) | (~more & (full_scan or not ivf))
            w = idx.shape[1]
            found = np.where(idx >= 0, np.take_along_axis(cand, np.maximum(idx, 0), 1), -1)
            out_i[rows[ok], :w] = found[ok]
            out_s[rows[ok], :w] = vals[ok]
            dry = ~ok & ~more  # an ivf row whose lists ran dry: all lists next time
            everything[rows[dry]] = True
            done[sel] = ok
            grow[sel] = ~ok & more
        fetch[pending[grow]] *= 2
        pending = pending[~done]


def centroids(ivf: Any) -> np.ndarray:
    """(nlist, d) float32 view of an ivf index's list centroids."""
    import faiss

    coarse = faiss.downcast_index(ivf.quantizer)
    return faiss.rev_swig_ptr(coarse.get_xb(), ivf.nlist * ivf.d).reshape(ivf.nlist, ivf.d)


def _search_ivf(ivf: Any, q: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss search of the `nprobe` lists with the largest centroid inner product (faiss's own
    probing would use its L2 coarse quantiser); (scores, items) best first, -1 padded. The
    probe count goes in per call (SearchParametersIVF), not into the shared index."""
    import faiss

    n = q.shape[0]
    cdis = q @ centroids(ivf).T  # (n, nlist)
    if nprobe < cdis.shape[1]:
        keys = np.argpartition(-cdis, nprobe - 1, axis=1)[:, :nprobe]
    else:
        keys = np.broadcast_to(np.arange(cdis.shape[1]), cdis.shape)
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    kdis = np.ascontiguousarray(np.take_along_axis(cdis, keys, 1), dtype=np.float32)
    x = np.ascontiguousarray(q, dtype=np.float32)
    dist = np.empty((n, k), np.float32)
    items = np.empty((n, k), np.int64)
    params = faiss.SearchParametersIVF(nprobe=nprobe)
    ivf.search_preassigned_c(n, faiss.swig_ptr(x), k, faiss.swig_ptr(keys),
                             faiss.swig_ptr(kdis), faiss.swig_ptr(dist),
                             faiss.swig_ptr(items), False, params)
    return dist, items


def search_hnsw(index: Any, q: np.ndarray, k: int, excl: list[np.ndarray] | None,
                 allow: np.ndarray | None, out_i: np.ndarray, out_s: np.ndarray) -> None:
    """`ItemIndex.search` over an hnsw index (`index`, an ItemIndex) into out_* (see the
    module docstring of `lmrec.serve.retrieval` for the over-fetching)."""
    import faiss

    b = q.shape[0]
    n_allowed = index.n_items if allow is None else int(allow.sum())
    if n_allowed == 0:
        return
    n_excl = np.zeros(b, np.int64) if excl is None else np.array([e.size for e in excl])
    # neighbours to fetch so that k survive the exclusions and the filter, on average
    fetch = np.ceil((k + n_excl) * (index.n_items / n_allowed)).astype(np.int64)
    # A search for f neighbours visits about f * 2M vectors; past the allowed subset's
    # size, exact search over that subset is both cheaper and complete.
    visits_per_result = 2 * index.params["hnsw_m"]
    pending = np.arange(b)
    faiss.omp_set_num_threads(index.search_threads)
    while pending.size:
        too_costly = fetch[pending] * visits_per_result >= n_allowed
        if too_costly.any():
            index._search_exact(q, k, excl, allow, pending[too_costly], out_i, out_s)
            pending = pending[~too_costly]
            if not pending.size:
                break
        f = int(fetch[pending].max())
        params = faiss.SearchParametersHNSW(efSearch=max(index.ef_search, f))
        _, cand = index._faiss.search(q[pending], f, params=params)  # (P, f), -1 padded
        cand.sort(axis=1)  # by item index, so that ties go to the smaller one
        valid = cand >= 0
        if allow is not None:
            valid &= allow[np.maximum(cand, 0)]
        if excl is not None:
            valid &= ~member(cand, [excl[i] for i in pending], index.n_items)
        # exact inner products for the candidates, -inf where filtered out
        safe = np.where(valid, cand, 0)
        scores = np.einsum("pd,pfd->pf", q[pending], index._vectors[safe])
        scores[~valid] = -np.inf
        n_valid = valid.sum(axis=1)
        finished = n_valid >= k
        # a walk that returned fewer than f neighbours cannot gain from a bigger fetch
        ran_dry = ~finished & (cand < 0).any(axis=1)
        idx, vals = top_k(scores[finished], k)
        rows = pending[finished]
        out_i[rows] = np.take_along_axis(cand[finished], idx, axis=1)
        out_s[rows] = vals
        if ran_dry.any():
            index._search_exact(q, k, excl, allow, pending[ran_dry], out_i, out_s)
        pending = pending[~(finished | ran_dry)]
        fetch[pending] *= 2
