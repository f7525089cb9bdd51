"""JSON lines: one object per line, read by polars; a file polars refuses (a key holding
values of different kinds, NaN, numbers beyond float range) is read again line by line here,
so that every problem names its line, and nothing but `InputError` escapes."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lmrec.collect.textfile import decode
from lmrec.errors import InputError, Location


def read_jsonl(path: Path, name: str, encoding: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The frame, and for columns of mixed kinds the mask of cells that held an object or a
    list (such a column is kept as text, with those cells as JSON)."""
    text = decode(path.read_bytes(), name, encoding)
    try:
        frame = pl.read_ndjson(io.BytesIO(text.encode("utf-8")), infer_schema_length=None)
        found = _nested_in_text(frame, text)
    except Exception:  # polars raises several types; read it line by line to say where
        found = None
    if found is None:
        frame, nested = _read_slowly(text, name)
    else:
        nested = found
    if frame.height == 0:
        raise InputError("file has no records", location=Location(name))
    return frame, nested


def _nested_in_text(frame: pl.DataFrame, text: str) -> dict[str, Any] | None:
    """Polars writes an object or a list into a text column as JSON text: find the cells that
    held one (only rows whose text starts like JSON are looked at again). None: read the
    file slowly instead."""
    looks = {c: frame[c].str.contains(r"^\s*[\[{]").fill_null(False).to_numpy()
             for c in frame.columns if frame[c].dtype == pl.String}
    looks = {c: m for c, m in looks.items() if m.any()}
    if not looks:
        return {}
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) != frame.height:
        return None  # rows and lines do not pair up: read it all slowly
    nested = {c: np.zeros(frame.height, dtype=bool) for c in looks}
    for row in np.flatnonzero(np.logical_or.reduce(list(looks.values()))):
        obj = json.loads(lines[row])
        for c in looks:
            nested[c][row] = isinstance(obj.get(c), dict | list)
    return {c: m for c, m in nested.items() if m.any()}


def _reject_constant(word: str) -> float:
    raise ValueError(f"{word} is not valid JSON")


def _read_slowly(text: str, name: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_reject_constant)
        except ValueError as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise InputError(f"invalid JSON ({msg})", location=Location(name, line=lineno),
                             expected="one JSON object per line", found=line.strip()) from None
        except RecursionError:
            raise InputError("JSON nested too deeply", location=Location(name, line=lineno),
                             expected="one JSON object per line") from None
        if not isinstance(obj, dict):
            raise InputError("not a JSON object", location=Location(name, line=lineno),
                             expected="one JSON object per line", found=line.strip())
        records.append(obj)
        lines.append(lineno)
    keys = list(dict.fromkeys(k for r in records for k in r))
    columns: list[pl.Series] = []
    nested: dict[str, Any] = {}
    for key in keys:
        values = [r.get(key) for r in records]
        series, mask = _column(key, values, lines, name)
        columns.append(series)
        if mask is not None:
            nested[key] = mask
    return pl.DataFrame(columns, height=len(records)), nested


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int" if -(2**63) <= v < 2**63 else "text"
    if isinstance(v, float):
        return "float"
    if isinstance(v, dict | list):
        return "nested"
    return "text"


def _column(key: str, values: list[Any], lines: list[int], name: str
            ) -> tuple[pl.Series, np.ndarray | None]:
    for v, line in zip(values, lines, strict=True):
        if isinstance(v, float) and not math.isfinite(v):  # 1e400 reads as inf
            raise InputError("number out of range", location=Location(name, line=line,
                                                                        column=key),
                             expected="a finite number", found=repr(v))
    kinds = {_kind(v) for v in values if v is not None}
    if kinds <= {"int"}:
        return pl.Series(key, values, dtype=pl.Int64 if kinds else pl.Null), None
    if kinds <= {"int", "float"}:
        return pl.Series(key, values, dtype=pl.Float64), None
    if kinds == {"bool"}:
        return pl.Series(key, values, dtype=pl.Boolean), None
    # mixed kinds: text as written; objects and lists as JSON, marked for the typed stage
    mask = np.array([isinstance(v, dict | list) for v in values], dtype=bool)
    texts = [None if v is None else v if isinstance(v, str) else json.dumps(v)
             for v in values]
    return pl.Series(key, texts, dtype=pl.String), mask if mask.any() else None
