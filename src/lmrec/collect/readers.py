"""Readers for CSV/TSV (any delimiter), Parquet, JSONL and pandas/polars DataFrames.

Text formats are read with every column as a string, so that typed conversion (ids, numbers,
timestamps) happens later in one place that knows the row and column of each bad value.
Row problems found here (wrong number of fields) follow the bad-row policy.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lmrec.errors import InputError, Location

PARQUET_SUFFIXES = {".parquet", ".pq"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
_SNIFF_DELIMITERS = (",", "\t", ";", "|")


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
            for i, (line, fields) in enumerate(_csv_records(fh, self._delimiter)):
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


def _csv_records(fh: Iterable[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based physical line where the record starts, fields) of every non-blank record.

    Blank lines are skipped as the Arrow reader skips them; quoted fields may span lines.
    """
    reader = csv.reader(fh, delimiter=delimiter)
    start = 1
    for fields in reader:
        line = start
        start = reader.line_num + 1
        if fields:
            yield line, fields


def _record_start_lines(text: str, delimiter: str, wanted: set[int]) -> dict[int, int]:
    """Physical start lines of 1-based record numbers as Arrow counts them (header included,
    blank lines not counted)."""
    out: dict[int, int] = {}
    if not wanted:
        return out
    last = max(wanted)
    for number, (line, _) in enumerate(_csv_records(io.StringIO(text, newline=""), delimiter), 1):
        if number in wanted:
            out[number] = line
        if number >= last:
            break
    return out


def _unterminated_quote_line(text: str, delimiter: str) -> int | None:
    """The line where a quoted field starts that the end of the file cuts off, if any."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            return start
    return None


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
    data = path.read_bytes()
    text = _decode(data, name, encoding)
    try:
        frame = pl.read_ndjson(io.BytesIO(text.encode("utf-8")), infer_schema_length=None)
    except Exception as exc:  # polars raises several types; find the line ourselves
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as jexc:
                raise InputError(
                    f"invalid JSON ({jexc.msg})",
                    location=Location(name, line=lineno),
                    expected="one JSON object per line",
                    found=line.strip(),
                ) from exc
            if not isinstance(obj, dict):
                raise InputError(
                    "not a JSON object",
                    location=Location(name, line=lineno),
                    expected="one JSON object per line",
                    found=line.strip(),
                ) from exc
        raise InputError(f"cannot read as JSON lines ({exc})", location=Location(name)) from exc
    if frame.height == 0:
        raise InputError("file has no records", location=Location(name))
    return Table(frame=frame, source=name, kind="jsonl", _path=path, _encoding=encoding)


def _check_utf8(data: bytes, name: str) -> None:
    """Raise on the first invalid UTF-8 byte, without building the decoded text."""
    if data.isascii():  # the common case, and far cheaper than decoding
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    step = 1 << 24
    view = memoryview(data)
    for start in range(0, len(data), step):
        try:
            decoder.decode(view[start : start + step], final=start + step >= len(data))
        except UnicodeDecodeError:
            break
    else:
        return
    _decode(data, name, "utf-8")  # raises with the line of the bad byte


def _decode(data: bytes, name: str, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"bytes that are not valid {encoding} (mixed or wrong encoding): "
            f"{data[exc.start:exc.end]!r} at byte {exc.start}",
            location=Location(name, line=line),
            expected=f"{encoding} text; pass the file's encoding (e.g. --encoding latin-1)",
        ) from exc
    except LookupError as exc:
        raise InputError(f"unknown encoding {encoding!r}", location=Location(name)) from exc


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
        _check_utf8(data, name)  # a clear error with the line of the first bad byte
    else:
        data = _decode(data, name, encoding).encode("utf-8")
    if not data.strip():
        raise InputError("file has only blank lines", location=Location(name))
    first_line = data[: data.find(b"\n") if b"\n" in data else len(data)].decode("utf-8")
    rest = data[data.find(b"\n") + 1:] if b"\n" in data else b""
    if header and not rest.strip(b"\r\n"):
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
    first_fields = next(csv.reader([_first_record(data)], delimiter=delim))
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

    bad: list[tuple[int | None, int, int, str]] = []

    def on_invalid(row: Any) -> str:
        bad.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    def parse(threads: bool) -> pa.Table:
        bad.clear()
        return pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(data)),  # zero-copy view of the bytes
            read_options=pacsv.ReadOptions(
                use_threads=threads,
                column_names=names,
                skip_rows=skip,
                block_size=1 << 24,
            ),
            parse_options=pacsv.ParseOptions(delimiter=delim, invalid_row_handler=on_invalid,
                                             newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    try:
        arrow = parse(threads=True)
        if bad:  # the threaded reader does not know line numbers; read again to name them
            arrow = parse(threads=False)
    except pa.ArrowInvalid as exc:
        raise InputError(
            f"cannot parse as delimited text ({exc}); the file may be truncated "
            "or have an unterminated quote",
            location=Location(name),
        ) from exc

    text_data = data.decode("utf-8") if bad or data.count(b'"') % 2 else ""
    if data.count(b'"') % 2 and (open_line := _unterminated_quote_line(text_data, delim)):
        raise InputError(
            "quoted field not closed before the end of the file (the file may be truncated)",
            location=Location(name, line=open_line),
            expected='a closing \'"\' for the field that starts on this line',
        )
    # Arrow numbers records from 1, header included, blank lines not counted; name the
    # physical line instead (they differ after blank lines and multi-line quoted fields).
    lines = _record_start_lines(text_data, delim, {n for n, *_ in bad if n is not None})
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


def _first_record(data: bytes) -> str:
    """The first non-blank line (blank lines are not records)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        line = data[start:end].rstrip(b"\r")
        if line:
            return line.decode("utf-8")
        start = end + 1
    return ""


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
