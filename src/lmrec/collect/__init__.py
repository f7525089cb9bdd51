"""Collect: read events, users and items from files or DataFrames into canonical tables."""

from lmrec.collect.events import ColumnMapping, EventTable, to_events
from lmrec.collect.infer import EventColumns, infer_event_columns
from lmrec.collect.readers import BadRow, BadRowPolicy, Table, read_table
from lmrec.collect.roles import infer_roles

__all__ = [
    "BadRow",
    "BadRowPolicy",
    "ColumnMapping",
    "EventColumns",
    "EventTable",
    "Table",
    "infer_event_columns",
    "infer_roles",
    "read_table",
    "to_events",
]
