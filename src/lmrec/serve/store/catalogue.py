"""The catalogue's rows in the event store: items added, changed or hidden through the API.

    lmrec_catalogue   item_id TEXT PRIMARY KEY, attributes (JSON text), text (NULL: none given),
                      hidden (0/1), updated_at (epoch seconds), version
                      index on version

One row per item the API has touched; a row is replaced, never deleted (hiding an item sets
`hidden`). `attributes` holds only the columns set through the API: for an item of the served
bundle they override its row of the bundle's item table, for a new item they are its row.

Versions. Every write gives its row `max(version) + 1`, inside a transaction that holds the
catalogue's write lock (SQLite: the database's, taken by BEGIN IMMEDIATE; PostgreSQL: an
advisory transaction lock), so versions commit in increasing order and never repeat. A worker
that has read everything up to version v needs only the rows with version > v (`changes`),
and `latest_version` is all it must ask to know whether there are any.

The table is created on first use (CREATE TABLE IF NOT EXISTS, under the same lock on
PostgreSQL, where two sessions creating it at once would collide): `ensure_table` before the
first read (the service's `Catalogue` does when it starts); every write makes sure of it too.
These functions use the SQL stores' transaction helpers and take the store as their first
argument; other stores have no catalogue (ConfigError).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lmrec.errors import ConfigError
from lmrec.serve.store.base import EventStore, SQLEventStore, now
from lmrec.serve.store.checks import check_text

TABLE = "lmrec_catalogue"
_COLUMNS = "item_id, attributes, text, hidden, updated_at, version"
_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        item_id TEXT PRIMARY KEY, attributes TEXT NOT NULL, text TEXT,
        hidden INTEGER NOT NULL DEFAULT 0, updated_at DOUBLE PRECISION NOT NULL,
        version BIGINT NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_version ON {TABLE} (version)",
)
_UPSERT = (f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
           "ON CONFLICT (item_id) DO UPDATE SET attributes = excluded.attributes, "
           "text = excluded.text, hidden = excluded.hidden, "
           "updated_at = excluded.updated_at, version = excluded.version")
# any constant: it serialises catalogue writes (and the table's creation) on PostgreSQL
_PG_LOCK = 0x6C6D63617461


@dataclass(frozen=True)
class CatalogueRow:
    """One item's catalogue record as stored."""

    item: str  # canonical item key (as events store it)
    attributes: dict[str, Any]  # columns set through the API: column -> JSON value
    text: str | None  # the item's text for text encoders, None when not given
    hidden: bool
    updated_at: float
    version: int


@dataclass(frozen=True)
class Change:
    """What a write leaves in an item's row (see `write_item`)."""

    attributes: dict[str, Any]
    text: str | None
    hidden: bool


def write_item(store: EventStore, item: str,
               change: Callable[[CatalogueRow | None], Change]) -> CatalogueRow:
    """Read `item`'s row (None when it has none), store `change(row)` with the next version,
    all in one transaction under the catalogue's write lock (so that a PATCH merges into the
    row as it is, never into a copy another writer has just replaced). An exception from
    `change` rolls back and propagates."""
    sql = _sql_store(store)
    item = check_text(item, "item")
    with _locked_write(sql) as conn:
        found = conn.execute(sql._sql(f"SELECT {_COLUMNS} FROM {TABLE} WHERE item_id = ?"),
                             (item,)).fetchone()
        new = change(None if found is None else _row(found))
        text = None if new.text is None else check_text(new.text, "text")
        top = conn.execute(f"SELECT max(version) FROM {TABLE}").fetchone()
        version = int(top[0] or 0) + 1
        stamp = now()
        conn.execute(sql._sql(_UPSERT), (item, _dumps(new.attributes), text,
                                         int(new.hidden), stamp, version))
    return CatalogueRow(item, dict(new.attributes), text, new.hidden, stamp, version)


def get_item(store: EventStore, item: str) -> CatalogueRow | None:
    """`item`'s row, None when the API never touched it."""
    sql = _sql_store(store)
    with sql._read() as conn:
        found = conn.execute(sql._sql(f"SELECT {_COLUMNS} FROM {TABLE} WHERE item_id = ?"),
                             (check_text(item, "item"),)).fetchone()
    return None if found is None else _row(found)


def changes(store: EventStore, since: int = 0) -> list[CatalogueRow]:
    """Rows written after version `since`, oldest first (all of them for 0)."""
    sql = _sql_store(store)
    with sql._read() as conn:
        rows = conn.execute(sql._sql(f"SELECT {_COLUMNS} FROM {TABLE} WHERE version > ? "
                                     "ORDER BY version"), (int(since),)).fetchall()
    return [_row(r) for r in rows]


def latest_version(store: EventStore) -> int:
    """The version of the latest write, 0 for an empty catalogue."""
    sql = _sql_store(store)
    with sql._read() as conn:
        row = conn.execute(f"SELECT max(version) FROM {TABLE}").fetchone()
    return int(row[0] or 0) if row else 0


def ensure_table(store: EventStore) -> None:
    """Create the catalogue's table if it is missing (cheap when it exists)."""
    with _locked_write(_sql_store(store)):
        pass


def supported(store: EventStore) -> bool:
    """Whether `store` can hold a catalogue (the SQL stores can)."""
    return isinstance(store, SQLEventStore)


# --- helpers -------------------------------------------------------------------------------
def _sql_store(store: EventStore) -> SQLEventStore:
    if not isinstance(store, SQLEventStore):
        raise ConfigError(f"{type(store).__name__} has no catalogue table: use a SQLite or "
                          "PostgreSQL store")
    return store


@contextmanager
def _locked_write(store: SQLEventStore) -> Iterator[Any]:
    """A write transaction holding the catalogue's write lock, with the table in place."""
    with store._write() as conn:
        if store.placeholder == "%s":  # PostgreSQL; SQLite's BEGIN IMMEDIATE is the lock
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
        for statement in _SCHEMA:
            conn.execute(statement)
        yield conn


def _row(r: Any) -> CatalogueRow:
    item, attributes, text, hidden, updated_at, version = r
    return CatalogueRow(str(item), json.loads(attributes), text, bool(hidden),
                        float(updated_at), int(version))


def _dumps(attributes: dict[str, Any]) -> str:
    """JSON text of the attributes (checked by the caller: finite numbers only)."""
    return json.dumps(attributes, allow_nan=False, ensure_ascii=False, sort_keys=True)
