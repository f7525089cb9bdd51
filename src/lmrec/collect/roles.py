"""Infer what each column of a user or item table holds, with explicit overrides."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from lmrec.columns import Role
from lmrec.errors import InputError, Location

DEFAULT_MULTI_SEPARATOR = "|"
_MULTI_SHARE = 0.05  # a column is multi-valued when this share of its values hold the separator
_TEXT_MEAN_LENGTH = 30
_TEXT_UNIQUE_SHARE = 0.5
_CATEGORICAL_MAX_UNIQUE_SHARE = 0.5


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


def _infer(series: pl.Series, sep: str) -> Role:
    dtype = series.dtype
    if isinstance(dtype, pl.List | pl.Array):
        inner = dtype.inner
        return Role.VECTOR if inner is not None and inner.is_numeric() else Role.MULTI
    if dtype.is_temporal():
        return Role.TIME
    if dtype.is_numeric() or dtype == pl.Boolean:
        return Role.NUMERIC
    s = series.cast(pl.String).str.strip_chars().replace("", None).drop_nulls()
    if s.len() == 0:
        return Role.IGNORE
    if s.cast(pl.Float64, strict=False).is_not_null().all():
        return Role.NUMERIC
    if s.str.starts_with("[").all() and s.str.ends_with("]").all():
        return Role.VECTOR
    if s.str.to_datetime(strict=False, time_zone="UTC").is_not_null().mean() >= 0.95:
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
