"""The recommendation logic of the service, independent of HTTP.

`Engine` (`lmrec.serve.engine`) is everything derived from one bundle (and its business rules:
`lmrec.serve.rules`); it is immutable, so any number of request threads share it. `Service`
joins the engine served now with the event store, and swaps in a new engine on reload by
replacing one reference: a request reads the reference once and finishes on the bundle it
started with. With several workers, a reload in one is followed by the others
(`lmrec.serve.sync`).

How a user's history is built and scored: `lmrec.serve.engine`; filters, rules and boosts:
`lmrec.serve.rerank`; re-ranking (`Query.rerank`, `lmrec.rerank`): the engine, after the
service's default re-rankers (`lmrec serve --rerank`) are merged in (`merge_rerank`: a
request's stage replaces the default stage of the same name, the others stay);
explanations: `lmrec.serve.explain`.

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
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.errors import LmrecError
from lmrec.serve.arms import Experiment, interleaved
from lmrec.serve.bundle import find_rules, load_bundle
from lmrec.serve.catalogue import Catalogue
from lmrec.serve.engine import Engine, Query, Scored
from lmrec.serve.erasure import Forgotten, erase_user
from lmrec.serve.experiments import ArmInfo, experiment_report
from lmrec.serve.explore import Explorer
from lmrec.serve.filters import QueryError
from lmrec.serve.rules import Rules
from lmrec.serve.stages import merge_rerank
from lmrec.serve.store import (
    EventIn,
    EventStore,
    ImpressionIn,
    ImpressionWriter,
    IngestResult,
    Slot,
)
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
    request_id: str | None = None  # the logged impression's id (None when not logged)
    arm: str | None = None  # the experiment arm that answered


class Service:
    """Recommendations, events and erasure over an event store and a hot-swappable engine;
    with an `experiment`, its arms answer (`lmrec.serve.arms`); with an `explorer`, slates
    are drawn with known propensities (`lmrec.serve.explore`); with `impressions`, every
    answer is logged before it is returned (`lmrec.serve.store.impressions`); `rerank`: the
    default re-rankers of every request."""

    def __init__(self, engine: Engine, store: EventStore, *, rules_path: Path | None = None,
                 max_live_events: int = 1_000, sync: BundleSync | None = None,
                 experiment: Experiment | None = None, explorer: Explorer | None = None,
                 impressions: ImpressionWriter | None = None, rerank: Sequence[str] = ()
                 ) -> None:
        self._engine = engine
        self.rerank = tuple(rerank)
        self.store = store
        self.rules_path = rules_path
        self.max_live_events = max_live_events
        self.sync = sync
        self.experiment = experiment
        self.explorer = explorer
        self.impressions = impressions
        self._reload_lock = threading.Lock()
        self._follower = None if sync is None else Follower(
            sync, lambda: self._engine.model_version, self._reload_lock,
            lambda path: self.reload(path, publish=False))
        # items added, changed or hidden through the catalogue API (lmrec.serve.catalogue)
        self.catalogue = Catalogue(store)
        self._apply_catalogue()
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
        """The engine served now (the first arm's in an experiment); read it once per
        request."""
        return self._engine

    def recommend_user(self, raw_user: Any, query: Query, *, log: bool = True) -> Result:
        """A user's recommendations; `log=False` is a preview (the dashboard, debugging):
        the arm's deterministic top-k, with no impression logged and no exploration."""
        query = self._with_defaults(query)
        served = self._engine
        key, public, first = served.user_key(raw_user)
        live = self.store.history(key, limit=self.max_live_events)
        request_id = uuid.uuid4().hex
        rng = np.random.default_rng(int(request_id, 16))  # a logged draw can be replayed

        def answer(eng: Engine) -> tuple[list[Scored], str | None]:
            # an arm's bundle may hold other users: its own index (a lookup costs ~1 ms)
            u = first if eng is served else eng.user_key(raw_user)[2]
            hist, n_live = eng.history(u, live)
            return eng.recommend(u, hist, n_live, query, self.explorer if log else None, rng)

        return self._answer(answer, key, public, request_id, rng, log=log)

    def recommend_visitor(self, history: Sequence[Any], query: Query) -> Result:
        query = self._with_defaults(query)
        request_id = uuid.uuid4().hex
        rng = np.random.default_rng(int(request_id, 16))

        def answer(eng: Engine) -> tuple[list[Scored], str | None]:
            hist = eng.visitor_history(history)
            return eng.recommend(-1, hist, hist.items.size, query, self.explorer, rng)

        return self._answer(answer, None, None, request_id, rng)

    def _with_defaults(self, query: Query) -> Query:
        """`query` with the service's default re-rankers merged in (`merge_rerank`)."""
        if not self.rerank:
            return query
        return replace(query, rerank=merge_rerank(self.rerank, query.rerank,
                                                  query.diversity > 0))

    def _answer(self, answer: Callable[[Engine], tuple[list[Scored], str | None]],
                key: str | None, public: Any, request_id: str, rng: np.random.Generator,
                *, log: bool = True) -> Result:
        """Answer with the engine (or the arms) serving `key` (None: a visitor) and log the
        impression before returning."""
        exp = self.experiment
        arm: str | None = None
        if exp is None:
            eng = self._engine
            items, note = answer(eng)
            version, policy = eng.model_version, self._policy()
        elif exp.interleave is not None:
            first, second = exp.interleave
            (a, note), (b, _) = answer(exp.engines[first]), answer(exp.engines[second])
            items = interleaved(a, b, len(a) if len(a) >= len(b) else len(b), exp.interleave,
                                rng)
            version = ",".join(exp.engines[n].model_version for n in exp.interleave)
            policy = f"team-draft:{first},{second}"
        else:
            arm = exp.assign(key, rng)
            eng = exp.engines[arm]
            items, note = answer(eng)
            version, policy = eng.model_version, self._policy()
        logged = request_id if log and self._log(request_id, key, version, arm, policy, items) \
            else None
        return Result(public, items, version, note, logged, arm)

    def _policy(self) -> str:
        return "top-k" if self.explorer is None else self.explorer.name

    def _log(self, request_id: str, key: str | None, version: str, arm: str | None,
             policy: str, items: Sequence[Scored]) -> bool:
        """Store the impression (durable when this returns); False when logging is off."""
        if self.impressions is None:
            return False
        item_key = self._engine.item_key
        slate = tuple(Slot(item_key(s.item), s.propensity, s.score, s.team) for s in items)
        self.impressions.log(ImpressionIn(request_id, key, version, arm, policy, slate))
        return True

    def feedback(self, request_id: str, item: Any, type: str, timestamp: float | None,
                 event_id: str | None, value: float | None) -> tuple[IngestResult, Any]:
        """Store what the user of response `request_id` did with `item`, linked to it: an event
        of that response's user ("visitor:<request_id>" for an anonymous visitor's)."""
        shown = self.store.get_impression(request_id)
        if shown is None:
            raise NotFoundError("request_id: unknown (no response with this id was logged)")
        user = shown.user if shown.user is not None else f"visitor:{request_id}"
        res = self.ingest([EventIn(user, str(item), type, timestamp, event_id, value,
                                   request_id)])
        return res, self._engine.user_key(user)[1]

    def experiment_report(self, since: float | None = None, bucket_s: float = 3600.0,
                          conversion_types: Sequence[str] = ("purchase",)) -> dict[str, Any]:
        """GET /v1/experiments: the arms' figures from the logged impressions and feedback."""
        exp = self.experiment
        if exp is None:
            eng = self._engine
            arms = [ArmInfo("default", eng.model_version, 1.0)]
            mode = "single"
        else:
            arms = [ArmInfo(n, exp.engines[n].model_version, s)
                    for n, s in zip(exp.names, exp.shares, strict=True)]
            mode = exp.mode
        return experiment_report(self.store.impressions(since), self.store.feedback(since),
                                 arms, mode, conversion_types=tuple(conversion_types),
                                 bucket_s=bucket_s)

    def similar(self, raw_item: Any, k: int) -> tuple[Any, list[Scored], str]:
        eng = self._engine
        idx = int(eng.item_indices([raw_item])[0])
        if idx < 0:
            raise NotFoundError("unknown item id")
        if eng.is_hidden(idx):  # hidden through the catalogue API: no answers about it
            raise NotFoundError("the item is hidden (PUT /v1/items/{item} shows it again)")
        return eng.external_item(idx), eng.similar(idx, k), eng.model_version

    def ingest(self, events: Sequence[EventIn]) -> IngestResult:
        """Store events (durable when this returns); ids are stored in canonical form. The
        result's `counted`: accepted events whose item the served bundle does not know (kept
        for retraining, unused until then)."""
        eng = self._engine
        users, items = eng.bundle.users, eng.bundle.item_ids
        canon = [EventIn(users.canonical(e.user)[0], items.canonical(e.item)[0], e.type,
                         e.timestamp, e.event_id, e.value, e.request_id) for e in events]
        distinct = list({e.item for e in canon})  # one lookup per distinct item
        # the engine's ids: the bundle's and the catalogue's new items (lmrec.serve.catalogue)
        unknown = {i for i, x in zip(distinct, eng.item_indices(distinct), strict=True)
                   if x < 0}
        return self.store.add_events(canon, count_items=unknown)

    def forget(self, raw_user: Any) -> Forgotten:
        """Erase a user, all or nothing: their events and cached state in the store and, when
        the served bundle was trained on them, their rows in the bundle on disk and in memory
        (`lmrec.serve.erasure`). ErasureFailed when it failed and nothing was erased."""
        if self.experiment is not None:
            return self._forget_in_arms(raw_user, self.experiment)
        served = self._engine
        if served.user_key(raw_user)[2] < 0:  # nothing in the bundle: the store alone
            return erase_user(served, self.store, raw_user, sync=self.sync,
                              rules_path=self.rules_path)[1]
        with self._reload_lock:  # no reload in between; the served bundle is the one redacted
            # (a reload may have swapped in a bundle without the user meanwhile)
            engine, done = erase_user(self._engine, self.store, raw_user, sync=self.sync,
                                      rules_path=self.rules_path)
            # one reference assignment: atomic for request threads
            self._engine = self.catalogue.apply(engine)
        return done

    def _forget_in_arms(self, raw_user: Any, exp: Experiment) -> Forgotten:
        """Erase a user from the store and from every arm's bundle, one arm after the other.
        Each step is all or nothing; when one fails (503), the arms before it are erased and
        asking again finishes the rest (erasing an erased user changes nothing)."""
        with self._reload_lock:
            done: Forgotten | None = None
            for name in exp.names:
                engine, step = erase_user(exp.engines[name], self.store, raw_user, sync=None,
                                          rules_path=self.rules_path)
                exp.engines[name] = self.catalogue.apply(engine)
                done = step if done is None else replace(
                    done, events_deleted=done.events_deleted + step.events_deleted,
                    in_training_data=done.in_training_data or step.in_training_data,
                    redacted_from_model=done.redacted_from_model and (
                        step.redacted_from_model or not step.in_training_data))
            self._engine = exp.engines[exp.names[0]]
        assert done is not None
        return done

    def reload(self, path: str | Path | None = None, *, publish: bool = True) -> tuple[str, str]:
        """Load a bundle (the current one again when `path` is None) and swap it in.

        Requests keep being answered by the old engine until the swap. Returns the new and
        the previous model versions. Reloads are serialised.
        """
        if self.experiment is not None:  # the app refuses first, with the same reason
            raise QueryError("reload: not available while an experiment runs")
        with self._reload_lock:
            old = self._engine
            engine = self._swap(Path(path) if path else old.bundle.path, publish=publish)
        return engine.model_version, old.model_version

    def _swap(self, path: Path, *, publish: bool = True) -> Engine:
        """Load the bundle at `path` and serve it (the caller holds `_reload_lock`); publish it
        under the lock, so that the pointer's order is the order of the swaps."""
        old = self._engine
        engine = self.catalogue.apply(build_engine(path, self.rules_path))
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
        self.refresh_catalogue()

    def refresh_catalogue(self, *, wait: bool = False) -> None:
        """Serve the catalogue's latest changes (`lmrec.serve.catalogue`): looked for at most
        every `catalogue.interval` seconds; `wait` (after a change made here) looks now and
        waits for a reload in progress."""
        self.catalogue.poll(force=wait)
        engines = self.experiment.engines.values() if self.experiment else (self._engine,)
        if all(self.catalogue.current(e) for e in engines):
            return
        if not self._reload_lock.acquire(blocking=wait):
            return  # a reload or an erasure is swapping engines; the next request retries
        try:
            self._apply_catalogue()
        finally:
            self._reload_lock.release()

    def _apply_catalogue(self) -> None:
        """Put the catalogue on every engine served (the caller holds `_reload_lock`, or
        builds the service)."""
        exp = self.experiment
        if exp is None:
            self._engine = self.catalogue.apply(self._engine)
            return
        for name, engine in exp.engines.items():
            exp.engines[name] = self.catalogue.apply(engine)
        self._engine = exp.engines[exp.names[0]]

    def close(self) -> None:
        self.store.close()


def build_engine(path: Path, rules_path: Path | None = None) -> Engine:
    """Load a bundle and its rules (`rules_path` overrides the bundle's own rules file)."""
    bundle = load_bundle(path)
    rules_file = rules_path or find_rules(bundle.path)
    rules = Rules.from_file(rules_file) if rules_file else None
    return Engine(bundle, rules)
