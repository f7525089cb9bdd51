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
from lmrec.collect.readers import BadRow, BadRowPolicy, Table
from lmrec.errors import InputError, Location

# Unix timestamps above these magnitudes are taken as milliseconds / microseconds.
_MS_THRESHOLD = 1e11
_US_THRESHOLD = 1e14


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column plays which canonical role. None: the source has no such column."""

    user: str = C.USER
    item: str = C.ITEM
    event: str | None = None
    time: str | None = None
    value: str | None = None
    default_event: str = C.DEFAULT_EVENT  # behaviour type when there is no event column

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
) -> EventTable:
    """Select, rename and type the mapped columns of `table`; validate every row.

    Under the FAIL policy the first bad value raises `InputError` naming its row and column;
    under SKIP every bad row is dropped and returned in `bad_rows`.
    """
    policy = BadRowPolicy(on_bad_rows)
    require_columns(table, [(canon, src) for canon, src in mapping.pairs()])
    raw = table.frame
    rows_read = raw.height + len(table.bad_rows)
    if raw.height == 0:
        raise InputError("no event rows", location=Location(table.source))

    typed: dict[str, pl.Series] = {}
    problems: list[tuple[np.ndarray, str, str, str]] = []  # (bad mask, column, reason, expected)

    for canon, src in ((C.USER, mapping.user), (C.ITEM, mapping.item)):
        series, bad = _id_column(raw[src])
        typed[canon] = series.alias(canon)
        problems.append((bad, src, f"empty {canon} id", f"a non-empty {canon} id"))
    if mapping.event is not None:
        ev = _as_string(raw[mapping.event]).str.strip_chars()
        typed[C.EVENT] = ev.replace("", None).alias(C.EVENT)
    else:
        typed[C.EVENT] = pl.repeat(mapping.default_event, raw.height, eager=True).alias(C.EVENT)
    if mapping.time is not None:
        ts, bad = parse_timestamps(raw[mapping.time])
        typed[C.TIME] = ts.alias(C.TIME)
        problems.append(
            (bad, mapping.time, "unparseable timestamp",
             "a Unix timestamp or an ISO-8601 date/time")
        )
    else:
        typed[C.TIME] = pl.repeat(None, raw.height, dtype=pl.Int64, eager=True).alias(C.TIME)
    if mapping.value is not None:
        val, bad = parse_numbers(raw[mapping.value])
        typed[C.VALUE] = val.alias(C.VALUE)
        problems.append((bad, mapping.value, "non-numeric value", "a number"))
    else:
        typed[C.VALUE] = pl.repeat(None, raw.height, dtype=pl.Float64, eager=True).alias(C.VALUE)

    frame = pl.DataFrame([typed[c] for c in C.EVENT_COLUMNS])
    bad_rows: list[BadRow] = list(table.bad_rows)
    any_bad = np.zeros(raw.height, dtype=bool)
    for mask, col, reason, expected in problems:
        positions = np.flatnonzero(mask & ~any_bad)
        if positions.size == 0:
            continue
        if policy is BadRowPolicy.FAIL:
            loc = table.locate(positions[:1], column=col)[0]
            raise InputError(reason, location=loc, expected=expected,
                             found=_show(raw[col][int(positions[0])]))
        # Locating lines scans the file, so only the first few examples get line numbers.
        located = table.locate(positions[:20], column=col)
        for i, pos in enumerate(positions):
            loc = located[i] if i < len(located) else Location(table.source, row=int(pos) + 1,
                                                               column=col)
            bad_rows.append(BadRow(loc, reason, f"{loc.describe()}: {reason}; expected "
                                   f"{expected}, found {_show(raw[col][int(pos)])!r}"))
        any_bad |= mask
    if any_bad.any():
        frame = frame.filter(pl.Series(~any_bad))
    if frame.height == 0:
        raise InputError("no valid event rows left after skipping bad rows",
                         location=Location(table.source))
    mapped = {src for _, src in mapping.pairs()}
    ignored = [c for c in raw.columns if c not in mapped]
    return EventTable(frame=frame, source=table.source, rows_read=rows_read, bad_rows=bad_rows,
                      ignored_columns=ignored)


def _show(value: object) -> str:
    return "" if value is None else str(value)


def _as_string(series: pl.Series) -> pl.Series:
    return series if series.dtype == pl.String else series.cast(pl.String)


def _id_column(series: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Ids as Int64 when every id is an integer, else as stripped strings. Returns the bad mask."""
    if series.dtype.is_integer():
        return series.cast(pl.Int64), series.is_null().to_numpy()
    s = _as_string(series).str.strip_chars()
    bad = (s.is_null() | (s == "")).to_numpy()
    as_int = s.cast(pl.Int64, strict=False)
    # Leading zeros ("007") would be lost as integers, so such ids stay strings.
    if (as_int.is_not_null().to_numpy() | bad).all() and not s.str.contains(r"^[+-]?0\d").any():
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
        return series.cast(pl.Float64), np.zeros(series.len(), dtype=bool)
    s = _as_string(series).str.strip_chars().replace("", None)
    out = s.cast(pl.Float64, strict=False)
    bad = (out.is_null() & s.is_not_null()).to_numpy()
    return out, bad


def parse_timestamps(series: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Unix seconds (Int64) from numbers (s, ms or us by magnitude) or ISO-8601 strings."""
    if series.dtype.is_temporal():
        return _datetime_to_seconds(series), np.zeros(series.len(), dtype=bool)
    if series.dtype.is_numeric():
        return _numeric_to_seconds(series.cast(pl.Float64)), np.zeros(series.len(), dtype=bool)
    s = _as_string(series).str.strip_chars().replace("", None)
    num = s.cast(pl.Float64, strict=False)
    secs = _numeric_to_seconds(num)  # numbers where they parse, dates elsewhere
    # Polars infers one date format from the first value; a column mixing formats (or naive
    # and zoned times) is parsed group by group until nothing more parses.
    for _ in range(8):
        todo = (secs.is_null() & s.is_not_null()).to_numpy()
        if not todo.any():
            break
        pos = np.flatnonzero(todo)
        got = _dates_to_seconds(s.gather(pos))
        if got.null_count() == got.len():
            break
        secs = secs.scatter(pos, got)
    bad = (secs.is_null() & s.is_not_null()).to_numpy()
    return secs, bad


def _dates_to_seconds(s: pl.Series) -> pl.Series:
    parsed = s.str.to_datetime(strict=False, time_unit="us", time_zone="UTC")
    if parsed.is_null().all():
        # a naive format polars did not guess: try the common explicit ones
        for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d", "%d/%m/%Y %H:%M"):
            parsed = s.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone(
                "UTC")
            if parsed.is_not_null().any():
                break
    return _datetime_to_seconds(parsed)


def _numeric_to_seconds(num: pl.Series) -> pl.Series:
    """Seconds from seconds, milliseconds or microseconds, judged value by value."""
    a = pl.col("x").abs()
    x = pl.col("x")
    out = pl.DataFrame({"x": num}).select(
        pl.when(a > _US_THRESHOLD).then(x / 1e6).when(a > _MS_THRESHOLD).then(x / 1e3)
        .otherwise(x).floor().cast(pl.Int64)
    )
    return out.to_series().alias(num.name)


def _datetime_to_seconds(series: pl.Series) -> pl.Series:
    if series.dtype == pl.Date:
        series = series.cast(pl.Datetime("us"))
    return series.dt.epoch("s").cast(pl.Int64)
