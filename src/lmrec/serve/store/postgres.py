"""The PostgreSQL event store, through psycopg 3.

Durability: every write is one transaction committed with the server's default
`synchronous_commit = on`, so it is on disk (WAL flushed) when `add_events` returns.

Ingest: a batch is one `INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING`: a single
statement and a single round trip however many events, and the row count it reports is the
number of events newly stored.

Concurrency: a small lock-protected pool (psycopg_pool is not a dependency) lends each thread
its own connection, in autocommit mode with explicit transactions where a write spans several
statements. Two writers racing on the same (user_id, event_id) serialise on the unique index:
the second waits for the first to commit, then skips the row.

Isolation: tables are created in the first schema of the connection's search_path, so a URL
such as `postgresql://u@h/db?options=-csearch_path%3Dmy_schema` keeps deployments or test runs
apart in one database.

Erasure: deleted rows become dead tuples that autovacuum reclaims; run VACUUM on the events
table when a deletion must leave the data files at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

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
    mask_url,
    now,
)
from lmrec.serve.store.pool import ConnectionPool, parse_pool_size

DEFAULT_POOL = 8
CONNECT_TIMEOUT_S = 10

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS lmrec_schema (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS lmrec_events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id TEXT NOT NULL, item_id TEXT NOT NULL, type TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL, event_id TEXT, value DOUBLE PRECISION, request_id TEXT)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS lmrec_events_user_event_id "
    "ON lmrec_events (user_id, event_id)",
    "CREATE INDEX IF NOT EXISTS lmrec_events_user ON lmrec_events (user_id, ts, seq)",
    """CREATE TABLE IF NOT EXISTS lmrec_user_state (
        user_id TEXT NOT NULL, key TEXT NOT NULL, value BYTEA NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (user_id, key))""",
    """CREATE TABLE IF NOT EXISTS lmrec_deletions (
        audit_id BIGINT PRIMARY KEY, deleted_at DOUBLE PRECISION NOT NULL,
        events_removed BIGINT NOT NULL, state_removed BIGINT NOT NULL,
        outcome TEXT NOT NULL DEFAULT 'erased')""",
    """CREATE TABLE IF NOT EXISTS lmrec_impressions (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE, request_id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL, user_id TEXT, model_version TEXT NOT NULL, arm TEXT,
        policy TEXT NOT NULL, slate TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS lmrec_impressions_user ON lmrec_impressions (user_id)",
    "CREATE INDEX IF NOT EXISTS lmrec_impressions_ts ON lmrec_impressions (ts)",
)
# ORDER BY the array position: identity values then follow the order the batch was sent in
_INSERT = """
INSERT INTO lmrec_events (user_id, item_id, type, ts, event_id, value, request_id)
SELECT u, i, t, ts, e, v, r
FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::text[], %s::float8[],
            %s::text[])
     WITH ORDINALITY AS batch (u, i, t, ts, e, v, r, n)
ORDER BY n
ON CONFLICT (user_id, event_id) DO NOTHING"""
_HISTORY = (f"SELECT {EVENT_COLUMNS} FROM lmrec_events WHERE user_id = ANY(%s) "
            "ORDER BY user_id, ts, seq")
_HISTORY_LIMIT = (
    f"SELECT {EVENT_COLUMNS} FROM (SELECT {EVENT_COLUMNS}, row_number() OVER "
    "(PARTITION BY user_id ORDER BY ts DESC, seq DESC) AS rn FROM lmrec_events "
    "WHERE user_id = ANY(%s)) latest "
    "WHERE rn <= %s ORDER BY user_id, ts, seq")
# any constant works: it only serialises concurrent schema set-up in this database
_SCHEMA_LOCK = 0x6C6D726563


class PostgresStore(SQLEventStore):
    """Events in PostgreSQL tables. See the module docstring."""

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        self.url = mask_url(url)
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        # pool_size is ours; everything else is a libpq parameter
        size_raw = [v for k, v in query if k == "pool_size"]
        libpq_url = urlunsplit(parts._replace(
            query=urlencode([(k, v) for k, v in query if k != "pool_size"])))
        try:
            self._params = conninfo_to_dict(libpq_url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"store url {self.url!r} is not a valid PostgreSQL URL: "
                              f"{exc}") from None
        self._params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
        self._params.setdefault("application_name", "lmrec")
        size = parse_pool_size(size_raw[-1] if size_raw else None, DEFAULT_POOL)
        self._pool: ConnectionPool[psycopg.Connection] = ConnectionPool(
            self._connect, psycopg.Connection.close, _healthy, size, self.url)
        with self._write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
            self._check_schema(conn)

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(**self._params, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.url}: {exc}".strip()) from exc

    def _store_errors(self) -> AbstractContextManager[None]:
        return _store_errors(self.url)

    def _columns(self, conn: psycopg.Connection, table: str) -> set[str]:
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                            "table_schema = current_schema() AND table_name = %s", (table,))
        return {name for (name,) in rows}

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection]:
        with self._read() as conn, conn.transaction():
            yield conn

    # --- EventStore -------------------------------------------------------------------
    def add_events(self, events: Sequence[EventIn], *,
                   count_items: AbstractSet[str] = frozenset()) -> IngestResult:
        rows = event_rows(events, now())
        if not rows:
            return IngestResult(0, 0)
        columns = [list(col) for col in zip(*rows, strict=True)]
        counted = 0
        with self._read() as conn:  # one statement in autocommit: one transaction
            if count_items:  # the items of the rows inserted, to count those asked about
                cur = conn.execute(_INSERT + " RETURNING item_id", columns)
                counted = sum(item in count_items for (item,) in cur.fetchall())
            else:
                cur = conn.execute(_INSERT, columns)
            accepted = cur.rowcount
        return IngestResult(accepted, len(rows) - accepted, counted)

    def histories(self, users: Sequence[str], limit: int | None = None
                  ) -> dict[str, list[StoredEvent]]:
        users = [check_text(u, "user") for u in users]
        limit = check_limit(limit)
        if not users:
            return {}
        wanted = sorted(set(users))
        with self._read() as conn:
            if limit is None:
                rows = conn.execute(_HISTORY, (wanted,)).fetchall()
            else:
                rows = conn.execute(_HISTORY_LIMIT, (wanted, limit)).fetchall()
        return group_histories(users, rows)


def _healthy(conn: psycopg.Connection) -> bool:
    """Reusable: open, not broken, and not left inside a transaction."""
    return (not conn.closed and not conn.broken
            and conn.info.transaction_status == pq.TransactionStatus.IDLE)


@contextmanager
def _store_errors(url: str) -> Iterator[None]:
    """Failures of the server or the connection (lost, refused, disk full, an internal error) as
    StoreError; the pool then drops a broken connection. Errors in the statement itself
    (ProgrammingError, DataError) are bugs and pass through."""
    try:
        yield
    except (psycopg.ProgrammingError, psycopg.DataError):
        raise
    except psycopg.Error as exc:
        raise StoreError(f"{url}: {exc}".strip()) from exc
