"""Identical item vectors, found once, so that exact search scores them exactly alike.

Ties go to the smaller item index, so equal vectors must score exactly alike, which a BLAS
product does not promise: its kernels sum a column's products in an order that depends on
where the column falls in the blocking, so two copies of one vector can differ in the last
bit and come back in either order. `find_duplicates` finds the sets of identical vectors;
`tie_duplicates` scores each set once and gives that score to all of its items.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_HASH_CHUNK = 50_000  # rows hashed at once


class Duplicates(NamedTuple):
    """Items whose vector equals another item's, bit for bit."""

    items: np.ndarray  # (m,) their indices, ascending
    group: np.ndarray  # (m,) which set of identical vectors each is in, 0..G-1
    vectors: np.ndarray  # (G, d) each set's vector


def find_duplicates(vecs: np.ndarray) -> Duplicates | None:
    """The sets of identical rows of `vecs` (n, d) float32, None when all differ: rows are
    hashed (exactly, on their bits), then rows sharing a hash are compared."""
    n, d = vecs.shape
    mult = np.random.default_rng(0).integers(1, 2**62, d, dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(n, np.uint64)
    for start in range(0, n, _HASH_CHUNK):
        rows = vecs[start : start + _HASH_CHUNK] + np.float32(0)  # -0.0 becomes 0.0
        hashes[start : start + rows.shape[0]] = (rows.view(np.uint32).astype(np.uint64)
                                                 * mult).sum(axis=1)
    order = np.argsort(hashes, kind="stable")
    same = hashes[order][1:] == hashes[order][:-1]
    if not same.any():
        return None
    cand = np.sort(order[np.r_[same, False] | np.r_[False, same]])
    rows = np.ascontiguousarray(vecs[cand] + np.float32(0))
    _, inverse, counts = np.unique(rows.view(np.dtype((np.void, 4 * d))).ravel(),
                                   return_inverse=True, return_counts=True)
    keep = counts[inverse] > 1
    if not keep.any():
        return None
    items = cand[keep]
    _, first, group = np.unique(inverse[keep], return_index=True, return_inverse=True)
    return Duplicates(items, group.astype(np.int64), np.ascontiguousarray(vecs[items[first]]))


def tie_duplicates(dups: Duplicates, q: np.ndarray, scores: np.ndarray,
                   subset: np.ndarray | None) -> None:
    """Overwrite, in `scores` (len(q), n_items) or (len(q), len(subset)) over the ascending
    items `subset`, the scores of the items of each set in `dups` with that set's score,
    computed once from queries `q`."""
    cols, group = dups.items, dups.group
    if subset is not None:  # the duplicates among the scored items, by position
        pos = np.minimum(np.searchsorted(subset, cols), subset.size - 1)
        hit = subset[pos] == cols
        cols, group = pos[hit], group[hit]
        if not cols.size:
            return
    scores[:, cols] = (q @ dups.vectors.T)[:, group]
