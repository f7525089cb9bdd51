"""Readers: every format, every bad input, the skip policy, and a parser property test."""

from __future__ import annotations

import csv
import io
import re
import string
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_data import write
from lmrec.collect import ColumnMapping, read_table, to_events
from lmrec.errors import InputError
from lmrec.prepare import PrepareConfig, prepare

ROWS = [{"user": "1", "item": "10", "rating": "4.5"}, {"user": "2", "item": "20", "rating": "3"}]


def _msg(exc: pytest.ExceptionInfo[InputError]) -> str:
    """The message with the temporary folder taken off the file name."""
    src = exc.value.location.source
    msg = str(exc.value)
    return msg.replace(str(Path(src).parent) + "/", "") if src else msg


# --- formats --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "text", "kwargs"),
    [
        ("a.csv", "user,item,rating\n1,10,4.5\n2,20,3\n", {}),
        ("a.tsv", "user\titem\trating\n1\t10\t4.5\n2\t20\t3\n", {}),
        ("a.txt", "user;item;rating\n1;10;4.5\n2;20;3\n", {}),
        ("a.dat", "user|item|rating\n1|10|4.5\n2|20|3\n", {}),
        ("b.csv", "user|item|rating\n1|10|4.5\n2|20|3\n", {"delimiter": "|"}),
        ("c.csv", "user\titem\trating\n1\t10\t4.5\n2\t20\t3\n", {"delimiter": "\\t"}),
        ("crlf.csv", "user,item,rating\r\n1,10,4.5\r\n2,20,3\r\n", {}),
        ("bom.csv", "\ufeffuser,item,rating\n1,10,4.5\n2,20,3\n", {}),
        ("utf.csv", "user,item,rating\n1,10,4.5\n2,20,3\n", {}),
        ("noeol.csv", "user,item,rating\n1,10,4.5\n2,20,3", {}),
        ("h.csv", "1,10,4.5\n2,20,3\n",
         {"header": False, "column_names": ["user", "item", "rating"]}),
        ("r.csv", "u,i,r\n1,10,4.5\n2,20,3\n", {"column_names": ["user", "item", "rating"]}),
    ],
)
def test_delimited_formats(tmp_path: Path, name: str, text: str, kwargs: dict) -> None:
    t = read_table(write(tmp_path, name, text), **kwargs)
    assert t.frame.columns == ["user", "item", "rating"]
    assert t.frame.to_dicts() == ROWS
    assert t.bad_rows == []


def test_quoted_fields_keep_delimiters_quotes_and_newlines(tmp_path: Path) -> None:
    text = 'item,title\n1,"Hello, world"\n2,"say ""hi"""\n3,"two\nlines"\n'
    t = read_table(write(tmp_path, "q.csv", text))
    assert t.frame["title"].to_list() == ["Hello, world", 'say "hi"', "two\nlines"]


def test_empty_cells_and_na_words_are_kept_as_text(tmp_path: Path) -> None:
    t = read_table(write(tmp_path, "n.csv", "user,item\nNA,null\n,x\n"))
    assert t.frame.to_dicts() == [{"user": "NA", "item": "null"}, {"user": "", "item": "x"}]


def test_parquet(tmp_path: Path) -> None:
    df = pl.DataFrame({"user": [1, 2], "item": ["a", "b"], "v": [1.5, 2.0]})
    df.write_parquet(tmp_path / "x.parquet")
    t = read_table(tmp_path / "x.parquet")
    assert t.kind == "parquet"
    assert t.frame.equals(df)


def test_jsonl_with_blank_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "x.jsonl", '{"user": 1, "item": "a"}\n\n{"user": 2, "item": "b"}\n')
    t = read_table(p)
    assert t.frame.to_dicts() == [{"user": 1, "item": "a"}, {"user": 2, "item": "b"}]


def test_pandas_and_polars_frames() -> None:
    pdf = pd.DataFrame({"user": [1, 2], "item": ["a", "b"]})
    for obj in (pdf, pl.from_pandas(pdf), pl.from_pandas(pdf).lazy()):
        t = read_table(obj)
        assert t.kind == "frame"
        assert t.source == "<DataFrame>"
        assert t.frame.to_dicts() == [{"user": 1, "item": "a"}, {"user": 2, "item": "b"}]


def test_pandas_object_column_with_mixed_types_reads_as_text() -> None:
    t = read_table(pd.DataFrame({"user": [1, "a", None], "item": [3, 4, 5]}))
    assert t.frame["user"].to_list() == ["1", "a", None]
    ev = to_events(t, ColumnMapping(), on_bad_rows="skip")
    assert ev.frame["user"].to_list() == ["1", "a"]
    assert [b.reason for b in ev.bad_rows] == ["empty user id"]


def test_unknown_object_type() -> None:
    with pytest.raises(InputError, match="cannot read an object of type list"):
        read_table([1, 2])  # type: ignore[arg-type]


def test_merged_sources_unify_int_and_string_ids(tmp_path: Path) -> None:
    a = write(tmp_path, "a.csv", "user,item\n1,10\n2,20\n")
    b = write(tmp_path, "b.csv", "user,item\nu7,10\n1,x\n")
    p = prepare([a, b], config=PrepareConfig(dedupe="none"))
    ds = p.dataset
    assert ds.users.dtype == pl.String
    assert ds.users.ids.to_list() == ["1", "2", "u7"]
    assert ds.items.ids.to_list() == ["10", "20", "x"]
    assert [s.rows_read for s in p.report.sources] == [2, 2]
    # user "1" from both files is one user with items 10 and x
    assert sorted(ds.items.id_of(ds.sequences().of(0)).tolist()) == ["10", "x"]


def test_merged_int_sources_stay_int(tmp_path: Path) -> None:
    a = write(tmp_path, "a.csv", "user,item\n1,10\n")
    b = write(tmp_path, "b.csv", "user,item\n2,10\n")
    ds = prepare([a, b]).dataset
    assert ds.users.dtype == pl.Int64
    assert ds.users.ids.to_list() == [1, 2]


# --- bad input ------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        read_table(tmp_path / "nope.csv")
    assert "nope.csv" in _msg(e) and "file not found" in _msg(e)


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder"):
        read_table(tmp_path)


def test_truncated_parquet(tmp_path: Path) -> None:
    pl.DataFrame({"user": list(range(100)), "item": list(range(100))}).write_parquet(
        tmp_path / "x.parquet")
    data = (tmp_path / "x.parquet").read_bytes()
    p = write(tmp_path, "cut.parquet", data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        read_table(p)
    assert "cut.parquet" in _msg(e) and "truncated" in _msg(e)


def test_csv_cut_mid_row(tmp_path: Path) -> None:
    p = write(tmp_path, "cut.csv", "user,item,rating\n1,10,4\n2,20,5\n3,3")
    with pytest.raises(InputError) as e:
        read_table(p)
    assert e.value.location.line == 4
    assert "cut.csv, line 4: wrong number of fields (2); expected 3 fields separated by ','" in (
        _msg(e))
    assert "'3,3'" in _msg(e)


def test_csv_cut_inside_a_quoted_field(tmp_path: Path) -> None:
    p = write(tmp_path, "cut.csv", 'item,title\n1,"a"\n2,"unfinish')
    with pytest.raises(InputError) as e:
        read_table(p)
    assert e.value.location.line == 3
    assert "cut.csv, line 3" in _msg(e) and "quoted field not closed" in _msg(e)


def test_missing_required_column_suggests_the_closest(tmp_path: Path) -> None:
    t = read_table(write(tmp_path, "x.csv", "user_id,item,ts\n1,2,3\n"))
    with pytest.raises(InputError) as e:
        to_events(t, ColumnMapping(user="userid"))
    m = _msg(e)
    assert m.startswith("x.csv, column 'userid': required user column 'userid' not found")
    assert "did you mean 'user_id'?" in m
    assert "expected one of the columns ['user_id', 'item', 'ts']" in m


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("user,item\n1,2\n3,4,5\n6,7\n", 3),
        ("user,item\n\n\n1,2\n3,4,5\n", 5),  # blank lines are not records
        ('user,item\n1,"a,b"\n3,4,5\n', 3),  # a quoted delimiter is not a field separator
        ('user,item\n1,"a\nb"\n\n3,4,5\n', 5),  # a quoted newline continues the record
        ("user,item\r\n1,2\r\n\r\n3\r\n", 4),
    ],
)
def test_wrong_number_of_fields_names_the_physical_line(
    tmp_path: Path, text: str, line: int
) -> None:
    with pytest.raises(InputError) as e:
        read_table(write(tmp_path, "x.csv", text))
    assert e.value.location.line == line
    assert f"x.csv, line {line}: wrong number of fields" in _msg(e)
    assert "expected 2 fields separated by ','" in _msg(e)


def test_wrong_number_of_fields_headerless(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        read_table(write(tmp_path, "x.csv", "\n1,2\n3\n"), header=False,
                   column_names=["user", "item"])
    assert e.value.location.line == 3


def test_column_names_count_must_match(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"x.csv, line 1: 2 column names given for 3 columns"):
        read_table(write(tmp_path, "x.csv", "1,2,3\n"), header=False,
                   column_names=["user", "item"])


def test_non_numeric_value(tmp_path: Path) -> None:
    t = read_table(write(tmp_path, "x.csv", "user,item,r\n1,2,4\n\n3,4,four\n"))
    with pytest.raises(InputError) as e:
        to_events(t, ColumnMapping(value="r"))
    assert _msg(e) == ("x.csv, line 4, column 'r': non-numeric value; expected a number, "
                       "found 'four'")


def test_unparseable_timestamp(tmp_path: Path) -> None:
    t = read_table(write(tmp_path, "x.csv", "user,item,ts\n1,2,2020-01-01\n3,4,yesterday\n"))
    with pytest.raises(InputError) as e:
        to_events(t, ColumnMapping(time="ts"))
    m = _msg(e)
    assert m.startswith("x.csv, line 3, column 'ts': unparseable timestamp; expected a Unix")
    assert m.endswith("found 'yesterday'")


def test_error_line_in_jsonl_counts_blank_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "x.jsonl", '{"user": 1, "item": 2, "t": 5}\n\n{"user": 2, "item": 3, '
                                   '"t": "soon"}\n')
    with pytest.raises(InputError) as e:
        to_events(read_table(p), ColumnMapping(time="t"))
    assert "x.jsonl, line 3, column 't': unparseable timestamp" in _msg(e)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        read_table(write(tmp_path, "x.csv", b""))
    assert _msg(e) == "x.csv: file is empty; expected a header and data rows"


@pytest.mark.parametrize(
    "text", ["user,item\n", "user,item", "user,item\r\n\r\n", "us\u00e9r,\u00eftem\n\n"])
def test_header_only_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(InputError) as e:
        read_table(write(tmp_path, "x.csv", text))
    assert _msg(e) == ("x.csv, line 2: file has a header but no data rows; "
                       "expected data rows after the header line")


def test_mixed_encoding_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "x.csv", "user,item\n1,caf\u00e9\n".encode() + b"2,caf\xe9\n")
    with pytest.raises(InputError) as e:
        read_table(p)
    assert e.value.location.line == 3
    assert "x.csv, line 3: bytes that are not valid utf-8" in _msg(e)
    assert "latin-1" in _msg(e)
    ok = read_table(write(tmp_path, "y.csv", b"user,item\n1,caf\xe9\n"), encoding="latin-1")
    assert ok.frame["item"].to_list() == ["caf\u00e9"]


def test_latin1_jsonl(tmp_path: Path) -> None:
    p = write(tmp_path, "x.jsonl", b'{"user": "caf\xe9", "item": 1}\n')
    with pytest.raises(InputError, match="line 1: bytes that are not valid utf-8"):
        read_table(p)
    assert read_table(p, encoding="latin-1").frame["user"].to_list() == ["caf\u00e9"]


def test_empty_ids(tmp_path: Path) -> None:
    t = read_table(write(tmp_path, "x.csv", "user,item\n1,2\n  ,3\n"))
    with pytest.raises(InputError) as e:
        to_events(t, ColumnMapping())
    assert _msg(e) == ("x.csv, line 3, column 'user': empty user id; "
                       "expected a non-empty user id, found '  '")
    t = read_table(write(tmp_path, "y.csv", "user,item\n1,2\n3,\n"))
    with pytest.raises(InputError, match=r"y.csv, line 3, column 'item': empty item id"):
        to_events(t, ColumnMapping())


def test_invalid_json_line(tmp_path: Path) -> None:
    p = write(tmp_path, "x.jsonl", '{"user": 1, "item": 2}\n\n{"user": 2, "item": }\n')
    with pytest.raises(InputError) as e:
        read_table(p)
    assert e.value.location.line == 3
    assert _msg(e).startswith("x.jsonl, line 3: invalid JSON")
    assert "expected one JSON object per line" in _msg(e)


def test_invalid_json_line_after_unicode_line_separator(tmp_path: Path) -> None:
    # U+2028 is legal inside a JSON string; it does not start a new line
    p = write(tmp_path, "x.jsonl", '{"user": 1, "item": "a\u2028b"}\n{"user": 2\n')
    with pytest.raises(InputError) as e:
        read_table(p)
    assert e.value.location.line == 2


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"x.jsonl, line 2: not a JSON object"):
        read_table(write(tmp_path, "x.jsonl", '{"user": 1, "item": 2}\n[1, 2]\n'))


# --- skip policy ----------------------------------------------------------------------------
def test_skip_policy_counts_every_reason_and_keeps_every_good_row(tmp_path: Path) -> None:
    text = (
        "user,item,r,ts\n"
        "1,10,5,100\n"          # line 2 good
        "2,20,4\n"              # line 3 wrong number of fields
        "3,30,x,100\n"          # line 4 non-numeric value
        "\n"                    # line 5 blank
        "4,40,3,never\n"        # line 6 unparseable timestamp
        ",50,3,100\n"           # line 7 empty user id
        "5,,3,100\n"            # line 8 empty item id
        "6,60,,\n"              # line 9 good (missing value and time are not bad)
        "7,70,2,1,9\n"          # line 10 wrong number of fields
        '8,"80",1,100\n'        # line 11 good
    )
    p = write(tmp_path, "x.csv", text)
    t = read_table(p, on_bad_rows="skip")
    assert [b.location.line for b in t.bad_rows] == [3, 10]
    ev = to_events(t, ColumnMapping(value="r", time="ts"), on_bad_rows="skip")
    assert ev.rows_read == 9  # the blank line is not a row
    assert ev.frame["user"].to_list() == [1, 6, 8]
    assert ev.frame["item"].to_list() == [10, 60, 80]
    lines = {b.reason: b.location.line for b in ev.bad_rows}
    assert lines == {"wrong number of fields": 10, "empty user id": 7, "empty item id": 8,
                     "unparseable timestamp": 6, "non-numeric value": 4}
    rep = prepare(p, mapping=ColumnMapping(value="r", time="ts"), on_bad_rows="skip",
                  now=1e9).report
    src = rep.sources[0]
    assert src.bad_rows == {"wrong number of fields": 2, "empty user id": 1, "empty item id": 1,
                            "unparseable timestamp": 1, "non-numeric value": 1}
    assert (src.rows_read, src.rows_kept) == (9, 3)
    assert rep.rows_read - rep.rows_dropped == 3
    assert len(src.examples) == 5
    assert any("line 6, column 'ts'" in x for x in src.examples)


def test_skip_policy_with_every_row_bad(tmp_path: Path) -> None:
    p = write(tmp_path, "x.csv", "user,item\n,1\n,2\n")
    with pytest.raises(InputError, match="no valid event rows left"):
        to_events(read_table(p), ColumnMapping(), on_bad_rows="skip")


# --- parser property ------------------------------------------------------------------------
_cell = st.text(alphabet=string.ascii_letters + string.digits + ' ,;|\t"\'-_.', max_size=8)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_cols=st.integers(1, 4),
    rows=st.data(),
    delimiter=st.sampled_from([",", ";", "|", "\t"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    crlf=st.booleans(),
)
def test_random_tables_read_back_equal(
    tmp_path: Path, n_cols: int, rows: st.DataObject, delimiter: str, quoting: int, crlf: bool
) -> None:
    names = [f"c{i}" for i in range(n_cols)]
    body = rows.draw(st.lists(st.lists(_cell, min_size=n_cols, max_size=n_cols), min_size=1,
                              max_size=6))
    if n_cols == 1:  # a lone empty cell would be a blank line, which readers skip
        body = [[r[0] or "x"] for r in body]
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, quoting=quoting,
               lineterminator="\r\n" if crlf else "\n").writerows([names, *body])
    p = write(tmp_path, "prop.csv", buf.getvalue())
    t = read_table(p, delimiter=delimiter)
    assert t.frame.columns == names
    assert t.frame.rows() == [tuple(r) for r in body]


def test_wrong_row_message_mentions_delimiter(tmp_path: Path) -> None:
    p = write(tmp_path, "x.txt", "a;b\n1;2;3\n")
    with pytest.raises(InputError, match=re.escape("expected 2 fields separated by ';'")):
        read_table(p)


def test_non_ascii_header_with_one_short_data_row(tmp_path: Path) -> None:
    # byte and character offsets differ after a non-ASCII header
    t = read_table(write(tmp_path, "x.csv", "caf\u00e9\u00e9\u00e9,b\n1,2\n"))
    assert t.frame.rows() == [("1", "2")]
