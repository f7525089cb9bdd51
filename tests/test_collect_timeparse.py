"""Timestamps: Unix numbers and ISO-8601 by default, anything else only with --time-format;
nothing is guessed, and every value that cannot be read is an error naming line and column."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from helpers_data import write
from lmrec.collect import ColumnMapping, read_table, to_events
from lmrec.collect.events import parse_timestamps
from lmrec.errors import InputError
from lmrec.prepare import PrepareConfig, prepare

T2020 = 1577836800  # 2020-01-01T00:00:00Z
MAR1 = 1709251200  # 2024-03-01T00:00:00Z
DEC31 = 1735603200  # 2024-12-31T00:00:00Z


def _csv_error(tmp_path: Path, value: str, **kwargs: object) -> str:
    p = write(tmp_path, "x.csv", f'user,item,ts\n1,2,{T2020}\n3,4,"{value}"\n')
    with pytest.raises(InputError) as e:
        to_events(read_table(p), ColumnMapping(time="ts"), **kwargs)
    return str(e.value).replace(str(tmp_path) + "/", "")


# --- no guessing of day/month order ---------------------------------------------------------
@pytest.mark.parametrize("value", ["03/01/2024", "12/31/2024", "31/12/2024", "01.03.2024",
                                   "2024/03/01", "1 March 2024", "Mar 1, 2024"])
def test_non_iso_dates_are_errors_without_a_format(tmp_path: Path, value: str) -> None:
    m = _csv_error(tmp_path, value)
    assert m.startswith("x.csv, line 3, column 'ts': ")
    assert "--time-format" in m
    assert m.endswith(f"found {value!r}")


def test_ambiguous_day_month_is_called_ambiguous(tmp_path: Path) -> None:
    m = _csv_error(tmp_path, "03/01/2024")
    assert "ambiguous date" in m and "%d/%m/%Y" in m and "%m/%d/%Y" in m


@pytest.mark.parametrize(
    ("fmt", "values", "expected"),
    [
        ("%m/%d/%Y", ["03/01/2024", "12/31/2024"], [MAR1, DEC31]),
        ("%d/%m/%Y", ["01/03/2024", "31/12/2024"], [MAR1, DEC31]),
        ("%d.%m.%Y", ["01.03.2024"], [MAR1]),
        ("%Y%m%d", ["20240301"], [MAR1]),
        ("%d/%m/%Y %H:%M", ["01/03/2024 10:30"], [MAR1 + 10 * 3600 + 30 * 60]),
        ("%Y-%m-%d %H:%M:%S%z", ["2024-03-01 02:00:00+0200"], [MAR1]),
    ],
)
def test_time_format(fmt: str, values: list[str], expected: list[int]) -> None:
    secs, bad = parse_timestamps(pl.Series(values), time_format=fmt)
    assert secs.to_list() == expected and not bad.any()


def test_time_format_mismatch_names_line_and_column(tmp_path: Path) -> None:
    p = write(tmp_path, "x.csv", "user,item,ts\n1,2,01/03/2024\n3,4,2024-03-01\n")
    with pytest.raises(InputError) as e:
        to_events(read_table(p), ColumnMapping(time="ts"), time_format="%d/%m/%Y")
    m = str(e.value)
    assert "x.csv, line 3, column 'ts'" in m and "'%d/%m/%Y'" in m and "'2024-03-01'" in m


def test_invalid_time_format_is_an_input_error() -> None:
    with pytest.raises(InputError, match="--time-format"):
        parse_timestamps(pl.Series(["2024"]), time_format="%Q")


def test_time_format_in_the_config(tmp_path: Path) -> None:
    p = write(tmp_path, "x.csv", "user,item,ts\n1,2,31/12/2024\n")
    cfg = PrepareConfig(time_format="%d/%m/%Y", future_tolerance_s=None)
    ds = prepare(p, mapping=ColumnMapping(time="ts"), config=cfg).dataset
    assert ds.events["timestamp"].to_list() == [DEC31]
    with pytest.raises(InputError, match="line 2, column 'ts'"):
        prepare(p, mapping=ColumnMapping(time="ts"))


# --- numbers ----------------------------------------------------------------------------------
def test_yyyymmdd_number_is_refused_with_a_hint(tmp_path: Path) -> None:
    m = _csv_error(tmp_path, "20240301")
    assert m.startswith("x.csv, line 3, column 'ts': ")
    assert "--time-format %Y%m%d" in m and m.endswith("found '20240301'")
    # not a valid date, or out of 1900..2100: plain Unix seconds
    for v, s in (("20241301", 20241301), ("99999999", 99999999), ("18991231", 18991231)):
        assert parse_timestamps(pl.Series([v]))[0].to_list() == [s]
    # typed integers too
    _, bad = parse_timestamps(pl.Series([20240301]))
    assert bad.tolist() == [True]


@pytest.mark.parametrize("factor", [1, 1000, 1_000_000, 1_000_000_000])
def test_units_by_magnitude_up_to_nanoseconds(factor: int) -> None:
    secs, bad = parse_timestamps(pl.Series([str(T2020 * factor + factor // 2)]))
    assert secs.to_list() == [T2020] and not bad.any()
    secs, bad = parse_timestamps(pl.Series([T2020 * factor]))
    assert secs.to_list() == [T2020] and not bad.any()


def test_nanoseconds_are_not_in_the_future(tmp_path: Path) -> None:
    p = write(tmp_path, "x.csv", f"user,item,ts\n1,2,{T2020 * 10**9}\n")
    p2 = prepare(p, mapping=ColumnMapping(time="ts"))
    assert p2.dataset.events["timestamp"].to_list() == [T2020]
    assert p2.report.rows_dropped == 0


def test_negative_timestamps_need_the_option(tmp_path: Path) -> None:
    m = _csv_error(tmp_path, "-86400")
    assert m.startswith("x.csv, line 3, column 'ts': negative timestamp")
    assert "--allow-negative-time" in m
    p = write(tmp_path, "y.csv", "user,item,ts\n1,2,-86400\n3,4,-1.5\n")
    ev = to_events(read_table(p), ColumnMapping(time="ts"), allow_negative_time=True)
    assert ev.frame["timestamp"].to_list() == [-86400, -2]  # floored
    cfg = PrepareConfig(allow_negative_time=True)
    assert prepare(p, mapping=ColumnMapping(time="ts"), config=cfg).dataset.n_events == 2
    # an ISO date before 1970 is explicit, not a sentinel: accepted
    assert parse_timestamps(pl.Series(["1969-12-31"]))[0].to_list() == [-86400]


# --- values that are not finite or too large (a traceback before) ---------------------------
@pytest.mark.parametrize("value", ["1e30", "1e300", "inf", "nan", "-inf", "1e20", "NaN"])
def test_non_finite_or_huge_numbers_name_line_and_column(tmp_path: Path, value: str) -> None:
    m = _csv_error(tmp_path, value)
    assert m.startswith("x.csv, line 3, column 'ts': ")
    assert m.endswith(f"found {value!r}")


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e30, -1.0])
def test_typed_float_timestamps_are_checked(value: float) -> None:
    secs, bad = parse_timestamps(pl.Series([1577836800.0, value]))
    assert bad.tolist() == [False, True] and secs[0] == T2020


@pytest.mark.parametrize("value", ["1e30", "inf", "nan", "-inf"])
def test_cli_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             value: str) -> None:
    from helpers_cli import run

    p = write(tmp_path, "e.csv", f"user,item,ts\n1,2,{T2020}\n3,4,{value}\n")
    code, out, err = run(["data", "prepare", "--events", str(p), "--time-col", "ts", "--out",
                          str(tmp_path / "d")], capsys)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err + out
    assert f"{p}, line 3, column 'ts'" in lines[0]


# --- ISO-8601 shapes --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-01-01", T2020),
        ("2020-01-01T00:00", T2020),
        ("2020-01-01 00:00:05", T2020 + 5),
        ("2020-01-01T00:00:05.999", T2020 + 5),
        ("2020-01-01T00:00:05,5Z", T2020 + 5),
        ("2020-01-01T02:00:00+02:00", T2020),
        ("2020-01-01T02:00:00+0200", T2020),
        ("2020-01-01T02:00:00+02", T2020),
        ("2019-12-31T23:00:00-01:00", T2020),
    ],
)
def test_iso_shapes(value: str, expected: int) -> None:
    secs, bad = parse_timestamps(pl.Series([value]))
    assert secs.to_list() == [expected] and not bad.any()


@pytest.mark.parametrize("value", ["2024-02-30", "2024-13-01", "2024-01-01T25:00:00",
                                   "2024-1-1", "2024-01-01 10h"])
def test_iso_shaped_but_invalid(value: str) -> None:
    _, bad = parse_timestamps(pl.Series([value]))
    assert bad.tolist() == [True]
