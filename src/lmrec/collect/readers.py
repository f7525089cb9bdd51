"""Readers for CSV/TSV (any delimiter), Parquet, JSONL and pandas/polars DataFrames.

Text formats are read with every column as a string, so that typed conversion (ids, numbers,
timestamps) happens later in one place that knows the row and column of each bad value.
Row problems found here (wrong number of fields) follow the bad-row policy.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lmrec.collect.jsonl import read_jsonl
from lmrec.collect.textfile import (
    check_utf8,
    csv_records,
    decode,
    first_record,
    record_start_lines,
    unterminated_quote_line,
)
from lmrec.errors import InputError, Location

PARQUET_SUFFIXES = {".parquet", ".pq"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
_SNIFF_DELIMITERS = (",", "\t", ";", "|")
_NOT_NEWLINE = re.compile(rb"[^\r\n]")


class BadRowPolicy(StrEnum):
    FAIL = "fail"  # the first bad row stops the read with an error that names it
    SKIP = "skip"  # bad rows are left out, counted and reported


@dataclass(frozen=True)
class BadRow:
    """A row left out of the input, and why."""

    location: Location
    reason: str  # a short category used for counting, e.g. "wrong number of fields"
    detail: str  # the full message

    def __str__(self) -> str:
        return self.detail


@dataclass
class Table:
    """One input table as read, before typed conversion.

    `frame` rows are in file order; `locate` maps 0-based frame positions back to the file.
    """

    frame: pl.DataFrame
    source: str
    kind: str  # "csv", "jsonl", "parquet" or "frame"
    bad_rows: list[BadRow] = field(default_factory=list)
    # column -> mask of cells that held a JSON object or list in a column of mixed kinds
    nested: dict[str, Any] = field(default_factory=dict)
    _path: Path | None = None
    _delimiter: str = ","
    _encoding: str = "utf-8"
    _header: bool = True
    _n_fields: int = 0

    def locate(self, positions: Iterable[int], column: str | None = None) -> list[Location]:
        """Locations (line numbers where the format has lines) of 0-based frame positions."""
        positions = [int(p) for p in positions]
        lines: dict[int, int] = {}
        if self._path is not None and self.kind in ("csv", "jsonl") and positions:
            lines = self._record_lines(set(positions), max(positions))
        return [
            Location(self.source, line=lines.get(p), row=p + 1, column=column) for p in positions
        ]

    def _record_lines(self, wanted: set[int], last: int) -> dict[int, int]:
        # Only on the error path: a sequential scan that mirrors the fast reader's rules
        # (blank lines ignored, rows with the wrong number of fields skipped).
        assert self._path is not None
        out: dict[int, int] = {}
        with self._path.open(encoding=self._encoding, newline="", errors="replace") as fh:
            if self.kind == "jsonl":
                record = -1
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    record += 1
                    if record in wanted:
                        out[record] = lineno
                    if record >= last:
                        break
                return out
            record = -1
            for i, (line, fields) in enumerate(csv_records(fh, self._delimiter)):
                if i == 0 and self._header:
                    continue
                if self._n_fields and len(fields) != self._n_fields:
                    continue
                record += 1
                if record in wanted:
                    out[record] = line
                if record >= last:
                    break
        return out


def read_table(
    source: str | Path | Any,
    *,
    delimiter: str | None = None,
    encoding: str = "utf-8",
    header: bool = True,
    column_names: Sequence[str] | None = None,
    on_bad_rows: BadRowPolicy | str = BadRowPolicy.FAIL,
    label: str | None = None,
) -> Table:
    """Read one table. `source` is a path (CSV/TSV/text, Parquet, JSONL) or a DataFrame.

    `column_names` names the columns of a file without a header (`header=False`), or renames
    the columns of one with a header. Raises `InputError` for anything that cannot be read.
    """
    policy = BadRowPolicy(on_bad_rows)
    if not isinstance(source, str | Path):
        return _read_frame(source, label or "<DataFrame>", column_names)
    path = Path(source)
    name = label or str(source)
    if not path.exists():
        raise InputError("file not found", location=Location(name))
    if path.is_dir():
        raise InputError("is a folder, expected a file", location=Location(name))
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", location=Location(name)) from exc
    if size == 0:
        raise InputError("file is empty", location=Location(name),
                         expected="a header and data rows")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        table = _read_parquet(path, name)
    elif suffix in JSONL_SUFFIXES:
        table = _read_jsonl(path, name, encoding)
    else:
        table = _read_delimited(path, name, delimiter, encoding, header, column_names, policy)
        column_names = None  # applied by the CSV reader itself
    if column_names is not None:
        table.frame = _rename(table.frame, column_names, name)
    return table


def _rename(frame: pl.DataFrame, names: Sequence[str], source: str) -> pl.DataFrame:
    if len(names) != frame.width:
        raise InputError(
            f"{len(names)} column names given for {frame.width} columns",
            location=Location(source),
            expected=f"{frame.width} names",
        )
    return frame.rename(dict(zip(frame.columns, names, strict=True)))


def _read_frame(obj: Any, name: str, column_names: Sequence[str] | None) -> Table:
    if isinstance(obj, pl.DataFrame):
        frame = obj
    elif isinstance(obj, pl.LazyFrame):
        frame = obj.collect()
    elif type(obj).__module__.startswith("pandas"):
        frame = _from_pandas(obj, name)
    else:
        raise InputError(
            f"cannot read an object of type {type(obj).__name__}",
            location=Location(name),
            expected="a path, a polars DataFrame or a pandas DataFrame",
        )
    if column_names is not None:
        frame = _rename(frame, column_names, name)
    return Table(frame=frame, source=name, kind="frame")


def _from_pandas(obj: Any, name: str) -> pl.DataFrame:
    try:
        return pl.from_pandas(obj)
    except (pa.ArrowException, TypeError, ValueError):
        pass
    # object columns mixing types (e.g. ids 1 and "a"): read them as text, as the files are
    obj = obj.copy()
    for col in obj.columns:
        if obj[col].dtype == object:
            obj[col] = [None if v is None or v != v else str(v) for v in obj[col]]
    try:
        return pl.from_pandas(obj)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InputError(f"cannot convert the pandas DataFrame ({exc})",
                         location=Location(name)) from exc


def _read_parquet(path: Path, name: str) -> Table:
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"cannot read as Parquet ({exc}); the file may be truncated or not Parquet",
            location=Location(name),
        ) from exc
    frame = pl.from_arrow(arrow)
    assert isinstance(frame, pl.DataFrame)
    return Table(frame=frame, source=name, kind="parquet")


def _read_jsonl(path: Path, name: str, encoding: str) -> Table:
    frame, nested = read_jsonl(path, name, encoding)
    return Table(frame=frame, source=name, kind="jsonl", nested=nested, _path=path,
                 _encoding=encoding)


def sniff_delimiter(first_line: str, suffix: str) -> str:
    if suffix in (".tsv", ".tab"):
        return "\t"
    counts = {d: first_line.count(d) for d in _SNIFF_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _read_delimited(
    path: Path,
    name: str,
    delimiter: str | None,
    encoding: str,
    header: bool,
    column_names: Sequence[str] | None,
    policy: BadRowPolicy,
) -> Table:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    enc = encoding.lower().replace("_", "-")
    if enc in ("utf-8", "utf8"):
        check_utf8(data, name)  # a clear error with the line of the first bad byte
    else:
        data = decode(data, name, encoding).encode("utf-8")
    if not data.strip():
        raise InputError("file has only blank lines", location=Location(name))
    newline = data.find(b"\n")
    first_line = data[: newline if newline >= 0 else len(data)].decode("utf-8")
    # (a search, not a slice: a slice would copy the whole file)
    if header and (newline < 0 or not _NOT_NEWLINE.search(data, newline + 1)):
        raise InputError("file has a header but no data rows", location=Location(name, line=2),
                         expected="data rows after the header line")
    delim = delimiter or sniff_delimiter(first_line, path.suffix.lower())
    if delim == "\\t":
        delim = "\t"
    if len(delim) != 1:
        raise InputError(
            f"delimiter {delim!r} is not one character", location=Location(name)
        )

    if header and not first_line.strip("\r"):
        raise InputError("line 1 is blank", location=Location(name, line=1),
                         expected="the header line first")
    try:
        first_fields = first_record(data, delim)
    except csv.Error as exc:
        raise InputError(f"cannot read the first record ({exc})",
                         location=Location(name, line=1)) from None
    if column_names is not None and len(column_names) != len(first_fields):
        raise InputError(
            f"{len(column_names)} column names given for {len(first_fields)} columns",
            location=Location(name, line=1),
            expected=f"{len(first_fields)} names",
        )
    if header:
        names = first_fields
        if column_names is not None:
            names = list(column_names)
        skip = 1
    else:
        names = (list(column_names) if column_names
                 else [f"column_{i + 1}" for i in range(len(first_fields))])
        skip = 0
    _check_names(names, name)

    odd_quotes = data.count(b'"') % 2 == 1
    buffer = arrow_owned(data)
    del data  # one copy of the file at a time
    bad: list[tuple[int | None, int, int, str]] = []
    try:
        try:
            arrow = _parse_csv(buffer, names, skip, delim, bad, threads=True)
        except pa.ArrowInvalid:  # rows with the wrong number of fields, or worse: read
            arrow = _parse_csv(buffer, names, skip, delim, bad, threads=False)  # again, serially
    except pa.ArrowInvalid as exc:
        raise InputError(
            f"cannot parse as delimited text ({exc}); the file may be truncated "
            "or have an unterminated quote",
            location=Location(name),
        ) from exc

    text_data = buffer.to_pybytes().decode("utf-8") if bad or odd_quotes else ""
    if odd_quotes and (open_line := unterminated_quote_line(text_data, delim)):
        raise InputError(
            "quoted field not closed before the end of the file (the file may be truncated)",
            location=Location(name, line=open_line),
            expected='a closing \'"\' for the field that starts on this line',
        )
    # Arrow numbers records from 1, header included, blank lines not counted; name the
    # physical line instead (they differ after blank lines and multi-line quoted fields).
    lines = record_start_lines(text_data, delim, {n for n, *_ in bad if n is not None})
    bad_rows = [
        BadRow(
            (loc := Location(name, line=lines.get(number) if number is not None else None)),
            "wrong number of fields",
            f"{loc.describe()}: wrong number of fields; "
            f"expected {expected} fields separated by {delim!r}, found {actual}: {text[:80]!r}",
        )
        for number, expected, actual, text in bad
    ]
    if bad_rows and policy is BadRowPolicy.FAIL:
        first = bad_rows[0]
        _, expected, actual, text = bad[0]
        raise InputError(
            f"wrong number of fields ({actual})",
            location=first.location,
            expected=f"{expected} fields separated by {delim!r}",
            found=text,
        )
    if header and arrow.num_rows == 0 and not bad_rows:
        raise InputError("file has a header but no data rows", location=Location(name, line=2),
                         expected="data rows after the header line")
    frame = pl.from_arrow(arrow)
    assert isinstance(frame, pl.DataFrame)
    return Table(
        frame=frame,
        source=name,
        kind="csv",
        bad_rows=bad_rows,
        _path=path if enc in ("utf-8", "utf8") else None,
        _delimiter=delim,
        _encoding="utf-8",
        _header=header,
        _n_fields=len(names),
    )


def arrow_owned(data: bytes) -> pa.Buffer:
    """A copy of `data` in memory Arrow owns.

    Arrow's threaded CSV reader is released on one of Arrow's worker threads, some time after
    `read_csv` returns. Whatever Python object it holds (a buffer over a `bytes`, a Python
    callback) must then take the GIL on that thread; when the interpreter is exiting just
    then (an error right after the read), Python ends that thread inside a C++ destructor and
    the process aborts: "terminate called without an active exception", exit 134. So the
    threaded reader is given Arrow memory and no callback.
    """
    # from the system allocator: a large block goes back to the OS when freed, where Arrow's
    # default pool (jemalloc) would keep the whole file's size resident for a while
    buffer = pa.allocate_buffer(len(data), memory_pool=pa.system_memory_pool())
    memoryview(buffer).cast("B")[:] = data
    return buffer


def _parse_csv(buffer: pa.Buffer, names: Sequence[str], skip: int, delim: str,
               bad: list[tuple[int | None, int, int, str]], *, threads: bool) -> pa.Table:
    """Every column as text. Threaded: a row with the wrong number of fields raises. Serial:
    such rows are skipped and listed in `bad`; the serial reader (and the Python callback it
    holds) is released before this returns."""
    bad.clear()

    def on_invalid(row: Any) -> str:
        bad.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    return pacsv.read_csv(
        pa.BufferReader(buffer),
        read_options=pacsv.ReadOptions(use_threads=threads, column_names=list(names),
                                       skip_rows=skip, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True,
                                         invalid_row_handler=None if threads else on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _check_names(names: Sequence[str], source: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names, start=1):
        if n == "":
            raise InputError(
                f"header field {i} is empty", location=Location(source, line=1),
                expected="a name for every column",
            )
        if n in seen:
            raise InputError(
                f"column name {n!r} appears twice in the header",
                location=Location(source, line=1),
            )
        seen.add(n)
