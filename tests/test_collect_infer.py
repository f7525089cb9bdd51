"""Every column of an event file gets a role, said on the console with its reason; options
win; what stays ignored is named; exact duplicates compare every source column."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from helpers_cli import run
from helpers_data import write
from lmrec.collect import ColumnMapping, read_table
from lmrec.data import Dataset
from lmrec.prepare import PrepareConfig, prepare

BEHAVIOURS = ["pv", "cart", "fav", "buy"]
HEADER = "客户,商品编号,行为,时间,品类"  # customer, item number, behaviour, time, category
IDS = ("--user-col", "客户", "--item-col", "商品编号")


def _shop_rows(n: int = 869) -> list[str]:
    """Users c00..c39 and items p000..p079; (customer, item) pairs repeat with other times and
    behaviours, never as an exact copy. Each item has one fixed category."""
    rows = []
    for k in range(n):
        user, item = f"c{(k * 7) % 40:02d}", f"p{(k * 11) % 80:03d}"
        day, minute = 1 + k // 400, (k * 13) % 1440
        when = f"2024-03-{day:02d} {minute // 60:02d}:{minute % 60:02d}:{k % 60:02d}"
        rows.append(f"{user},{item},{BEHAVIOURS[(k // 3) % 4]},{when},cat{int(item[1:]) % 3}")
    return rows


def _prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
             *args: str) -> tuple[int, str, Path]:
    p = write(tmp_path, "events.csv", text)
    out = tmp_path / "d"
    code, _, err = run(["data", "prepare", "--events", str(p), "--out", str(out), *args], capsys)
    return code, err, out


def test_unnamed_columns_get_roles_and_no_false_duplicates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEADER + "\n" + "\n".join(_shop_rows()) + "\n"
    code, err, out = _prepare(tmp_path, capsys, text, *IDS)
    assert code == 0, err
    report = json.loads((out / "quality_report.json").read_text())
    assert report["totals"]["dropped_by_reason"] == {}  # nothing is a duplicate
    ds = Dataset.load(out)
    assert ds.n_events == 869
    assert sorted(ds.events["event"].unique().to_list()) == sorted(BEHAVIOURS)
    assert ds.events["timestamp"].null_count() == 0
    assert "品类" in ds.item_schema  # a function of the item: an item attribute
    said = " ".join(err.split())
    assert ("'行为' -> behaviour type (inferred: 4 distinct short values: buy, cart, fav, pv)"
            in said)
    assert "'时间' -> timestamp (inferred: ISO-8601 date/times)" in said
    assert "'品类' -> item attribute (inferred: one value per item)" in said
    assert "'客户' -> user id (--user-col)" in said


def test_true_exact_duplicates_are_still_dropped(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rows = _shop_rows(200)
    text = HEADER + "\n" + "\n".join(rows + rows[:3]) + "\n"
    code, err, out = _prepare(tmp_path, capsys, text, *IDS)
    assert code == 0, err
    report = json.loads((out / "quality_report.json").read_text())
    assert report["totals"]["dropped_by_reason"] == {"exact duplicate": 3}


def test_exact_duplicates_compare_every_source_column() -> None:
    # "note" is mapped to nothing; rows that differ there are not copies of each other
    frame = pl.DataFrame({"user": [1, 1, 1], "item": [2, 2, 2], "note": ["a", "b", "a"]})
    p = prepare(frame, config=PrepareConfig())
    assert p.dataset.n_events == 2
    assert p.report.dropped_by_reason() == {"exact duplicate": 1}


def test_ignored_column_is_named_on_the_console_and_in_the_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [f"{r},note number {k} for this event" for k, r in enumerate(_shop_rows(120))]
    text = HEADER + ",备注\n" + "\n".join(rows) + "\n"
    code, err, out = _prepare(tmp_path, capsys, text, *IDS)
    assert code == 0, err
    said = " ".join(err.split())
    assert "'备注' -> ignored" in said
    md = (out / "quality_report.md").read_text()
    assert "Ignored columns" in md and "备注" in md
    assert "行为: behaviour type" in md


def test_options_always_win(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 品类 would be an item attribute and 行为 the behaviour type: the options say otherwise
    text = HEADER + "\n" + "\n".join(_shop_rows(200)) + "\n"
    code, err, out = _prepare(tmp_path, capsys, text, *IDS, "--event-col", "品类",
                              "--time-col", "时间")
    assert code == 0, err
    ds = Dataset.load(out)
    assert set(ds.events["event"].unique().to_list()) == {f"cat{i}" for i in range(3)}
    said = " ".join(err.split())
    assert "'品类' -> behaviour type (--event-col)" in said
    assert "'行为' -> ignored" in said and "--event-col picks one" in said


def test_taobao_headerless_category_becomes_an_item_attribute(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_datasets: Path) -> None:
    src = shared_datasets / "taobao-userbehavior-sample" / "UserBehavior_head4321.csv"
    out = tmp_path / "d"
    code, _, err = run(["data", "prepare", "--events", str(src), "--no-header", "--columns",
                        "user_id,item_id,category_id,behavior,timestamp", "--out", str(out)],
                       capsys)
    assert code == 0, err
    said = " ".join(err.split())
    assert "'category_id' -> item attribute (inferred: one value per item)" in said
    ds = Dataset.load(out)
    assert str(ds.item_schema["category_id"].role) == "categorical"
    assert ds.n_events == 4321 - json.loads((out / "quality_report.json").read_text())[
        "totals"]["rows_dropped"]


def test_inference_unit() -> None:
    from lmrec.collect.infer import infer_event_columns

    n = 60
    frame = pl.DataFrame({
        "u": [f"u{i % 6}" for i in range(n)],
        "i": [f"i{i % 10}" for i in range(n)],
        "kind": [["view", "cart", "buy"][(i // 4) % 3] for i in range(n)],
        "when": [str(1_700_000_000 + 37 * i) for i in range(n)],
        "price": [str(10 + (i % 10)) for i in range(n)],  # one price per item
        "age": [str(20 + (i % 6)) for i in range(n)],  # one age per user
        "seq": [str(i) for i in range(n)],
    })
    cols = infer_event_columns(frame, user="u", item="i")
    m = cols.mapping
    assert (m.user, m.item, m.event, m.time, m.value) == ("u", "i", "kind", "when", None)
    assert m.item_attributes == ("price",) and m.user_attributes == ("age",)
    assert {c.column: c.role for c in cols.choices}["seq"] == "ignored"
    assert "--value-col seq" in {c.column: c.why for c in cols.choices}["seq"]
    # the options come first
    m = infer_event_columns(frame, user="u", item="i", time_col="seq", value="price").mapping
    assert (m.time, m.value, m.item_attributes) == ("seq", "price", ())


def test_library_default_mapping_is_unchanged(tmp_path: Path) -> None:
    t = read_table(write(tmp_path, "x.csv", "user,item,ts\n1,2,5\n"))
    assert prepare(t, mapping=ColumnMapping()).dataset.events["timestamp"].to_list() == [None]
