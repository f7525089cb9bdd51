"""The event store (lmrec.serve.store): every behaviour on SQLite and on PostgreSQL.

PostgreSQL: $LMREC_TEST_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/test; the
PostgreSQL cases are skipped, with the reason, only when no server answers. Each test gets its
own schema (dropped afterwards), so parallel runs never share tables.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from lmrec.errors import ConfigError, InputError
from lmrec.serve.store import EventIn, EventStore, StoreError, open_store
from lmrec.serve.store.base import TABLES, mask_url


def all_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in the store's database (or schema), read behind its back."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            names = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {n: conn.execute(f'SELECT * FROM "{n}"').fetchall() for n in names}
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")]
        return {n: conn.execute(f'SELECT * FROM "{n}"').fetchall() for n in names}


def ev(user: str, item: str, ts: float | None = None, eid: str | None = None,
       typ: str = "view", value: float | None = None) -> EventIn:
    return EventIn(user, item, typ, ts, eid, value)


# --- ingest and histories ----------------------------------------------------------------
def test_events_round_trip_in_time_order(store: EventStore) -> None:
    before = time.time()
    res = store.add_events([
        ev("u1", "late", ts=30.0, eid="e1", typ="purchase", value=4.5),
        ev("u1", "early", ts=10.0),
        ev("u2", "x", ts=5.0),
        ev("u1", "tie-first", ts=20.0),
        ev("u1", "tie-second", ts=20.0),
        ev("u1", "now"),  # server time
    ])
    after = time.time()
    assert (res.accepted, res.duplicates) == (6, 0)
    hist = store.history("u1")
    # by time, then by arrival for equal times
    assert [e.item for e in hist] == ["early", "tie-first", "tie-second", "late", "now"]
    late = hist[3]
    assert (late.type, late.timestamp, late.event_id, late.value) == ("purchase", 30.0, "e1", 4.5)
    assert before <= hist[-1].timestamp <= after
    assert hist[0].type == "view" and hist[0].event_id is None and hist[0].value is None
    seqs = [e.seq for e in hist]
    assert len(set(seqs)) == len(seqs)
    assert hist[1].seq < hist[2].seq  # the tie keeps the order the batch was sent in
    assert store.count_events() == 6


def test_history_limit_keeps_the_latest_oldest_first(store: EventStore) -> None:
    store.add_events([ev("u", f"i{t}", ts=float(t)) for t in (5, 1, 4, 2, 3)])
    store.add_events([ev("v", "only", ts=1.0)])
    assert [e.item for e in store.history("u", limit=3)] == ["i3", "i4", "i5"]
    got = store.histories(["u", "v", "nobody", "u"], limit=2)
    assert set(got) == {"u", "v", "nobody"}
    assert [e.item for e in got["u"]] == ["i4", "i5"]
    assert [e.item for e in got["v"]] == ["only"]
    assert got["nobody"] == []
    assert [e.item for e in store.histories(["u"])["u"]] == ["i1", "i2", "i3", "i4", "i5"]
    with pytest.raises(InputError, match="limit"):
        store.history("u", limit=0)


def test_many_users_in_one_histories_call(store: EventStore) -> None:
    store.add_events([ev(f"user-{k}", f"i{k}", ts=1.0) for k in range(1200)])
    users = [f"user-{k}" for k in range(0, 1200, 2)] + ["missing"]
    got = store.histories(users, limit=5)
    assert len(got) == len(users)
    assert all([e.item for e in got[f"user-{k}"]] == [f"i{k}"] for k in range(0, 1200, 2))


def test_idempotent_on_event_id(store: EventStore) -> None:
    first = store.add_events([ev("u", "a", 1.0, "id-1"), ev("u", "b", 2.0, "id-2")])
    assert (first.accepted, first.duplicates) == (2, 0)
    # a retry of the same events, plus a repeat inside one batch, plus a new one
    again = store.add_events([ev("u", "a", 1.0, "id-1"), ev("u", "c", 3.0, "id-3"),
                              ev("u", "c", 3.0, "id-3"), ev("u", "b", 2.0, "id-2")])
    assert (again.accepted, again.duplicates) == (1, 3)
    # the key is (user, event_id): a different payload under a stored key is still a duplicate
    assert store.add_events([ev("u", "z", 9.0, "id-1")]).duplicates == 1
    # events without an id are never merged
    assert store.add_events([ev("u", "d", 4.0), ev("u", "d", 4.0)]).accepted == 2
    assert [e.item for e in store.history("u")] == ["a", "b", "c", "d", "d"]
    assert store.count_events() == 5


def test_event_ids_are_scoped_to_their_user(store: EventStore) -> None:
    """Two clients that both number their events from 1 do not swallow each other's."""
    assert store.add_events([ev("alice", "a", 1.0, "1"), ev("bob", "b", 1.0, "1")]).accepted == 2
    res = store.add_events([ev("carol", "c", 2.0, "1"), ev("bob", "b", 1.0, "1")])
    assert (res.accepted, res.duplicates) == (1, 1)
    got = store.histories(["alice", "bob", "carol"])
    assert {u: [e.item for e in h] for u, h in got.items()} == {
        "alice": ["a"], "bob": ["b"], "carol": ["c"]}


def test_bad_events_reject_the_whole_batch(store: EventStore) -> None:
    good = ev("u", "a", 1.0)
    cases = [(ev("", "a"), "event 1 user"), (ev("u", "a", float("nan")), "event 1 timestamp"),
             (ev("u", "a", value=float("inf")), "event 1 value"),
             (ev("u", "a\x00b"), "event 1 item must not contain NUL"),
             (ev("u", "a", eid=""), "event 1 event_id"), (ev("u", "a", typ=""), "event 1 type")]
    for bad, message in cases:
        with pytest.raises(InputError, match=message):
            store.add_events([good, bad])
    assert store.count_events() == 0
    assert store.add_events([]).accepted == 0


# --- durability --------------------------------------------------------------------------
_WRITER = """
import sys
from lmrec.serve.store import EventIn, open_store

store = open_store(sys.argv[1])
for b in range(1_000_000):
    store.add_events([EventIn(f"u{k % 7}", f"i{k}", "view", float(b), f"b{b}-{k}")
                      for k in range(500)])
    print(b, flush=True)  # acknowledged: add_events has returned
"""


def _acknowledged_then_killed(script: str, store_url: str, wanted: int) -> list[str]:
    """Run `script` (it writes to the store and prints one acknowledged id a line) until it
    has acknowledged `wanted`, SIGKILL it (mid-way through the next write, most likely) and
    return every id it acknowledged."""
    open_store(store_url).close()  # create the schema before the race starts
    proc = subprocess.Popen([sys.executable, "-c", script, store_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    acked: list[str] = []
    try:
        while len(acked) < wanted:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"the writer died early: {proc.stderr.read()}")
            acked.append(line.strip())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        acked += proc.stdout.read().split()  # printed before the kill
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return acked


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_acknowledged_batches_survive_sigkill(store_url: str) -> None:
    acked = [int(a) for a in _acknowledged_then_killed(_WRITER, store_url, 8)]
    with open_store(store_url) as store:
        ids = Counter(e.event_id for events in store.histories([f"u{k}" for k in range(7)]
                                                               ).values() for e in events)
        assert max(ids.values()) == 1, "an event was stored twice"
        batches = Counter(int(str(i).split("-")[0][1:]) for i in ids)
        assert set(acked) <= set(batches), "an acknowledged batch is missing"
        assert set(batches.values()) == {500}, "a batch was stored in part"
        assert set(batches) <= set(range(max(acked) + 2))  # at most one batch in flight
        # a client replaying everything after the crash creates no duplicate
        replay = store.add_events([EventIn(f"u{k % 7}", f"i{k}", "view", float(b), f"b{b}-{k}")
                                   for b in sorted(batches) for k in range(500)])
        assert (replay.accepted, replay.duplicates) == (0, 500 * len(batches))


_IMPRESSION_WRITER = """
import sys, threading
from lmrec.serve.store import ImpressionIn, ImpressionWriter, Slot, open_store

store = open_store(sys.argv[1])
writer = ImpressionWriter(store)
lock = threading.Lock()

def request(t):
    for k in range(1_000_000):
        rid = f"t{t}-{k}"
        writer.log(ImpressionIn(rid, f"u{t}", "v1", None, "top-k",
                                tuple(Slot(f"i{j}", 1.0, float(-j)) for j in range(10))))
        with lock:
            print(rid, flush=True)  # acknowledged: log has returned

threads = [threading.Thread(target=request, args=(t,)) for t in range(8)]
for th in threads:
    th.start()
for th in threads:
    th.join()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_acknowledged_impressions_survive_sigkill(store_url: str) -> None:
    """The group-commit writer acknowledges an impression only once its batch is durable,
    with several request threads logging at once."""
    acked = _acknowledged_then_killed(_IMPRESSION_WRITER, store_url, 300)
    with open_store(store_url) as store:
        stored = store.impressions()
        ids = {i.request_id for i in stored}
        assert len(ids) == len(stored)
        assert set(acked) <= ids, f"{len(set(acked) - ids)} acknowledged impressions lost"
        assert all(len(i.slate) == 10 for i in stored)  # none stored in part
        for t in range(8):  # each thread's stored impressions: a prefix of what it logged
            ks = sorted(int(r.split("-")[1]) for r in ids if r.startswith(f"t{t}-"))
            assert ks == list(range(len(ks)))


# --- erasure -----------------------------------------------------------------------------
def test_delete_user_leaves_no_row_about_them(store_url: str) -> None:
    alice = "alice@example.org"
    with open_store(store_url) as store:
        store.add_events([ev(alice, "i1", 1.0, "alice-click-1"), ev(alice, "i2", 2.0),
                          ev("bob", "i1", 1.0, "bob-click-1")])
        store.put_state(alice, "recent", b"alice's cached vector")
        store.put_state("bob", "recent", b"bob's")
        res = store.delete_user(alice)
        assert res.events == 2
        assert store.history(alice) == [] and store.get_state(alice, "recent") is None
        assert [e.item for e in store.history("bob")] == ["i1"]
        assert store.get_state("bob", "recent") == b"bob's"
        again = store.delete_user(alice)
        assert again.events == 0 and again.audit_id != res.audit_id
        # nothing keeps the deleted event id either: the same id is new again
        assert store.add_events([ev(alice, "i3", 3.0, "alice-click-1")]).accepted == 1
        assert store.delete_user(alice).events == 1

    rows = all_rows(store_url)
    assert set(TABLES) <= set(rows)
    digests = {h(alice.encode()).hexdigest() for h in (hashlib.sha256, hashlib.md5,
                                                       hashlib.sha1)}
    for table, content in rows.items():
        for row in content:
            for cell in row:
                text = cell.decode(errors="replace") if isinstance(cell, bytes) else str(cell)
                assert "alice" not in text, f"{table} still holds {row}"
                assert not any(d in text for d in digests), f"{table} holds a hash: {row}"
    audit = {r[0]: r for r in rows["lmrec_deletions"]}
    assert set(audit) >= {res.audit_id, again.audit_id}
    assert audit[res.audit_id][2:] == (2, 1, "erased")  # events and state rows removed
    assert len(rows["lmrec_events"]) == 1  # bob's


def test_sqlite_file_holds_no_deleted_text(tmp_path: Path) -> None:
    """secure_delete and the log truncation leave no copy of a deleted id in the files."""
    path = tmp_path / "erase.db"
    with open_store(f"sqlite:///{path}") as store:
        store.add_events([ev("zed-the-unique-user", f"i{k}", float(k)) for k in range(200)])
        store.add_events([ev("keeper", "i1", 1.0)])
        store.delete_user("zed-the-unique-user")
        for f in tmp_path.iterdir():
            assert b"zed-the-unique-user" not in f.read_bytes(), f.name


def test_sqlite_delete_does_not_wait_for_readers(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A reader blocks the log truncation; the deletion still returns at once, with a warning,
    and the next deletion without readers truncates the log."""
    path = tmp_path / "busy.db"
    with open_store(f"sqlite:///{path}") as store:
        store.add_events([ev("u", f"i{k}", float(k)) for k in range(50)] + [ev("v", "i", 1.0)])
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")  # a read transaction pinned to the snapshot before the delete
            assert reader.execute("SELECT count(*) FROM lmrec_events").fetchone() == (51,)
            start = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="lmrec.serve.store"):
                res = store.delete_user("u")
            elapsed = time.monotonic() - start
        finally:
            reader.close()
        assert res.events == 50 and store.history("u") == []
        assert elapsed < 5.0, f"delete_user waited {elapsed:.1f} s for a reader"
        assert "write-ahead log" in caplog.text and "'u'" not in caplog.text
        # the connection that checkpointed is back in the pool with the full busy timeout
        with store._read() as conn:  # type: ignore[attr-defined]
            assert conn.execute("PRAGMA busy_timeout").fetchone() == (30_000,)
            assert conn.execute("PRAGMA secure_delete").fetchone() == (1,)
        store.delete_user("v")
        assert (tmp_path / "busy.db-wal").stat().st_size == 0


def test_corrupt_sqlite_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        store.add_events([ev(f"u{k}", "i" * 50, 1.0) for k in range(2000)])
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the header survives, every table page is noise
    data[page:] = random.Random(0).randbytes(len(data) - page)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=re.escape(url) + ".*malformed"):
        open_store(url)
    path.write_bytes(random.Random(1).randbytes(8192))  # not a database at all
    with pytest.raises(StoreError, match=re.escape(url) + ".*not a database"):
        open_store(url)


# --- per-user state ----------------------------------------------------------------------
def test_user_state(store: EventStore) -> None:
    assert store.get_state("u", "k") is None
    store.put_state("u", "k", b"\x00\x01binary")
    store.put_state("u", "k2", bytearray(b"two"))
    assert store.get_state("u", "k") == b"\x00\x01binary"
    store.put_state("u", "k", b"new")  # overwrite
    assert store.get_state("u", "k") == b"new"
    assert store.get_state("u", "k2") == b"two"
    assert store.get_state("v", "k") is None
    with pytest.raises(InputError, match="bytes"):
        store.put_state("u", "k", "text")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="exceeds"):
        store.put_state("u", "k", bytes(2 << 20))


# --- concurrency -------------------------------------------------------------------------
def test_concurrent_writers_store_each_event_once(store: EventStore) -> None:
    n_threads, n_batches = 4, 15
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        try:
            for b in range(n_batches):
                # 20 events of this thread's own, 10 every thread sends (a retry storm)
                batch = [ev(f"u{t}", f"i{k}", float(b), f"t{t}-b{b}-{k}") for k in range(20)]
                batch += [ev("shared", f"s{k}", float(b), f"shared-b{b}-{k}") for k in range(10)]
                res = store.add_events(batch)
                store.history(f"u{t}", limit=10)  # readers interleave with writers
                with lock:
                    results.append((res.accepted, res.duplicates))
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    unique = n_threads * n_batches * 20 + n_batches * 10
    assert sum(a for a, _ in results) == unique
    assert sum(a + d for a, d in results) == n_threads * n_batches * 30
    assert store.count_events() == unique
    hist = store.histories([*(f"u{t}" for t in range(n_threads)), "shared"])
    assert [len(hist[f"u{t}"]) for t in range(n_threads)] == [n_batches * 20] * n_threads
    assert len({e.event_id for e in hist["shared"]}) == len(hist["shared"]) == n_batches * 10


_PROCESS_WRITER = """
import sys
from lmrec.serve.store import EventIn, open_store

tag = sys.argv[2]
with open_store(sys.argv[1]) as store:
    for b in range(20):
        own = [EventIn(f"p{tag}", f"i{k}", "view", float(b), f"{tag}-{b}-{k}") for k in range(20)]
        shared = [EventIn("both", f"s{k}", "view", float(b), f"s-{b}-{k}") for k in range(5)]
        r = store.add_events(own + shared)
        print(r.accepted, r.duplicates, flush=True)
"""


def test_writer_processes_share_one_store(store_url: str) -> None:
    """Several server processes (uvicorn workers) writing to one database at once."""
    open_store(store_url).close()
    procs = [subprocess.Popen([sys.executable, "-c", _PROCESS_WRITER, store_url, tag],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("x", "y", "z")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    counts = [tuple(map(int, line.split())) for out, _ in outs for line in out.splitlines()]
    assert sum(a for a, _ in counts) == 3 * 20 * 20 + 20 * 5
    assert sum(d for _, d in counts) == 2 * 20 * 5
    with open_store(store_url) as store:
        assert store.count_events() == 3 * 20 * 20 + 20 * 5
        assert len(store.history("both")) == 100


def test_in_memory_store_is_shared_between_threads() -> None:
    with open_store("sqlite:///:memory:") as store:
        threads = [threading.Thread(target=store.add_events,
                                    args=([ev("u", f"i{t}", float(t), f"e{t}")],))
                   for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert [e.item for e in store.history("u")] == [f"i{t}" for t in range(8)]


# --- opening, schema, closing ------------------------------------------------------------
def test_schema_is_created_once_and_versioned(store_url: str) -> None:
    with open_store(store_url) as a:
        a.add_events([ev("u", "i", 1.0, "e")])
    with open_store(store_url) as b:  # reopening keeps the data and the version row
        assert b.count_events() == 1 and b.ping()
    assert all_rows(store_url)["lmrec_schema"] == [(3,)]
    _execute(store_url, "UPDATE lmrec_schema SET version = 99")
    with pytest.raises(ConfigError, match="schema version 99"):
        open_store(store_url)


def test_closed_store_refuses_work(store: EventStore) -> None:
    store.close()
    assert store.ping() is False
    with pytest.raises(StoreError, match="closed"):
        store.add_events([ev("u", "i")])


def test_bad_urls_are_refused_clearly(tmp_path: Path) -> None:
    for url, message in [("mysql://u:pw@h/db", "unsupported store url 'mysql://u:\\*\\*\\*@h/db'"),
                         ("sqlite:///", "names no database file"),
                         (f"sqlite:///{tmp_path}/x.db?journal=off", "unknown parameter"),
                         (f"sqlite:///{tmp_path}/x.db?synchronous=off", "full or normal"),
                         (f"sqlite:///{tmp_path}/x.db?pool_size=0", "pool_size")]:
        with pytest.raises(ConfigError, match=message):
            open_store(url)
    with open_store(f"sqlite:///{tmp_path}/x.db?synchronous=normal&pool_size=2") as s:
        assert s.ping()
    # a missing folder is refused, not created: a typo would start an empty store elsewhere
    with pytest.raises(ConfigError, match=f"folder '{tmp_path}/sub/dir' does not exist"):
        open_store(f"sqlite:///{tmp_path}/sub/dir/x.db")
    assert not (tmp_path / "sub").exists()


def test_relative_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with open_store("sqlite:///data/rel.db") as s:
        s.add_events([ev("u", "i", 1.0)])
    assert (tmp_path / "data" / "rel.db").is_file()


def test_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError) as info:
        open_store("postgresql://lmrec:s3cret@127.0.0.1:1/db?connect_timeout=2")
    assert "s3cret" not in str(info.value) and "lmrec:***@" in str(info.value)


def test_url_masks_the_password(store_url: str) -> None:
    assert mask_url("postgresql://me:hunter2@db:5432/x?sslmode=require") == (
        "postgresql://me:***@db:5432/x?sslmode=require")
    assert mask_url("postgresql://me@db/x") == "postgresql://me@db/x"
    with open_store(store_url) as s:
        password = urlsplit(store_url).password
        assert password is None or password not in s.url + repr(s)


def _execute(url: str, sql: str) -> None:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        with conn:
            conn.execute(sql)
        conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)
