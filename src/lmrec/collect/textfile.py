"""Text-file helpers for the readers: decoding with a clear error, and the physical line of
a CSV record (only on error paths, where a sequential scan is affordable)."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator

from lmrec.errors import InputError, Location


def csv_records(fh: Iterable[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
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


def record_start_lines(text: str, delimiter: str, wanted: set[int]) -> dict[int, int]:
    """Physical start lines of 1-based record numbers as Arrow counts them (header included,
    blank lines not counted)."""
    out: dict[int, int] = {}
    if not wanted:
        return out
    last = max(wanted)
    for number, (line, _) in enumerate(csv_records(io.StringIO(text, newline=""), delimiter), 1):
        if number in wanted:
            out[number] = line
        if number >= last:
            break
    return out


def unterminated_quote_line(text: str, delimiter: str) -> int | None:
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


def check_utf8(data: bytes, name: str) -> None:
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
    decode(data, name, "utf-8")  # raises with the line of the bad byte


def decode(data: bytes, name: str, encoding: str) -> str:
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


def first_record(data: bytes, delimiter: str) -> list[str]:
    """The fields of the first non-blank record of UTF-8 `data`, read as the Arrow reader
    reads it: a quoted field may hold the delimiter and line breaks, a lone carriage return
    ends a line. Raises `csv.Error` for a record the csv module cannot read."""
    head = data[: 1 << 20].decode("utf-8", errors="ignore")  # a record longer is not a header
    for fields in csv.reader(io.StringIO(head, newline=""), delimiter=delimiter):
        if fields:
            return fields
    return []
