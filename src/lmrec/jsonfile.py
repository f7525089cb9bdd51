"""The JSON that lmrec reads and writes: its metadata files (model configs, bundles, indexes),
and what it prints or writes for people and programs.

Written JSON is always valid and UTF-8: `json.dumps` writes NaN and Infinity as bare `NaN` /
`Infinity`, which no strict JSON parser reads, and escapes every non-ASCII character. Here a
non-finite number becomes `null`, numpy scalars and arrays become plain numbers and lists, and
text stays as written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.errors import InputError, Location


def read_json(path: Path) -> Any:
    """The parsed content of `path`; InputError naming the file and line when it is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{Path(path).name} is not valid JSON ({exc.msg})",
                         location=Location(str(path), line=exc.lineno)) from exc
    except UnicodeDecodeError as exc:  # binary garbage, e.g. a file overwritten by another
        raise InputError(f"{Path(path).name} is not valid JSON (not UTF-8 text)",
                         location=Location(str(path))) from exc


def jsonable(value: Any) -> Any:
    """`value` with non-finite floats as None, numpy values as Python ones, tuples and sets as
    lists and mapping keys as strings; anything else unknown is left for `default=str`."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Valid JSON text of `value` (see `jsonable`); non-ASCII characters are kept."""
    return json.dumps(jsonable(value), ensure_ascii=False, allow_nan=False, indent=indent,
                      default=str)


def write_json(path: str | Path, value: Any, *, indent: int | None = 2) -> Path:
    """Write `dumps(value)` to `path` as UTF-8; returns the path."""
    path = Path(path)
    path.write_text(dumps(value, indent=indent) + "\n", encoding="utf-8")
    return path
