"""End to end through the CLI: real data, the fixed commands and their JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers_cli import run


def test_compare_on_movielens_100k(shared_datasets: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "ml100k"
    code, _, err = run(["datasets", "get", "movielens-100k", "--from",
                        str(shared_datasets / "ml-100k"), "--out", str(data), "--min-rating", "3",
                        "--core", "10"], capsys)
    assert code == 0, err
    meta = json.loads((data / "metadata.json").read_text())
    assert (meta["n_users"], meta["n_items"], meta["n_events"]) == (939, 1016, 80393)

    code, out, err = run(["evaluate", "--data", str(data), "--model", "ease", "--split",
                          "random", "--ratios", "0.8,0.1,0.1", "--k", "10", "--seed", "0",
                          "--json"], capsys)
    assert code == 0, err
    ease = json.loads(out)
    assert {"ndcg@10", "recall@10", "precision@10", "hit@10", "mrr@10"} <= set(ease)

    report = tmp_path / "report"
    code, out, err = run(["compare", "--data", str(data), "--models", "popularity,ease",
                          "--report", str(report), "--k", "10,20", "--json"], capsys)
    assert code == 0, err
    results = json.loads(out)
    assert results["ease"]["ndcg@10"] == pytest.approx(ease["ndcg@10"], abs=1e-6)
    # EASE learns item-item structure; popularity cannot: a wide margin on this protocol
    assert results["ease"]["ndcg@10"] > 0.27
    assert results["popularity"]["ndcg@10"] < 0.15
    for name in ("report.html", "report.md", "results.json"):
        assert (report / name).stat().st_size > 0
    assert list(report.glob("*.png"))


def test_ratings_without_timestamps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The MovieLens-1M hold-out form: a ratings table of user, item, rating, no timestamps.

    Two planted tastes: even users rate 20 of items 0-39 high (3-5) and 5 of items 40-79 low
    (1-2), odd users the other way round. After --min-rating 3 each user keeps only their own
    half, which popularity (both halves equally popular) cannot see and EASE learns."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        own = 40 * (u % 2)
        rows += [f"{u},{i + own},{int(rng.integers(3, 6))}"
                 for i in rng.choice(40, size=20, replace=False)]
        rows += [f"{u},{i + 40 - own},{int(rng.integers(1, 3))}"
                 for i in rng.choice(40, size=5, replace=False)]
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(["user_id,item_index,rating", *rng.permutation(rows)]) + "\n")
    for source in ([path], [tmp_path]):
        code, _, err = run(["datasets", "get", "movielens-1m", "--from", str(source[0]),
                            "--out", str(tmp_path / "d"), "--min-rating", "3", "--core", "5"],
                           capsys)
        assert code == 0, err
    meta = json.loads((tmp_path / "d" / "metadata.json").read_text())
    assert (meta["n_users"], meta["n_items"], meta["n_events"]) == (60, 80, 60 * 20)
    ndcg = {}
    for model in ("popularity", "ease"):
        code, out, err = run(["evaluate", "--data", str(tmp_path / "d"), "--model", model,
                              "--split", "random", "--k", "10", "--seed", "0", "--json"],
                             capsys)
        assert code == 0, err
        ndcg[model] = json.loads(out)["ndcg@10"]
    # on the same split: about 0.04 for popularity and 0.21 for EASE
    assert ndcg["popularity"] < 0.1
    assert ndcg["ease"] > ndcg["popularity"] + 0.1, ndcg


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--model", "ease", "--param", "lambdaa=3"], "unknown parameter 'lambdaa'"),
        (["--model", "popularity", "--k", "5000"], "larger than the catalogue"),
        (["--model", "popularity", "--split", "sideways"], "split"),
        (["--model", "popularity", "--split", "random", "--ratios", "0,0.5,0.5"], "train"),
    ],
)
def test_evaluate_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            args: list[str], needle: str) -> None:
    path = tmp_path / "e.csv"
    path.write_text("user,item\n" + "".join(f"u{u},i{(u * 7 + j) % 30}\n" for u in range(20)
                                            for j in range(8)))
    run(["data", "prepare", "--events", str(path), "--out", str(tmp_path / "d")], capsys)
    code, out, err = run(["evaluate", "--data", str(tmp_path / "d"), *args], capsys)
    assert code == 2, out
    assert needle in err and "Traceback" not in err


def test_model_from_another_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.csv"
    path.write_text("user,item\na,x\na,y\nb,x\n")
    run(["data", "prepare", "--events", str(path), "--out", str(tmp_path / "d")], capsys)
    run(["train", "--data", str(tmp_path / "d"), "--model", "popularity", "--out",
         str(tmp_path / "m")], capsys)
    cfg = tmp_path / "m" / "config.json"
    meta = json.loads(cfg.read_text())
    meta.update(format_version=99, lmrec_version="9.0.0")
    cfg.write_text(json.dumps(meta))
    code, _, err = run(["recommend", str(tmp_path / "m"), "--user", "a"], capsys)
    assert code == 2 and "format version 99" in err and "train the model again" in err
