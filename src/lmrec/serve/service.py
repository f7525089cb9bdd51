"""The recommendation logic of the service, independent of HTTP.

`Engine` is everything derived from one bundle (and its business rules); it is immutable, so
any number of request threads share it. `Service` joins the engine served now with the event
store, and swaps in a new engine on reload by replacing one reference: a request reads the
reference once and finishes on the bundle it started with.

Real time. A user's history is their training history from the bundle followed by their live
events from the store (oldest first; live events already in the training data, i.e. the same
item no later than the user's last training event, are dropped). It is scored through

    an EmbeddingScorer       history_embeddings(history) -> (1, d), then the item index (exact
                             below the bundle's ANN threshold, HNSW above); a known user with no
                             live events is scored from the trained user vector
    scores_from_history      score_histories(history) -> (1, n_items)
    any other model          the trained user's scores (no real time) or, for a user it was not
                             trained on, the most popular items

so an accepted event changes the next recommendation without retraining, and a new user gets
personalised results from their first event. A user with no history at all gets the most popular
items (the same answer for every such user).

Behaviour types. A live event keeps its type when the bundle was trained on that type. Any other
type (a "view" sent to a bundle trained on purchases only), and a visitor's items, which have no
type, count as a neutral event: the history names it `UNKNOWN_EVENT`, a type no model knows, so
behaviour-weighted models give it weight 1.0, sequential models with behaviour embeddings give
it their padding/unknown token, and its explanation names no behaviour ("because of X in your
history").

Erasure (`Service.forget`, all or nothing: `lmrec.serve.erasure`): the user's events and cached
state leave the store; when the bundle was trained on the user, `redact_bundle` also empties
their training history, seen items and per-user learned rows in the bundle's files, and the
service swaps in the redacted bundle before answering (other workers follow within
`BundleSync.interval`). A redacted id stays in
the vocabulary but is served as an unknown user: their recommendations are those of a stranger,
and a later event from the same id starts a new user from scratch.

Filters (`column:value`, `column:a|b`, on the item table) and the rules' exclusions make a mask
of allowed items: exact scoring sets the others to -inf, the index over-fetches. Boosts add a
constant to the scores of the items a filter matches (over-fetching 4x on the index path).

Diversity: maximal marginal relevance (Carbonell & Goldstein 1998) over a pool of the
max(50, 4k) best candidates, picking in turn the candidate with the largest
(1 - diversity) * relevance - diversity * (max similarity to those picked), relevance being the
score min-max scaled over the pool. Similarity is the cosine of the model's item embeddings,
else of the items' categorical and multi-valued attributes, else of their training
co-occurrence.

Explanations: for each recommended item, the history item (of the latest 50 distinct ones) with
the largest affinity to it: embedding cosine, else the score the model gives the item from a
history of that single item (for EASE and the neighbour models, exactly that item's
contribution to the score), else co-occurrence cosine. A ranking that is the same for everyone
(a `history_independent` model such as popularity, or the most-popular fallback) is explained as
such, by no history item (`lmrec.serve.explain`). An empty answer to a filtered request has a
note naming the filter that left nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lmrec import columns as C
from lmrec.columns import Role
from lmrec.data.dataset import Sequences
from lmrec.errors import ConfigError, InputError, LmrecError, Location
from lmrec.jsonfile import read_json
from lmrec.models.base import EmbeddingScorer
from lmrec.models.history import as_sequences
from lmrec.models.ranking import top_k
from lmrec.serve.bundle import Bundle, find_rules, load_bundle
from lmrec.serve.explain import POPULAR_REASON, UNKNOWN_EVENT, empty_filter_note, history_reason
from lmrec.serve.store import EventIn, EventStore, IngestResult, StoredEvent

log = logging.getLogger("lmrec.serve")

SYSTEM_USER = "\x1flmrec"  # a store key no client id can take: ids refuse control characters
POINTER_KEY = "bundle"
EXPLAIN_HISTORY = 50  # distinct recent history items considered for an explanation
MMR_POOL = 50  # at least this many candidates for diversity re-ranking
BOOST_OVERFETCH = 4
MAX_CACHED_FILTERS = 256
FOLLOW_RETRY_S = 60.0  # after a failed follow, the next try waits this long


class QueryError(LmrecError):
    """A request the engine cannot answer as asked (e.g. a filter on an unknown column)."""


class NotFoundError(LmrecError):
    """An item id that is not in the served catalogue."""


# --- business rules ------------------------------------------------------------------------
class Boost(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    filter: str = Field(description="items matching this `column:value` filter are boosted")
    weight: float = Field(allow_inf_nan=False, description="added to their scores (the "
                          "model's score units)")


class Rules(BaseModel):
    """Business rules from a JSON or TOML file in the bundle (`rules.json` / `rules.toml`) or
    given to `lmrec serve --rules`.

        exclude_items = ["B3", "B7"]          never recommended
        exclude = ["genres:Horror"]           items matching any of these filters, neither
        [[boost]]
        filter = "genres:Comedy"
        weight = 0.5
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    exclude_items: list[str | int] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    boost: list[Boost] = Field(default_factory=list)

    @classmethod
    def from_file(cls, path: str | Path) -> Rules:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"rules file not found: {path}")
        try:
            doc = tomllib.loads(path.read_text()) if path.suffix == ".toml" else read_json(path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        except InputError as exc:  # a configuration file, so a configuration error
            raise ConfigError(str(exc)) from exc
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigError(f"{Location(str(path)).describe()}: {problems}") from None


# --- requests and answers ------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """What to recommend: `k` items, optionally without the history's items, only items
    matching every filter, re-ranked for diversity (0..1), with explanations."""

    k: int = 10
    exclude_seen: bool = True
    filters: tuple[str, ...] = ()
    diversity: float = 0.0
    explain: bool = False


@dataclass(frozen=True)
class Scored:
    item: Any  # external id
    score: float
    because: Any = None  # external id of the history item that explains it
    reason: str | None = None


@dataclass(frozen=True)
class Forgotten:
    """What `Service.forget` removed."""

    user: Any  # public id
    events_deleted: int
    audit_id: int
    in_training_data: bool  # the served bundle held the user's training data before this
    redacted_from_model: bool  # ... and the bundle served now no longer does
    model_version: str  # the bundle version served after the erasure


@dataclass(frozen=True)
class Result:
    user: Any  # external id (typed like the bundle's ids when it parses), None for visitors
    items: list[Scored]
    model_version: str
    note: str | None = None


# --- the engine: one bundle --------------------------------------------------------------
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
        self._roles = {c: Role(r) for c, r in bundle.meta.get("item_roles", {}).items()}
        self.filter_columns = [c for c in bundle.items.columns if c != C.ITEM
                               and self._roles.get(c) not in (Role.VECTOR, Role.TEXT)]
        self._masks: dict[str, np.ndarray] = {}
        self.embedding = isinstance(self.model, EmbeddingScorer)
        self.index: Any = None
        self._norms: np.ndarray | None = None  # (n_items,) item vector norms
        if self.embedding:
            from lmrec.serve.retrieval import ItemIndex

            # a saved index already holds the item vectors: no second copy of the catalogue
            self.index = bundle.index or ItemIndex.build(
                np.asarray(self.model.item_embeddings(), dtype=np.float32), kind="exact")
            self._norms = np.linalg.norm(self.index.item_vectors, axis=1).astype(np.float32)
        self._labels = _item_labels(bundle.items)
        self.rules = rules or Rules()
        excluded = self._rule_exclusions()  # (n_items,) bool or None
        self._rule_allowed = None if excluded is None else ~excluded  # the rules alone
        if self._rule_allowed is not None:
            self._rule_allowed.flags.writeable = False  # shared by every request
        self._boosts = self._rule_boosts()  # (n_items,) float32 or None

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

    def external_item(self, idx: int) -> Any:
        return self.bundle.item_ids.to_python(int(idx))

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
    def recommend(self, user_idx: int, hist: Sequences, n_live: int, query: Query
                  ) -> tuple[list[Scored], str | None]:
        """Top `query.k` items for a user (internal index or -1) with history `hist`."""
        k = query.k
        seen = np.unique(hist.items).astype(np.int64) if query.exclude_seen else None
        allowed = self._allowed(query.filters)
        pool = max(MMR_POOL, 4 * k) if query.diversity > 0 else k
        note = None
        popular = self.model.history_independent  # the same ranking for everyone
        if hist.items.size == 0:
            note, popular = "no history yet: the most popular items", True
            idx, scores = self._top(self.model.popularity_, pool, seen, allowed)
        elif self.embedding:
            if user_idx >= 0 and n_live == 0:
                q = self.model.user_embeddings(np.array([user_idx], dtype=np.int64))
            else:
                # the trained user's id and attributes stay beside the updated history
                q = self.model.history_embeddings(hist, np.array([user_idx], dtype=np.int64))
            idx, scores = self._search(np.asarray(q, dtype=np.float32), pool, seen, allowed)
        elif self.model.scores_from_history:
            idx, scores = self._top(self.model.score_histories(hist)[0], pool, seen, allowed)
        elif user_idx >= 0:
            if n_live:
                note = "this model cannot use live events: scored from the training data"
            idx, scores = self._top(self.model.score(np.array([user_idx]))[0], pool, seen,
                                    allowed)
        else:
            note, popular = "this model cannot score a new history: the most popular items", True
            idx, scores = self._top(self.model.popularity_, pool, seen, allowed)
        if query.diversity > 0:
            idx, scores = self._mmr(idx, scores, k, query.diversity)
        idx, scores = idx[:k], scores[:k]
        because: list[tuple[Any, str | None]] = [(None, None)] * idx.size
        if query.explain and idx.size:
            because = [(None, POPULAR_REASON)] * idx.size if popular else self._explain(hist, idx)
        if not idx.size:
            why = empty_filter_note(query.filters, self.filter_mask, self._rule_allowed,
                                    query.exclude_seen)
            note = "; ".join(n for n in (note, why) if n) or None
        items = [Scored(self.external_item(i), round(float(s), 6), b, r)
                 for i, s, (b, r) in zip(idx, scores, because, strict=True)]
        return items, note

    def similar(self, item: int, k: int) -> list[Scored]:
        """The k items most similar to internal item `item` (itself and excluded items left
        out): embedding inner product, else the model's scores for the one-item history, else
        co-occurrence cosine."""
        one = np.array([item], dtype=np.int64)
        allowed = self._rule_allowed
        if self.embedding:
            assert self.index is not None
            idx, scores = self.index.search(self.index.item_vectors[one], k, exclude=[one],
                                            allowed=allowed)
            idx, scores = idx[0], scores[0]
            keep = idx >= 0
            idx, scores = idx[keep], scores[keep]
        else:
            row = self._affinity(one, None)[0]
            row[item] = -np.inf
            if allowed is not None:
                row[~allowed] = -np.inf
            idx, scores = _top1(row, k)
        return [Scored(self.external_item(i), round(float(s), 6), None, None)
                for i, s in zip(idx, scores, strict=True)]

    # --- candidates ---------------------------------------------------------------------------
    def _top(self, scores: np.ndarray, pool: int, seen: np.ndarray | None,
             allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Best `pool` items of a full (n_items,) score vector after rules and masks."""
        s = np.array(scores, dtype=np.float32)  # a copy: the model's arrays stay untouched
        if self._boosts is not None:
            s += self._boosts
        if allowed is not None:
            s[~allowed] = -np.inf
        if seen is not None:
            s[seen] = -np.inf
        return _top1(s, pool)

    def _search(self, q: np.ndarray, pool: int, seen: np.ndarray | None,
                allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Best `pool` items for a (1, d) query from the item index (over-fetching when
        boosts may reorder the candidates)."""
        fetch = min(self.n_items, pool * BOOST_OVERFETCH if self._boosts is not None else pool)
        exclude = [seen] if seen is not None else None
        idx, scores = self.index.search(q, fetch, exclude=exclude, allowed=allowed)
        idx, scores = idx[0], scores[0]
        keep = idx >= 0
        idx, scores = idx[keep], scores[keep]
        if self._boosts is not None and idx.size:
            scores = scores + self._boosts[idx]
            order = np.lexsort((idx, -scores))[:pool]
            idx, scores = idx[order], scores[order]
        return idx, scores

    def _allowed(self, filters: Sequence[str]) -> np.ndarray | None:
        """(n_items,) bool: items passing every filter and not excluded by the rules."""
        mask = self._rule_allowed
        for f in filters:
            m = self.filter_mask(f)
            mask = m if mask is None else mask & m
        return mask

    def filter_mask(self, expr: str) -> np.ndarray:
        """(n_items,) bool of the items matching `column:value` (`column:a|b`: either)."""
        cached = self._masks.get(expr)
        if cached is not None:
            return cached
        col, sep, value = expr.partition(":")
        col = col.strip()
        values = [v.strip() for v in value.split("|") if v.strip()]
        if not sep or not values:
            raise QueryError(f"filter {expr!r}: expected column:value")
        if col not in self.filter_columns:
            known = ", ".join(self.filter_columns) or "none"
            raise QueryError(f"filter {expr!r}: unknown column {col!r} (filterable: {known})")
        s = self.bundle.items[col]
        if isinstance(s.dtype, pl.List):
            hit = s.list.eval(pl.element().cast(pl.String).is_in(values)).list.any()
        elif s.dtype.is_numeric():  # "year:1995" matches 1995.0
            try:
                numbers = [float(v) for v in values]
            except ValueError:
                raise QueryError(f"filter {expr!r}: {col!r} holds numbers") from None
            hit = s.cast(pl.Float64).is_in(numbers)
        else:
            hit = s.cast(pl.String).is_in(values)
        mask = hit.fill_null(False).to_numpy().astype(bool)
        mask.flags.writeable = False
        if len(self._masks) < MAX_CACHED_FILTERS:  # a bounded cache of catalogue-wide masks
            self._masks[expr] = mask
        return mask

    def _rule_exclusions(self) -> np.ndarray | None:
        r = self.rules
        if not r.exclude_items and not r.exclude:
            return None
        mask = np.zeros(self.n_items, dtype=bool)
        idx = self.item_indices(list(r.exclude_items))
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

    # --- diversity and explanations -----------------------------------------------------------
    def _mmr(self, idx: np.ndarray, scores: np.ndarray, k: int, lam: float
             ) -> tuple[np.ndarray, np.ndarray]:
        """Maximal marginal relevance re-ranking of the candidates (best first) down to k."""
        n = idx.size
        if n <= 1:
            return idx, scores
        sim = self._pairwise(idx)  # (n, n)
        span = float(scores.max() - scores.min())
        rel = (scores - scores.min()) / span if span > 0 else np.ones(n, dtype=np.float32)
        picked = [0]
        free = np.ones(n, dtype=bool)
        free[0] = False
        max_sim = sim[0].copy()
        for _ in range(min(k, n) - 1):
            gain = (1.0 - lam) * rel - lam * max_sim
            gain[~free] = -np.inf
            j = int(np.argmax(gain))
            picked.append(j)
            free[j] = False
            np.maximum(max_sim, sim[j], out=max_sim)
        order = np.asarray(picked)
        return idx[order], scores[order]

    def _pairwise(self, idx: np.ndarray) -> np.ndarray:
        """(n, n) similarity of candidate items (cosine)."""
        if self._norms is not None:
            u = self._unit(idx)
            return u @ u.T
        if self._attrs is not None:
            a = self._attrs[idx]
            return np.asarray((a @ a.T).toarray(), dtype=np.float32)
        return self._cooc_cosine(idx, idx)

    def _affinity(self, src: np.ndarray, targets: np.ndarray | None) -> np.ndarray:
        """(len(src), n_targets) affinity of source items to target items (all when None)."""
        if self._norms is not None:
            t = self._unit(np.arange(self.n_items) if targets is None else targets)
            return self._unit(src) @ t.T
        if self.model.scores_from_history and not self.model.history_independent:
            s = self.model.score_histories(as_sequences([np.array([i]) for i in src]))
            return s if targets is None else s[:, targets]
        return self._cooc_cosine(src, targets)

    @cached_property
    def _attrs(self) -> sp.csr_matrix | None:
        """(n_items, n_labels) attribute vectors; built on first use (only models without
        item embeddings need them)."""
        return _attribute_vectors(self.bundle.items, self._roles)

    def _unit(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), d) unit item vectors of the items `idx` (gathered, then scaled)."""
        assert self._norms is not None
        rows = self.index.item_vectors[idx]
        return rows / np.maximum(self._norms[idx], 1e-12)[:, None]

    @cached_property
    def _cooc(self) -> tuple[sp.csc_matrix, np.ndarray]:
        """The training (n_users, n_items) binary matrix by columns, and its column norms;
        built on first use (only models without embeddings or history scoring need it)."""
        seen = self.model.seen_.tocsc()
        return seen, np.sqrt(np.asarray(seen.sum(axis=0)).ravel()).astype(np.float32)

    def _cooc_cosine(self, src: np.ndarray, targets: np.ndarray | None) -> np.ndarray:
        """(len(src), n_targets) cosine of items' training user sets."""
        cols, norms = self._cooc
        a = cols[:, src]
        b = cols if targets is None else cols[:, targets]
        dots = np.asarray((a.T @ b).toarray(), dtype=np.float32)
        nb = norms if targets is None else norms[targets]
        return dots / np.maximum(norms[src][:, None] * nb[None, :], 1e-12)

    def _explain(self, hist: Sequences, rec: np.ndarray) -> list[tuple[Any, str | None]]:
        """Per recommended item: (external id of the history item behind it, a sentence)."""
        rev_items = hist.items[::-1]
        uniq, first = np.unique(rev_items, return_index=True)
        order = np.argsort(first)[:EXPLAIN_HISTORY]  # most recent first
        src = uniq[order].astype(np.int64)
        src_events = hist.events[::-1][first[order]]
        aff = self._affinity(src, rec)  # (n_src, k)
        best = aff.argmax(axis=0)
        out: list[tuple[Any, str | None]] = []
        for j, b in enumerate(best):
            if not np.isfinite(aff[b, j]) or aff[b, j] <= 0:
                out.append((None, None))
                continue
            item = int(src[b])
            etype = hist.event_types[src_events[b]] if hist.event_types else UNKNOWN_EVENT
            label = self._labels[item] if self._labels is not None else str(
                self.external_item(item))
            out.append((self.external_item(item), history_reason(label, etype)))
        return out


# --- the service: store + the engine served now -------------------------------------------------
class Service:
    """Recommendations, events and erasure over an event store and a hot-swappable engine."""

    def __init__(self, engine: Engine, store: EventStore, *, rules_path: Path | None = None,
                 max_live_events: int = 1_000, sync: BundleSync | None = None) -> None:
        self._engine = engine
        self.store = store
        self.rules_path = rules_path
        self.max_live_events = max_live_events
        self.sync = sync
        self._reload_lock = threading.Lock()
        self._next_sync = 0.0
        if sync is not None and sync.wanted() is None:
            sync.publish(engine.bundle.path, engine.model_version)

    @classmethod
    def open(cls, bundle_path: str | Path, store: EventStore, *, rules_path: Path | None = None,
             max_live_events: int = 1_000, sync: BundleSync | None = None) -> Service:
        engine = build_engine(Path(bundle_path), rules_path)
        return cls(engine, store, rules_path=rules_path, max_live_events=max_live_events,
                   sync=sync)

    @property
    def engine(self) -> Engine:
        """The engine served now; read it once per request."""
        return self._engine

    def recommend_user(self, raw_user: Any, query: Query) -> Result:
        eng = self._engine
        key, public, u = eng.user_key(raw_user)
        live = self.store.history(key, limit=self.max_live_events)
        hist, n_live = eng.history(u, live)
        items, note = eng.recommend(u, hist, n_live, query)
        return Result(public, items, eng.model_version, note)

    def recommend_visitor(self, history: Sequence[Any], query: Query) -> Result:
        eng = self._engine
        hist = eng.visitor_history(history)
        items, note = eng.recommend(-1, hist, hist.items.size, query)
        return Result(None, items, eng.model_version, note)

    def similar(self, raw_item: Any, k: int) -> tuple[Any, list[Scored], str]:
        eng = self._engine
        idx = int(eng.item_indices([raw_item])[0])
        if idx < 0:
            raise NotFoundError("unknown item id")
        return eng.external_item(idx), eng.similar(idx, k), eng.model_version

    def ingest(self, events: Sequence[EventIn]) -> IngestResult:
        """Store events (durable when this returns); ids are stored in canonical form. The
        result's `counted`: accepted events whose item the served bundle does not know (kept
        for retraining, unused until then)."""
        eng = self._engine
        users, items = eng.bundle.users, eng.bundle.item_ids
        canon = [EventIn(users.canonical(e.user)[0], items.canonical(e.item)[0], e.type,
                         e.timestamp, e.event_id, e.value) for e in events]
        distinct = list({e.item for e in canon})  # one lookup per distinct item
        unknown = {i for i, x in zip(distinct, items.index(distinct), strict=True) if x < 0}
        return self.store.add_events(canon, count_items=unknown)

    def forget(self, raw_user: Any) -> Forgotten:
        """Erase a user, all or nothing: their events and cached state in the store and, when
        the served bundle was trained on them, their rows in the bundle on disk and in memory
        (`lmrec.serve.erasure`). ErasureFailed when it failed and nothing was erased."""
        from lmrec.serve.erasure import forget

        return forget(self, raw_user)

    def reload(self, path: str | Path | None = None, *, publish: bool = True) -> tuple[str, str]:
        """Load a bundle (the current one again when `path` is None) and swap it in.

        Requests keep being answered by the old engine until the swap. Returns the new and
        the previous model versions. Reloads are serialised.
        """
        with self._reload_lock:
            old = self._engine
            engine = self._swap(Path(path) if path else old.bundle.path, publish=publish)
        return engine.model_version, old.model_version

    def _swap(self, path: Path, *, publish: bool = True) -> Engine:
        """Load the bundle at `path` and serve it (the caller holds `_reload_lock`); publish it
        under the lock, so that the pointer's order is the order of the swaps."""
        old = self._engine
        engine = build_engine(path, self.rules_path)
        self._engine = engine  # one reference assignment: atomic for request threads
        if publish and self.sync is not None:
            self.sync.publish(engine.bundle.path, engine.model_version)
        log.info("serving bundle %s (was %s)", engine.model_version, old.model_version)
        return engine

    def follow(self) -> None:
        """With several workers: start a background reload when another worker has swapped
        in a bundle this one does not serve (checked every `sync.interval` seconds)."""
        if self.sync is None or time.monotonic() < self._next_sync:
            return
        self._next_sync = time.monotonic() + self.sync.interval
        try:
            wanted = self.sync.wanted()
        except LmrecError:
            return
        if wanted is None or wanted[1] == self._engine.model_version:
            return
        if self._reload_lock.locked():
            return
        threading.Thread(target=self._follow, args=(wanted[0],), daemon=True).start()

    def _follow(self, path: str) -> None:
        try:
            self.reload(path, publish=False)
        except Exception:  # a bad bundle must not take the worker down; the old one stays
            log.exception("could not follow the bundle another worker loaded")
            # not again at every check: each try reads (and hashes) the whole bundle
            self._next_sync = time.monotonic() + FOLLOW_RETRY_S

    def close(self) -> None:
        self.store.close()


class BundleSync:
    """Keeps the workers of one server on the same bundle through the store.

    A reload publishes (path, version) under a reserved store key; the other workers follow.
    Pointers older than this server's start (`started_at`, shared by its workers) are ignored,
    so a restart serves the bundle it was started with.
    """

    def __init__(self, store: EventStore, started_at: float, interval: float = 2.0) -> None:
        self.store = store
        self.started_at = started_at
        self.interval = interval

    def publish(self, path: Path, version: str) -> None:
        self.store.put_state(SYSTEM_USER, POINTER_KEY, self.pointer(path, version))

    @staticmethod
    def pointer(path: Path, version: str) -> bytes:
        """The value `publish` stores (an erasure writes it in its own transaction)."""
        # resolved: another server process may run in another working directory
        return json.dumps({"path": str(Path(path).resolve()), "model_version": version,
                           "set_at": time.time()}).encode()

    def wanted(self) -> tuple[str, str] | None:
        raw = self.store.get_state(SYSTEM_USER, POINTER_KEY)
        if raw is None:
            return None
        doc = json.loads(raw)
        if doc.get("set_at", 0) < self.started_at:
            return None
        return str(doc["path"]), str(doc["model_version"])


def build_engine(path: Path, rules_path: Path | None = None) -> Engine:
    """Load a bundle and its rules (`rules_path` overrides the bundle's own rules file)."""
    bundle = load_bundle(path)
    rules_file = rules_path or find_rules(bundle.path)
    rules = Rules.from_file(rules_file) if rules_file else None
    return Engine(bundle, rules)


# --- helpers ---------------------------------------------------------------------------------
def _top1(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one (n,) score vector, -inf entries left out."""
    idx, vals = top_k(scores[None, :], k)
    keep = idx[0] >= 0
    return idx[0][keep], vals[0][keep]


def _attribute_vectors(items: pl.DataFrame, roles: dict[str, Role]) -> sp.csr_matrix | None:
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


def _item_labels(items: pl.DataFrame) -> list[str] | None:
    """A readable label per item: its title or name column, else none."""
    for c in ("title", "name"):
        if c in items.columns and items[c].dtype == pl.String:
            ids = items[C.ITEM].cast(pl.String)
            return [t if t else i for t, i in zip(items[c].to_list(), ids.to_list(),
                                                  strict=True)]
    return None
