"""The CLI end to end, in process: exit codes, messages and the fixed output formats."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from helpers_cli import one_error_line, run, run_ok


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


# --- bad option values, output folders and JSON output (issue 10) ---------------------------
def _strict_json(text: str) -> object:
    """Parse as a strict JSON reader would: bare NaN / Infinity are not JSON."""
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def prepared_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`lmrec data prepare` run once per module; tests get a copy (see `prepared`)."""
    root = tmp_path_factory.mktemp("prepared")
    rows = ["user,item,ts"] + [f"u{u},i{(u * 7 + j) % 30},{1_700_000_000 + 10 * u + j}"
                               for u in range(20) for j in range(8)]
    path = root / "e.csv"
    path.write_text("\n".join(rows) + "\n")
    run_ok(["data", "prepare", "--events", str(path), "--out", str(root / "d")])
    return root / "d"


@pytest.fixture()
def prepared(prepared_once: Path, tmp_path: Path) -> Path:
    """A prepared dataset folder of this test's own (a test may write into it)."""
    return shutil.copytree(prepared_once, tmp_path / "d")


@pytest.mark.parametrize("command", ["prepare", "train"])
def test_out_that_is_a_file_or_unwritable_is_refused(
        command: str, tmp_path: Path, events_csv: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    assert run(["data", "prepare", "--events", str(events_csv), "--out", str(data)],
               capsys)[0] == 0
    base = (["data", "prepare", "--events", str(events_csv)] if command == "prepare"
            else ["train", "--data", str(data), "--model", "popularity"])
    existing = tmp_path / "notes.txt"
    existing.write_text("mine\n")
    for target in (existing, existing / "sub"):
        code, out, err = run([*base, "--out", str(target)], capsys)
        line = one_error_line(code, err, "--out")
        assert str(target) in line, err
        assert "Traceback" not in out + err
        assert existing.read_text() == "mine\n"
    # a read-only folder (tests may run as root, where the mode bits do not stop writes)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
        False if Path(p) == locked else real_access(p, mode, **kw)))
    code, _, err = run([*base, "--out", str(locked / "new")], capsys)
    one_error_line(code, err, "--out")
    assert "not writable" in err, err
    assert list(locked.iterdir()) == []


def test_tune_with_zero_trials_is_refused(prepared: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for trials in ("0", "-2"):
        code, out, err = run(["evaluate", "--data", str(prepared), "--model", "ease", "--tune",
                              "--trials", trials], capsys)
        one_error_line(code, err, "--trials")
        assert "Traceback" not in out + err


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--split", "cold-users", "--max-train-events", "0"], "--max-train-events"),
        (["--split", "cold-users", "--max-train-events", "-1"], "--max-train-events"),
        (["--ratios", "0.9,0.9,0.9"], "--ratios"),
        (["--ratios", "0.5,0.2"], "--ratios"),
        (["--ratios", "0,0.5,0.5"], "--ratios"),
        (["--ratios", "nan,0.5,0.5"], "--ratios"),
        (["--split", "temporal", "--test-share", "1"], "--test-share"),
        (["--split", "temporal", "--test-share", "inf"], "--test-share"),
        (["--split", "cold-items", "--holdout-share", "-0.2"], "--holdout-share"),
        (["--split", "kfold", "--folds", "1"], "--folds"),
        (["--seed", "-1"], "--seed"),
        (["--k", "0"], "--k"),
        (["--k", "-5,10"], "--k"),
        (["--part", "train"], "--part"),
        (["--history", "bogus"], "--history"),
        (["--history", "Trained"], "--history"),
    ],
)
def test_evaluate_option_out_of_range(prepared: Path, capsys: pytest.CaptureFixture[str],
                                      args: list[str], option: str) -> None:
    for command in (["evaluate", "--model", "popularity"],
                    ["compare", "--models", "popularity", "--report",
                     str(prepared.parent / "r")]):
        if command[0] == "compare" and option in ("--folds", "--part"):
            continue
        code, out, err = run([*command, "--data", str(prepared), *args], capsys)
        one_error_line(code, err, option)
        assert "Traceback" not in out + err
        assert not (prepared.parent / "r").exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["recommend", "{model}", "--user", "u1", "--k", "0"], "--k"),
        (["train", "--data", "{data}", "--model", "popularity", "--out", "{new}", "--seed",
          "-3"], "--seed"),
        (["train", "--data", "{data}", "--model", "popularity", "--out", "{new}",
          "--ann-threshold", "-1"], "--ann-threshold"),
        (["embed", "--data", "{data}", "--show", "-1"], "--show"),
        (["embed", "--data", "{data}", "--batch-size", "0"], "--batch-size"),
        (["datasets", "get", "movielens-100k", "--from", "{data}", "--out", "{new}", "--core",
          "0"], "--core"),
        (["datasets", "get", "movielens-100k", "--from", "{data}", "--out", "{new}",
          "--min-rating", "nan"], "--min-rating"),
        (["datasets", "get", "movielens-100k", "--from", "{data}", "--out", "{data}/e.csv"],
         "--out"),
        (["compare", "--data", "{data}", "--models", "popularity", "--report",
          "{data}/metadata.json"], "--report"),
    ],
)
def test_other_options_out_of_range(prepared: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str], args: list[str],
                                    option: str) -> None:
    model = tmp_path / "m"
    assert run(["train", "--data", str(prepared), "--model", "popularity", "--out", str(model)],
               capsys)[0] == 0
    (prepared / "e.csv").write_text("a file\n")
    argv = [a.format(model=model, data=prepared, new=tmp_path / "new") for a in args]
    code, out, err = run(argv, capsys)
    one_error_line(code, err, option)
    assert "Traceback" not in out + err and not (tmp_path / "new").exists()


def test_json_output_is_valid_json(prepared: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    # at k=1 intra-list diversity is undefined (NaN): it must print as null
    code, out, err = run(["evaluate", "--data", str(prepared), "--model", "popularity", "--k",
                          "1", "--json"], capsys)
    assert code == 0, err
    metrics = _strict_json(out)
    assert isinstance(metrics, dict) and metrics["diversity@1"] is None
    assert metrics["ndcg@1"] is not None
    code, out, err = run(["evaluate", "--data", str(prepared), "--model", "popularity",
                          "--split", "kfold", "--folds", "2", "--k", "1", "--json"], capsys)
    assert code == 0, err
    assert _strict_json(out)["diversity@1"] is None  # type: ignore[index]
    report = tmp_path / "report"
    code, out, err = run(["compare", "--data", str(prepared), "--models", "popularity",
                          "--report", str(report), "--k", "1", "--json"], capsys)
    assert code == 0, err
    assert _strict_json(out)["popularity"]["diversity@1"] is None  # type: ignore[index]
    saved = _strict_json((report / "results.json").read_text(encoding="utf-8"))
    assert saved["results"]["popularity"]["metrics"]["diversity@1"] is None  # type: ignore[index]


def test_history_option(prepared: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    ndcg = {}
    for history in ("observed", "trained"):
        code, out, err = run(["evaluate", "--data", str(prepared), "--model", "ease",
                              "--history", history, "--json"], capsys)
        assert code == 0, err
        ndcg[history] = json.loads(out)["ndcg@10"]
    code, out, err = run(["evaluate", "--data", str(prepared), "--model", "ease", "--json"],
                         capsys)
    assert code == 0, err
    assert json.loads(out)["ndcg@10"] == ndcg["observed"]  # the default
    code, out, err = run(["evaluate", "--data", str(prepared), "--model", "ease", "--history",
                          "trained"], capsys)
    assert code == 0, err
    assert "trained" in out  # named in the table title
    report = tmp_path / "report"
    code, out, err = run(["compare", "--data", str(prepared), "--models", "popularity,ease",
                          "--history", "trained", "--report", str(report), "--json"], capsys)
    assert code == 0, err
    saved = json.loads((report / "results.json").read_text(encoding="utf-8"))
    assert {r["history"] for r in saved["results"].values()} == {"trained"}
    assert "History &#x27;trained&#x27;" in (report / "report.html").read_text(encoding="utf-8")


def test_json_output_keeps_non_ascii_text(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.csv"
    path.write_text("user,item\nzoë,crème brûlée\nzoë,café\nbjörn,crème brûlée\nbjörn,smørbrød\n"
                    "åsa,café\nåsa,smørbrød\n", encoding="utf-8")
    data, model = tmp_path / "d", tmp_path / "m"
    assert run(["data", "prepare", "--events", str(path), "--out", str(data)], capsys)[0] == 0
    assert run(["train", "--data", str(data), "--model", "popularity", "--out", str(model)],
               capsys)[0] == 0
    code, out, err = run(["recommend", str(model), "--user", "zoë", "--k", "1", "--json"],
                         capsys)
    assert code == 0, err
    assert out == '{"user": "zoë", "items": [{"item": "smørbrød", "score": 2.0}]}\n'
    report = tmp_path / "report"
    code, out, err = run(["compare", "--data", str(data), "--variant", "größe=popularity",
                          "--report", str(report), "--k", "1", "--json"], capsys)
    assert code == 0, err
    assert '"größe"' in out
    assert '"größe"' in (report / "results.json").read_text(encoding="utf-8")


def test_json_writer_writes_valid_utf8_json(tmp_path: Path) -> None:
    import numpy as np

    from lmrec.jsonfile import dumps, write_json

    value = {"nan": float("nan"), "inf": [float("-inf"), np.float32("nan")], 3: np.int64(7),
             "arr": np.array([0.5, np.inf]), "text": "zoë ☕", "tuple": (1, np.bool_(True))}
    expected = ('{"nan": null, "inf": [null, null], "3": 7, "arr": [0.5, null], '
                '"text": "zoë ☕", "tuple": [1, true]}')
    assert dumps(value) == expected
    path = write_json(tmp_path / "v.json", value, indent=None)
    assert path.read_bytes() == (expected + "\n").encode("utf-8")


def test_demo_never_deletes_a_folder_it_did_not_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "raw").mkdir()  # an earlier demo's folder ...
    (tmp_path / "thesis.tex").write_text("mine\n")  # ... next to a file that is not the demo's
    code, out, err = run(["demo", "--out", str(tmp_path)], capsys)
    one_error_line(code, err, "--out")
    assert "thesis.tex" in err, err
    assert "Traceback" not in out + err
    assert (tmp_path / "thesis.tex").read_text() == "mine\n" and (tmp_path / "raw").is_dir()
    code, _, err = run(["demo", "--out", str(tmp_path / "thesis.tex")], capsys)
    one_error_line(code, err, "--out")
