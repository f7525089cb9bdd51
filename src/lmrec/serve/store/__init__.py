"""The durable event store behind the service: `open_store(url)` and the records it handles.

    store = open_store("sqlite:///data/events.db")      # or "postgresql://user@host:5432/db"
    store.add_events([EventIn("u1", "i9", "click", event_id="c-123")])
    store.history("u1", limit=50)                        # oldest first
    store.add_impressions([ImpressionIn("r1", "u1", "v3", None, "top-k",
                                        (Slot("i9", 1.0),))])   # what was shown
    store.feedback()                                     # events that name a request_id
    store.delete_user("u1")                              # erasure, with an anonymous audit row

URLs: "sqlite:///relative/path.db", "sqlite:////absolute/path.db", "sqlite:///:memory:"
(SQLite options: ?synchronous=full|normal&pool_size=N), and "postgresql://user@host:port/db"
(any libpq parameter, plus pool_size=N). See `base` for the schema and the two back-end
modules for their durability and concurrency notes.
"""

from __future__ import annotations

from lmrec.errors import ConfigError
from lmrec.serve.store.base import (
    DeleteResult,
    EventIn,
    EventStore,
    IngestResult,
    StoredEvent,
    StoreError,
    mask_url,
)
from lmrec.serve.store.impressions import ImpressionIn, ImpressionWriter, Slot, StoredImpression

__all__ = [
    "DeleteResult",
    "EventIn",
    "EventStore",
    "ImpressionIn",
    "ImpressionWriter",
    "IngestResult",
    "Slot",
    "StoreError",
    "StoredEvent",
    "StoredImpression",
    "open_store",
]


def open_store(url: str) -> EventStore:
    """Open (and create or check the schema of) the store at `url`.

    Raises ConfigError for an unsupported URL and StoreError when the database cannot be
    reached.
    """
    if not isinstance(url, str):
        raise ConfigError(f"store url must be a string, got {type(url).__name__}")
    if url.startswith("sqlite:///"):
        from lmrec.serve.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from lmrec.serve.store.postgres import PostgresStore
        except ImportError as exc:  # psycopg is an optional dependency
            raise ConfigError(f"a PostgreSQL store needs psycopg ({exc}); install "
                              "lmrec[serve]") from None
        return PostgresStore(url)
    raise ConfigError(f"unsupported store url {mask_url(url)!r}: use sqlite:///path/to.db, "
                      "sqlite:///:memory: or postgresql://user@host:port/db")
