"""Typed conversion of raw tables into the canonical event table.

The event table has the columns of `lmrec.columns.EVENT_COLUMNS`: user and item ids (Int64 when
every id in the source is an integer, else String), the behaviour type (String), the timestamp
(Int64 Unix seconds, may be null) and the value (Float64, may be null).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec import ids
from lmrec.collect.cells import NESTED_REASON, scalar_cells, show
from lmrec.collect.readers import BadRow, BadRowPolicy, Table
from lmrec.collect.timeparse import parse_timestamps, read_timestamps
from lmrec.errors import InputError, Location

__all__ = ["ColumnMapping", "EventTable", "parse_numbers", "parse_timestamps", "to_events"]


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column plays which canonical role. None: the source has no such column."""

    user: str = C.USER
    item: str = C.ITEM
    event: str | None = None
    time: str | None = None
    value: str | None = None
    default_event: str = C.DEFAULT_EVENT  # behaviour type when there is no event column
    # columns that are a function of the item (user) id: kept as item (user) attributes
    item_attributes: tuple[str, ...] = ()
    user_attributes: tuple[str, ...] = ()

    def pairs(self) -> list[tuple[str, str]]:
        """(canonical name, source name) for every mapped column."""
        out = [(C.USER, self.user), (C.ITEM, self.item)]
        for canon, src in ((C.EVENT, self.event), (C.TIME, self.time), (C.VALUE, self.value)):
            if src is not None:
                out.append((canon, src))
        return out


@dataclass
class EventTable:
    """Canonical events from one source, plus the rows left out on the way."""

    frame: pl.DataFrame
    source: str
    rows_read: int  # rows in the source, bad rows at read time included
    bad_rows: list[BadRow] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    # source column -> what it became ("user id", "timestamp", "item attribute", "ignored")
    columns: dict[str, str] = field(default_factory=dict)
    # the item (user) id column and its attributes, one row per id (first row kept), raw text
    item_attributes: pl.DataFrame | None = None
    user_attributes: pl.DataFrame | None = None
    # a hash of the source columns not in `frame`, one per row: rows that differ only there
    # are not duplicates
    source_key: pl.Series | None = None


def require_columns(table: Table, wanted: Sequence[tuple[str, str]]) -> None:
    """Raise a clear error for the first mapped column the table does not have."""
    for role, col in wanted:
        if col not in table.frame.columns:
            close = difflib.get_close_matches(col, table.frame.columns, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(
                f"required {role} column {col!r} not found{hint}",
                location=Location(table.source, column=col),
                expected=f"one of the columns {table.frame.columns}",
            )


def to_events(
    table: Table,
    mapping: ColumnMapping,
    *,
    on_bad_rows: BadRowPolicy | str = BadRowPolicy.FAIL,
    time_format: str | None = None,
    allow_negative_time: bool = False,
) -> EventTable:
    """Select, rename and type the mapped columns of `table`; validate every row.

    Under the FAIL policy the first bad value raises `InputError` naming its row and column;
    under SKIP every bad row is dropped and returned in `bad_rows`. Timestamps are Unix
    numbers or ISO-8601 text unless `time_format` (strptime syntax) is given; negative Unix
    numbers are bad unless `allow_negative_time`.
    """
    policy = BadRowPolicy(on_bad_rows)
    attributes = [*mapping.item_attributes, *mapping.user_attributes]
    require_columns(table, [(canon, src) for canon, src in mapping.pairs()]
                    + [("attribute", c) for c in attributes])
    raw = table.frame
    rows_read = raw.height + len(table.bad_rows)
    if raw.height == 0:
        raise InputError("no event rows", location=Location(table.source))

    typed: dict[str, pl.Series] = {}
    problems: list[tuple[np.ndarray, str, str, str]] = []  # (bad mask, column, reason, expected)

    cells: dict[str, pl.Series] = {}
    for _, src in mapping.pairs():  # an object or a list is never one value
        cells[src], nested = scalar_cells(raw[src], table.nested.get(src))
        problems.append((nested, src, NESTED_REASON, "a single value (text or a number)"))
    for canon, src in ((C.USER, mapping.user), (C.ITEM, mapping.item)):
        series, bad = _id_column(cells[src])
        typed[canon] = series.alias(canon)
        problems.append((bad, src, f"empty {canon} id", f"a non-empty {canon} id"))
        if series.dtype == pl.String:
            problems.append((ids.bad_id_chars(series), src, f"invalid {canon} id", ids.ID_RULE))
    if mapping.event is not None:
        ev = _as_string(cells[mapping.event]).str.strip_chars()
        typed[C.EVENT] = ev.replace("", None).alias(C.EVENT)
        problems.append((ids.bad_event_types(typed[C.EVENT]), mapping.event,
                         "invalid behaviour type", ids.EVENT_TYPE_RULE))
    else:
        typed[C.EVENT] = pl.repeat(mapping.default_event, raw.height, eager=True).alias(C.EVENT)
    if mapping.time is not None:
        ts, time_problems = read_timestamps(cells[mapping.time], time_format=time_format,
                                            allow_negative=allow_negative_time)
        typed[C.TIME] = ts.alias(C.TIME)
        problems += [(p.mask, mapping.time, p.reason, p.expected) for p in time_problems]
    else:
        typed[C.TIME] = pl.repeat(None, raw.height, dtype=pl.Int64, eager=True).alias(C.TIME)
    if mapping.value is not None:
        val, bad = parse_numbers(cells[mapping.value])
        typed[C.VALUE] = val.alias(C.VALUE)
        problems.append((bad, mapping.value, "non-numeric value", "a number"))
    else:
        typed[C.VALUE] = pl.repeat(None, raw.height, dtype=pl.Float64, eager=True).alias(C.VALUE)

    frame = pl.DataFrame([typed[c] for c in C.EVENT_COLUMNS])
    bad_rows: list[BadRow] = list(table.bad_rows)
    any_bad = np.zeros(raw.height, dtype=bool)
    if policy is BadRowPolicy.FAIL:
        _raise_first(table, problems)
    for mask, col, reason, expected in problems:
        positions = np.flatnonzero(mask & ~any_bad)
        if positions.size == 0:
            continue
        # Locating lines scans the file, so only the first few examples get line numbers.
        located = table.locate(positions[:20], column=col)
        for i, pos in enumerate(positions):
            loc = located[i] if i < len(located) else Location(table.source, row=int(pos) + 1,
                                                               column=col)
            bad_rows.append(BadRow(loc, reason, f"{loc.describe()}: {reason}; expected "
                                   f"{expected}, found {show(raw[col][int(pos)])!r}"))
        any_bad |= mask
    if any_bad.any():
        frame = frame.filter(pl.Series(~any_bad))
    if frame.height == 0:
        raise InputError("no valid event rows left after skipping bad rows",
                         location=Location(table.source))
    mapped = {src for _, src in mapping.pairs()}
    unmapped = [c for c in raw.columns if c not in mapped]
    keep = pl.Series(~any_bad) if any_bad.any() else None
    return EventTable(
        frame=frame, source=table.source, rows_read=rows_read, bad_rows=bad_rows,
        ignored_columns=[c for c in unmapped if c not in attributes],
        columns=_column_roles(raw.columns, mapping),
        item_attributes=_attribute_frame(raw, mapping.item, C.ITEM, mapping.item_attributes,
                                         keep),
        user_attributes=_attribute_frame(raw, mapping.user, C.USER, mapping.user_attributes,
                                         keep),
        source_key=_source_key(raw.select(unmapped), keep) if unmapped else None,
    )


def _raise_first(table: Table, problems: list[tuple[np.ndarray, str, str, str]]) -> None:
    """Raise for the earliest bad row (the first problem listed for it, on a tie)."""
    first: tuple[int, int] | None = None
    for k, (mask, *_) in enumerate(problems):
        hits = np.flatnonzero(mask)
        if hits.size and (first is None or hits[0] < first[0]):
            first = (int(hits[0]), k)
    if first is None:
        return
    pos, k = first
    _, col, reason, expected = problems[k]
    loc = table.locate([pos], column=col)[0]
    raise InputError(reason, location=loc, expected=expected,
                     found=show(table.frame[col][pos]))


_ROLE_NAMES = {C.USER: "user id", C.ITEM: "item id", C.EVENT: "behaviour type",
               C.TIME: "timestamp", C.VALUE: "value"}


def _column_roles(columns: Sequence[str], mapping: ColumnMapping) -> dict[str, str]:
    roles = {src: _ROLE_NAMES[canon] for canon, src in mapping.pairs()}
    roles.update({c: "item attribute" for c in mapping.item_attributes})
    roles.update({c: "user attribute" for c in mapping.user_attributes})
    return {c: roles.get(c, "ignored") for c in columns}


def _attribute_frame(raw: pl.DataFrame, id_col: str, canon: str, attrs: Sequence[str],
                     keep: pl.Series | None) -> pl.DataFrame | None:
    """The id column (named `canon`) and its attributes, the first row of each id."""
    attrs = [a for a in attrs if a != canon]
    if not attrs:
        return None
    frame = raw.select(pl.col(id_col).alias(canon), *attrs)
    if keep is not None:
        frame = frame.filter(keep)
    return frame.unique(subset=[canon], keep="first", maintain_order=True)


def _source_key(extra: pl.DataFrame, keep: pl.Series | None) -> pl.Series:
    """One hash per row of the unmapped columns, so that deduplication compares every source
    column without holding their text."""
    if keep is not None:
        extra = extra.filter(keep)
    return extra.hash_rows(seed=0x6C6D726563).alias("__source_key")


def _as_string(series: pl.Series) -> pl.Series:
    return series if series.dtype == pl.String else series.cast(pl.String)


def _id_column(series: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Ids as Int64 when every id is canonical integer text, else as stripped strings. Returns
    the mask of empty ids."""
    if series.dtype.is_integer():
        return series.cast(pl.Int64), series.is_null().to_numpy()
    s = _as_string(series).str.strip_chars()
    bad = (s.is_null() | (s == "")).to_numpy()
    # Integers only when every id is canonical integer text: "007", "+7" or "7.0" would not
    # survive the trip to an integer and back, so such a column stays strings (lmrec.ids).
    as_int = ids.ints_from_text(s)
    if (as_int.is_not_null().to_numpy() | bad).all():
        return as_int, bad
    return s, bad


def unify_id_dtypes(frames: list[pl.DataFrame], cols: Sequence[str]) -> list[pl.DataFrame]:
    """Cast id columns to String in every frame when any frame holds them as String."""
    for col in cols:
        if any(f[col].dtype == pl.String for f in frames if col in f.columns):
            frames = [
                f.with_columns(pl.col(col).cast(pl.String)) if col in f.columns else f
                for f in frames
            ]
    return frames


def parse_numbers(series: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Float64 values; empty cells are null (missing), anything else unparseable is bad."""
    if series.dtype.is_numeric():
        s, out = series, series.cast(pl.Float64)
    else:
        s = _as_string(series).str.strip_chars().replace("", None)
        out = s.cast(pl.Float64, strict=False)
    # "inf" and "nan" are no values either
    bad = (s.is_not_null() & ~out.is_finite().fill_null(False)).to_numpy()
    if bad.any():
        out = out.scatter(np.flatnonzero(bad), None)
    return out, bad
