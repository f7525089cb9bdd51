"""Infer what each column of a user or item table holds, with explicit overrides."""

from __future__ import annotations

import re
from collections.abc import Mapping

import polars as pl

from lmrec.collect.timeparse import parse_timestamps
from lmrec.columns import Role
from lmrec.errors import InputError, Location

DEFAULT_MULTI_SEPARATOR = "|"
_MULTI_SHARE = 0.05  # a column is multi-valued when this share of its values hold the separator
_TEXT_MEAN_LENGTH = 30
_TEXT_UNIQUE_SHARE = 0.5
_CATEGORICAL_MAX_UNIQUE_SHARE = 0.5
_CODE_NAME = re.compile(r"(?:^|[_\s-])(?i:id|code)$|[a-z0-9](?:Id|ID|Code)$")


def infer_roles(
    frame: pl.DataFrame,
    id_column: str,
    overrides: Mapping[str, Role | str] | None = None,
    *,
    multi_separator: str = DEFAULT_MULTI_SEPARATOR,
    source: str = "<table>",
) -> dict[str, Role]:
    """A role for every column of `frame`. Overrides win; unknown override columns are an error."""
    overrides = dict(overrides or {})
    for col in overrides:
        if col not in frame.columns:
            raise InputError(
                f"role given for column {col!r}, which is not in the table",
                location=Location(source, column=col),
                expected=f"one of {frame.columns}",
            )
    roles: dict[str, Role] = {}
    for col in frame.columns:
        if col in overrides:
            roles[col] = Role(overrides[col])
        elif col == id_column:
            roles[col] = Role.ID
        else:
            roles[col] = _infer(frame[col], multi_separator)
    return roles


def _numeric_or_code(series: pl.Series) -> Role:
    """Whole numbers in a column named like an id or a code (`category_id`, `brandId`,
    `zip_code`) are labels, not quantities."""
    if series.dtype != pl.Boolean and _CODE_NAME.search(series.name):
        x = series.cast(pl.Float64).drop_nulls()
        if x.len() and (x == x.floor()).all():
            return Role.CATEGORICAL
    return Role.NUMERIC


def _infer(series: pl.Series, sep: str) -> Role:
    dtype = series.dtype
    if isinstance(dtype, pl.List | pl.Array):
        inner = dtype.inner
        return Role.VECTOR if inner is not None and inner.is_numeric() else Role.MULTI
    if dtype.is_temporal():
        return Role.TIME
    if dtype.is_numeric() or dtype == pl.Boolean:
        return _numeric_or_code(series)
    s = series.cast(pl.String).str.strip_chars().replace("", None).drop_nulls()
    if s.len() == 0:
        return Role.IGNORE
    if s.cast(pl.Float64, strict=False).is_not_null().all():
        return _numeric_or_code(s.cast(pl.Float64).alias(series.name))
    if s.str.starts_with("[").all() and s.str.ends_with("]").all():
        return Role.VECTOR
    # ISO-8601 only: "03/01/2024" could be March or January, so it is not a time
    if parse_timestamps(s)[1].mean() <= 0.05:
        return Role.TIME
    if sep and s.str.contains(sep, literal=True).mean() >= _MULTI_SHARE:
        return Role.MULTI
    mean_len = s.str.len_chars().mean()
    unique_share = s.n_unique() / s.len()
    has_space = s.str.contains(" ", literal=True).mean() >= 0.5
    if (mean_len is not None and mean_len >= _TEXT_MEAN_LENGTH) or (
        unique_share > _TEXT_UNIQUE_SHARE and has_space
    ):
        return Role.TEXT
    if unique_share > _CATEGORICAL_MAX_UNIQUE_SHARE and s.len() > 20:
        # mostly unique short strings (codes, urls): not useful as a category
        return Role.TEXT
    return Role.CATEGORICAL
