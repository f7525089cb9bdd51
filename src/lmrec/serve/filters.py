"""Item filters of a request or a rule, on the bundle's item table.

    column:value         equal (text ignores case; "year:1995" matches 1995.0)
    column:a|b           either value
    column:lo..hi        a numeric range, both ends included; "year:1990.." or "price:..100"
                         leave one end open
    column<x  column<=x  column>x  column>=x      numeric comparisons, e.g. "price<100"

A multi-valued column (a list per item) matches when any of its values does. Items without a
value in the column never match.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from lmrec.errors import LmrecError


class QueryError(LmrecError):
    """A request the engine cannot answer as asked (e.g. a filter on an unknown column)."""


# "column<=x": the operator and what surrounds it (the column may not hold < > or :)
_COMPARISON = re.compile(r"^([^<>:]+?)\s*(<=|>=|<|>)\s*(\S.*)$")
_RANGE = re.compile(r"^\s*(\S*?)\s*\.\.\s*(\S*?)\s*$")


def filter_column(expr: str) -> str:
    """The column an expression filters on (QueryError for one that is no filter)."""
    m = _COMPARISON.match(expr.strip())
    col, sep, value = (m.group(1), m.group(2), m.group(3)) if m else expr.partition(":")
    if not sep or not value.strip() or not col.strip():
        raise QueryError(f"filter {expr!r}: expected column:value, column:lo..hi or "
                         "column<x (also <=, >, >=)")
    return col.strip()


def filter_hits(s: pl.Series, expr: str) -> np.ndarray:
    """(n,) bool: the rows of item column `s` that `expr` (on that column) keeps."""
    values, owner = _values(s)
    m = _COMPARISON.match(expr.strip())
    if m:
        hit = _compare(_numbers(expr, values), m.group(2), _number(expr, m.group(3)))
        return _fold(hit, owner, s.len())
    value = expr.partition(":")[2].strip()
    rng = _RANGE.match(value)
    if rng and (rng.group(1) or rng.group(2)):
        x = _numbers(expr, values)
        hit = x.is_not_null()
        if rng.group(1):
            hit = hit & (x >= _number(expr, rng.group(1)))
        if rng.group(2):
            hit = hit & (x <= _number(expr, rng.group(2)))
        return _fold(hit, owner, s.len())
    wanted = [v.strip() for v in value.split("|") if v.strip()]
    if not wanted:
        raise QueryError(f"filter {expr!r}: expected column:value")
    if values.dtype.is_numeric():  # "year:1995" matches 1995.0
        hit = values.cast(pl.Float64).is_in([_number(expr, v) for v in wanted])
    else:  # text: case does not matter ("genres:comedy" finds "Comedy")
        hit = values.cast(pl.String).str.to_lowercase().is_in([v.lower() for v in wanted])
    return _fold(hit, owner, s.len())


def _values(s: pl.Series) -> tuple[pl.Series, np.ndarray | None]:
    """The column's values, a list column exploded, with each value's row (None: one each)."""
    if not isinstance(s.dtype, pl.List):
        return s, None
    frame = pl.DataFrame({"row": np.arange(s.len()), "value": s}).explode("value")
    return frame["value"], frame["row"].to_numpy()


def _number(expr: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise QueryError(f"filter {expr!r}: {text!r} is not a number") from None


def _numbers(expr: str, values: pl.Series) -> pl.Series:
    if not values.dtype.is_numeric():
        col = filter_column(expr)
        raise QueryError(f"filter {expr!r}: {col!r} does not hold numbers") from None
    return values.cast(pl.Float64)


def _compare(x: pl.Series, op: str, bound: float) -> pl.Series:
    return {"<": x < bound, "<=": x <= bound, ">": x > bound, ">=": x >= bound}[op]


def _fold(hit: pl.Series, owner: np.ndarray | None, n: int) -> np.ndarray:
    """Per-value hits back to one bool per item (any of a list's values); nulls never match."""
    hits = hit.fill_null(False).to_numpy().astype(bool)
    if owner is None:
        return hits
    out = np.zeros(n, dtype=bool)
    np.logical_or.at(out, owner, hits)
    return out
