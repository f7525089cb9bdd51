"""Everything derived from one bundle: histories, scoring, and the answers built from them.

`Engine` is immutable once built, so any number of request threads share it.

Real time. A user's history is their training history from the bundle followed by their live
events from the store (oldest first; live events already in the training data, i.e. the same
item no later than the user's last training event, are dropped). The engine uses the model's
API only: a known user without live events is scored from the trained state (`users` alone),
anyone else (live events, an unknown user: -1, a visitor) from the history (`users` and
`histories`, so a trained user's id and attributes stay beside the updated history), through

    an EmbeddingModel        user_embeddings(...) -> (1, d), then the item index (exact below
                             the bundle's ANN threshold, HNSW above)
    any other model          score(...) -> (1, n_items)

so an accepted event changes the next recommendation without retraining, and a new user gets
personalised results from their first event. A user with no history at all gets the most popular
items (the same answer for every such user). Whether the model ignores histories altogether
(popularity ranks the same items for everyone) is observed once, when the engine is built
(`lmrec.serve.explain.ignores_history`); its explanations then name no history item.

Behaviour types. A live event keeps its type when the bundle was trained on that type. Any other
type (a "view" sent to a bundle trained on purchases only), and a visitor's items, which have no
type, count as a neutral event: the history names it `UNKNOWN_EVENT`, a type no model knows, so
behaviour-weighted models give it weight 1.0, sequential models with behaviour embeddings give
it their padding/unknown token, and its explanation names no behaviour ("because of X in your
history").

The candidates then go through filters, rules and boosts (`lmrec.serve.rerank`), the
re-ranking stage (`lmrec.rerank`: `Query.rerank` specs such as `calibration=0.5` or
`suitability=risk<=tolerance`; `diversity=x` is `mmr=x`) and are explained
(`lmrec.serve.explain`). The re-rankers read the bundle's item and user tables (users.parquet;
a bundle without one knows no user attributes), its training popularity and the engine's item
similarity (`Similarity.pairwise`); a pipeline's hard constraints are a mask like a filter's,
applied before the top-k, and its soft stages re-rank a pool of `pipeline.pool(k)` candidates
after scoring, `now` being the request time. An empty answer to a filtered request has a note
naming the filter that left nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from lmrec.columns import Role
from lmrec.data.dataset import Sequences
from lmrec.errors import ConfigError
from lmrec.models.kinds import EmbeddingModel
from lmrec.rerank import RerankData, RerankPipeline, parse_rerank
from lmrec.serve.bundle import Bundle
from lmrec.serve.explain import (
    POPULAR_REASON,
    UNKNOWN_EVENT,
    empty_filter_note,
    explain,
    ignores_history,
    item_labels,
)
from lmrec.serve.filters import QueryError
from lmrec.serve.rerank import ItemFilters, Similarity, top1
from lmrec.serve.rules import Rules
from lmrec.serve.stages import http_message, request_specs, soft
from lmrec.serve.store import StoredEvent

if TYPE_CHECKING:  # an annotation only
    from lmrec.serve.explore import Explorer


EXPLORE_POOL = 50  # smallest candidate pool an explorer draws from
MAX_CACHED_PIPELINES = 256  # distinct re-ranking spec lists kept built per engine


@dataclass(frozen=True)
class Query:
    """What to recommend: `k` items, optionally without the history's items, only items
    matching every filter (and, when given, among the `candidates`, external item ids),
    re-ranked for diversity (0..1, i.e. `mmr=x`) and by the `rerank` specs
    (`NAME=WEIGHT[:ARG]`, `lmrec.rerank`), with explanations."""

    k: int = 10
    exclude_seen: bool = True
    filters: tuple[str, ...] = ()
    diversity: float = 0.0
    explain: bool = False
    candidates: tuple[Any, ...] = ()
    rerank: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scored:
    item: Any  # external id
    score: float
    because: Any = None  # external id of the history item that explains it
    reason: str | None = None
    # P(this item at this position | the request) under the serving policy: 1.0 for top-k,
    # less under exploration, None in an interleaved slate
    propensity: float | None = 1.0
    team: str | None = None  # interleaving: the arm that contributed the item


class Engine:
    """Scoring, filtering, diversity and explanations over one loaded bundle."""

    def __init__(self, bundle: Bundle, rules: Rules | None = None) -> None:
        self.bundle = bundle
        self.model = bundle.model
        self.model_version = bundle.model_version
        self.loaded_at = time.time()
        self.n_items = len(bundle.item_ids)
        self.histories = bundle.histories
        self._redacted = bundle.redacted  # (n_users,) bool or None
        types = self.histories.event_types
        self._codes = {t: i for i, t in enumerate(types)}
        # Models look behaviour codes up by name (`Sequences.event_types`), so one extra name
        # that no model was trained on makes an event of unknown type neutral everywhere:
        # `history_matrix` and content-text weigh unknown names 1.0, and `SeqData` maps them to
        # PAD, whose embedding stays zero in SASRec/GRU4Rec (padding_idx): the item then enters
        # without any behaviour signal, instead of posing as the most common training type.
        self._event_types = (*types, UNKNOWN_EVENT)
        self._unknown_code = len(types)
        roles = {c: Role(r) for c, r in bundle.meta.get("item_roles", {}).items()}
        self.embedding = isinstance(self.model, EmbeddingModel)
        # the same ranking for everyone, whatever the history (observed, not declared)
        self.ignores_history = ignores_history(self.model)
        self.index: Any = None
        norms: np.ndarray | None = None  # (n_items,) item vector norms
        if self.embedding:
            from lmrec.serve.retrieval import ItemIndex

            # a saved index already holds the item vectors: no second copy of the catalogue
            self.index = bundle.index or ItemIndex.build(
                np.asarray(self.model.item_embeddings(), dtype=np.float32), kind="exact")
            norms = self.index.norms()  # decoded lengths when the index is compressed
        self._similarity = Similarity(self.model, self.index, norms, bundle.items, roles,
                                      self.n_items, ignores_history=self.ignores_history)
        self._labels = item_labels(bundle.items)
        self.rules = rules or Rules()
        self._filters = ItemFilters(bundle.items, roles, self.rules, self.n_items,
                                    self.item_indices)
        self.filter_columns = self._filters.filter_columns
        self._roles = roles
        self._pipelines: dict[tuple[str, ...], RerankPipeline] = {}

    # --- ids ------------------------------------------------------------------------------
    def user_key(self, raw: Any) -> tuple[str, Any, int]:
        """(store key, public id, internal index or -1) of an external user id; -1 also for
        a training user redacted from the bundle (served as an unknown user)."""
        key, public = self.bundle.users.canonical(raw)
        idx = int(self.bundle.users.index([key])[0])
        if idx >= 0 and self._redacted is not None and self._redacted[idx]:
            idx = -1
        return key, public, idx

    def item_key(self, raw: Any) -> str:
        return self.bundle.item_ids.canonical(raw)[0]

    def item_indices(self, raw: Sequence[Any]) -> np.ndarray:
        """(n,) internal indices of external item ids, -1 where unknown."""
        if not raw:
            return np.empty(0, np.int64)
        return self.bundle.item_ids.index([self.item_key(r) for r in raw])

    def _candidate_mask(self, candidates: Sequence[Any], allowed: np.ndarray | None
                        ) -> np.ndarray:
        """(n_items,) bool: the candidates (QueryError naming an unknown one), within
        `allowed` when given."""
        idx = self.item_indices(list(candidates))
        if (idx < 0).any():
            bad = candidates[int(np.flatnonzero(idx < 0)[0])]
            raise QueryError(f"candidates: unknown item id {bad!r}")
        mask = np.zeros(self.n_items, dtype=bool)
        mask[idx] = True
        return mask if allowed is None else mask & allowed

    def external_item(self, idx: int) -> Any:
        return self.bundle.item_ids.to_python(int(idx))

    def filter_mask(self, expr: str) -> np.ndarray:
        """(n_items,) bool of the items matching `column:value` (`column:a|b`: either)."""
        return self._filters.filter_mask(expr)

    # --- histories -------------------------------------------------------------------------
    def history(self, user_idx: int, live: Sequence[StoredEvent]) -> tuple[Sequences, int]:
        """The user's training history followed by their live events (one row), and how many
        live events it holds. Live events of unknown items are left out."""
        h = self.histories
        lo, hi = (int(h.indptr[user_idx]), int(h.indptr[user_idx + 1])) if user_idx >= 0 \
            else (0, 0)
        t_items, t_events, t_ts = h.items[lo:hi], h.events[lo:hi], h.timestamps[lo:hi]
        items = self.item_indices([ev.item for ev in live])
        codes = np.array([self._codes.get(ev.type, self._unknown_code) for ev in live],
                         dtype=np.int32)
        ts = np.array([int(ev.timestamp) for ev in live], dtype=np.int64)
        keep = items >= 0
        if t_items.size and live:
            # an event the bundle was trained on (it went through the store first)
            keep &= ~(np.isin(items, t_items) & (ts <= t_ts.max()))
        n_live = int(keep.sum())
        all_items = np.concatenate([t_items, items[keep].astype(np.int32)])
        return Sequences(np.array([0, all_items.size], dtype=np.int64), all_items,
                         np.concatenate([t_events, codes[keep]]),
                         np.concatenate([t_ts, ts[keep]]), self._event_types), n_live

    def visitor_history(self, items: Sequence[Any]) -> Sequences:
        """A visitor's items (unknown ones left out) as one history of untyped events."""
        idx = self.item_indices(list(items))
        idx = idx[idx >= 0].astype(np.int32)
        return Sequences(np.array([0, idx.size], dtype=np.int64), idx,
                         np.full(idx.size, self._unknown_code, dtype=np.int32),
                         np.full(idx.size, -1, dtype=np.int64), self._event_types)

    # --- recommendations ----------------------------------------------------------------------
    def recommend(self, user_idx: int, hist: Sequences, n_live: int, query: Query,
                  explorer: Explorer | None = None, rng: np.random.Generator | None = None
                  ) -> tuple[list[Scored], str | None]:
        """Top `query.k` items for a user (internal index or -1) with history `hist`; with an
        `explorer`, a slate drawn from the best `explore_pool(k)` candidates instead, each item
        with its propensity (`lmrec.serve.explore`)."""
        k = query.k
        if explorer is not None and query.diversity > 0:
            raise QueryError("diversity: not available while the server explores (--explore "
                             "draws the slate itself)")
        seen = np.unique(hist.items).astype(np.int64) if query.exclude_seen else None
        f = self._filters
        allowed = f.allowed(query.filters)
        if query.candidates:  # an allow-list: a mask like a filter's
            allowed = self._candidate_mask(query.candidates, allowed)
        specs = request_specs(query.rerank, query.diversity)
        pipeline = self.request_pipeline(specs) if specs else None
        user = None
        if pipeline is not None:
            if explorer is not None and soft(specs):
                raise QueryError("rerank: only hard constraints (suitability) while the server "
                                 "explores (--explore draws the slate itself)")
            user = self.rerank_data.user_context(user_idx, hist.items, now=int(time.time()))
            hard = pipeline.allowed(user)  # the hard constraints: a mask like a filter's
            if hard is not None:
                allowed = hard if allowed is None else allowed & hard
        pool = explore_pool(k) if explorer is not None else (
            pipeline.pool(k) if pipeline is not None else k)
        note = None
        popular = self.ignores_history  # the same ranking for everyone
        users = np.array([user_idx], dtype=np.int64)
        # a known user without live events: the trained state; anyone else: the history
        # (beside the trained user's id and attributes, -1 for an unknown user)
        histories = None if user_idx >= 0 and n_live == 0 else hist
        if hist.items.size == 0:
            note, popular = "no history yet: the most popular items", True
            idx, scores = f.top(self.model.popularity_, pool, seen, allowed)
        elif isinstance(self.model, EmbeddingModel):
            q = self._user_vectors(users, histories)
            idx, scores = f.search(self.index, q, pool, seen, allowed)
        else:
            idx, scores = f.top(self._scores(users, histories), pool, seen, allowed)
        if pipeline is not None and explorer is None:
            assert user is not None
            idx, scores = pipeline.rerank(idx, scores, k, user)
        propensity = np.ones(min(k, idx.size))  # deterministic top-k: each item surely there
        if explorer is not None and idx.size:
            order, propensity = explorer.slate(idx, scores, k,
                                               rng or np.random.default_rng())
            # the drawn items keep their model scores (a slate no longer sorted by them)
            scores = _scores_of(order, idx, scores)
            idx = order
        idx, scores = idx[:k], scores[:k]
        because: list[tuple[Any, str | None]] = [(None, None)] * idx.size
        if query.explain and idx.size:
            # the model's own attribution of each score to the history (serve/explain.py)
            because = [(None, POPULAR_REASON)] * idx.size if popular else explain(
                self.model, user_idx, hist, idx, self._similarity.affinity,
                self.external_item, self._labels)
        if not idx.size and query.candidates:
            note = "; ".join(n for n in (note, "none of the candidates can be recommended")
                             if n)
        elif not idx.size:
            why = empty_filter_note(query.filters, f.filter_mask, f.rule_allowed,
                                    query.exclude_seen)
            if why is None and pipeline is not None:
                why = "no item meets the re-ranking constraints"
            note = "; ".join(n for n in (note, why) if n) or None
        items = [Scored(self.external_item(i), round(float(s), 6), b, r, float(p))
                 for i, s, (b, r), p in zip(idx, scores, because, propensity, strict=True)]
        return items, note

    # --- re-ranking -------------------------------------------------------------------------
    @cached_property
    def rerank_data(self) -> RerankData:
        """What the re-rankers know of the catalogue and the users; built on first use (an
        engine that never re-ranks pays nothing)."""
        items = self._rerank_items()
        return RerankData(items, self._roles, self._popularity(items.height),
                          similarity=self._similarity.pairwise, users=self.bundle.user_table)

    def rerank_pipeline(self, specs: Sequence[Any]) -> RerankPipeline:
        """The pipeline of `specs` (text or RerankSpec) over this bundle, built once per spec
        list; ConfigError naming --rerank for one it cannot use."""
        parsed = [parse_rerank(s) for s in specs]
        key = tuple(str(s) for s in parsed)
        found = self._pipelines.get(key)
        if found is None:
            found = RerankPipeline.build(parsed, self.rerank_data)
            if len(self._pipelines) < MAX_CACHED_PIPELINES:  # bounded, like the filter masks
                self._pipelines[key] = found
        return found

    def request_pipeline(self, specs: Sequence[Any]) -> RerankPipeline:
        """`rerank_pipeline` for a request: QueryError naming `rerank` (HTTP 400)."""
        try:
            return self.rerank_pipeline(specs)
        except ConfigError as exc:
            raise QueryError(http_message(str(exc))) from None

    def _popularity(self, n: int) -> np.ndarray:
        """(n,) distinct training users per item (0 for items added since)."""
        h = self.histories
        rows = np.repeat(np.arange(h.indptr.size - 1, dtype=np.int64), np.diff(h.indptr))
        pairs = np.unique(rows * max(n, 1) + h.items.astype(np.int64))
        return np.bincount(pairs % max(n, 1), minlength=n)[:n].astype(np.float64)

    # --- hooks: the catalogue's engine (lmrec.serve.catalogue_engine) adds items here ---------
    def _rerank_items(self) -> pl.DataFrame:
        """The item table the re-rankers read: row i = internal item i."""
        return self.bundle.items

    def _user_vectors(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        """(1, d) float32 query of an EmbeddingModel for the item index."""
        return np.asarray(self.model.user_embeddings(users, histories), dtype=np.float32)

    def _scores(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        """(n_items,) scores of every item for one user (any other model)."""
        return self.model.score(users, histories)[0]

    def is_hidden(self, idx: int) -> bool:
        """Whether internal item `idx` is hidden from every answer (by the catalogue API)."""
        return False

    def similar(self, item: int, k: int) -> list[Scored]:
        """The k items most similar to internal item `item` (itself and excluded items left
        out): embedding inner product, else the model's scores for the one-item history, else
        (a model that ignores histories) the model's `item_similarity`."""
        one = np.array([item], dtype=np.int64)
        allowed = self._filters.rule_allowed
        if self.embedding:
            assert self.index is not None
            idx, scores = self.index.search(self.index.vectors(one), k, exclude=[one],
                                            allowed=allowed)
            idx, scores = idx[0], scores[0]
            keep = idx >= 0
            idx, scores = idx[keep], scores[keep]
        else:
            row = self._similarity.affinity(one, None)[0]
            row[item] = -np.inf
            if allowed is not None:
                row[~allowed] = -np.inf
            idx, scores = top1(row, k)
        return [Scored(self.external_item(i), round(float(s), 6), None, None)
                for i, s in zip(idx, scores, strict=True)]


def explore_pool(k: int) -> int:
    """How many of the best-scored items an explorer draws a slate of `k` from: part of the
    logging policy (items outside it have propensity 0), wide enough that a candidate policy
    ranking somewhat differently still finds its items logged now and then."""
    return max(EXPLORE_POOL, 5 * k)


def _scores_of(chosen: np.ndarray, idx: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The scores of the `chosen` items, looked up in the pool (`idx`, `scores`)."""
    where = {int(i): n for n, i in enumerate(idx)}
    return scores[[where[int(i)] for i in chosen]]
