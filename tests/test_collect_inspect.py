"""`lmrec data inspect` reads event files as `data prepare` does: headerless files, column
names, delimiters, encodings and time formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers_cli import run
from helpers_data import write


def _inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    code, out, err = run(["data", "inspect", *args, "--json"], capsys)
    return code, (json.loads(out) if code == 0 else {}), err


def test_headerless_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, "e.csv", "1,10,1700000000\n1,11,1700000001\n2,10,1700000002\n")
    code, report, err = _inspect(capsys, str(p), "--no-header", "--columns", "user,item,ts")
    assert code == 0, err
    assert report["summary"]["events"] == 3 and report["summary"]["users"] == 2
    cols = report["sources"][0]["columns"]
    assert cols["ts"].startswith("timestamp") and cols["user"].startswith("user id")


def test_headerless_with_delimiter_encoding_and_time_format(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, "e.txt", "caf\u00e9;10;01/03/2024\nthé;11;31/12/2024\n".encode("latin-1"))
    code, report, err = _inspect(capsys, str(p), "--no-header", "--columns", "user,item,day",
                                 "--delimiter", ";", "--encoding", "latin-1",
                                 "--time-col", "day", "--time-format", "%d/%m/%Y")
    assert code == 0, err
    assert report["summary"]["events"] == 2
    assert report["totals"]["rows_dropped"] == 0


def test_headerless_without_names_says_which_option(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, "e.csv", "1,10\n2,11\n")
    code, _, err = _inspect(capsys, str(p), "--no-header")
    assert code == 2
    assert "cannot tell which column holds the user ids" in err and "column_1" in err
    code, report, err = _inspect(capsys, str(p), "--no-header", "--user-col", "column_1",
                                 "--item-col", "column_2")
    assert code == 0, err and report["summary"]["events"] == 2


def test_prepare_and_inspect_share_the_reading_options() -> None:
    import typer

    from lmrec.cli import app

    data = typer.main.get_command(app).commands["data"]  # type: ignore[attr-defined]

    def options(name: str) -> dict[str, str | None]:
        return {p.name: p.help for p in data.commands[name].params
                if p.param_type_name == "option"}

    prep, insp = options("prepare"), options("inspect")
    shared = ["delimiter", "encoding", "no_header", "columns", "time_format",
              "allow_negative_time", "user_col", "item_col", "event_col", "time_col",
              "value_col"]
    for name in shared:
        assert name in prep and name in insp, name
        assert prep[name] == insp[name], name
