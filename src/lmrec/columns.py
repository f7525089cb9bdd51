"""Column and role names, defined once.

Every table lmrec writes or reads after collection uses these names, so no other module spells
a column name as a string literal.
"""

from __future__ import annotations

from enum import StrEnum

# Canonical event columns (external ids, as collected).
USER = "user"
ITEM = "item"
EVENT = "event"
TIME = "timestamp"  # Int64, Unix seconds (UTC)
VALUE = "value"  # Float64, e.g. a rating or a quantity

# Columns added by preparation.
USER_IDX = "user_idx"  # Int32/Int64, 0..n_users-1
ITEM_IDX = "item_idx"  # 0..n_items-1
WEIGHT = "weight"  # Float32 behaviour weight of the event

EVENT_COLUMNS: tuple[str, ...] = (USER, ITEM, EVENT, TIME, VALUE)
REQUIRED_EVENT_COLUMNS: tuple[str, ...] = (USER, ITEM)

# The behaviour type given to events from a source without an event column.
DEFAULT_EVENT = "interaction"


class Role(StrEnum):
    """What a feature column holds; decides how preparation encodes it."""

    ID = "id"
    CATEGORICAL = "categorical"  # one label per row
    MULTI = "multi"  # several labels per row, e.g. "Action|Comedy"
    NUMERIC = "numeric"  # a number, normalised
    TEXT = "text"  # free text, kept raw for text encoders and TF-IDF
    VECTOR = "vector"  # a fixed-length float vector, e.g. an image embedding
    TIME = "time"  # a date or time stamp, stored as Unix seconds
    IGNORE = "ignore"  # kept out of the prepared dataset
