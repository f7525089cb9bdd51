"""The pieces of a served engine that the catalogue extends with new items: the item index,
the filters and rules, item similarity (`lmrec.serve.catalogue_engine` puts them together).

Internal item indices 0..n-1 are the bundle's items; new items follow as n..n+m-1. Each
piece answers for all n+m items and leaves the bundle's part to the bundle's own piece (its
cached filter masks, its ANN index, the model's similarities), so that an item of the bundle
gets exactly the answer it got without a catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec.serve.filters import filter_column, filter_hits
from lmrec.serve.rerank import MAX_CACHED_FILTERS, ItemFilters, Similarity


class ItemRows:
    """Rows of the bundle's item vectors (decoded by its index, `ItemIndex.vectors`) followed
    by the new items' (no copy of either): `rows[idx]` gathers (len(idx), d), as indexing the
    concatenation would."""

    def __init__(self, base: Any, extra: np.ndarray) -> None:
        self.base, self.extra = base, extra
        self.shape = (base.n_items + extra.shape[0], base.dim)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        flat = idx.ravel()
        n = self.base.n_items
        out = np.empty((flat.size, self.shape[1]), dtype=self.dtype)
        old = flat < n
        out[old] = self.base.vectors(flat[old])
        out[~old] = self.extra[flat[~old] - n]
        return out.reshape(*idx.shape, self.shape[1])


class OverlayIndex:
    """The bundle's item index (exact or HNSW) plus the new items' vectors, searched exactly:
    the same `search` contract as `lmrec.serve.retrieval.ItemIndex` over n+m items."""

    def __init__(self, base: Any, extra: np.ndarray) -> None:
        self.base = base
        self.extra = np.ascontiguousarray(extra, dtype=np.float32)  # (m, d)
        self.kind, self.dim, self.params = base.kind, base.dim, base.params
        self.n_items = base.n_items + self.extra.shape[0]

    @property
    def item_vectors(self) -> ItemRows:
        return ItemRows(self.base, self.extra)

    def vectors(self, idx: Any) -> np.ndarray:
        """(len(idx), d) float32 vectors of items `idx` (as `ItemIndex.vectors`)."""
        return self.item_vectors[np.asarray(idx, dtype=np.int64).ravel()]

    def norms(self) -> np.ndarray:
        """(n_items,) float32 vector lengths (as `ItemIndex.norms`)."""
        return np.concatenate([self.base.norms(), np.linalg.norm(self.extra, axis=1)])

    def search(self, queries: np.ndarray, k: int, *,
               exclude: Sequence[np.ndarray] | None = None,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """idx (B, k) and scores (B, k), best first, ties to the smaller index, padded with
        -1 / -inf (see `ItemIndex.search`)."""
        n = self.base.n_items
        q = np.asarray(queries, dtype=np.float32)
        excl = None if exclude is None else [np.asarray(e, dtype=np.int64).ravel()
                                             for e in exclude]
        bi, bs = self.base.search(q, k, exclude=None if excl is None else [e[e < n]
                                                                          for e in excl],
                                  allowed=None if allowed is None else allowed[:n])
        es = q @ self.extra.T  # (B, m): the new items, exactly
        if allowed is not None:
            es[:, ~allowed[n:]] = -np.inf
        for row, e in enumerate(excl or ()):
            es[row, e[e >= n] - n] = -np.inf
        idx = np.concatenate([bi, np.broadcast_to(np.arange(n, self.n_items), es.shape)], 1)
        scores = np.concatenate([bs, es], axis=1)
        order = np.lexsort((np.where(idx < 0, self.n_items, idx), -scores))[:, :k]
        idx, scores = np.take_along_axis(idx, order, 1), np.take_along_axis(scores, order, 1)
        idx[~np.isfinite(scores)] = -1
        return idx, scores.astype(np.float32)


class OverlayFilters(ItemFilters):
    """`ItemFilters` over n+m items: a filter's mask is the bundle's (cached by the bundle's
    filters) with the rows the catalogue changed or added evaluated on their new values.

    `rule_allowed` and `boosts` are set by the builder: the rules evaluated the same way, with
    hidden items and new items that cannot be scored never allowed."""

    def __init__(self, base: ItemFilters, n_items: int, frame: pl.DataFrame,
                 rows: np.ndarray) -> None:
        # not ItemFilters.__init__: the bundle's part comes from `base` (and its caches)
        self.base = base
        self.items = base.items
        self.rules = base.rules
        self.n_items = n_items
        self.filter_columns = base.filter_columns
        self.frame, self.rows = frame, rows  # changed and new items' rows, their indices
        self._masks: dict[str, np.ndarray] = {}
        self.rule_allowed: np.ndarray | None = None
        self.boosts: np.ndarray | None = None

    def filter_mask(self, expr: str) -> np.ndarray:
        cached = self._masks.get(expr)
        if cached is not None:
            return cached
        base = self.base.filter_mask(expr)  # also refuses unknown columns (QueryError)
        mask = np.zeros(self.n_items, dtype=bool)
        mask[: base.size] = base
        if self.frame.height:
            mask[self.rows] = filter_hits(self.frame[filter_column(expr)], expr)
        mask.flags.writeable = False
        if len(self._masks) < MAX_CACHED_FILTERS:
            self._masks[expr] = mask
        return mask

    def top(self, scores: np.ndarray, pool: int, seen: np.ndarray | None,
            allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """As `ItemFilters.top`; a score vector of the bundle's items alone (popularity)
        leaves the new items out."""
        s = np.asarray(scores, dtype=np.float32)
        if s.size < self.n_items:
            s = np.concatenate([s, np.full(self.n_items - s.size, -np.inf, np.float32)])
        return super().top(s, pool, seen, allowed)


class OverlaySimilarity:
    """`Similarity` over n+m items: the bundle's pairs from the bundle's `Similarity`, pairs
    with a new item the cosine of `unit` rows (unit item vectors or profiles) when the model
    has them, else nothing (0 for diversity, -inf for affinity: no explanation, no answer)."""

    def __init__(self, base: Similarity, n_base: int, n_items: int,
                 unit: Callable[[np.ndarray], np.ndarray | sp.spmatrix] | None) -> None:
        self.base, self.n_base, self.n_items, self.unit = base, n_base, n_items, unit

    def pairwise(self, idx: np.ndarray) -> np.ndarray:
        old = idx < self.n_base
        if old.all():
            return self.base.pairwise(idx)
        if self.unit is not None:
            u = self.unit(idx)
            return _dense(u @ u.T)
        out = np.zeros((idx.size, idx.size), dtype=np.float32)
        out[np.ix_(old, old)] = self.base.pairwise(idx[old])
        return out

    def affinity(self, src: np.ndarray, targets: np.ndarray | None) -> np.ndarray:
        t = np.arange(self.n_items) if targets is None else np.asarray(targets)
        s_old, t_old = src < self.n_base, t < self.n_base
        if s_old.all() and t_old.all():
            return self.base.affinity(src, t)
        if self.unit is not None:
            return _dense(self.unit(src) @ self.unit(t).T)
        out = np.full((src.size, t.size), -np.inf, dtype=np.float32)
        if s_old.any() and t_old.any():
            out[np.ix_(s_old, t_old)] = self.base.affinity(src[s_old], t[t_old])
        return out


def unit_rows(rows: Any) -> Callable[[np.ndarray], Any]:
    """`idx -> rows[idx]` scaled to unit length (zero rows stay zero), dense or sparse."""
    if sp.issparse(rows):
        csr = sp.csr_matrix(rows)
        norms = np.sqrt(np.asarray(csr.multiply(csr).sum(axis=1)).ravel())
        unit = sp.csr_matrix(sp.diags(_inverse(norms)) @ csr)
        return lambda idx: unit[np.asarray(idx, dtype=np.int64)]

    def gather(idx: np.ndarray) -> np.ndarray:
        r = np.asarray(rows[np.asarray(idx, dtype=np.int64)], dtype=np.float32)
        return r * _inverse(np.linalg.norm(r, axis=1))[:, None]

    return gather


def _dense(m: Any) -> np.ndarray:
    return np.asarray(m.toarray() if sp.issparse(m) else m, dtype=np.float32)


def _inverse(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.divide(1.0, x, out=np.zeros_like(x), where=x > 0)
