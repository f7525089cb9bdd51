"""User and item attribute tables: typing by role, duplicates, missing values, encoders."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec.collect.events import (
    EventTable,
    _id_column,
    parse_numbers,
    parse_timestamps,
    require_columns,
)
from lmrec.collect.readers import BadRowPolicy, Table
from lmrec.collect.roles import infer_roles
from lmrec.columns import Role
from lmrec.data.dataset import FeatureSpec
from lmrec.errors import InputError
from lmrec.prepare.report import TableRecord


def type_table(
    table: Table,
    id_col: str,
    canon_id: str,
    overrides: Mapping[str, Role | str],
    *,
    separator: str,
    on_bad_rows: BadRowPolicy,
    kind: str,
) -> tuple[pl.DataFrame, dict[str, Role], TableRecord]:
    """Typed attribute table keyed by `canon_id`; one row per id (first kept)."""
    require_columns(table, [(f"{kind} id", id_col)])
    raw = table.frame
    record = TableRecord(kind=kind, rows_in=raw.height + len(table.bad_rows), rows_out=0)
    if table.bad_rows:
        record.dropped["wrong number of fields"] = len(table.bad_rows)
    roles = infer_roles(raw, id_col, overrides, multi_separator=separator, source=table.source)
    ids, bad = _id_column(raw[id_col])
    if bad.any():
        pos = np.flatnonzero(bad)
        if on_bad_rows is BadRowPolicy.FAIL:
            raise InputError(f"empty {kind} id", location=table.locate(pos[:1], id_col)[0],
                             expected=f"a non-empty {kind} id")
        record.dropped[f"empty {kind} id"] = int(bad.sum())
    cols: list[pl.Series] = [ids.alias(canon_id)]
    for col, role in roles.items():
        if role in (Role.ID, Role.IGNORE) or col == canon_id:
            continue
        s = raw[col]
        if role == Role.NUMERIC:
            s, badv = parse_numbers(s)
            if badv.any():
                if on_bad_rows is BadRowPolicy.FAIL:
                    pos = int(np.flatnonzero(badv)[0])
                    raise InputError("non-numeric value in a numeric column",
                                     location=table.locate([pos], col)[0], expected="a number",
                                     found=str(raw[col][pos]))
                record.notes.append(
                    f"{int(badv.sum())} non-numeric values in {col!r} treated as missing")
        elif role == Role.TIME:
            s, badv = parse_timestamps(s)
            s = s.cast(pl.Float64)
            if badv.any():
                record.notes.append(
                    f"{int(badv.sum())} unparseable dates in {col!r} treated as missing")
        elif role == Role.MULTI:
            if not isinstance(s.dtype, pl.List):
                s = (s.cast(pl.String).str.split(separator)
                     .list.eval(pl.element().str.strip_chars())
                     .list.eval(pl.element().filter(pl.element() != "")))
            else:
                s = s.cast(pl.List(pl.String))
        elif role == Role.VECTOR:
            s = _vectors(s, table, col)
        else:  # categorical, text
            s = s.cast(pl.String).str.strip_chars().replace("", None)
        cols.append(s.alias(col))
    frame = pl.DataFrame(cols)
    if bad.any():
        frame = frame.filter(pl.Series(~bad))
    n_before = frame.height
    frame = frame.unique(subset=[canon_id], keep="first", maintain_order=True)
    if frame.height < n_before:
        record.dropped[f"duplicate {kind} id (first kept)"] = n_before - frame.height
    record.rows_out = frame.height
    record.roles = {c: str(r) for c, r in roles.items()}
    return frame, {c: r for c, r in roles.items() if c in frame.columns and c != canon_id}, record


def derived_attributes(tables: Sequence[EventTable], kind: str) -> Table | None:
    """The user or item attributes found in the event files (columns with one value per id),
    one row per id, the first seen kept."""
    canon = C.USER if kind == "user" else C.ITEM
    frames = [f for t in tables
              if (f := t.user_attributes if kind == "user" else t.item_attributes) is not None]
    if not frames:
        return None
    frame = pl.concat(frames, how="diagonal_relaxed").unique(subset=[canon], keep="first",
                                                              maintain_order=True)
    cols = ", ".join(c for c in frame.columns if c != canon)
    return Table(frame=frame, source=f"{tables[0].source} ({kind} attributes: {cols})",
                 kind="frame")


def _vectors(s: pl.Series, table: Table, col: str) -> pl.Series:
    if s.dtype == pl.String:
        s = s.str.strip_chars().replace("", None)  # an empty cell is a missing vector
        try:
            s = s.str.json_decode(pl.List(pl.Float64))
        except pl.exceptions.PolarsError:
            pos = next(i for i, v in enumerate(s.to_list()) if v is not None and not _is_vector(v))
            raise InputError("not a vector", location=table.locate([pos], col)[0],
                             expected="a JSON list of numbers such as [0.1, 0.2]",
                             found=str(s[pos])) from None
    s = s.cast(pl.List(pl.Float32))
    lengths = s.list.len()
    present = lengths.filter(s.is_not_null())
    if present.len() and present.n_unique() > 1:
        dim = int(present.mode().sort()[0])
        pos = int(np.flatnonzero(((lengths != dim) & s.is_not_null()).to_numpy())[0])
        raise InputError(f"vector of length {lengths[pos]} in a column of length-{dim} vectors",
                         location=table.locate([pos], col)[0], expected=f"{dim} numbers")
    return s


def _is_vector(text: str) -> bool:
    try:
        v = json.loads(text)
    except ValueError:
        return False
    return isinstance(v, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in v)


def align_and_encode(
    frame: pl.DataFrame | None,
    roles: Mapping[str, Role],
    ids: pl.Series,
    canon_id: str,
    record: TableRecord | None,
) -> tuple[pl.DataFrame, dict[str, FeatureSpec]]:
    """One row per vocabulary id in order, missing values filled, encoders fitted."""
    base = pl.DataFrame({canon_id: ids})
    if frame is None:
        return base, {}
    if frame[canon_id].dtype != ids.dtype:
        frame = frame.with_columns(pl.col(canon_id).cast(ids.dtype))
    n_known = int(ids.is_in(frame[canon_id].implode()).sum())
    if record is not None:
        dropped = frame.height - int(frame[canon_id].is_in(ids.implode()).sum())
        if dropped:
            record.dropped["id not in the prepared events (filtered out)"] = dropped
        if n_known < ids.len():
            record.notes.append(f"{ids.len() - n_known} ids have events but no row in this table; "
                                "their attributes are filled as missing")
    out = base.join(frame, on=canon_id, how="left", maintain_order="left")
    specs: dict[str, FeatureSpec] = {}
    fills: list[pl.Expr] = []
    for col, role in roles.items():
        s = out[col]
        n_missing = s.null_count()
        if role in (Role.NUMERIC, Role.TIME):
            x = s.cast(pl.Float64)
            fill = x.median() if x.null_count() < x.len() else 0.0
            x = x.fill_null(fill)
            mean = float(x.mean() or 0.0)
            std = float(x.std() or 0.0) or 1.0
            specs[col] = FeatureSpec(role, mean=mean, std=std)
            fills.append(pl.col(col).cast(pl.Float64).fill_null(fill))
        elif role == Role.CATEGORICAL:
            vocab = tuple(s.drop_nulls().unique().sort().to_list())
            specs[col] = FeatureSpec(role, vocabulary=vocab)
        elif role == Role.MULTI:
            n_missing = int((s.list.len().fill_null(0) == 0).sum())  # empty cell: no labels
            vocab = tuple(s.explode().drop_nulls().unique().sort().to_list())
            specs[col] = FeatureSpec(role, vocabulary=vocab)
            fills.append(pl.col(col).fill_null(pl.lit([], dtype=pl.List(pl.String))))
        elif role == Role.VECTOR:
            lengths = s.list.len().drop_nulls()
            dim = int(lengths[0]) if lengths.len() else 0
            specs[col] = FeatureSpec(role, dim=dim)
            zeros = pl.lit([0.0] * dim, dtype=pl.List(pl.Float32))
            fills.append(pl.col(col).fill_null(zeros))
        elif role == Role.TEXT:
            specs[col] = FeatureSpec(role)
            fills.append(pl.col(col).fill_null(""))
        if n_missing and record is not None:
            # categorical gaps stay null and encode as the "unknown" code 0
            record.filled[col] = n_missing
    if fills:
        out = out.with_columns(fills)
    return out, specs


def id_column_name(kind: str) -> str:
    return C.USER if kind == "user" else C.ITEM
