"""The CLI end to end, in process: exit codes, messages and the fixed output formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers_cli import run


@pytest.fixture()
def events_csv(tmp_path: Path) -> Path:
    rows = ["customer_id,product_id,action,ts"]
    # users a,b like p1..p3; c likes p4..p6; everyone views p1 (popular)
    for u, items in {"a": ["p1", "p2", "p3"], "b": ["p1", "p2"], "c": ["p1", "p4", "p5", "p6"],
                     "d": ["p2", "p3", "p4"]}.items():
        for t, it in enumerate(items):
            rows.append(f"{u},{it},view,{1_700_000_000 + t}")
    rows.append("a,p3,purchase,1700000100")
    path = tmp_path / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_prepare_train_recommend_json(tmp_path: Path, events_csv: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    data, model = tmp_path / "data", tmp_path / "model"
    code, _, err = run(["data", "prepare", "--events", str(events_csv), "--user-col",
                        "customer_id", "--item-col", "product_id", "--event-col", "action",
                        "--time-col", "ts", "--out", str(data)], capsys)
    assert code == 0, err
    assert (data / "metadata.json").exists() and (data / "quality_report.md").exists()
    code, _, err = run(["train", "--data", str(data), "--model", "popularity", "--out",
                        str(model)], capsys)
    assert code == 0, err
    code, out, _ = run(["recommend", str(model), "--user", "b", "--k", "2", "--json"], capsys)
    assert code == 0
    rec = json.loads(out)
    # b has p1, p2; the most popular unseen items are p3 (a, d + purchase) then p4 (c, d)
    assert rec == {"user": "b", "items": [{"item": "p3", "score": 2.0},
                                          {"item": "p4", "score": 2.0}]}


def test_recommend_unknown_user(tmp_path: Path, events_csv: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    data, model = tmp_path / "data", tmp_path / "model"
    run(["data", "prepare", "--events", str(events_csv), "--out", str(data)], capsys)
    run(["train", "--data", str(data), "--model", "popularity", "--out", str(model)], capsys)
    code, out, _ = run(["recommend", str(model), "--user", "zz", "--k", "1", "--json"], capsys)
    assert code == 0
    rec = json.loads(out)
    assert rec["items"] == [{"item": "p1", "score": 3.0}] and "cold-start" in rec["note"]
    code, out, err = run(["recommend", str(model), "--user", "zz", "--strict"], capsys)
    assert code == 2 and "unknown user id 'zz'" in err and "Traceback" not in err + out


def test_column_guessing_and_integer_ids(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ratings.tsv"
    path.write_text("userId\tmovieId\trating\ttimestamp\n1\t10\t4\t100\n1\t11\t5\t101\n"
                    "2\t10\t3\t102\n")
    code, _, err = run(["data", "prepare", "--events", str(path), "--out",
                        str(tmp_path / "d")], capsys)
    assert code == 0, err
    run(["train", "--data", str(tmp_path / "d"), "--model", "popularity", "--out",
         str(tmp_path / "m")], capsys)
    code, out, _ = run(["recommend", str(tmp_path / "m"), "--user", "2", "--json"], capsys)
    assert json.loads(out) == {"user": 2, "items": [{"item": 11, "score": 1.0}]}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("user,item,ts\nu1,i1,5\nu2,i2\n", "line 3: wrong number of fields"),
        ("user,item,ts\nu1,i1,5\nu2,i2,yesterday\n", "line 3, column 'ts': unparseable timestamp"),
        ("user,item,ts\nu1,,5\n", "line 2, column 'item': empty item id"),
        ("", "file is empty"),
        ("user,item,ts\n", "header but no data rows"),
    ],
)
def test_bad_input_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  content: str, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, out, err = run(["data", "prepare", "--events", str(path), "--time-col", "ts",
                          "--out", str(tmp_path / "d")], capsys)
    assert code == 2
    assert str(path) in err and needle in err, err
    assert "Traceback" not in err + out


def test_missing_file_and_column(tmp_path: Path, events_csv: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["data", "prepare", "--events", str(tmp_path / "nope.csv"), "--out",
                        str(tmp_path / "d")], capsys)
    assert code == 2 and "nope.csv: file not found" in err
    code, _, err = run(["data", "prepare", "--events", str(events_csv), "--user-col",
                        "customer", "--item-col", "product_id", "--out", str(tmp_path / "d")],
                       capsys)
    assert code == 2 and "'customer' not found" in err and "customer_id" in err


def test_skip_policy_counts_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.csv"
    path.write_text("user,item\nu1,i1\nu2\nu3,i3\n,i4\n")
    code, _, err = run(["data", "prepare", "--events", str(path), "--on-bad-rows", "skip",
                        "--out", str(tmp_path / "d")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "d" / "quality_report.json").read_text())
    assert report["totals"]["rows_read"] == 4
    assert report["totals"]["dropped_by_reason"] == {"wrong number of fields": 1,
                                                     "empty user id": 1}
    assert report["summary"]["events"] == 2


def test_inspect_folder_and_files(tmp_path: Path, events_csv: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["data", "inspect", str(events_csv), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["summary"]["users"] == 4 and report["summary"]["events"] == 13
    run(["data", "prepare", "--events", str(events_csv), "--out", str(tmp_path / "d")], capsys)
    code, out, _ = run(["data", "inspect", str(tmp_path / "d"), "--json"], capsys)
    info = json.loads(out)
    assert (info["users"], info["items"], info["events"]) == (4, 6, 13)


def test_unknown_model_and_parameter(tmp_path: Path, events_csv: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    run(["data", "prepare", "--events", str(events_csv), "--out", str(tmp_path / "d")], capsys)
    code, _, err = run(["train", "--data", str(tmp_path / "d"), "--model", "nope", "--out",
                        str(tmp_path / "m")], capsys)
    assert code == 2 and "unknown model 'nope'" in err
    code, _, err = run(["train", "--data", str(tmp_path / "d"), "--model", "popularity",
                        "--param", "colour=red", "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "unknown parameter 'colour'" in err
    code, _, err = run(["train", "--data", str(tmp_path / "nodata"), "--model", "popularity",
                        "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "not a prepared dataset folder" in err
