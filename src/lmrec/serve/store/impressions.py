"""Impressions: what the service showed, to whom, under which policy, and with what chance.

An impression is one answered recommendation request: its `request_id` (the key feedback
links back by), the user (None for an anonymous visitor), the model version and experiment arm
that answered, the logging policy, and the slate: the items shown in order, each with the
probability that the policy put it at that position (what off-policy estimators divide by),
its score and, when interleaving, the arm that contributed it.

`ImpressionWriter` logs them durably from many request threads at once by group commit, with
no thread of its own: each request commits in its own thread, and the requests that queued
while a commit was running share the next transaction, so they share one fsync (SQLite's WAL
sync, PostgreSQL's WAL flush) instead of queueing for one each. A request still returns only
once its own impression is on disk.

The records live here rather than in `base` only to keep modules small; the SQL is in
`base.SQLEventStore` (table `lmrec_impressions`, schema version 3).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Self

from lmrec.errors import InputError
from lmrec.serve.store.checks import check_text
from lmrec.serve.store.errors import StoreError

if TYPE_CHECKING:
    from lmrec.serve.store.base import EventStore

log = logging.getLogger("lmrec.serve.store")

# seq, request_id, ts, user_id, model_version, arm, policy, slate: a StoredImpression's row
IMPRESSION_COLUMNS = "seq, request_id, ts, user_id, model_version, arm, policy, slate"
# (request_id, ts, user_id, model_version, arm, policy, slate JSON): the order of every insert
ImpressionRow = tuple[str, float, str | None, str, str | None, str, str]
INSERT_IMPRESSION = (
    "INSERT INTO lmrec_impressions (request_id, ts, user_id, model_version, arm, policy, slate) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING")
MAX_BATCH = 1000  # impressions per group commit: bounds one transaction's size and latency


@dataclass(frozen=True)
class Slot:
    """One shown item; its position is its index in the slate (0-based)."""

    item: str  # canonical item key (as events store it)
    # P(the logging policy puts this item at this position | context): 1.0 for a
    # deterministic top-k, None when unknown (interleaving)
    propensity: float | None
    score: float | None = None
    team: str | None = None  # interleaving: the arm that contributed the item


@dataclass(frozen=True)
class ImpressionIn:
    """An impression to store; `timestamp` is epoch seconds (the server's clock when None)."""

    request_id: str
    user: str | None  # canonical user key; None for an anonymous visitor
    model_version: str
    arm: str | None  # experiment arm name, None outside experiments
    policy: str  # "top-k" | "plackett-luce:T=0.5" | "epsilon-greedy:e=0.1" | "team-draft:A,B"
    slate: tuple[Slot, ...]
    timestamp: float | None = None


@dataclass(frozen=True)
class StoredImpression:
    """An impression as stored; `seq` increases with arrival and is never reused."""

    seq: int
    request_id: str
    user: str | None
    model_version: str
    arm: str | None
    policy: str
    slate: tuple[Slot, ...]
    timestamp: float


# --- validation and rows -------------------------------------------------------------------
def check_impression(imp: Any, what: str, now: float) -> ImpressionIn:
    """`imp` validated, with its timestamp filled in (`now` when None); InputError naming the
    field (prefixed by `what`, e.g. "impression 3") otherwise."""
    if not isinstance(imp, ImpressionIn):
        raise InputError(f"{what} is a {type(imp).__name__}, not an ImpressionIn")
    check_text(imp.request_id, f"{what} request_id")
    _optional_text(imp.user, f"{what} user")
    check_text(imp.model_version, f"{what} model_version")
    _optional_text(imp.arm, f"{what} arm")
    check_text(imp.policy, f"{what} policy")
    if isinstance(imp.slate, str | bytes) or not isinstance(imp.slate, Sequence):
        raise InputError(f"{what} slate must be a sequence of Slot, got "
                         f"{type(imp.slate).__name__}")
    slots = []
    for j, slot in enumerate(imp.slate):
        where = f"{what} slate[{j}]"
        if not isinstance(slot, Slot):
            raise InputError(f"{where} is a {type(slot).__name__}, not a Slot")
        check_text(slot.item, f"{where}.item")
        prop = _optional_finite(slot.propensity, f"{where}.propensity")
        if prop is not None and not 0.0 <= prop <= 1.0:
            raise InputError(f"{where}.propensity must be in [0, 1] or None, got {prop!r}")
        slots.append(Slot(slot.item, prop, _optional_finite(slot.score, f"{where}.score"),
                          _optional_text(slot.team, f"{where}.team")))
    ts = now if imp.timestamp is None else _finite(imp.timestamp, f"{what} timestamp")
    return replace(imp, slate=tuple(slots), timestamp=ts)


def impression_rows(imps: Sequence[ImpressionIn], now: float) -> list[ImpressionRow]:
    """Validated insert rows; `now` stands in for missing timestamps."""
    if isinstance(imps, ImpressionIn):  # a single impression would iterate over nothing useful
        raise InputError("add_impressions takes a sequence of ImpressionIn, not one")
    rows: list[ImpressionRow] = []
    for n, imp in enumerate(imps):
        ok = check_impression(imp, f"impression {n}", now)
        assert ok.timestamp is not None
        rows.append((ok.request_id, ok.timestamp, ok.user, ok.model_version, ok.arm, ok.policy,
                     encode_slate(ok.slate)))
    return rows


def encode_slate(slate: Sequence[Slot]) -> str:
    """The slate as compact JSON, one list per field; a field that is None throughout is
    left out (most slates have no teams, many no scores)."""
    out: dict[str, list[Any]] = {"items": [s.item for s in slate],
                                 "propensities": [s.propensity for s in slate]}
    scores = [s.score for s in slate]
    teams = [s.team for s in slate]
    if any(x is not None for x in scores):
        out["scores"] = scores
    if any(x is not None for x in teams):
        out["teams"] = teams
    return json.dumps(out, separators=(",", ":"), allow_nan=False)


def decode_slate(text: str) -> tuple[Slot, ...]:
    data = json.loads(text)
    items = data["items"]
    n = len(items)
    props = data.get("propensities") or [None] * n
    scores = data.get("scores") or [None] * n
    teams = data.get("teams") or [None] * n
    return tuple(Slot(item, None if p is None else float(p), None if s is None else float(s), t)
                 for item, p, s, t in zip(items, props, scores, teams, strict=True))


def time_range(since: float | None, until: float | None, *conditions: str
                ) -> tuple[str, list[float]]:
    """A WHERE clause (with `?` marks) for since <= ts < until, either bound optional, and
    `conditions`; for `impressions` and `feedback`."""
    args: list[float] = []
    clauses = list(conditions)
    for bound, name, op in ((since, "since", ">="), (until, "until", "<")):
        if bound is not None:
            clauses.append(f"ts {op} ?")
            args.append(_finite(bound, name))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def stored_impression(row: Sequence[Any]) -> StoredImpression:
    """A row of IMPRESSION_COLUMNS as a StoredImpression."""
    seq, request_id, ts, user, model_version, arm, policy, slate = row
    return StoredImpression(int(seq), request_id, user, model_version, arm, policy,
                            decode_slate(slate), float(ts))


def _optional_text(value: Any, name: str) -> str | None:
    return None if value is None else check_text(value, name)


def _finite(x: Any, name: str) -> float:
    # numbers.Real: numpy scalars too (np.float32 is no float subclass)
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
        raise InputError(f"{name} must be a finite number, got {x!r}")
    return float(x)


def _optional_finite(x: Any, name: str) -> float | None:
    return None if x is None else _finite(x, name)


# --- group commit --------------------------------------------------------------------------
class _Ticket:
    """One caller's impression on its way to the store: queued, then taken by a commit (no
    longer in the queue), then done (committed, or failed with `error`)."""

    __slots__ = ("done", "error", "imp")

    def __init__(self, imp: ImpressionIn) -> None:
        self.imp = imp
        self.done = False
        self.error: BaseException | None = None


class ImpressionWriter:
    """Logs impressions durably by group commit, for many request threads at once.

    `log(imp)` returns once the transaction holding `imp` has committed (or raises StoreError
    when that transaction failed). There is no background thread: the caller queues its
    impression and takes the commit lock; whoever holds that lock (the leader) commits, in one
    `add_impressions` call in its own thread, everything queued so far, its own impression
    and the others that arrived meanwhile, then marks those callers done. A caller that gets
    the lock and finds its impression already committed by an earlier leader returns at once.

    Why no writer thread: handing each impression to one and waiting on an Event costs a GIL
    hand-off both ways. The writer thread must win the GIL from the busy request threads
    before it can commit, and the waiting request must win it back (Python switches threads
    every 5 ms by default): that added 4-5 ms to the median request, for a commit of
    0.1-0.4 ms. Uncontended, a request now commits its own impression: one transaction, no
    hand-off. Under load, the fsync at each commit costs the same for 1 row or 500, so each request
    pays a share of one fsync instead of waiting in line for its own.

    One transaction holds at most `max_batch` impressions (a leader with more queued ahead of
    its own commits them in several, in arrival order). A failed transaction fails only the
    callers whose impressions were in it; the next leader carries on with the rest.

    Counters (read them for monitoring or tests): `transactions` (commits tried),
    `impressions` (committed), `failed_batches`, `largest_batch`, and `queued` (waiting now).
    """

    def __init__(self, store: EventStore, *, max_batch: int = MAX_BATCH) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"max_batch must be a positive integer, got {max_batch!r}")
        self._store = store
        self.max_batch = max_batch
        self._lock = threading.Lock()  # guards _queue, _closed and the tickets' states
        self._commit = threading.Lock()  # held by the leader for the whole commit
        self._queue: deque[_Ticket] = deque()
        self._closed = False
        # written only by the leader, under _commit
        self.transactions = 0
        self.impressions = 0
        self.failed_batches = 0
        self.largest_batch = 0

    def log(self, imp: ImpressionIn, timeout: float | None = None) -> None:
        """Store `imp` durably, committing it (and whatever else is queued) in this thread or
        waiting for the commit already running to do so.

        Bad input raises InputError here, before it can fail anyone else's batch. StoreError
        when the batch failed, the writer is closed, or no commit took `imp` within `timeout`
        seconds (then it is withdrawn, and not logged). `timeout` bounds the wait for the
        commit lock, not a commit this thread leads: a transaction is not interrupted."""
        checked = check_impression(imp, "impression", time.time())
        ticket = _Ticket(checked)
        with self._lock:
            if self._closed:
                raise StoreError("the impression writer is closed")
            self._queue.append(ticket)
        if not self._commit.acquire(timeout=_wait(timeout)):
            self._give_up(ticket, timeout)
        else:
            try:
                while not ticket.done:  # one commit, unless over max_batch queued ahead of it
                    self._commit_next()
            finally:
                self._commit.release()
        if ticket.error is not None:
            raise StoreError(f"impression {checked.request_id} was not logged: "
                             f"{ticket.error}") from ticket.error

    def close(self, timeout: float | None = None) -> None:
        """Refuse further work: later `log` calls raise StoreError. Waits (up to `timeout`
        seconds) for the commit in flight, then commits what is still queued; the callers
        waiting for those return as usual. The store itself stays open (it is the caller's)."""
        with self._lock:
            self._closed = True
        if not self._commit.acquire(timeout=_wait(timeout)):
            return  # the leader in flight, and the callers queued, commit theirs themselves
        try:
            while self._queue:
                self._commit_next()
        finally:
            self._commit.release()

    @property
    def queued(self) -> int:
        """Impressions waiting for a commit to take them (for monitoring and tests)."""
        return len(self._queue)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _give_up(self, ticket: _Ticket, timeout: float | None) -> None:
        """After `timeout` passed without the commit lock: withdraw `ticket` if no commit took
        it, and say so; return when a commit has finished with it meanwhile."""
        with self._lock:
            if ticket.done:
                return  # committed (or failed) while this thread gave up: log reports it
            try:
                self._queue.remove(ticket)
                withdrawn = True
            except ValueError:  # taken by the commit in flight
                withdrawn = False
        rid = ticket.imp.request_id
        if withdrawn:
            raise StoreError(f"impression {rid} was not logged: no commit within {timeout} s")
        raise StoreError(f"impression {rid} not committed within {timeout} s (its transaction "
                         "is still running and may yet commit it)")

    def _commit_next(self) -> None:
        """Commit the oldest `max_batch` queued impressions in one transaction (the caller
        holds `_commit`), then mark their callers done or failed."""
        with self._lock:
            n = min(len(self._queue), self.max_batch)
            batch = [self._queue.popleft() for _ in range(n)]
        if not batch:
            return
        error: BaseException | None = None
        try:
            self._store.add_impressions([t.imp for t in batch])
        except BaseException as exc:  # handed to the batch's callers, who raise it
            error = exc
            if isinstance(exc, Exception) and not isinstance(exc, StoreError):
                log.exception("impression batch of %d failed", len(batch))
        finally:  # even on KeyboardInterrupt: no caller may wait for a batch nobody commits
            self.transactions += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            if error is None:
                self.impressions += len(batch)
            else:
                self.failed_batches += 1
            with self._lock:
                for t in batch:
                    t.error = error
                    t.done = True
        if error is not None and not isinstance(error, Exception):
            raise error  # KeyboardInterrupt, SystemExit: the leader's own thread stops


def _wait(timeout: float | None) -> float:
    """`timeout` as Lock.acquire takes it: -1 waits for ever, and a negative one not at all."""
    return -1 if timeout is None else max(float(timeout), 0.0)
