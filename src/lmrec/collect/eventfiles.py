"""Event files as `lmrec data prepare` and `lmrec data inspect` read them: one reader, one
column inference, and a report of what every column became."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmrec import columns as C
from lmrec.collect.events import ColumnMapping, EventTable, to_events
from lmrec.collect.infer import EventColumns, infer_event_columns
from lmrec.collect.readers import BadRowPolicy, read_table


@dataclass(frozen=True)
class EventFileOptions:
    """How to read the event files and which column is which (None: inferred)."""

    delimiter: str | None = None
    encoding: str = "utf-8"
    header: bool = True
    column_names: Sequence[str] | None = None  # names of a headerless file's columns
    user: str | None = None
    item: str | None = None
    event: str | None = None
    time: str | None = None
    value: str | None = None
    default_event: str = C.DEFAULT_EVENT
    time_format: str | None = None
    allow_negative_time: bool = False


@dataclass
class EventFiles:
    tables: list[EventTable]
    mapping: ColumnMapping  # the first file's
    columns: list[tuple[str, EventColumns]]  # each distinct header: its first file, its roles

    def describe(self) -> list[str]:
        """One line per column of each distinct header: what it became, and why."""
        return [f"{path}: column {choice}" for path, cols in self.columns
                for choice in cols.choices]


def read_event_files(
    paths: Sequence[str | Path],
    options: EventFileOptions,
    *,
    on_bad_rows: BadRowPolicy | str = BadRowPolicy.FAIL,
    on_step: Callable[[str], None] | None = None,
) -> EventFiles:
    """Typed events of every file, the mapping, and what became of every column.

    Columns are inferred once per distinct header: files with the same columns share the
    first one's roles.
    """
    step = on_step or (lambda _msg: None)
    tables: list[EventTable] = []
    seen: dict[tuple[str, ...], EventColumns] = {}
    described: list[tuple[str, EventColumns]] = []
    for path in paths:
        step(f"reading {path}")
        t = read_table(path, delimiter=options.delimiter, encoding=options.encoding,
                       header=options.header, column_names=options.column_names,
                       on_bad_rows=on_bad_rows)
        key = tuple(t.frame.columns)
        if key not in seen:
            seen[key] = infer_event_columns(
                t.frame, str(path), user=options.user, item=options.item, event=options.event,
                time_col=options.time, value=options.value,
                default_event=options.default_event, time_format=options.time_format,
                allow_negative_time=options.allow_negative_time)
            described.append((str(path), seen[key]))
        inferred = seen[key]
        et = to_events(t, inferred.mapping, on_bad_rows=on_bad_rows,
                       time_format=options.time_format,
                       allow_negative_time=options.allow_negative_time)
        et.columns = inferred.describe()
        tables.append(et)
        del t  # the raw text columns are the largest thing held: free them before the next
    assert described, "no event files given"
    return EventFiles(tables, described[0][1].mapping, described)
