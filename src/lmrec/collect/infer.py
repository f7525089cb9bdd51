"""A role for every column of an event file, each with the reason it was given.

Options win, then well-known names (`user_id`, `timestamp`, ...), then the values: a column
that is a function of the item id (one value per item, e.g. a category) is an item attribute,
of the user id a user attribute; a column of Unix times or ISO-8601 dates is the timestamp; a
column of a few distinct short words is the behaviour type. Nothing else is guessed: such a
column is ignored, and the reason is given so that an option can claim it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import polars as pl

from lmrec import columns as C
from lmrec.collect.cells import is_nested
from lmrec.collect.events import ColumnMapping
from lmrec.collect.guess import _CANDIDATES, _norm
from lmrec.collect.timeparse import read_timestamps
from lmrec.errors import InputError, Location

_SAMPLE = 20_000  # rows whose values decide time and behaviour columns
_MIN_REPEATED_KEYS = 3  # ids seen twice or more before "one value per id" means anything
_BEHAVIOUR_MAX_TYPES = 50
_BEHAVIOUR_MAX_LENGTH = 30
_PLAUSIBLE_FROM = 631_152_000  # 1990-01-01: a number column earlier than this is no event time
_ROLE_NAMES = {"user": "user id", "item": "item id", "event": "behaviour type",
               "time": "timestamp", "value": "value"}


@dataclass(frozen=True)
class ColumnChoice:
    column: str
    role: str  # "user id", "item id", "behaviour type", "timestamp", "value",
    #            "item attribute", "user attribute" or "ignored"
    why: str

    def __str__(self) -> str:
        return f"{self.column!r} -> {self.role} ({self.why})"


@dataclass
class EventColumns:
    """The mapping to use, and what became of every column, in file order."""

    mapping: ColumnMapping
    choices: list[ColumnChoice] = field(default_factory=list)

    @property
    def ignored(self) -> list[ColumnChoice]:
        return [c for c in self.choices if c.role == "ignored"]

    def describe(self) -> dict[str, str]:
        return {c.column: f"{c.role} ({c.why})" for c in self.choices}


def infer_event_columns(
    frame: pl.DataFrame,
    source: str = "<events>",
    *,
    user: str | None = None,
    item: str | None = None,
    event: str | None = None,
    time_col: str | None = None,
    value: str | None = None,
    default_event: str = C.DEFAULT_EVENT,
    time_format: str | None = None,
    allow_negative_time: bool = False,
) -> EventColumns:
    """Roles for every column of `frame`; the options given always win."""
    given = {"user": user, "item": item, "event": event, "time": time_col, "value": value}
    found: dict[str, str] = {}
    why: dict[str, tuple[str, str]] = {}  # column -> (role, reason)
    for role, col in given.items():
        if col:
            found[role] = col
            why[col] = (_ROLE_NAMES[role], f"--{'time' if role == 'time' else role}-col")
    normed = {_norm(c): c for c in frame.columns if c not in why}
    for role, names in _CANDIDATES.items():
        col = next((normed[n] for n in names if n in normed and normed[n] not in why), None)
        if role not in found and col is not None:
            found[role] = col
            why[col] = (_ROLE_NAMES[role], "its name")
    for role in ("user", "item"):
        if role not in found:
            raise InputError(f"cannot tell which column holds the {role} ids",
                             location=Location(source),
                             expected=f"--{role}-col naming one of {list(frame.columns)}")
    present = set(frame.columns)
    judge = _Judge(frame, found["user"] if found["user"] in present else None,
                   found["item"] if found["item"] in present else None,
                   time_format, allow_negative_time)
    item_attrs: list[str] = []
    user_attrs: list[str] = []
    for col in frame.columns:
        if col in why:
            continue
        role, reason = judge.role(col, has_time="time" in found, has_event="event" in found)
        if role == "timestamp":
            found["time"] = col
        elif role == "behaviour type":
            found["event"] = col
        elif role == "item attribute":
            item_attrs.append(col)
        elif role == "user attribute":
            user_attrs.append(col)
        why[col] = (role, reason if role == "ignored" else f"inferred: {reason}")
    mapping = ColumnMapping(user=found["user"], item=found["item"], event=found.get("event"),
                            time=found.get("time"), value=found.get("value"),
                            default_event=default_event, item_attributes=tuple(item_attrs),
                            user_attributes=tuple(user_attrs))
    choices = [ColumnChoice(c, *why[c]) for c in frame.columns if c in why]
    choices += [ColumnChoice(c, *why[c]) for c in why if c not in present]  # reported later
    return EventColumns(mapping, choices)


class _Judge:
    """Looks at the values of one column at a time."""

    def __init__(self, frame: pl.DataFrame, user: str | None, item: str | None,
                 time_format: str | None, allow_negative_time: bool) -> None:
        self.frame = frame
        self.sample = frame.head(_SAMPLE)
        self.keys = {"item": item, "user": user}
        self.repeated: dict[str, int] = {}  # counted on first use: most files need none
        self.time_format = time_format
        self.allow_negative_time = allow_negative_time

    def role(self, col: str, *, has_time: bool, has_event: bool) -> tuple[str, str]:
        s = self.frame[col]
        if is_nested(s.dtype):
            return "ignored", "holds JSON objects or lists"
        text = _text(self.sample[col])
        if text.len() == 0:
            return "ignored", "empty"
        if s.n_unique() == 1:
            return "ignored", "the same value in every row"
        per = [k for k in ("item", "user") if self._function_of(k, col)]
        if per == ["item"] or per == ["user"]:
            return f"{per[0]} attribute", f"one value per {per[0]}"
        if per:
            return "ignored", "one value per user and per item: whose attribute is unclear"
        kind = self._time_kind(self.sample[col])
        if kind is not None:
            if has_time:
                return "ignored", f"{kind}, but the timestamp is taken (--time-col picks one)"
            return "timestamp", kind
        words = _behaviour_words(text)
        if words is not None:
            if has_event:
                return "ignored", (f"{len(words)} distinct short values, but the behaviour type "
                                   "is taken (--event-col picks one)")
            shown = ", ".join(words[:6]) + (", ..." if len(words) > 6 else "")
            return "behaviour type", f"{len(words)} distinct short values: {shown}"
        if text.cast(pl.Float64, strict=False).is_not_null().all():
            return "ignored", f"numbers that vary per event; --value-col {col} uses them"
        return "ignored", "not recognised; --event-col, --time-col or --value-col can use it"

    def _function_of(self, key: str, col: str) -> bool:
        """True when every id of `key` has one value of `col`, shown by enough repeated ids."""
        key_col = self.keys[key]
        if key_col is None:
            return False
        if key not in self.repeated:
            self.repeated[key] = _repeated_keys(self.frame, key_col)
        if self.repeated[key] < _MIN_REPEATED_KEYS:
            return False
        pairs = self.frame.select(pl.struct(key_col, col).n_unique()).item()
        return bool(pairs == self.frame[key_col].n_unique())

    def _time_kind(self, sample: pl.Series) -> str | None:
        secs, problems = read_timestamps(sample, time_format=self.time_format,
                                         allow_negative=self.allow_negative_time)
        if problems or secs.null_count() == secs.len() or secs.n_unique() < 2:
            return None
        if self.time_format is not None:
            return f"date/times in --time-format {self.time_format!r}"
        text = _text(sample)
        numbers = text.cast(pl.Float64, strict=False)
        if numbers.is_null().all():
            return "ISO-8601 date/times"
        lo, hi = secs.min(), secs.max()
        if not numbers.is_not_null().all() or lo is None or hi is None:
            return None  # numbers mixed with dates: not guessed
        if int(lo) < _PLAUSIBLE_FROM or int(hi) > time.time() + 366 * 86_400:  # type: ignore[arg-type]
            return None
        return "Unix times"


def _text(s: pl.Series) -> pl.Series:
    return s.cast(pl.String).str.strip_chars().replace("", None).drop_nulls()


def _repeated_keys(frame: pl.DataFrame, col: str) -> int:
    counts = frame[col].value_counts()
    return int((counts["count"] >= 2).sum())


def _behaviour_words(text: pl.Series) -> list[str] | None:
    """The distinct values when they look like behaviour types, else None."""
    if text.cast(pl.Float64, strict=False).is_not_null().any():
        return None
    words = text.unique().sort()
    mean_len = text.str.len_chars().mean() or 0.0
    if (words.len() > _BEHAVIOUR_MAX_TYPES or 2 * words.len() > text.len()
            or float(mean_len) > _BEHAVIOUR_MAX_LENGTH):  # type: ignore[arg-type]
        return None
    return [str(w) for w in words.to_list()]
