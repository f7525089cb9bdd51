"""Small data helpers shared by the data-pipeline tests."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lmrec.collect import ColumnMapping

EVENT_MAPPING = ColumnMapping(event="e", time="t", value="v")


def write(folder: Path, name: str, content: str | bytes) -> Path:
    """Write `content` byte for byte (no newline translation) and return the path."""
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def events_frame(rows: list[tuple]) -> pl.DataFrame:
    """(user, item, event, time, value) rows as a DataFrame read with EVENT_MAPPING."""
    return pl.DataFrame(
        rows,
        schema={"user": pl.Int64, "item": pl.Int64, "e": pl.String, "t": pl.Int64,
                "v": pl.Float64},
        orient="row",
    )
