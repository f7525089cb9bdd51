"""Cells that cannot be one value: JSON objects and lists where an id, a behaviour type, a time
or a number is expected, and integers too large for Int64."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

NESTED_REASON = "a JSON object or list, not a single value"


def is_nested(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.Struct | pl.List | pl.Array) or dtype == pl.Object


def scalar_cells(series: pl.Series, nested: np.ndarray | None = None
                 ) -> tuple[pl.Series, np.ndarray]:
    """The column with every object or list cell made null, and the mask of those cells.

    `nested` marks cells that held an object or list in a column of mixed kinds (a JSON lines
    reader keeps such a column as text). Integers beyond Int64 become text, as ids would.
    """
    n = series.len()
    if is_nested(series.dtype):
        return (pl.Series(series.name, [None] * n, dtype=pl.String),
                series.is_not_null().to_numpy())
    if series.dtype.is_integer() and not _fits_int64(series):
        series = series.cast(pl.String)
    mask = np.zeros(n, dtype=bool) if nested is None else nested
    if mask.any():
        series = series.cast(pl.String).scatter(np.flatnonzero(mask), None)
    return series, mask


def _fits_int64(series: pl.Series) -> bool:
    if series.dtype in (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32):
        return True
    return series.cast(pl.Int64, strict=False).null_count() == series.null_count()


def show(value: object) -> str:
    """A cell as the text the user wrote: JSON for objects and lists."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, pl.Series):
        return json.dumps(value.to_list(), ensure_ascii=False)
    return str(value)
