"""Typed conversion to canonical events: id types, timestamps, values."""

from __future__ import annotations

import polars as pl
import pytest

from lmrec import columns as C
from lmrec.collect import ColumnMapping, read_table, to_events
from lmrec.collect.events import parse_numbers, parse_timestamps

T2020 = 1577836800  # 2020-01-01T00:00:00Z


def _events(frame: pl.DataFrame, **mapping: str) -> pl.DataFrame:
    return to_events(read_table(frame), ColumnMapping(**mapping)).frame


def test_canonical_columns_and_types() -> None:
    f = _events(pl.DataFrame({"u": ["1", "2"], "i": ["a", "b"], "ts": ["5", "6"],
                              "r": ["1.5", "2"], "kind": [" view ", "buy"]}),
                user="u", item="i", time="ts", value="r", event="kind")
    assert f.columns == list(C.EVENT_COLUMNS)
    assert f.schema == pl.Schema({"user": pl.Int64, "item": pl.String, "event": pl.String,
                                  "timestamp": pl.Int64, "value": pl.Float64})
    assert f.rows() == [(1, "a", "view", 5, 1.5), (2, "b", "buy", 6, 2.0)]


def test_default_event_and_null_optional_columns() -> None:
    f = _events(pl.DataFrame({"user": [1], "item": [2]}))
    assert f.row(0) == (1, 2, C.DEFAULT_EVENT, None, None)
    f = to_events(read_table(pl.DataFrame({"user": [1], "item": [2]})),
                  ColumnMapping(default_event="click")).frame
    assert f[C.EVENT].to_list() == ["click"]


def test_ids_with_leading_zeros_stay_strings() -> None:
    f = _events(pl.DataFrame({"user": ["007", "8"], "item": [" 1", "2 "]}))
    assert f["user"].dtype == pl.String and f["user"].to_list() == ["007", "8"]
    assert f["item"].dtype == pl.Int64 and f["item"].to_list() == [1, 2]


def test_empty_event_type_is_missing() -> None:
    f = _events(pl.DataFrame({"user": [1, 2], "item": [1, 2], "e": ["view", " "]}), event="e")
    assert f[C.EVENT].to_list() == ["view", None]


def test_ignored_columns_are_listed() -> None:
    et = to_events(read_table(pl.DataFrame({"user": [1], "item": [2], "x": [3], "y": [4]})),
                   ColumnMapping())
    assert et.ignored_columns == ["x", "y"]
    assert et.rows_read == 1


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1577836800", "1577836801"], [T2020, T2020 + 1]),
        (["1577836800000", "1577836801500"], [T2020, T2020 + 1]),  # milliseconds
        (["1577836800000000"], [T2020]),  # microseconds
        (["1577836800000", "1577836800"], [T2020, T2020]),  # units judged value by value
        (["2020-01-01", "2020-01-02"], [T2020, T2020 + 86400]),
        (["2020-01-01T00:00:00Z", "2020-01-01T02:00:00+02:00"], [T2020, T2020]),
        (["2020-01-01 00:00:05"], [T2020 + 5]),  # naive times are UTC
        (["2020-01-01T00:00:00Z", "2020-01-01 00:00:01", "2020-01-02"],
         [T2020, T2020 + 1, T2020 + 86400]),  # mixed formats in one column
        (["1577836800", "2020-01-01T00:00:10"], [T2020, T2020 + 10]),  # numbers and dates
        (["", " ", None], [None, None, None]),  # missing, not bad
        (["1577836800.9"], [T2020]),  # fractions are floored
    ],
)
def test_parse_timestamps(values: list[str | None], expected: list[int | None]) -> None:
    secs, bad = parse_timestamps(pl.Series(values, dtype=pl.String))
    assert secs.dtype == pl.Int64
    assert secs.to_list() == expected
    assert not bad.any()


def test_parse_timestamps_bad_and_typed_inputs() -> None:
    secs, bad = parse_timestamps(pl.Series(["2020-01-01", "soon", ""]))
    assert secs.to_list() == [T2020, None, None]
    assert bad.tolist() == [False, True, False]
    secs, bad = parse_timestamps(pl.Series([1577836800000, None]))
    assert secs.to_list() == [T2020, None] and not bad.any()
    dt = pl.Series(["2020-01-01"]).str.to_datetime()
    assert parse_timestamps(dt)[0].to_list() == [T2020]
    assert parse_timestamps(dt.cast(pl.Date))[0].to_list() == [T2020]


def test_parse_numbers() -> None:
    out, bad = parse_numbers(pl.Series(["1", " 2.5 ", "", None, "x", "1e3", "-4"]))
    assert out.to_list() == [1.0, 2.5, None, None, None, 1000.0, -4.0]
    assert bad.tolist() == [False, False, False, False, True, False, False]


def test_dataframe_row_numbers_in_errors() -> None:
    from lmrec.errors import InputError

    with pytest.raises(InputError) as e:
        _events(pl.DataFrame({"user": [1, 2, 3], "item": [1, 2, 3], "v": ["1", "2", "x"]}),
                value="v")
    assert str(e.value) == ("<DataFrame>, row 3, column 'v': non-numeric value; "
                            "expected a number, found 'x'")
