"""What an id and a behaviour type may be, decided once: `data prepare` and the service both
ask here, so a dataset that prepares can be served and an event the service accepts can be
retrained on.

Ids (users and items):

- refused: empty or whitespace-only ids, and ids holding a control character (C0, DEL, C1)
  or an invisible bidirectional-formatting character (U+061C, U+200E/F, U+202A-U+202E,
  U+2066-U+2069: "Trojan source" characters that make an id display as another). `prepare`
  strips the whitespace around a cell first; the service refuses it, as prepare would never
  produce such an id.
- integer ids: a column becomes an integer column only when every id is canonical integer
  text, the way Python prints an int64: `7`, `-7`, `0`; not `07`, `+7`, `-0`, ` 7`, `7.0`.
  Everything else stays a string, so `007` and `7` are two ids, and an integer vocabulary
  knows no `01` (`canonical_int`, used by `IdVocabulary` and by prepare's column typing).

Behaviour types: printable Unicode (`str.isprintable`: no control, format or line-separator
characters; inner spaces are fine), no whitespace at either end, at most 64 characters, so
`view`, `add to cart` and `浏览` are all types.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

MAX_EVENT_TYPE_LENGTH = 64
# canonical int64 text (the range is checked on top: 19 digits can overflow)
_INT_TEXT = r"^(?:0|-?[1-9][0-9]{0,18})$"
_INT = re.compile(_INT_TEXT[1:-1])  # for fullmatch: "$" would also match before a newline
_INT64 = (-(2**63), 2**63 - 1)
# characters no id may hold; written with escapes that Python's `re` and polars' regex engine
# read alike, so the scalar and the column check cannot drift apart
FORBIDDEN_ID_CHARS = r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
_FORBIDDEN = re.compile(FORBIDDEN_ID_CHARS)
ID_RULE = ("a non-empty id without whitespace at either end, control characters or "
           "bidirectional-formatting characters")
EVENT_TYPE_RULE = (f"printable text of 1 to {MAX_EVENT_TYPE_LENGTH} characters without "
                   "control characters or whitespace at either end")


# --- integer ids ------------------------------------------------------------------------------
def canonical_int(value: object) -> int | None:
    """The int64 an id stands for when it is an int or canonical integer text, else None."""
    if isinstance(value, bool) or not (isinstance(value, int | np.integer) or (
            isinstance(value, str) and _INT.fullmatch(value))):
        return None
    v = int(value)
    return v if _INT64[0] <= v <= _INT64[1] else None


def ints_from_text(series: pl.Series) -> pl.Series:
    """`canonical_int` over a String series: Int64 where the text is canonical int64 text,
    null everywhere else."""
    x = pl.col(series.name)
    return series.to_frame().select(
        pl.when(x.str.contains(_INT_TEXT)).then(x.cast(pl.Int64, strict=False))).to_series()


# --- id text ----------------------------------------------------------------------------------
def id_problem(text: str) -> str | None:
    """What is wrong with an id, or None when it may be used."""
    if not text.strip():
        return "an id may not be empty or only whitespace"
    if text != text.strip():
        return "an id may not start or end with whitespace"
    bad = _FORBIDDEN.search(text)
    if bad:
        return (f"an id may not contain control or bidirectional-formatting characters "
                f"(found U+{ord(bad.group()):04X})")
    return None


def bad_id_chars(series: pl.Series) -> np.ndarray:
    """(n,) bool: String ids holding a forbidden character (the column form of the last
    `id_problem` check; prepare strips ids and refuses empty ones on its own)."""
    return series.str.contains(FORBIDDEN_ID_CHARS).fill_null(False).to_numpy()


# --- behaviour types --------------------------------------------------------------------------
def event_type_problem(text: str) -> str | None:
    """What is wrong with a behaviour type, or None when it may be used."""
    if not text or len(text) > MAX_EVENT_TYPE_LENGTH:
        return f"a behaviour type has 1 to {MAX_EVENT_TYPE_LENGTH} characters"
    if text != text.strip():
        return "a behaviour type may not start or end with whitespace"
    if not text.isprintable():
        bad = next(c for c in text if not c.isprintable())
        return (f"a behaviour type may hold printable characters only (found "
                f"U+{ord(bad):04X})")
    return None


def bad_event_types(series: pl.Series) -> np.ndarray:
    """(n,) bool: behaviour types `event_type_problem` refuses (null is not checked here).
    Types are few, so each distinct one is checked once."""
    wrong = [t for t in series.drop_nulls().unique().to_list() if event_type_problem(t)]
    return series.is_in(wrong).fill_null(False).to_numpy() if wrong else np.zeros(
        series.len(), dtype=bool)
