"""Replay a store's logged impressions through a bundle's engine, for off-policy evaluation.

For each logged impression of a known user (visitors are skipped and counted: their history
is not in the store), the context is rebuilt as the server would have built it then: the
user's training history in the bundle followed by their store events with a timestamp before
the impression's (the latest `max_live_events` of them, like `Service.recommend_user`). The
engine then answers it as a deterministic top-k policy (`Query(k, exclude_seen=True)`): that
is the target slate. Many impressions share a context (a user's requests between two of their
events), so answers are cached per (user, number of earlier events).

The logged slate keeps its propensities; a click on slot j is a feedback event linked by the
impression's request_id whose item is the item at j (any event type, counted once).

Items are engine indices. A logged item the bundle does not know gets an index of its own
past the catalogue (`n_items + m`): the target can never show it, but its propensity still
counts (an unknown propensity still makes the impression unusable).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lmrec.serve.engine import Engine, Query

if TYPE_CHECKING:
    from lmrec.serve.store import EventStore, StoredEvent

MAX_LIVE_EVENTS = 1_000  # as `Service`: the latest live events a history holds


@dataclass(frozen=True)
class ReplayedLog:
    """The logged slates of the replayed impressions beside the target's slates.

    items (n, k) int64: engine item indices of the logged slate, -1 for an empty slot;
    propensities (n, k) float64: NaN where unknown (or empty); clicks (n, k) int8;
    target (n, k) int64: the engine's top-k for the same context, -1 padded;
    request_ids: the n impressions' ids, in arrival order.
    impressions: read from the store; visitors: of those, skipped (no user);
    contexts: distinct (user, earlier events) answered; widest: the longest logged slate;
    policies and model_versions: impressions replayed per logging policy / logged version.
    """

    items: np.ndarray
    propensities: np.ndarray
    clicks: np.ndarray
    target: np.ndarray
    request_ids: tuple[str, ...]
    impressions: int
    visitors: int
    contexts: int
    widest: int
    policies: dict[str, int] = field(default_factory=dict)
    model_versions: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.items.shape[0])


def replay(engine: Engine, store: EventStore, k: int, *, since: float | None = None,
           until: float | None = None, max_live_events: int = MAX_LIVE_EVENTS) -> ReplayedLog:
    """Each impression of the store (with since <= timestamp < until) with a user, its logged
    slate (the first `k` slots) and the engine's top-`k` in its context (module docstring)."""
    logged = store.impressions(since=since, until=until)
    shown = [imp for imp in logged if imp.user is not None]
    users = sorted({imp.user for imp in shown if imp.user is not None})
    events = store.histories(users) if users else {}
    times = {u: [ev.timestamp for ev in evs] for u, evs in events.items()}
    clicked = _clicked(store.feedback(since=since), {imp.request_id for imp in shown})
    n = len(shown)
    items = np.full((n, k), -1, dtype=np.int64)
    props = np.full((n, k), np.nan)
    clicks = np.zeros((n, k), dtype=np.int8)
    target = np.full((n, k), -1, dtype=np.int64)
    keys = _ItemKeys(engine)
    answers: dict[tuple[str, int], np.ndarray] = {}
    for row, imp in enumerate(shown):
        user = imp.user
        assert user is not None
        slate = imp.slate[:k]
        items[row, :len(slate)] = keys.indices([s.item for s in slate])
        props[row, :len(slate)] = [np.nan if s.propensity is None else s.propensity
                                   for s in slate]
        hits = clicked.get(imp.request_id, set())
        clicks[row, :len(slate)] = [s.item in hits for s in slate]
        before = bisect.bisect_left(times[user], imp.timestamp)  # strictly earlier events
        context = (user, before)
        if context not in answers:
            answers[context] = _target(engine, user, events[user][:before], k, max_live_events)
        top = answers[context]
        target[row, :top.size] = top
    return ReplayedLog(
        items, props, clicks, target, tuple(imp.request_id for imp in shown), len(logged),
        len(logged) - n, len(answers), max((len(imp.slate) for imp in shown), default=0),
        dict(Counter(imp.policy for imp in shown)),
        dict(Counter(imp.model_version for imp in shown)))


def _target(engine: Engine, user: str, earlier: Sequence[StoredEvent], k: int,
            max_live_events: int) -> np.ndarray:
    """The engine's deterministic top-k (engine indices) for `user` after `earlier` events."""
    _, _, u = engine.user_key(user)
    live = list(earlier[-max_live_events:]) if max_live_events else []
    hist, n_live = engine.history(u, live)
    answer, _ = engine.recommend(u, hist, n_live, Query(k=k, exclude_seen=True))
    return engine.item_indices([s.item for s in answer]).astype(np.int64)


def _clicked(feedback: Sequence[StoredEvent], wanted: set[str]) -> dict[str, set[str]]:
    """request_id -> the items that feedback events linked to it name."""
    out: dict[str, set[str]] = defaultdict(set)
    for ev in feedback:
        if ev.request_id in wanted:
            out[ev.request_id].add(ev.item)
    return out


class _ItemKeys:
    """Store item keys -> engine indices; unknown keys get indices past the catalogue."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._known: dict[str, int] = {}
        self._next = engine.n_items  # the next index for an unknown key

    def indices(self, keys: list[str]) -> list[int]:
        missing = [key for key in dict.fromkeys(keys) if key not in self._known]
        if missing:
            for key, idx in zip(missing, self._engine.item_indices(missing), strict=True):
                if idx < 0:
                    idx, self._next = self._next, self._next + 1
                self._known[key] = int(idx)
        return [self._known[key] for key in keys]


def describe(log: ReplayedLog) -> dict[str, Any]:
    """What was replayed, for reports."""
    return {"impressions": log.impressions, "replayed": log.n, "visitors_skipped": log.visitors,
            "contexts": log.contexts, "policies": log.policies,
            "model_versions": log.model_versions}
