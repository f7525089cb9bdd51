"""Impressions and feedback in the event store, and the group-commit ImpressionWriter: every
behaviour on SQLite and on PostgreSQL (skipped, with the reason, when no server answers).
The SIGKILL durability of the writer is tested next to the events' in test_store.py."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from lmrec.errors import InputError
from lmrec.serve.store import (
    EventIn,
    EventStore,
    ImpressionIn,
    ImpressionWriter,
    Slot,
    StoreError,
    open_store,
)


def _sql(url: str, statements: Sequence[str]) -> list[list[tuple[Any, ...]]]:
    """Run `statements` behind the store's back; the rows each one returned."""
    out: list[list[tuple[Any, ...]]] = []
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        with conn:
            for s in statements:
                cur = conn.execute(s)
                out.append(cur.fetchall() if cur.description else [])
        conn.close()
        return out
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        for s in statements:
            cur = pg.execute(s)
            out.append(cur.fetchall() if cur.description else [])
    return out


def imp(rid: str, user: str | None = "u1", items: Sequence[str] = ("i1", "i2"),
        ts: float | None = 100.0, **kw: Any) -> ImpressionIn:
    slate = tuple(Slot(it, 1.0, float(-n)) for n, it in enumerate(items))
    fields = {"model_version": "v1", "arm": None, "policy": "top-k", "slate": slate, **kw}
    return ImpressionIn(rid, user, timestamp=ts, **fields)


# --- impressions -------------------------------------------------------------------------
def test_impressions_round_trip(store: EventStore) -> None:
    explored = ImpressionIn(
        "r-explore", "alice", "model-7", "B", "plackett-luce:T=0.5",
        (Slot("x", 0.25, 3.5), Slot("y", 1e-9, None), Slot("z", 0.0, -1.25)), 50.0)
    interleaved = ImpressionIn(
        "r-team", None, "model-7", None, "team-draft:A,B",
        (Slot("a", None, None, "A"), Slot("b", None, None, "B")), None)
    empty = ImpressionIn("r-empty", "bob", "model-7", "A", "top-k", (), 200.0)
    before = time.time()
    store.add_impressions([explored, interleaved, empty])
    after = time.time()
    got = store.impressions()
    assert [g.request_id for g in got] == ["r-explore", "r-team", "r-empty"]  # arrival order
    assert got[0].seq < got[1].seq < got[2].seq
    e, t, m = got
    assert (e.user, e.model_version, e.arm, e.policy, e.timestamp) == (
        "alice", "model-7", "B", "plackett-luce:T=0.5", 50.0)
    assert e.slate == explored.slate  # positions, propensities, scores exactly
    assert t.user is None and t.arm is None and t.slate == interleaved.slate
    assert before <= t.timestamp <= after  # the server's clock
    assert m.slate == () and m.arm == "A"
    assert store.get_impression("r-team") == t
    assert store.get_impression("nope") is None
    # since <= ts < until, still in arrival order
    assert [g.request_id for g in store.impressions(since=50.0, until=200.0)] == ["r-explore"]
    assert [g.request_id for g in store.impressions(since=60.0)] == ["r-team", "r-empty"]
    assert store.impressions(until=50.0) == []


def test_add_impressions_is_idempotent_on_request_id(store: EventStore) -> None:
    store.add_impressions([imp("r1", items=("first",)), imp("r2")])
    # a retry with a changed payload, a repeat inside the batch, and a new one
    store.add_impressions([imp("r1", items=("second",)), imp("r3"), imp("r3", user="other")])
    got = store.impressions()
    assert [g.request_id for g in got] == ["r1", "r2", "r3"]
    assert [s.item for s in got[0].slate] == ["first"]  # the first write wins
    assert got[2].user == "u1"
    store.add_impressions([])  # nothing to do


def test_bad_impressions_reject_the_whole_batch(store: EventStore) -> None:
    good = imp("ok")
    cases: list[tuple[Any, str]] = [
        (imp(""), "impression 1 request_id"),
        (imp("a\x00b"), "impression 1 request_id must not contain NUL"),
        (imp("r", user=""), "impression 1 user"),
        (imp("r", model_version=""), "impression 1 model_version"),
        (imp("r", policy=None), "impression 1 policy"),
        (imp("r", arm=""), "impression 1 arm"),
        (imp("r", ts=float("nan")), "impression 1 timestamp"),
        (imp("r", slate=(Slot("a", 1.5),)), r"impression 1 slate\[0\].propensity .* \[0, 1\]"),
        (imp("r", slate=(Slot("a", 1.0), Slot("b", -0.1))), r"slate\[1\].propensity"),
        (imp("r", slate=(Slot("a", float("nan")),)), r"slate\[0\].propensity .* finite"),
        (imp("r", slate=(Slot("a", 1.0, float("inf")),)), r"slate\[0\].score"),
        (imp("r", slate=(Slot("", 1.0),)), r"slate\[0\].item"),
        (imp("r", slate=(Slot("a", 1.0, None, ""),)), r"slate\[0\].team"),
        (imp("r", slate=("a",)), r"slate\[0\] is a str, not a Slot"),
        (imp("r", slate="ab"), "slate must be a sequence"),
        ("r", "impression 1 is a str"),
    ]
    for bad, message in cases:
        with pytest.raises(InputError, match=message):
            store.add_impressions([good, bad])
    with pytest.raises(InputError, match="not one"):
        store.add_impressions(good)  # type: ignore[arg-type]
    assert store.impressions() == []
    with pytest.raises(InputError, match="since"):
        store.impressions(since=float("nan"))
    with pytest.raises(InputError, match="until"):
        store.impressions(until="soon")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="request_id"):
        store.get_impression("")


def test_numpy_numbers_are_accepted(store: EventStore) -> None:
    np = pytest.importorskip("numpy")
    store.add_impressions([imp("r", slate=(Slot("a", np.float32(0.5), np.float64(2.0)),))])
    slot = store.impressions()[0].slate[0]
    assert (slot.propensity, slot.score) == (0.5, 2.0)
    assert type(slot.propensity) is float


# --- feedback ----------------------------------------------------------------------------
def test_feedback_is_the_events_with_a_request_id_in_arrival_order(store: EventStore) -> None:
    store.add_impressions([imp("r1"), imp("r2", user=None)])
    store.add_events([EventIn("u1", "i1", "view", 5.0),
                      EventIn("u1", "i2", "click", 30.0, "c1", request_id="r1"),
                      EventIn("visitor:r2", "i1", "click", 10.0, request_id="r2")])
    store.add_events([EventIn("u1", "i2", "purchase", 20.0, None, 9.5, "r1"),
                      EventIn("u2", "i9", "click", 40.0)])
    fb = store.feedback()
    # by arrival, not by time: a report reads them in the order they were recorded
    assert [(e.user, e.item, e.type, e.request_id) for e in fb] == [
        ("u1", "i2", "click", "r1"), ("visitor:r2", "i1", "click", "r2"),
        ("u1", "i2", "purchase", "r1")]
    assert fb[2].value == 9.5 and fb[0].event_id == "c1"
    assert [e.seq for e in fb] == sorted(e.seq for e in fb)
    assert [e.type for e in store.feedback(since=20.0)] == ["click", "purchase"]
    # histories carry the link too; plain events have none
    assert [e.request_id for e in store.history("u1")] == [None, "r1", "r1"]
    with pytest.raises(InputError, match="event 0 request_id"):
        store.add_events([EventIn("u", "i", request_id="")])


# --- schema ------------------------------------------------------------------------------
_V2_DDL = {  # schema version 2 exactly as lmrec wrote it before impressions
    "sqlite": [
        "CREATE TABLE lmrec_schema (version INTEGER NOT NULL)",
        "INSERT INTO lmrec_schema (version) VALUES (2)",
        "CREATE TABLE lmrec_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT "
        "NULL, item_id TEXT NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL, event_id TEXT, "
        "value REAL)",
        "CREATE UNIQUE INDEX lmrec_events_user_event_id ON lmrec_events (user_id, event_id)",
        "CREATE INDEX lmrec_events_user ON lmrec_events (user_id, ts, seq)",
        "CREATE TABLE lmrec_user_state (user_id TEXT NOT NULL, key TEXT NOT NULL, value BLOB "
        "NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (user_id, key))",
        "CREATE TABLE lmrec_deletions (audit_id INTEGER PRIMARY KEY, deleted_at REAL NOT NULL,"
        " events_removed INTEGER NOT NULL, state_removed INTEGER NOT NULL, outcome TEXT NOT "
        "NULL DEFAULT 'erased')",
    ],
    "postgres": [
        "CREATE TABLE lmrec_schema (version INTEGER NOT NULL)",
        "INSERT INTO lmrec_schema (version) VALUES (2)",
        "CREATE TABLE lmrec_events (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "user_id TEXT NOT NULL, item_id TEXT NOT NULL, type TEXT NOT NULL, ts DOUBLE PRECISION"
        " NOT NULL, event_id TEXT, value DOUBLE PRECISION)",
        "CREATE UNIQUE INDEX lmrec_events_user_event_id ON lmrec_events (user_id, event_id)",
        "CREATE INDEX lmrec_events_user ON lmrec_events (user_id, ts, seq)",
        "CREATE TABLE lmrec_user_state (user_id TEXT NOT NULL, key TEXT NOT NULL, value BYTEA"
        " NOT NULL, updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (user_id, key))",
        "CREATE TABLE lmrec_deletions (audit_id BIGINT PRIMARY KEY, deleted_at DOUBLE "
        "PRECISION NOT NULL, events_removed BIGINT NOT NULL, state_removed BIGINT NOT NULL, "
        "outcome TEXT NOT NULL DEFAULT 'erased')",
    ],
}


def test_a_version_2_store_gains_request_id_and_impressions(store_url: str) -> None:
    kind = "sqlite" if store_url.startswith("sqlite") else "postgres"
    _sql(store_url, [*_V2_DDL[kind], "INSERT INTO lmrec_events (user_id, item_id, type, ts, "
                     "event_id, value) VALUES ('old', 'i1', 'view', 1.0, 'e1', NULL)"])
    with open_store(store_url) as store:
        [old] = store.history("old")
        assert (old.item, old.event_id, old.request_id) == ("i1", "e1", None)
        store.add_impressions([imp("r1", user="old")])
        store.add_events([EventIn("old", "i1", "click", 2.0, request_id="r1")])
        assert [e.request_id for e in store.feedback()] == ["r1"]
        assert store.get_impression("r1") is not None
    with open_store(store_url) as store:  # a second open finds nothing left to migrate
        assert len(store.history("old")) == 2 and len(store.impressions()) == 1
        assert store.delete_user("old").impressions == 1
    versions = _sql(store_url, ["SELECT version FROM lmrec_schema ORDER BY version"])[0]
    assert versions == [(2,), (3,)]


# --- erasure -----------------------------------------------------------------------------
def test_delete_user_removes_their_impressions(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_impressions([imp("r-a1", user="alice-xyz"), imp("r-b", user="bob"),
                               imp("r-a2", user="alice-xyz"), imp("r-v", user=None)])
        store.add_events([EventIn("alice-xyz", "i1", "click", 1.0, request_id="r-a1"),
                          EventIn("bob", "i1", "click", 1.0, request_id="r-b")])
        res = store.delete_user("alice-xyz")
        assert (res.events, res.impressions) == (1, 2)
        assert store.get_impression("r-a1") is None and store.get_impression("r-a2") is None
        assert [i.request_id for i in store.impressions()] == ["r-b", "r-v"]
        assert [e.user for e in store.feedback()] == ["bob"]
        assert store.delete_user("alice-xyz").impressions == 0
    rows = _sql(store_url, ["SELECT * FROM lmrec_impressions", "SELECT * FROM lmrec_events"])
    assert rows[0] and rows[1]
    assert all("alice" not in str(row) for table in rows for row in table)


# --- the group-commit writer -------------------------------------------------------------
class _Gate:
    """Wraps `store.add_impressions`: records each transaction's request ids and the thread
    that ran it; the first transaction waits for `release` (a slow disk), then fails with
    `fail_first` when that is set, so that callers queue up behind it deterministically."""

    def __init__(self, store: EventStore, fail_first: BaseException | None = None) -> None:
        self.real = store.add_impressions
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[list[str]] = []
        self.threads: list[int] = []
        self.fail_first = fail_first
        store.add_impressions = self  # type: ignore[method-assign]

    def __call__(self, imps: Sequence[ImpressionIn]) -> None:
        self.calls.append([i.request_id for i in imps])
        self.threads.append(threading.get_ident())
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
            if self.fail_first is not None:
                raise self.fail_first
        self.real(imps)


class _Caller(threading.Thread):
    """A request thread that logs one impression; `error` is what log raised, if anything."""

    def __init__(self, writer: ImpressionWriter, rid: str, timeout: float | None = None
                 ) -> None:
        super().__init__(name=f"request-{rid}")
        self.writer, self.rid, self.timeout = writer, rid, timeout
        self.error: BaseException | None = None
        self.returned = False

    def run(self) -> None:
        try:
            self.writer.log(imp(self.rid, ts=None), self.timeout)
            self.returned = True
        except BaseException as exc:  # the outcome is the test
            self.error = exc


def _wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.002)


def _leader_blocked_with_followers(writer: ImpressionWriter, gate: _Gate, n: int
                                   ) -> tuple[_Caller, list[_Caller]]:
    """A first caller holding the commit lock inside its (gated) transaction, and `n` more
    whose impressions are queued behind it."""
    first = _Caller(writer, "first")
    first.start()
    assert gate.entered.wait(10)
    others = [_Caller(writer, f"r{k}") for k in range(n)]
    for th in others:
        th.start()
    _wait_until(lambda: writer.queued == n, f"{n} impressions are queued")
    return first, others


def _join(threads: Sequence[threading.Thread]) -> None:
    for th in threads:
        th.join(10)
        assert not th.is_alive(), f"{th.name} is still waiting"


def test_an_uncontended_caller_commits_its_own_impression_in_its_own_thread(
        store: EventStore) -> None:
    gate = _Gate(store)
    gate.release.set()
    before = threading.active_count()
    with ImpressionWriter(store) as writer:
        assert threading.active_count() == before  # no thread of its own
        for n in range(3):
            writer.log(imp(f"r{n}", ts=None))
            assert store.get_impression(f"r{n}") is not None  # durable on return
    assert gate.calls == [["r0"], ["r1"], ["r2"]]  # one transaction each, nothing to share
    assert set(gate.threads) == {threading.get_ident()}
    assert (writer.transactions, writer.impressions, writer.largest_batch) == (3, 3, 1)


def test_callers_queued_during_a_commit_share_the_next_transaction(store: EventStore) -> None:
    gate = _Gate(store)
    writer = ImpressionWriter(store)
    try:
        first, others = _leader_blocked_with_followers(writer, gate, 5)
        assert all(th.is_alive() for th in others)  # none returns before its commit
        gate.release.set()
        _join([first, *others])
    finally:
        gate.release.set()
        writer.close()
    assert all(th.returned for th in [first, *others]), [th.error for th in others]
    # the first commit held only its leader's impression; the five that queued meanwhile
    # went together in one more, run by one of their own threads
    assert gate.calls[0] == ["first"] and len(gate.calls) == 2
    assert sorted(gate.calls[1]) == [f"r{k}" for k in range(5)]
    assert gate.threads[1] in {th.ident for th in others}
    assert (writer.transactions, writer.impressions, writer.largest_batch) == (2, 6, 5)
    assert writer.queued == 0
    assert len(store.impressions()) == 6


def test_max_batch_bounds_one_transaction(store: EventStore) -> None:
    gate = _Gate(store)
    writer = ImpressionWriter(store, max_batch=2)
    try:
        first, others = _leader_blocked_with_followers(writer, gate, 5)
        gate.release.set()
        _join([first, *others])
    finally:
        gate.release.set()
        writer.close()
    assert all(th.returned for th in [first, *others])
    assert [len(c) for c in gate.calls] == [1, 2, 2, 1]  # in arrival order, two at a time
    assert sorted(r for c in gate.calls[1:] for r in c) == [f"r{k}" for k in range(5)]
    assert (writer.transactions, writer.impressions, writer.largest_batch) == (4, 6, 2)
    with pytest.raises(InputError, match="max_batch"):
        ImpressionWriter(store, max_batch=0)


def test_writer_commits_concurrent_requests_durably_and_in_order(store: EventStore) -> None:
    n_threads, per_thread = 32, 8
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []
    late: list[str] = []
    with ImpressionWriter(store) as writer:
        def request(t: int) -> None:
            try:
                barrier.wait()
                for k in range(per_thread):
                    rid = f"t{t}-{k}"
                    writer.log(imp(rid, user=f"u{t}", ts=None))
                    if store.get_impression(rid) is None:  # durable on return
                        late.append(rid)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=request, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors and not late, (errors, late)
    total = n_threads * per_thread
    stored = store.impressions()
    assert sorted(i.request_id for i in stored) == sorted(
        f"t{t}-{k}" for t in range(n_threads) for k in range(per_thread))
    for t in range(n_threads):  # each thread's impressions in the order it logged them
        mine = [i.request_id for i in stored if i.user == f"u{t}"]
        assert mine == [f"t{t}-{k}" for k in range(per_thread)]
    assert writer.impressions == total and writer.failed_batches == 0
    assert writer.transactions <= total and writer.queued == 0


def test_a_failed_batch_fails_only_its_callers(store: EventStore) -> None:
    gate = _Gate(store, fail_first=StoreError("disk I/O error"))
    writer = ImpressionWriter(store)
    try:
        first, others = _leader_blocked_with_followers(writer, gate, 3)
        gate.release.set()
        _join([first, *others])
        err = first.error
        assert isinstance(err, StoreError) and "first" in str(err) and "disk I/O" in str(err)
        assert all(th.returned and th.error is None for th in others)
        assert gate.calls[0] == ["first"] and sorted(gate.calls[1]) == ["r0", "r1", "r2"]
        writer.log(imp("after"))  # the writer carries on
        assert (writer.failed_batches, writer.transactions, writer.impressions) == (1, 3, 4)
    finally:
        gate.release.set()
        writer.close()
    assert sorted(i.request_id for i in store.impressions()) == ["after", "r0", "r1", "r2"]


def test_every_caller_in_a_failed_batch_gets_the_error(store: EventStore) -> None:
    """A leader that fails commits its followers' impressions too: each of them raises
    StoreError (from the original error, of any kind), and the next caller starts afresh."""
    real = store.add_impressions
    gate = _Gate(store)
    writer = ImpressionWriter(store)
    try:
        first, others = _leader_blocked_with_followers(writer, gate, 3)

        def broken(imps: Sequence[ImpressionIn]) -> None:
            gate.calls.append([i.request_id for i in imps])
            raise RuntimeError("connection reset")

        store.add_impressions = broken  # type: ignore[method-assign]
        gate.release.set()  # the first commits; the next leader's transaction breaks
        _join([first, *others])
        assert first.returned
        for th in others:
            assert isinstance(th.error, StoreError) and th.rid in str(th.error)
            assert isinstance(th.error.__cause__, RuntimeError)
        assert sorted(gate.calls[1]) == ["r0", "r1", "r2"] and len(gate.calls) == 2
        store.add_impressions = real  # type: ignore[method-assign]
        writer.log(imp("after"))
    finally:
        gate.release.set()
        writer.close()
    assert (writer.failed_batches, writer.transactions) == (1, 3)
    assert sorted(i.request_id for i in store.impressions()) == ["after", "first"]


def test_a_caller_that_times_out_is_withdrawn(store: EventStore) -> None:
    gate = _Gate(store)
    writer = ImpressionWriter(store)
    try:
        first, _ = _leader_blocked_with_followers(writer, gate, 0)
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=r"slow was not logged: no commit within 0\.05 s"):
            writer.log(imp("slow"), timeout=0.05)
        assert time.monotonic() - t0 < 5
        assert writer.queued == 0  # withdrawn: no later leader commits it
        gate.release.set()
        _join([first])
        writer.log(imp("next"), timeout=5)
    finally:
        gate.release.set()
        writer.close()
    assert gate.calls == [["first"], ["next"]]
    assert store.get_impression("slow") is None


def test_writer_checks_input_in_the_caller_and_refuses_work_once_closed(
        store: EventStore) -> None:
    writer = ImpressionWriter(store)
    with pytest.raises(InputError, match=r"impression slate\[0\].propensity"):
        writer.log(imp("bad", slate=(Slot("a", 2.0),)))
    writer.log(imp("good"))
    writer.close()
    writer.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        writer.log(imp("late"))
    assert [i.request_id for i in store.impressions()] == ["good"]
    assert writer.transactions == 1


def test_close_waits_for_the_commit_in_flight_and_keeps_what_is_queued(
        store: EventStore) -> None:
    """close() refuses new work at once, but what was accepted before it is committed: the
    transaction in flight finishes and the queued callers still return normally."""
    gate = _Gate(store)
    writer = ImpressionWriter(store)
    try:
        first, others = _leader_blocked_with_followers(writer, gate, 3)
        closer = threading.Thread(target=writer.close, name="closer")
        closer.start()

        def refused() -> bool:  # until close() has run, a log times out instead
            try:
                writer.log(imp("late"), timeout=0)
            except StoreError as exc:
                return "closed" in str(exc)
            raise AssertionError("logged while the commit lock was held")

        _wait_until(refused, "close() refuses new impressions")
        assert closer.is_alive()  # waiting for the commit in flight
        gate.release.set()
        _join([first, *others, closer])
    finally:
        gate.release.set()
        writer.close()
    assert all(th.returned for th in [first, *others])
    assert sorted(i.request_id for i in store.impressions()) == ["first", "r0", "r1", "r2"]
    assert writer.impressions == 4 and writer.queued == 0
