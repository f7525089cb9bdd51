"""The event store contract, its records and what the SQLite and PostgreSQL stores share
(their connection pool: `lmrec.serve.store.pool`).

Five tables, the same in both back ends (ids are TEXT, times epoch seconds as floats):

    lmrec_schema      version                  one row; refused when newer than this code
    lmrec_events      seq, user_id, item_id, type, ts, event_id, value, request_id
                      unique index on (user_id, event_id) (NULLs never collide): the
                      idempotency key, per user, so clients may each number events from 1
                      index on (user_id, ts, seq): a user's history in time order
                      partial index on request_id (where set): feedback on an impression
    lmrec_impressions seq, request_id (unique), ts, user_id, model_version, arm, policy,
                      slate (JSON text)        what was shown; see `impressions`
    lmrec_user_state  user_id, key, value (bytes), updated_at     a small per-user cache
    lmrec_deletions   audit_id, deleted_at, events_removed, state_removed, outcome
                      the erasure audit: no user id and no hash of one; outcome "erased",
                      or "rolled_back" for an erasure that failed and changed nothing
                      (schema version 2; a version 1 database gains the column on open)

Schema version 3 added lmrec_events.request_id and lmrec_impressions; an older database
gains both on open, in the transaction that checks the version.

A history is ordered by event time, then by arrival (`seq`), so clients may send late events
and events that share a timestamp keep the order they were sent in.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from lmrec.errors import ConfigError, InputError
from lmrec.serve.store.checks import check_text
from lmrec.serve.store.errors import StoreError
from lmrec.serve.store.impressions import (
    IMPRESSION_COLUMNS,
    INSERT_IMPRESSION,
    ImpressionIn,
    StoredImpression,
    impression_rows,
    stored_impression,
    time_range,
)
from lmrec.serve.store.pool import ConnectionPool

SCHEMA_VERSION = 3  # 2: lmrec_deletions.outcome; 3: request_id, lmrec_impressions
ERASED, ROLLED_BACK = "erased", "rolled_back"  # lmrec_deletions.outcome

log = logging.getLogger("lmrec.serve.store")
TABLES = ("lmrec_schema", "lmrec_events", "lmrec_user_state", "lmrec_deletions",
          "lmrec_impressions")
# a StoredEvent's row
EVENT_COLUMNS = "seq, user_id, item_id, type, ts, event_id, value, request_id"
MAX_STATE_BYTES = 1 << 20  # the per-user cache holds small blobs, not documents

# (user_id, item_id, type, ts, event_id, value, request_id): the column order of every insert
Row = tuple[str, str, str, float, str | None, float | None, str | None]
_REQUEST_ID_INDEX = ("CREATE INDEX IF NOT EXISTS lmrec_events_request_id ON lmrec_events "
                     "(request_id) WHERE request_id IS NOT NULL")  # most events have none


@dataclass(frozen=True)
class EventIn:
    """An event to store. `timestamp` is epoch seconds (the server's clock when None);
    `event_id` is the client's idempotency key (the same id for the same user is stored only
    once)."""

    user: str
    item: str
    type: str = "view"
    timestamp: float | None = None
    event_id: str | None = None
    value: float | None = None
    request_id: str | None = None  # the impression this event is feedback on


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored; `seq` increases with arrival and is never reused."""

    seq: int
    user: str
    item: str
    type: str
    timestamp: float
    event_id: str | None
    value: float | None
    request_id: str | None = None


@dataclass(frozen=True)
class IngestResult:
    accepted: int  # newly stored events
    duplicates: int  # events whose (user, event_id) was already stored (or repeated in the batch)
    counted: int = 0  # accepted events whose item is one of `add_events`' `count_items`


@dataclass(frozen=True)
class DeleteResult:
    events: int  # event rows removed
    audit_id: int  # the random id of the audit row (which holds no personal data)
    impressions: int = 0  # impression rows removed (not in the audit row: no column for it)


@dataclass(frozen=True)
class StateWriter:
    """Writes cache entries inside an open transaction (see `EventStore.delete_user`)."""

    _put: Callable[[str, str, bytes], None]

    def put_state(self, user: str, key: str, value: bytes) -> None:
        self._put(user, key, value)


class EventStore(ABC):
    """A durable, idempotent event log with per-user histories. Safe to share between threads;
    several processes may open the same database."""

    url: str  # the store's address, any password masked

    @property
    def shared(self) -> bool:
        """Whether other processes can open the same data (False for an in-memory database):
        only then can the workers of a server follow each other's reloads through it."""
        return True

    @abstractmethod
    def add_events(self, events: Sequence[EventIn], *,
                   count_items: AbstractSet[str] = frozenset()) -> IngestResult:
        """Store `events` in one transaction, committed (durable) when this returns; the
        result counts the accepted events whose item is in `count_items` (e.g. the items the
        served model does not know)."""

    @abstractmethod
    def histories(self, users: Sequence[str], limit: int | None = None
                  ) -> dict[str, list[StoredEvent]]:
        """Each user's events, oldest first (the latest `limit` when given); every user asked
        for is a key, with an empty list when the store has nothing about them."""

    def history(self, user: str, limit: int | None = None) -> list[StoredEvent]:
        """One user's events, oldest first (the latest `limit` when given)."""
        return self.histories([user], limit)[user]

    @abstractmethod
    def add_impressions(self, imps: Sequence[ImpressionIn]) -> None:
        """Store `imps` in one transaction, durable when this returns. Idempotent: an
        impression whose request_id is already stored (or repeated in the batch) is skipped.
        InputError naming the field for a bad impression, and then nothing is stored."""

    @abstractmethod
    def get_impression(self, request_id: str) -> StoredImpression | None: ...

    @abstractmethod
    def impressions(self, since: float | None = None, until: float | None = None
                    ) -> list[StoredImpression]:
        """Impressions with since <= timestamp < until (either bound optional), by arrival."""

    @abstractmethod
    def feedback(self, since: float | None = None) -> list[StoredEvent]:
        """Events that carry a request_id (with since <= timestamp), by arrival."""

    @abstractmethod
    def delete_user(self, user: str, *,
                    before_commit: Callable[[StateWriter], None] | None = None
                    ) -> DeleteResult:
        """Remove every row about `user` in one transaction and record an anonymous audit row
        (outcome "erased").

        `before_commit` runs inside that transaction, last, with a `StateWriter` for cache
        entries that must change in the same transaction; when it raises, nothing is
        deleted and the exception propagates. Erasure uses it to swap the redacted bundle
        files in while the deletion can still be rolled back.
        """

    @abstractmethod
    def record_failed_erasure(self) -> int:
        """Record an audit row (outcome "rolled_back", nothing removed) for an erasure that
        failed and was rolled back; returns its audit id."""

    @abstractmethod
    def put_state(self, user: str, key: str, value: bytes) -> None:
        """Set one per-user cache entry (removed by `delete_user`)."""

    @abstractmethod
    def get_state(self, user: str, key: str) -> bytes | None: ...

    @abstractmethod
    def count_events(self) -> int: ...

    @abstractmethod
    def ping(self) -> bool:
        """True when the database answers a trivial query; False on any StoreError (closed,
        unreachable, pool exhausted, a corrupt database file)."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection; later calls raise StoreError."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class SQLEventStore(EventStore):
    """The operations both SQL back ends write alike; only the parameter placeholder (`?` or
    `%s`) and the two connection hooks differ."""

    placeholder: str
    _pool: ConnectionPool[Any]

    @abstractmethod
    def _store_errors(self) -> AbstractContextManager[None]:
        """Turns failures of the database (not of the statement) into StoreError."""

    @contextmanager
    def _read(self) -> Iterator[Any]:
        """A connection for statements that need no explicit transaction."""
        with self._pool.connection() as conn, self._store_errors():
            yield conn

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]:
        """A connection inside one transaction, committed on success, rolled back on error."""

    def _after_delete(self) -> None:
        """Back-end clean-up once a user's rows are gone (e.g. SQLite's write-ahead log)."""

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    def _check_schema(self, conn: Any) -> None:
        """Record this code's schema version in a new database; refuse a newer one. Runs in
        the transaction that created the tables."""
        row = conn.execute("SELECT max(version) FROM lmrec_schema").fetchone()
        if row is not None and row[0] is not None and row[0] > SCHEMA_VERSION:
            raise ConfigError(f"{self.url} has store schema version {row[0]}; this lmrec "
                              f"reads up to {SCHEMA_VERSION}: upgrade lmrec")
        if row is not None and row[0] is not None and row[0] < 2:  # version 1: no outcome
            conn.execute("ALTER TABLE lmrec_deletions ADD COLUMN outcome TEXT NOT NULL "
                         f"DEFAULT '{ERASED}'")
        # version 2 and older: lmrec_events without request_id (lmrec_impressions is new, so
        # CREATE TABLE IF NOT EXISTS made it). Checked by column, not by version: a version 1
        # database may have had no lmrec_events at all, created just now with the column.
        if "request_id" not in self._columns(conn, "lmrec_events"):
            conn.execute("ALTER TABLE lmrec_events ADD COLUMN request_id TEXT")
        conn.execute(_REQUEST_ID_INDEX)
        if row is None or row[0] is None or row[0] < SCHEMA_VERSION:
            conn.execute(self._sql("INSERT INTO lmrec_schema (version) VALUES (?)"),
                         (SCHEMA_VERSION,))

    @abstractmethod
    def _columns(self, conn: Any, table: str) -> set[str]:
        """The names of `table`'s columns."""

    def close(self) -> None:
        self._pool.close()

    def delete_user(self, user: str, *,
                    before_commit: Callable[[StateWriter], None] | None = None
                    ) -> DeleteResult:
        user = check_text(user, "user")
        audit_id = new_audit_id()
        with self._write() as conn:
            events = conn.execute(self._sql("DELETE FROM lmrec_events WHERE user_id = ?"),
                                  (user,)).rowcount
            state = conn.execute(self._sql("DELETE FROM lmrec_user_state WHERE user_id = ?"),
                                 (user,)).rowcount
            shown = conn.execute(self._sql("DELETE FROM lmrec_impressions WHERE user_id = ?"),
                                 (user,)).rowcount
            self._audit(conn, audit_id, events, state, ERASED)
            if before_commit is not None:
                before_commit(StateWriter(lambda *args: self._put_state(conn, *args)))
        try:
            self._after_delete()
        except StoreError as exc:  # committed: the clean-up is best effort
            log.warning("%s: clean-up after a deletion failed: %s", self.url, exc)
        return DeleteResult(events, audit_id, shown)

    # --- impressions and feedback ---------------------------------------------------------
    def add_impressions(self, imps: Sequence[ImpressionIn]) -> None:
        rows = impression_rows(imps, now())
        if not rows:
            return
        with self._write() as conn:
            cur = conn.cursor()  # psycopg has executemany on cursors only
            try:
                cur.executemany(self._sql(INSERT_IMPRESSION), rows)
            finally:
                cur.close()

    def get_impression(self, request_id: str) -> StoredImpression | None:
        request_id = check_text(request_id, "request_id")
        with self._read() as conn:
            row = conn.execute(self._sql(f"SELECT {IMPRESSION_COLUMNS} FROM lmrec_impressions "
                                         "WHERE request_id = ?"), (request_id,)).fetchone()
        return None if row is None else stored_impression(row)

    def impressions(self, since: float | None = None, until: float | None = None
                    ) -> list[StoredImpression]:
        where, args = time_range(since, until)
        with self._read() as conn:
            rows = conn.execute(self._sql(f"SELECT {IMPRESSION_COLUMNS} FROM lmrec_impressions"
                                          f"{where} ORDER BY seq"), args).fetchall()
        return [stored_impression(r) for r in rows]

    def feedback(self, since: float | None = None) -> list[StoredEvent]:
        where, args = time_range(since, None, "request_id IS NOT NULL")
        with self._read() as conn:
            rows = conn.execute(self._sql(f"SELECT {EVENT_COLUMNS} FROM lmrec_events{where} "
                                          "ORDER BY seq"), args).fetchall()
        return [stored(r) for r in rows]

    def record_failed_erasure(self) -> int:
        audit_id = new_audit_id()
        with self._write() as conn:
            self._audit(conn, audit_id, 0, 0, ROLLED_BACK)
        return audit_id

    def _audit(self, conn: Any, audit_id: int, events: int, state: int, outcome: str) -> None:
        conn.execute(self._sql("INSERT INTO lmrec_deletions (audit_id, deleted_at, "
                               "events_removed, state_removed, outcome) VALUES (?, ?, ?, ?, ?)"),
                     (audit_id, now(), events, state, outcome))

    def put_state(self, user: str, key: str, value: bytes) -> None:
        with self._write() as conn:
            self._put_state(conn, user, key, value)

    def _put_state(self, conn: Any, user: str, key: str, value: bytes) -> None:
        args = (check_text(user, "user"), check_text(key, "key"), check_state(value), now())
        conn.execute(self._sql(
            "INSERT INTO lmrec_user_state (user_id, key, value, updated_at) VALUES "
            "(?, ?, ?, ?) ON CONFLICT (user_id, key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at"), args)

    def get_state(self, user: str, key: str) -> bytes | None:
        args = (check_text(user, "user"), check_text(key, "key"))
        with self._read() as conn:
            row = conn.execute(self._sql("SELECT value FROM lmrec_user_state WHERE "
                                         "user_id = ? AND key = ?"), args).fetchone()
        return None if row is None else bytes(row[0])

    def count_events(self) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT count(*) FROM lmrec_events").fetchone()
        return int(row[0]) if row else 0

    def ping(self) -> bool:
        try:
            with self._read() as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except StoreError:
            return False


# --- shared helpers ------------------------------------------------------------------------
def event_rows(events: Sequence[EventIn], now: float) -> list[Row]:
    """Validated insert rows; `now` stands in for missing timestamps (one value per batch, so
    that a batch's order survives as `seq` order)."""
    rows: list[Row] = []
    for n, ev in enumerate(events):
        if not isinstance(ev, EventIn):
            raise InputError(f"event {n} is a {type(ev).__name__}, not an EventIn")
        ts = now if ev.timestamp is None else _finite(ev.timestamp, n, "timestamp")
        value = None if ev.value is None else _finite(ev.value, n, "value")
        event_id = None if ev.event_id is None else check_text(ev.event_id, f"event {n} event_id")
        request_id = (None if ev.request_id is None
                      else check_text(ev.request_id, f"event {n} request_id"))
        rows.append((check_text(ev.user, f"event {n} user"), check_text(ev.item, f"event {n} item"),
                     check_text(ev.type, f"event {n} type"), ts, event_id, value, request_id))
    return rows


def check_limit(limit: int | None) -> int | None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")
    return limit


def check_state(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InputError(f"state value must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) > MAX_STATE_BYTES:
        raise InputError(f"state value of {len(value)} bytes exceeds {MAX_STATE_BYTES} bytes")
    return value


def new_audit_id() -> int:
    """A random positive 63-bit id (fits a signed BIGINT); it says nothing about the user."""
    return secrets.randbits(63) | 1


def stored(row: Sequence[Any]) -> StoredEvent:
    """A database row of EVENT_COLUMNS as a StoredEvent."""
    seq, user, item, typ, ts, event_id, value, request_id = row
    return StoredEvent(int(seq), user, item, typ, float(ts), event_id,
                       None if value is None else float(value), request_id)


def group_histories(users: Sequence[str], rows: Sequence[Sequence[Any]]
                    ) -> dict[str, list[StoredEvent]]:
    """Rows sorted by (user_id, ts, seq) grouped per user; every asked user is a key."""
    out: dict[str, list[StoredEvent]] = {u: [] for u in users}
    for row in rows:
        out[row[1]].append(stored(row))
    return out


def mask_url(url: str) -> str:
    """`url` with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def now() -> float:
    return time.time()


def _finite(x: Any, n: int, field: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise InputError(f"event {n} {field} must be a finite number, got {x!r}")
    return float(x)
