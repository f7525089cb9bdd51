"""Reading the JSON metadata files that lmrec writes (model configs, bundles, indexes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmrec.errors import InputError, Location


def read_json(path: Path) -> Any:
    """The parsed content of `path`; InputError naming the file and line when it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{Path(path).name} is not valid JSON ({exc.msg})",
                         location=Location(str(path), line=exc.lineno)) from exc
    except UnicodeDecodeError as exc:  # binary garbage, e.g. a file overwritten by another
        raise InputError(f"{Path(path).name} is not valid JSON (not UTF-8 text)",
                         location=Location(str(path))) from exc
