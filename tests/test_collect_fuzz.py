"""Fuzzing the readers: whatever the bytes, the result is the data written (for well-formed
input) or an `InputError`, the library's one-line error; never any other exception. And the
CLI turns such an error into one line and exit code 2.

Deterministic (derandomize=True), so a failure here fails the same way on every run.
"""

from __future__ import annotations

import csv
import io
import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_cli import CliProcess, cli_processes
from lmrec.collect import ColumnMapping, read_table, to_events
from lmrec.errors import InputError
from lmrec.prepare import prepare

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
SUFFIXES = [".csv", ".tsv", ".txt", ".jsonl", ".parquet"]


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _through_the_pipeline(path: Path, **read: Any) -> None:
    """Read, infer, type and prepare; only InputError may escape."""
    try:
        t = read_table(path, **read)
        cols = t.frame.columns
        mapping = (ColumnMapping(user=cols[0], item=cols[1]) if len(cols) >= 2
                   else ColumnMapping())
        for policy in ("fail", "skip"):
            try:
                ev = to_events(t, mapping, on_bad_rows=policy)
            except InputError:
                continue
            prepare(ev)
        if len(cols) >= 2:
            from lmrec.collect.infer import infer_event_columns

            infer_event_columns(t.frame, str(path), user=cols[0], item=cols[1])
    except InputError:
        pass  # the one error the library may raise on input


# --- random bytes -----------------------------------------------------------------------------
_csvish = st.lists(st.sampled_from([b"a", b"1", b",", b";", b"\t", b"|", b'"', b"\n", b"\r",
                                    b" ", b"\xc3\xa9", b"\xff", b"\x00", b"{", b"}", b"[",
                                    b"]", b":", b"2024-03-01", b"1e30", b"nan", b"-"]),
                   max_size=40).map(b"".join)


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), _csvish), suffix=st.sampled_from(SUFFIXES),
       header=st.booleans(), delimiter=st.sampled_from([None, ",", ";", "\t"]))
def test_random_bytes(tmp_path: Path, data: bytes, suffix: str, header: bool,
                      delimiter: str | None, real_runs: object) -> None:
    path = _write(tmp_path, f"x{suffix}", data)
    _through_the_pipeline(path, header=header, delimiter=delimiter)


@FUZZ
@given(lines=st.lists(st.one_of(
    st.just(""), st.sampled_from(['{"user": 1, "item": 2}', '{"user": {"a": 1}, "item": 2}',
                                  '{"user": [1], "item": 2}', '{"user": NaN, "item": 1}',
                                  '{"user": 1e400, "item": 1}', "[1, 2]", "{", "null",
                                  '{"user": true, "item": "x"}', '{"user": "1", "item": null}',
                                  '{"user": 99999999999999999999, "item": 1}', "{}"]),
    st.text(max_size=30)), min_size=1, max_size=8))
def test_random_json_lines(tmp_path: Path, lines: list[str]) -> None:
    path = _write(tmp_path, "x.jsonl", "\n".join(lines).encode("utf-8", "surrogatepass"))
    _through_the_pipeline(path)


# --- well-formed CSV: the values come back -------------------------------------------------------
ENCODINGS = {
    "utf-8": string.printable + "éü€中文",
    "utf-8-sig": string.printable + "é中",
    "latin-1": string.printable + "éüß",
    "cp1252": string.printable + "é€",
    "utf-16": string.printable + "é中€",
}


@FUZZ
@given(n_cols=st.integers(1, 4), body=st.data(),
       delimiter=st.sampled_from([",", ";", "|", "\t", ":"]),
       quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
       newline=st.sampled_from(["\n", "\r\n"]), encoding=st.sampled_from(sorted(ENCODINGS)),
       shape=st.sampled_from(["header", "no header", "renamed header"]))
def test_random_csv_reads_back_equal(tmp_path: Path, n_cols: int, body: st.DataObject,
                                     delimiter: str, quoting: int, newline: str, encoding: str,
                                     shape: str) -> None:
    alphabet = ENCODINGS[encoding].replace("\x0b", "").replace("\x0c", "")
    if newline == "\n":  # the writer quotes only the terminator's characters: a bare "\r"
        alphabet = alphabet.replace("\r", "")  # would end the line for any reader
    cell = st.text(alphabet=alphabet, max_size=8)
    name_alphabet = alphabet.replace("\n", "").replace("\r", "")  # a header is one line
    names = body.draw(st.lists(st.text(alphabet=name_alphabet, min_size=1, max_size=6),
                               min_size=n_cols, max_size=n_cols, unique=True))
    rows = body.draw(st.lists(st.lists(cell, min_size=n_cols, max_size=n_cols), min_size=1,
                              max_size=5))
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator=newline)
    if shape != "no header":
        writer.writerow(names if shape == "header" else [f"h{i}" for i in range(n_cols)])
    writer.writerows(rows)
    path = _write(tmp_path, "x.csv", buf.getvalue().encode(encoding))
    given_names = None if shape == "header" else names
    try:
        t = read_table(path, delimiter=delimiter, encoding=encoding,
                       header=shape != "no header", column_names=given_names)
    except InputError as exc:
        # the only refusals of well-formed input: a first line that is blank
        assert "line 1 is blank" in str(exc) or "only blank lines" in str(exc), str(exc)
        return
    assert t.frame.columns == names
    expected = [tuple(r) for r in rows if not (n_cols == 1 and r == [""])]
    got = [r for r in t.frame.rows() if not (n_cols == 1 and r == ("",))]
    assert got == expected


# --- well-formed JSON lines: the values come back ----------------------------------------------
_kinds = {
    "int": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "text": st.text(max_size=8),
    "bool": st.booleans(),
}


@FUZZ
@given(kinds=st.dictionaries(st.sampled_from(["user", "item", "ts", "note", "é"]),
                             st.sampled_from(sorted(_kinds)), min_size=1, max_size=4),
       body=st.data(), ascii_only=st.booleans())
def test_random_json_lines_read_back_equal(tmp_path: Path, kinds: dict[str, str],
                                           body: st.DataObject, ascii_only: bool) -> None:
    record = st.fixed_dictionaries({}, optional={k: st.one_of(st.none(), _kinds[v])
                                                 for k, v in kinds.items()})
    records = body.draw(st.lists(record.filter(bool), min_size=1, max_size=6))
    text = "\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in records) + "\n"
    t = read_table(_write(tmp_path, "x.jsonl", text.encode("utf-8")))
    for got, want in zip(t.frame.rows(named=True), records, strict=True):
        for key in kinds:
            w, g = want.get(key), got.get(key)
            if isinstance(w, float) and isinstance(g, float):
                assert g == w
            else:
                assert g == w, (key, g, w)


# --- the CLI: one line and exit 2 ---------------------------------------------------------------
# Real processes, started with the first fuzz test (see `real_runs`) so that they run on the
# other core while the fuzzing runs; each test below checks its own process.
REAL = [
    ("garbage.csv", bytes(range(256)) * 3),
    ("mixed.jsonl", b'{"user_id": 1, "item_id": 2}\n{"user_id": {"a": 1}, "item_id": 3}\n'),
]


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[str, tuple[Path, CliProcess]]]:
    jobs, paths = {}, {}
    for name, data in REAL:
        tmp = tmp_path_factory.mktemp("cli")
        paths[name] = path = _write(tmp, name, data)
        jobs[name] = (["data", "prepare", "--events", str(path), "--out", str(tmp / "d")],
                      tmp / "run", None)
    with cli_processes(jobs) as started:
        yield {name: (paths[name], proc) for name, proc in started.items()}


@pytest.mark.parametrize(("name", "data"), REAL)
def test_cli_one_line_and_exit_2(name: str, data: bytes,
                                 real_runs: dict[str, tuple[Path, CliProcess]]) -> None:
    path, run_ = real_runs[name]
    assert path.read_bytes() == data
    r = run_.result()
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert (r.returncode, len(lines)) == (2, 1), r.stderr
    assert lines[0].startswith(f"error: {path}") and "Traceback" not in r.stderr
