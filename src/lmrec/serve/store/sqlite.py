"""The SQLite event store: one file, WAL journal, safe for threads and several processes.

Durability: the journal is a write-ahead log with `synchronous=FULL` by default, so the log is
fsync'ed at every commit and an acknowledged batch survives a process kill and a power loss.
`?synchronous=normal` fsyncs only at checkpoints: commits still survive a killed process (the
log is in the OS page cache) but the latest ones may be lost on a power cut; it trades that for
fewer fsyncs.

Concurrency: readers never block the single writer in WAL mode; writers queue on the database
lock (`BEGIN IMMEDIATE` takes it up front, so a transaction never fails half way with "database
is locked") and wait up to the busy timeout. Each thread borrows its own connection from a
small pool; an in-memory database has one connection, so its pool doubles as a lock.

Erasure: `secure_delete` overwrites removed rows with zeros, and `delete_user` then truncates
the write-ahead log so it keeps no older copy of their pages. That truncation cannot finish while
another connection reads; it then gives up after about a second and leaves the log to SQLite's
automatic checkpoints (see `SQLiteStore._after_delete`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from urllib.parse import parse_qsl

from lmrec.errors import ConfigError
from lmrec.serve.store.base import (
    EVENT_COLUMNS,
    EventIn,
    IngestResult,
    SQLEventStore,
    StoredEvent,
    StoreError,
    check_limit,
    check_text,
    event_rows,
    group_histories,
    now,
)
from lmrec.serve.store.pool import ConnectionPool, parse_pool_size

PREFIX = "sqlite:///"
BUSY_TIMEOUT_S = 30.0
CHECKPOINT_BUSY_TIMEOUT_S = 1.0  # a deletion waits no longer than this for readers to leave
DEFAULT_POOL = 8
_USERS_PER_QUERY = 500  # bound parameters per IN list stay far below SQLite's limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lmrec_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS lmrec_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a seq is never reused
    user_id TEXT NOT NULL, item_id TEXT NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL,
    event_id TEXT, value REAL, request_id TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS lmrec_events_user_event_id ON lmrec_events (user_id, event_id);
CREATE INDEX IF NOT EXISTS lmrec_events_user ON lmrec_events (user_id, ts, seq);
CREATE TABLE IF NOT EXISTS lmrec_user_state (
    user_id TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (user_id, key));
CREATE TABLE IF NOT EXISTS lmrec_deletions (
    audit_id INTEGER PRIMARY KEY, deleted_at REAL NOT NULL,
    events_removed INTEGER NOT NULL, state_removed INTEGER NOT NULL,
    outcome TEXT NOT NULL DEFAULT 'erased');
CREATE TABLE IF NOT EXISTS lmrec_impressions (
    -- seq is the key (AUTOINCREMENT needs INTEGER PRIMARY KEY), request_id is unique instead
    seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL UNIQUE, ts REAL NOT NULL,
    user_id TEXT, model_version TEXT NOT NULL, arm TEXT, policy TEXT NOT NULL,
    slate TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS lmrec_impressions_user ON lmrec_impressions (user_id);
CREATE INDEX IF NOT EXISTS lmrec_impressions_ts ON lmrec_impressions (ts);
"""
_INSERT = ("INSERT INTO lmrec_events (user_id, item_id, type, ts, event_id, value, request_id) "
           "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, event_id) DO NOTHING")

log = logging.getLogger(__name__)


class SQLiteStore(SQLEventStore):
    """Events in one SQLite file (or in memory, for tests). See the module docstring."""

    placeholder = "?"

    def __init__(self, url: str) -> None:
        self.url = url
        target, params = _parse(url)
        self._memory = target == ":memory:"
        if not self._memory:
            _check_folder(url, Path(target).parent)
        self._target = target
        self._synchronous = params.get("synchronous", "full").upper()
        size = 1 if self._memory else parse_pool_size(params.get("pool_size"), DEFAULT_POOL)
        self._pool: ConnectionPool[sqlite3.Connection] = ConnectionPool(
            self._connect, sqlite3.Connection.close, lambda c: not c.in_transaction, size, url)
        with self._write() as conn:
            # one statement at a time: executescript would commit the open transaction
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            self._check_schema(conn)

    @property
    def shared(self) -> bool:
        return not self._memory

    def _connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: no implicit transactions; writes use BEGIN IMMEDIATE
            conn = sqlite3.connect(self._target, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)  # the pool hands it to one thread
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA secure_delete=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.url}: {exc}") from exc
        return conn

    def _store_errors(self) -> AbstractContextManager[None]:
        return _store_errors(self.url)

    def _columns(self, conn: sqlite3.Connection, table: str) -> set[str]:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed on success and rolled back on any error."""
        with self._pool.connection() as conn, _store_errors(self.url):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # some errors (I/O, corruption) already rolled back
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # --- EventStore -------------------------------------------------------------------
    def add_events(self, events: Sequence[EventIn], *,
                   count_items: AbstractSet[str] = frozenset()) -> IngestResult:
        rows = event_rows(events, now())
        if not rows:
            return IngestResult(0, 0)
        counted = 0
        with self._write() as conn:
            last = conn.execute("SELECT max(seq) FROM lmrec_events").fetchone()[0] or 0
            # executemany sums the changes; a row skipped by ON CONFLICT changes nothing
            accepted = conn.executemany(_INSERT, rows).rowcount
            if count_items and accepted:  # the rows just added: seq is above every older one
                new = conn.execute("SELECT item_id FROM lmrec_events WHERE seq > ?", (last,))
                counted = sum(item in count_items for (item,) in new)
        return IngestResult(accepted, len(rows) - accepted, counted)

    def histories(self, users: Sequence[str], limit: int | None = None
                  ) -> dict[str, list[StoredEvent]]:
        users = [check_text(u, "user") for u in users]
        limit = check_limit(limit)
        rows: list[tuple] = []
        with self._read() as conn:
            for start in range(0, len(users), _USERS_PER_QUERY):
                chunk = sorted(set(users[start : start + _USERS_PER_QUERY]))
                marks = ",".join("?" * len(chunk))
                if limit is None:
                    sql = (f"SELECT {EVENT_COLUMNS} FROM lmrec_events WHERE user_id IN ({marks}) "
                           "ORDER BY user_id, ts, seq")
                    rows += conn.execute(sql, chunk).fetchall()
                else:  # the latest `limit` per user, then oldest first
                    sql = (f"SELECT {EVENT_COLUMNS} FROM (SELECT {EVENT_COLUMNS}, "
                           "row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, "
                           "seq DESC) AS rn "
                           f"FROM lmrec_events WHERE user_id IN ({marks})) WHERE rn <= ? "
                           "ORDER BY user_id, ts, seq")
                    rows += conn.execute(sql, [*chunk, limit]).fetchall()
        return group_histories(users, rows)

    def _after_delete(self) -> None:
        """Fold the write-ahead log into the file and truncate it, dropping its older copies
        of the deleted rows' pages.

        TRUNCATE waits for every reader to leave the log, so it gets a short busy timeout
        (CHECKPOINT_BUSY_TIMEOUT_S) rather than the 30 s writers get. When readers keep it
        busy, it checkpoints what it can, logs a warning and leaves the rest to SQLite's
        automatic checkpoints (about every 1000 pages of log). Until one runs, the file and
        the log may still hold the deleted rows; `secure_delete=ON` (set on every connection)
        makes what the checkpoint writes back zeros rather than the old bytes.
        """
        if self._memory:
            return
        with self._read() as conn:
            conn.execute(f"PRAGMA busy_timeout = {int(CHECKPOINT_BUSY_TIMEOUT_S * 1000)}")
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if busy:
            log.warning("%s: could not truncate the write-ahead log after a deletion (another "
                        "connection is reading); SQLite's automatic checkpoints will fold it "
                        "in later", self.url)


@contextmanager
def _store_errors(url: str) -> Iterator[None]:
    """Failures of the database rather than of the statement (locked past the busy timeout,
    I/O, full disk, a corrupt file) as StoreError."""
    try:
        yield
    except (sqlite3.ProgrammingError, sqlite3.DataError):
        raise  # a bug in the statement or its parameters: not the store's fault
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{url}: {exc}") from exc


def _check_folder(url: str, folder: Path) -> None:
    """The database file's folder must exist: a typo in the path would otherwise start an
    empty store in a new folder tree, with the real events left behind unnoticed."""
    if folder.is_dir():
        return
    what = "is not a folder" if folder.exists() else "does not exist"
    raise ConfigError(f"store url {url!r}: the database's folder {str(folder)!r} "
                      f"{what}; create it first")


def _parse(url: str) -> tuple[str, dict[str, str]]:
    """"sqlite:///rel/path.db", "sqlite:////abs/path.db" or "sqlite:///:memory:", with optional
    ?synchronous=full|normal&pool_size=N -> (path or ":memory:", params)."""
    rest, _, query = url[len(PREFIX):].partition("?")
    if not rest:
        raise ConfigError(f"store url {url!r} names no database file (sqlite:///path/to.db)")
    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(params) - {"synchronous", "pool_size"})
    if unknown:
        raise ConfigError(f"store url {url!r}: unknown parameter(s) {unknown} (known: "
                          "synchronous, pool_size)")
    sync = params.get("synchronous", "full").lower()
    if sync not in ("full", "normal"):
        raise ConfigError(f"store url {url!r}: synchronous must be full or normal, got {sync!r}")
    params["synchronous"] = sync
    return rest, params
