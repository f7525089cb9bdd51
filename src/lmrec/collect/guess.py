"""Guess which columns of an event file hold users, items, behaviours, times and values."""

from __future__ import annotations

from collections.abc import Sequence

from lmrec.collect.events import ColumnMapping
from lmrec.errors import InputError, Location

_CANDIDATES: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_id", "userid", "uid", "customer_id", "customerid", "visitorid",
             "visitor_id", "client_id", "member_id", "session_id"),
    "item": ("item", "item_id", "itemid", "iid", "product_id", "productid", "movieid",
             "movie_id", "sku", "article_id", "content_id", "track_id", "book_id", "course_id"),
    "event": ("event", "event_type", "eventtype", "behavior", "behaviour", "behavior_type",
              "behaviour_type", "action", "type", "interaction"),
    "time": ("timestamp", "time", "ts", "datetime", "date", "event_time", "created_at"),
    "value": ("value", "rating", "score", "quantity", "qty", "amount", "weight"),
}


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def guess_mapping(columns: Sequence[str], source: str = "<events>",
                  **given: str | None) -> ColumnMapping:
    """A mapping from well-known column names; `given` (user=..., item=...) always wins."""
    normed = {_norm(c): c for c in columns}
    found: dict[str, str | None] = {}
    for role, names in _CANDIDATES.items():
        if given.get(role):
            found[role] = given[role]
            continue
        found[role] = next((normed[n] for n in names if n in normed), None)
    for role in ("user", "item"):
        if found[role] is None:
            raise InputError(
                f"cannot tell which column holds the {role} ids",
                location=Location(source),
                expected=f"--{role}-col naming one of {list(columns)}",
            )
    return ColumnMapping(user=found["user"] or "user", item=found["item"] or "item",
                         event=found["event"], time=found["time"], value=found["value"])
