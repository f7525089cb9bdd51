"""`lmrec recommend --all-users --out` and `lmrec similar`: a trained model's answers in bulk,
checked against the library's own answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers_cli import one_error_line, run
from lmrec.models import load_model
from lmrec.testing import planted_dataset


@pytest.fixture()
def trained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    data, model = tmp_path / "data", tmp_path / "model"
    planted_dataset().save(data)
    code, _, err = run(["train", "--data", str(data), "--model", "itemknn", "--out",
                        str(model)], capsys)
    assert code == 0, err
    return model


def test_all_users_to_parquet_match_recommend(trained: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "recs" / "recs.parquet"
    code, _, err = run(["recommend", str(trained), "--all-users", "--out", str(out), "--k",
                        "3"], capsys)
    assert code == 0, err
    recs = pl.read_parquet(out)
    rec = load_model(trained)
    assert recs.columns == ["user", "rank", "item", "score"]
    assert recs["user"].n_unique() == len(rec.users_) and recs.height == 3 * len(rec.users_)
    # every user's rows are the library's own top 3, in rank order, seen items left out
    for user in ("a0", "b5"):
        mine = recs.filter(pl.col("user") == user).sort("rank")
        assert mine["rank"].to_list() == [1, 2, 3]
        expected = rec.recommend([user], 3).to_records()[0]["items"]
        assert mine["item"].to_list() == [r["item"] for r in expected]
        np.testing.assert_allclose(mine["score"].to_numpy(), [r["score"] for r in expected],
                                   rtol=1e-5)


def test_batch_scoring_options_are_checked(trained: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["recommend", str(trained), "--all-users"], capsys)
    one_error_line(code, err, "--all-users and --out go together", out)
    code, out, err = run(["recommend", str(trained), "--all-users", "--user", "a0", "--out",
                          str(tmp_path / "r.parquet")], capsys)
    one_error_line(code, err, "give one of --user", out)
    code, out, err = run(["recommend", str(trained), "--all-users", "--out", str(tmp_path)],
                         capsys)
    one_error_line(code, err, "is a folder", out)


def test_similar_items_match_the_model(trained: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["similar", str(trained), "--item", "A3", "--item", "B0", "--k", "4",
                          "--json"], capsys)
    assert code == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    rec = load_model(trained)
    top, vals = rec.similar_items(rec.item_indices(["A3"]), 4)
    assert first["item"] == "A3"
    assert [s["item"] for s in first["similar"]] == [rec.items_.to_python(int(j))
                                                     for j in top[0]]
    np.testing.assert_allclose([s["score"] for s in first["similar"]], vals[0], atol=1e-6)
    # planted groups: an A item's neighbours are A items, a B item's B items
    assert all(s["item"].startswith("A") for s in first["similar"])
    assert second["item"] == "B0" and all(s["item"].startswith("B") for s in second["similar"])
    code, out, _ = run(["similar", str(trained), "--item", "A3"], capsys)
    assert code == 0 and "Similar to A3" in out
    code, out, err = run(["similar", str(trained), "--item", "nope"], capsys)
    one_error_line(code, err, "unknown item id 'nope' given to --item", out)
