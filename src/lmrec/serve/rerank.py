"""Candidates after the model's scores: filters, the rules' exclusions and boosts; the item
similarity behind diversity.

Filters (`column:value`, `column:a|b`, `column:lo..hi`, `column<x`: `lmrec.serve.filters`, on
the item table) and the rules' exclusions make a mask
of allowed items: exact scoring sets the others to -inf, the index over-fetches. Boosts add a
constant to the scores of the items a filter matches (over-fetching 4x on the index path).

Diversity (`diversity=x`, i.e. the re-ranker `mmr=x` of `lmrec.rerank`, run by the engine with
the other re-rankers; `mmr` here is that function, kept under its old name): maximal marginal
relevance (Carbonell & Goldstein 1998) over a pool of the max(50, 4k) best candidates, picking
in turn the candidate with the largest (1 - diversity) * relevance - diversity * (max
similarity to those picked), relevance being the score min-max scaled over the pool.
Similarity (`Similarity.pairwise`) is the cosine of the model's item embeddings,
else of the items' categorical and multi-valued attributes, else the model's `item_similarity`
(the cosine of the items' training co-occurrence by default) (`Similarity`, also behind
explanations and similar items).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec import columns as C
from lmrec.columns import Role
from lmrec.data.dataset import Sequences
from lmrec.errors import ConfigError
from lmrec.models.base import Recommender
from lmrec.models.ranking import top_k
from lmrec.rerank import mmr as mmr  # re-exported: lmrec.serve.rerank.mmr is the stage's MMR
from lmrec.serve.filters import QueryError, filter_column, filter_hits
from lmrec.serve.rules import Rules

BOOST_OVERFETCH = 4
MAX_CACHED_FILTERS = 256


# --- filters, exclusions and boosts ---------------------------------------------------------
class ItemFilters:
    """Filter masks over the item table, and the rules' exclusions and boosts as arrays."""

    def __init__(self, items: pl.DataFrame, roles: dict[str, Role], rules: Rules, n_items: int,
                 item_indices: Callable[[Sequence[Any]], np.ndarray]) -> None:
        self.items = items
        self.n_items = n_items
        self.filter_columns = [c for c in items.columns if c != C.ITEM
                               and roles.get(c) not in (Role.VECTOR, Role.TEXT)]
        self._masks: dict[str, np.ndarray] = {}
        self.rules = rules
        excluded = self._rule_exclusions(item_indices)  # (n_items,) bool or None
        self.rule_allowed = None if excluded is None else ~excluded  # the rules alone
        if self.rule_allowed is not None:
            self.rule_allowed.flags.writeable = False  # shared by every request
        self.boosts = self._rule_boosts()  # (n_items,) float32 or None

    def top(self, scores: np.ndarray, pool: int, seen: np.ndarray | None,
            allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Best `pool` items of a full (n_items,) score vector after rules and masks."""
        s = np.array(scores, dtype=np.float32)  # a copy: the model's arrays stay untouched
        if self.boosts is not None:
            s += self.boosts
        if allowed is not None:
            s[~allowed] = -np.inf
        if seen is not None:
            s[seen] = -np.inf
        return top1(s, pool)

    def search(self, index: Any, q: np.ndarray, pool: int, seen: np.ndarray | None,
               allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Best `pool` items for a (1, d) query from the item index (over-fetching when
        boosts may reorder the candidates)."""
        fetch = min(self.n_items, pool * BOOST_OVERFETCH if self.boosts is not None else pool)
        exclude = [seen] if seen is not None else None
        idx, scores = index.search(q, fetch, exclude=exclude, allowed=allowed)
        idx, scores = idx[0], scores[0]
        keep = idx >= 0
        idx, scores = idx[keep], scores[keep]
        if self.boosts is not None and idx.size:
            scores = scores + self.boosts[idx]
            order = np.lexsort((idx, -scores))[:pool]
            idx, scores = idx[order], scores[order]
        return idx, scores

    def allowed(self, filters: Sequence[str]) -> np.ndarray | None:
        """(n_items,) bool: items passing every filter and not excluded by the rules."""
        mask = self.rule_allowed
        for f in filters:
            m = self.filter_mask(f)
            mask = m if mask is None else mask & m
        return mask

    def filter_mask(self, expr: str) -> np.ndarray:
        """(n_items,) bool of the items an expression keeps (`lmrec.serve.filters`)."""
        cached = self._masks.get(expr)
        if cached is not None:
            return cached
        col = filter_column(expr)
        if col not in self.filter_columns:
            known = ", ".join(self.filter_columns) or "none"
            raise QueryError(f"filter {expr!r}: unknown column {col!r} (filterable: {known})")
        mask = filter_hits(self.items[col], expr)
        mask.flags.writeable = False
        if len(self._masks) < MAX_CACHED_FILTERS:  # a bounded cache of catalogue-wide masks
            self._masks[expr] = mask
        return mask

    def _rule_exclusions(self, item_indices: Callable[[Sequence[Any]], np.ndarray]
                         ) -> np.ndarray | None:
        r = self.rules
        if not r.exclude_items and not r.exclude:
            return None
        mask = np.zeros(self.n_items, dtype=bool)
        idx = item_indices(list(r.exclude_items))
        mask[idx[idx >= 0]] = True
        for f in r.exclude:
            mask |= self._rule_filter(f)
        return mask

    def _rule_boosts(self) -> np.ndarray | None:
        if not self.rules.boost:
            return None
        out = np.zeros(self.n_items, dtype=np.float32)
        for b in self.rules.boost:
            out[self._rule_filter(b.filter)] += np.float32(b.weight)
        return out

    def _rule_filter(self, expr: str) -> np.ndarray:
        try:
            return self.filter_mask(expr)
        except QueryError as exc:
            raise ConfigError(f"rules: {exc}") from None


# --- item similarity and diversity ----------------------------------------------------------
class Similarity:
    """Item-to-item similarity: embedding cosine, else the model's scores of one-item histories
    (affinity, unless the model ignores histories) or attribute cosine (pairwise), else the
    model's `item_similarity` (training co-occurrence cosine by default)."""

    def __init__(self, model: Recommender, index: Any, norms: np.ndarray | None,
                 items: pl.DataFrame, roles: dict[str, Role], n_items: int, *,
                 ignores_history: bool = False) -> None:
        self.model = model
        self.index = index
        self.norms = norms  # (n_items,) item vector norms, None without item embeddings
        self.items = items
        self.roles = roles
        self.n_items = n_items
        # the model's scores are the same whatever the history (`explain.ignores_history`):
        # one-item histories then say nothing about which items are alike
        self.ignores_history = ignores_history

    def pairwise(self, idx: np.ndarray) -> np.ndarray:
        """(n, n) similarity of candidate items (cosine)."""
        if self.norms is not None:
            u = self._unit(idx)
            return u @ u.T
        if self._attrs is not None:
            a = self._attrs[idx]
            return np.asarray((a @ a.T).toarray(), dtype=np.float32)
        return self.model.item_similarity(idx, idx)

    def affinity(self, src: np.ndarray, targets: np.ndarray | None) -> np.ndarray:
        """(len(src), n_targets) affinity of source items to target items (all when None)."""
        if self.norms is not None:
            t = self._unit(np.arange(self.n_items) if targets is None else targets)
            return self._unit(src) @ t.T
        if not self.ignores_history:
            s = self.model.score(np.full(len(src), -1, dtype=np.int64),
                                 Sequences.from_lists([np.array([i]) for i in src]))
            return s if targets is None else s[:, targets]
        return self.model.item_similarity(src, targets)

    @cached_property
    def _attrs(self) -> sp.csr_matrix | None:
        """(n_items, n_labels) attribute vectors; built on first use (only models without
        item embeddings need them)."""
        return attribute_vectors(self.items, self.roles)

    def _unit(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), d) unit item vectors of the items `idx` (gathered, then scaled)."""
        assert self.norms is not None
        rows = self.index.vectors(idx)  # decoded on demand (a compressed index)
        return rows / np.maximum(self.norms[idx], 1e-12)[:, None]


# --- helpers ---------------------------------------------------------------------------------
def top1(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one (n,) score vector, -inf entries left out."""
    idx, vals = top_k(scores[None, :], k)
    keep = idx[0] >= 0
    return idx[0][keep], vals[0][keep]


def attribute_vectors(items: pl.DataFrame, roles: dict[str, Role]) -> sp.csr_matrix | None:
    """(n_items, n_labels) L2-normalised one-hot of categorical and multi-valued columns."""
    cols = [c for c, r in roles.items() if r in (Role.CATEGORICAL, Role.MULTI)
            and c in items.columns]
    if not cols:
        return None
    frame = items.select(
        [pl.col(c).cast(pl.List(pl.String)) if isinstance(items[c].dtype, pl.List)
         else pl.concat_list(pl.col(c).cast(pl.String)) for c in cols])
    # one label vocabulary across columns, "column=value" so equal values of two columns differ
    long = pl.concat([
        frame.select(pl.int_range(pl.len()).alias("row"), pl.col(c).alias("v"))
        .explode("v").drop_nulls("v").select("row", (pl.lit(f"{c}=") + pl.col("v")).alias("v"))
        for c in cols])
    if long.height == 0:
        return None
    codes = long["v"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    rows = long["row"].to_numpy().astype(np.int64)
    m = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, codes)),
                      shape=(items.height, int(codes.max()) + 1))
    m.data[:] = 1.0
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m, dtype=np.float32)
