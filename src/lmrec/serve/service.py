"""The recommendation logic of the service, independent of HTTP.

`Engine` (`lmrec.serve.engine`) is everything derived from one bundle (and its business rules:
`lmrec.serve.rules`); it is immutable, so any number of request threads share it. `Service`
joins the engine served now with the event store, and swaps in a new engine on reload by
replacing one reference: a request reads the reference once and finishes on the bundle it
started with. With several workers, a reload in one is followed by the others
(`lmrec.serve.sync`).

How a user's history is built and scored: `lmrec.serve.engine`; filters, rules, boosts and
diversity: `lmrec.serve.rerank`; explanations: `lmrec.serve.explain`.

Erasure (`Service.forget`, all or nothing: `lmrec.serve.erasure`): the user's events and cached
state leave the store; when the bundle was trained on the user, `redact_bundle` also empties
their training history, seen items and per-user learned rows in the bundle's files, and the
service swaps in the redacted bundle before answering (other workers follow within
`BundleSync.interval`). A redacted id stays in
the vocabulary but is served as an unknown user: their recommendations are those of a stranger,
and a later event from the same id starts a new user from scratch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmrec.errors import LmrecError
from lmrec.serve.bundle import find_rules, load_bundle
from lmrec.serve.engine import Engine, Query, Scored
from lmrec.serve.erasure import Forgotten, erase_user
from lmrec.serve.rules import Rules
from lmrec.serve.store import EventIn, EventStore, IngestResult
from lmrec.serve.sync import BundleSync, Follower

log = logging.getLogger("lmrec.serve")


class NotFoundError(LmrecError):
    """An item id that is not in the served catalogue."""


@dataclass(frozen=True)
class Result:
    user: Any  # external id (typed like the bundle's ids when it parses), None for visitors
    items: list[Scored]
    model_version: str
    note: str | None = None


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
        self._follower = None if sync is None else Follower(
            sync, lambda: self._engine.model_version, self._reload_lock,
            lambda path: self.reload(path, publish=False))
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
        served = self._engine
        if served.user_key(raw_user)[2] < 0:  # nothing in the bundle: the store alone
            return erase_user(served, self.store, raw_user, sync=self.sync,
                              rules_path=self.rules_path)[1]
        with self._reload_lock:  # no reload in between; the served bundle is the one redacted
            # (a reload may have swapped in a bundle without the user meanwhile)
            engine, done = erase_user(self._engine, self.store, raw_user, sync=self.sync,
                                      rules_path=self.rules_path)
            self._engine = engine  # one reference assignment: atomic for request threads
        return done

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
        if self._follower is not None:
            self._follower.check()

    def close(self) -> None:
        self.store.close()


def build_engine(path: Path, rules_path: Path | None = None) -> Engine:
    """Load a bundle and its rules (`rules_path` overrides the bundle's own rules file)."""
    bundle = load_bundle(path)
    rules_file = rules_path or find_rules(bundle.path)
    rules = Rules.from_file(rules_file) if rules_file else None
    return Engine(bundle, rules)
