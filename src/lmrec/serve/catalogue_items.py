"""Item attributes for the catalogue API, checked and encoded like the training data's.

Checks. An attribute must be a column of the bundle's item table, and its value must fit the
column's type there: text for a string column, a finite number for a numeric one (a whole
number for an integer one), a list of labels for a multi-valued column, a list of numbers of
the column's length for a vector column; null leaves it without a value. `InvalidItem` (a
400 from the app) names the column.

Encoding. Models that score items from attributes need the encoders the training data was
prepared with (label vocabularies, numeric means and deviations). A bundle does not save them,
but `lmrec.prepare` derives each from the item table alone (sorted distinct labels; mean and
deviation of the filled column), and the bundle keeps that table: `item_schema` derives them
again the same way, and `table_dataset` wraps any rows in a `Dataset`, so that the feature
code of training (`Dataset.encoded_features`, `item_texts`, the models' own helpers) encodes
new rows exactly as it encoded the training rows. Callers check the result against what the
model saved (`lmrec.serve.catalogue_models`) before trusting it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from lmrec import columns as C
from lmrec.columns import Role
from lmrec.data.dataset import Dataset, FeatureSpec
from lmrec.data.vocab import IdVocabulary
from lmrec.serve.filters import QueryError

MAX_TEXT = 10_000  # characters in one text value
MAX_LABELS = 1_000  # values in one list


class InvalidItem(QueryError):
    """An item body the catalogue cannot take (answered with 400, naming the field)."""


# --- checks --------------------------------------------------------------------------------
def check_attributes(table: pl.DataFrame, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes, each checked against its column of the item `table` (InvalidItem
    naming the first that does not fit)."""
    out: dict[str, Any] = {}
    for col, value in attributes.items():
        if col == C.ITEM:
            raise InvalidItem("attributes.item: the item id is given in the path, not here")
        if col not in table.columns:
            known = ", ".join(c for c in table.columns if c != C.ITEM) or "none"
            raise InvalidItem(f"attributes.{col}: unknown column {col!r} (the item table has: "
                              f"{known})")
        out[col] = _check(f"attributes.{col}", table.schema[col], value, _width(table, col))
    return out


def check_text(text: str | None) -> str | None:
    if text is not None and "\x00" in text:
        raise InvalidItem("text: must not contain NUL characters")
    return text


def _check(where: str, dtype: pl.DataType, value: Any, width: int | None) -> Any:
    """`value` if it fits a column of type `dtype` (lists of `width` numbers for a vector
    column), else InvalidItem."""
    if value is None:
        return None
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        if not isinstance(value, str):
            raise InvalidItem(f"{where}: expected text, got {_kind(value)}")
        if len(value) > MAX_TEXT or "\x00" in value:
            raise InvalidItem(f"{where}: at most {MAX_TEXT} characters, without NUL")
        return value
    if dtype == pl.Boolean:
        if not isinstance(value, bool):
            raise InvalidItem(f"{where}: expected true or false, got {_kind(value)}")
        return value
    if dtype.is_numeric():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidItem(f"{where}: expected a number, got {_kind(value)}")
        if not math.isfinite(value) or abs(value) >= 2.0**63:
            raise InvalidItem(f"{where}: expected a finite number, got {value!r}")
        if dtype.is_integer():
            if not float(value).is_integer():
                raise InvalidItem(f"{where}: expected a whole number, got {value!r}")
            return int(value)
        return float(value)
    if isinstance(dtype, pl.List | pl.Array):
        if not isinstance(value, list):
            raise InvalidItem(f"{where}: expected a list, got {_kind(value)}")
        if len(value) > MAX_LABELS:
            raise InvalidItem(f"{where}: at most {MAX_LABELS} values")
        if width is not None and len(value) != width:
            raise InvalidItem(f"{where}: expected {width} numbers, got {len(value)}")
        return [_check(f"{where}[{i}]", dtype.inner, v, None) for i, v in enumerate(value)]
    raise InvalidItem(f"{where}: a {dtype} column cannot be set through the API")


def _width(table: pl.DataFrame, col: str) -> int | None:
    """The length every row of a vector column has (None for other columns)."""
    dtype = table.schema[col]
    if not isinstance(dtype, pl.List | pl.Array) or not dtype.inner.is_numeric():
        return None
    lengths = table[col].list.len().drop_nulls().unique() if isinstance(dtype, pl.List) \
        else pl.Series([dtype.size])
    return int(lengths[0]) if lengths.len() == 1 else None


def _kind(value: Any) -> str:
    names = {str: "text", bool: "a boolean", int: "a number", float: "a number",
             list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


# --- rows ----------------------------------------------------------------------------------
def item_rows(table: pl.DataFrame, roles: Mapping[str, Role], ids: Sequence[Any],
              base_rows: Sequence[int], attributes: Sequence[Mapping[str, Any]]
              ) -> pl.DataFrame:
    """Rows typed like the item `table`: item `ids[j]` is row `base_rows[j]` of the table
    updated with `attributes[j]`, or (`base_rows[j]` < 0, a new item) those attributes alone.
    Missing multi-valued and vector values are filled as `lmrec.prepare` fills them (an empty
    list, zeros), so that encoders read them as they read the table."""
    records = []
    for item, row, attrs in zip(ids, base_rows, attributes, strict=True):
        rec = table.row(row, named=True) if row >= 0 else dict.fromkeys(table.columns)
        # columns of this table only: another arm's bundle may lack one the API checked
        rec.update({c: v for c, v in attrs.items() if c in rec})
        rec[C.ITEM] = item
        records.append(rec)
    frame = pl.DataFrame([_column(c, [r[c] for r in records], table.schema[c])
                          for c in table.columns])
    fills = []
    for col, role in roles.items():
        if col not in frame.columns or not frame[col].null_count():
            continue
        if role == Role.MULTI:
            fills.append(pl.col(col).fill_null(pl.lit([], dtype=frame.schema[col])))
        elif role == Role.VECTOR and (width := _width(table, col)) is not None:
            fills.append(pl.col(col).fill_null(pl.lit([0.0] * width, dtype=frame.schema[col])))
    return frame.with_columns(fills) if fills else frame


def _column(name: str, values: list[Any], dtype: pl.DataType) -> pl.Series:
    """One column of `item_rows`, not strict: a value checked against another arm's item
    table, whose column has another type, becomes null rather than failing the rest."""
    try:
        return pl.Series(name, values, dtype=dtype, strict=False)
    except (pl.exceptions.PolarsError, TypeError, ValueError):
        return pl.Series(name, [None] * len(values), dtype=dtype)


def public_attributes(frame: pl.DataFrame, row: int) -> dict[str, Any]:
    """Row `row` of an item frame as JSON-ready {column: value} (no item id; NaN as null)."""
    out = {}
    for col, value in frame.row(row, named=True).items():
        if col != C.ITEM:
            out[col] = _json_value(value)
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # dates and other types the API does not set: shown as text


# --- encoders ------------------------------------------------------------------------------
def item_schema(table: pl.DataFrame, roles: Mapping[str, Role]) -> dict[str, FeatureSpec]:
    """The item table's encoders, derived as `lmrec.prepare.features.align_and_encode`
    derives them from the same table (in the bundle's column order)."""
    specs: dict[str, FeatureSpec] = {}
    for col, role in roles.items():
        if col not in table.columns:
            continue
        s = table[col]
        if role in (Role.NUMERIC, Role.TIME):
            x = s.cast(pl.Float64)
            x = x.fill_null(x.median() if x.null_count() < x.len() else 0.0)
            specs[col] = FeatureSpec(role, mean=float(x.mean() or 0.0),
                                     std=float(x.std() or 0.0) or 1.0)
        elif role == Role.CATEGORICAL:
            specs[col] = FeatureSpec(role, vocabulary=tuple(s.drop_nulls().unique().sort()
                                                            .to_list()))
        elif role == Role.MULTI:
            specs[col] = FeatureSpec(role, vocabulary=tuple(
                s.explode().drop_nulls().unique().sort().to_list()))
        elif role == Role.VECTOR:
            specs[col] = FeatureSpec(role, dim=_width(table, col) or 0)
        elif role == Role.TEXT:
            specs[col] = FeatureSpec(role)
    return specs


def table_dataset(table: pl.DataFrame, schema: Mapping[str, FeatureSpec]) -> Dataset:
    """A Dataset of these item rows alone (no users, no events): what feature code reads."""
    no_users = pl.Series(C.USER, [], dtype=pl.String)
    events = pl.DataFrame({C.USER_IDX: pl.Series([], dtype=pl.Int64),
                           C.ITEM_IDX: pl.Series([], dtype=pl.Int64)})
    return Dataset(IdVocabulary(no_users), IdVocabulary(table[C.ITEM]), events,
                   pl.DataFrame({C.USER: no_users}), table, item_schema=dict(schema))


def roles_of(meta: Mapping[str, Any]) -> dict[str, Role]:
    """The bundle's attribute roles (bundle.json `item_roles`), in its column order."""
    return {c: Role(r) for c, r in meta.get("item_roles", {}).items()}

