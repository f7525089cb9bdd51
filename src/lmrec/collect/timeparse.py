"""Timestamps to Unix seconds, vectorised, without guessing.

Accepted by default: Unix numbers (seconds, milliseconds, microseconds or nanoseconds, judged
value by value by magnitude) and ISO-8601 text (`2024-03-01`, `2024-03-01T10:00:00Z`,
`2024-03-01 10:00:00+02:00`; naive times are UTC). Anything else (`03/01/2024`, `1 March
2024`) needs an explicit strptime format: day-first and month-first dates cannot be told apart
from the values. Every value that cannot be read is returned as a problem with its reason;
nothing is dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from lmrec.errors import InputError

# Unix numbers above these magnitudes are milliseconds / microseconds / nanoseconds.
_MS = 1e11
_US = 1e14
_NS = 1e17
_MAX = 1e20  # nanoseconds reach the year 5138 here; anything larger is not a Unix time
_YYYYMMDD = (19000101, 21001231)
_DIRECTIVES = set("YCymbBhdeaAwuUWGgVjDxFvHkIlPpMSfRTXrZzsctn%+")

_ISO = (r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d{1,9})?)?"
        r"(Z|[+-]\d{2}(?::?\d{2})?)?)?$")
_DAY_MONTH = r"^(\d{1,2})([/.\-])(\d{1,2})[/.\-](\d{2}|\d{4})(?:\D.*)?$"

EXPECTED = ("a Unix timestamp or an ISO-8601 date/time such as 2024-03-01 or "
            "2024-03-01T10:00:00Z (for other formats pass --time-format, e.g. '%d/%m/%Y')")


@dataclass(frozen=True)
class TimeProblem:
    """Values of one kind that are not timestamps: a row mask, a reason and the fix."""

    mask: np.ndarray
    reason: str
    expected: str


def parse_timestamps(
    series: pl.Series, *, time_format: str | None = None, allow_negative: bool = False
) -> tuple[pl.Series, np.ndarray]:
    """Unix seconds (Int64, null where missing or bad) and the mask of bad values."""
    secs, problems = read_timestamps(series, time_format=time_format,
                                     allow_negative=allow_negative)
    bad = np.zeros(series.len(), dtype=bool)
    for p in problems:
        bad |= p.mask
    return secs, bad


def read_timestamps(
    series: pl.Series, *, time_format: str | None = None, allow_negative: bool = False
) -> tuple[pl.Series, list[TimeProblem]]:
    """Unix seconds (Int64) and the problems found, each with its rows, reason and fix.

    Empty cells are missing (null), not bad.
    """
    name = series.name
    if series.dtype.is_temporal():
        return _datetime_to_seconds(series).alias(name), []
    if series.dtype.is_numeric():
        exact = series.cast(pl.Int64, strict=False) if series.dtype.is_integer() else None
        if exact is not None and exact.null_count() == series.null_count():
            secs, problems = _numbers(exact, None, allow_negative)
        else:  # floats, and integers beyond Int64 (UInt64, Int128)
            secs, problems = _numbers(None, series.cast(pl.Float64), allow_negative)
        return secs.alias(name), problems
    s = series.cast(pl.String).str.strip_chars().replace("", None)
    if time_format is not None:
        secs = _formatted(s, time_format)
        bad = pl.DataFrame({"s": s, "t": secs}).select(
            pl.col("s").is_not_null() & pl.col("t").is_null()).to_series()
        problems: list[TimeProblem] = []
        _add(problems, bad, "timestamp not in the given --time-format",
             f"a date/time in the format {time_format!r}")
        return secs.alias(name), problems
    as_int = s.cast(pl.Int64, strict=False)  # the common case: every value an integer
    rest = (s.is_not_null() & as_int.is_null()).to_numpy()
    as_float = None
    if rest.any():  # decimals, exponents, "inf", dates: floats only where they are needed
        as_float = s.cast(pl.Float64, strict=False).scatter(np.flatnonzero(~rest), None)
    secs, problems = _numbers(as_int, as_float, allow_negative, digits=s)
    if as_float is not None:
        todo = rest & as_float.is_null().to_numpy()
        if todo.any():
            pos = np.flatnonzero(todo)
            got = _iso_to_seconds(s.gather(pos))
            secs = secs.scatter(pos, got)
            failed = np.zeros(s.len(), dtype=bool)
            failed[pos] = got.is_null().to_numpy()
            if failed.any():
                problems += _text_problems(s, failed)
    return secs.alias(name), problems


# --- numbers ----------------------------------------------------------------------------------
def _numbers(as_int: pl.Series | None, as_float: pl.Series | None, allow_negative: bool,
             digits: pl.Series | None = None) -> tuple[pl.Series, list[TimeProblem]]:
    """Seconds from Unix numbers of any unit, judged value by value by magnitude: `as_int`
    (Int64) where the value is an integer, else `as_float`. Non-finite, huge, negative and
    YYYYMMDD-like numbers are problems (the last only for 8-digit text in `digits`)."""
    cols = {k: v for k, v in (("i", as_int), ("f", as_float)) if v is not None}
    i = pl.col("i") if as_int is not None else pl.lit(None, dtype=pl.Int64)
    f = pl.col("f") if as_float is not None else pl.lit(None, dtype=pl.Float64)
    ia, fa = i.abs(), f.abs()
    from_int = (pl.when(ia <= _MS).then(i).when(ia <= _US).then(i // 1_000)
                .when(ia <= _NS).then(i // 1_000_000).otherwise(i // 1_000_000_000))
    from_float = (pl.when(fa <= _MS).then(f).when(fa <= _US).then(f / 1e3)
                  .when(fa <= _NS).then(f / 1e6).otherwise(f / 1e9)).floor()
    finite = f.is_finite().fill_null(False)
    exprs = {
        "secs": pl.coalesce(from_int, from_float.cast(pl.Int64, strict=False)),
        "nonfinite": f.is_not_null() & ~finite,
        "huge": finite & (fa >= _MAX),
        "negative": ((i < 0).fill_null(False) | (finite & (f < 0) & (fa < _MAX))),
        "datelike": i.is_between(*_YYYYMMDD).fill_null(False),
    }
    if allow_negative:
        del exprs["negative"]
    if as_int is None:
        del exprs["datelike"]
    out = pl.DataFrame(cols).select(**exprs)
    problems: list[TimeProblem] = []
    _add(problems, out["nonfinite"], "timestamp is not a finite number",
         "a Unix timestamp (a finite number) or an ISO-8601 date/time")
    _add(problems, out["huge"], "timestamp out of range",
         "a Unix timestamp in seconds, milliseconds, microseconds or nanoseconds")
    if "negative" in out.columns:
        _add(problems, out["negative"], "negative timestamp",
             "a Unix timestamp at or after 1970-01-01 (pass --allow-negative-time to accept "
             "earlier times)")
    if "datelike" in out.columns and out["datelike"].any():
        datelike = out["datelike"]
        if digits is not None:
            datelike = datelike & digits.str.contains(r"^\d{8}$").fill_null(False)
        datelike = datelike & as_int.cast(pl.String).str.to_date(  # type: ignore[union-attr]
            "%Y%m%d", strict=False).is_not_null()
        _add(problems, datelike, "number that looks like a date (YYYYMMDD)",
             "Unix seconds; for dates written as YYYYMMDD pass --time-format %Y%m%d")
    secs = out["secs"]
    if problems:
        mask = np.logical_or.reduce([p.mask for p in problems])
        secs = secs.scatter(np.flatnonzero(mask), None)
    return secs, problems


def _add(problems: list[TimeProblem], mask: pl.Series, reason: str, expected: str) -> None:
    if mask.any():
        problems.append(TimeProblem(mask.fill_null(False).to_numpy(), reason, expected))


# --- text -------------------------------------------------------------------------------------
def _iso_to_seconds(s: pl.Series) -> pl.Series:
    """Seconds from ISO-8601 text; null where the text is not ISO-8601 or not a valid time."""
    parts = s.str.extract_groups(_ISO).struct.unnest()
    date, hh, mm, ss, zone = (parts[c] for c in parts.columns)
    zone = (zone.str.replace("Z", "+00:00", literal=True).str.replace(r"^([+-]\d{2})$", "$1:00")
            .str.replace(r"^([+-]\d{2})(\d{2})$", "$1:$2"))
    canonical = pl.DataFrame({"d": date, "h": hh, "m": mm, "s": ss, "z": zone}).select(
        pl.concat_str(pl.col("d"), pl.lit("T"), pl.col("h").fill_null("00"), pl.lit(":"),
                      pl.col("m").fill_null("00"), pl.lit(":"), pl.col("s").fill_null("00"),
                      pl.col("z").fill_null("+00:00"))
    ).to_series()
    parsed = canonical.str.to_datetime("%Y-%m-%dT%H:%M:%S%z", strict=False, time_unit="us",
                                       time_zone="UTC")
    return _datetime_to_seconds(parsed)


def _text_problems(s: pl.Series, failed: np.ndarray) -> list[TimeProblem]:
    """Split unreadable text into ambiguous day/month dates and the rest."""
    groups = s.str.extract_groups(_DAY_MONTH).struct.unnest()
    first = groups[groups.columns[0]].cast(pl.Int32, strict=False)
    second = groups[groups.columns[2]].cast(pl.Int32, strict=False)
    ambiguous = ((first <= 12) & (second <= 12) & (first >= 1) & (second >= 1)).fill_null(
        False).to_numpy() & failed
    out = []
    if ambiguous.any():
        out.append(TimeProblem(
            ambiguous, "ambiguous date (day/month or month/day?)",
            "an ISO-8601 date such as 2024-03-01, or pass --time-format: '%d/%m/%Y' if the "
            "day comes first, '%m/%d/%Y' if the month does"))
    rest = failed & ~ambiguous
    if rest.any():
        out.append(TimeProblem(rest, "unparseable timestamp", EXPECTED))
    return out


def check_time_format(fmt: str) -> None:
    """Refuse a format with a directive strptime does not know (polars would read nothing)."""
    for m in re.finditer(r"%(?:[-_0^#]?\d?\.?\d?[a-zA-Z%+]|:{1,3}z)?", fmt):
        if m.group(0) == "%" or m.group(0)[-1] not in _DIRECTIVES:
            raise InputError(f"--time-format {fmt!r}: unknown directive {m.group(0)!r}",
                             expected="a strptime format such as '%d/%m/%Y %H:%M' (directives "
                                      "%Y %m %d %H %M %S %f %z %b %p ...)")


def _formatted(s: pl.Series, fmt: str) -> pl.Series:
    check_time_format(fmt)
    try:
        parsed = s.str.to_datetime(fmt, strict=False, time_unit="us")
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise InputError(f"--time-format {fmt!r} cannot be used ({exc})".split("\n")[0],
                         expected="a strptime format such as '%d/%m/%Y %H:%M'") from None
    tz = getattr(parsed.dtype, "time_zone", None)
    parsed = parsed.dt.convert_time_zone("UTC") if tz else parsed.dt.replace_time_zone("UTC")
    return _datetime_to_seconds(parsed)


def _datetime_to_seconds(series: pl.Series) -> pl.Series:
    if series.dtype == pl.Date:
        series = series.cast(pl.Datetime("us"))
    return series.dt.epoch("s").cast(pl.Int64)
