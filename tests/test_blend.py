"""Blend: the contract, where its weights come from (validation part, internal holdout, fixed),
its search agreeing with the evaluation protocol, its config, and the slice-winner table."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers_cli import run
from lmrec import testing as T
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError
from lmrec.evaluate import Split, evaluate, fit_and_evaluate, split_random, write_report
from lmrec.evaluate.report import slice_winners
from lmrec.models import blend_search, create_model
from lmrec.models.blend import Blend, _reciprocal_ranks, _zscores
from lmrec.models.blend_search import simplex_grid
from lmrec.prepare import prepare
from lmrec.train.options import TrainingOptions


@functools.lru_cache(maxsize=1)
def clustered() -> Dataset:
    """160 users in 4 taste clusters of 30 items, 12 distinct items each: mostly their
    cluster's, some from a shared popular head (so popularity is a weak but real member)."""
    rng = np.random.default_rng(7)
    rows = []
    for u in range(160):
        own = rng.choice(30, 9, replace=False) + 30 * (u % 4)
        head = rng.choice(np.arange(120, 130), 3, replace=False)
        rows += [(u, int(i)) for i in (*own, *head)]
    return prepare(pl.DataFrame(rows, schema=["user", "item"], orient="row")).dataset


@functools.lru_cache(maxsize=1)
def clustered_split() -> Split:
    return split_random(clustered(), (0.8, 0.1, 0.1), seed=0)


@pytest.mark.parametrize("factory", [
    lambda: Blend(members=("itemknn", "popularity")),
    lambda: Blend(members=("itemknn", "popularity"), kind="rank"),
    lambda: Blend(members=("ease", "als", "itemknn", "popularity")),  # coordinate ascent
], ids=["score", "rank", "four"])
def test_contract(factory: T.ModelFactory, tmp_path: Path) -> None:
    T.check_recommender(factory, tmp_path)


@pytest.mark.parametrize("kept", [100, 10], ids=["candidates", "some-rescored"])
def test_weights_come_from_the_validation_part_and_match_the_protocol(
        kept: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The search's values are the evaluation protocol's valid NDCG@10, whether a user's top
    10 comes from the kept candidates or from scoring every item again."""
    monkeypatch.setattr(blend_search, "_CANDIDATES", kept)
    split = clustered_split()
    blend = Blend(members=("itemknn", "popularity"), kind="rank" if kept == 10 else "score")
    fit_and_evaluate(blend, split, [10], rng=0, history="trained")  # valid in the options
    best = blend.weight_search_[np.argmax(blend.weight_search_[:, -1])]
    assert np.allclose(best[:-1], blend.weights_)
    assert len(blend.weight_search_) == 11  # the grid at step 0.1 for two members
    valid = evaluate(blend, split, [10], part="valid", history="trained")
    assert best[-1] == pytest.approx(valid.metrics["ndcg@10"], abs=1e-9)
    # a member alone (a corner of the grid) scores as that member evaluated on its own
    for j, member in enumerate(blend.members_):
        corner = blend.weight_search_[blend.weight_search_[:, j] == 1.0][0, -1]
        alone = evaluate(member, split, [10], part="valid", history="trained")
        assert corner == pytest.approx(alone.metrics["ndcg@10"], abs=1e-9)
        assert best[-1] >= corner
    # the test part played no role: a split with other test items gives the same weights
    other = Split(split.train, split.valid, split.valid, name="test=valid")
    again = Blend(members=("itemknn", "popularity"), kind=blend.config.kind)
    fit_and_evaluate(again, other, [10], rng=0, history="trained")
    assert np.array_equal(again.weights_, blend.weights_)


def test_kept_candidates_give_the_full_rankings_ndcg(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer kept items per member send more users to the full scoring, never other values."""
    split = clustered_split()
    blend = Blend(members=("itemknn", "popularity"), weights=(1, 1))
    blend.fit(split.train, TrainingOptions(rng=0))
    truth = split.valid.matrix("binary").tocsr()
    users = blend_search.search_users(blend.seen_, truth, 10_000, np.random.default_rng(0))
    grid = blend_search.simplex_grid(2, 10)
    values, rescored = [], []
    for kept in (100, 10, 3):
        monkeypatch.setattr(blend_search, "_CANDIDATES", kept)
        ndcg = blend_search.NdcgOfWeights(blend.members_, blend._normalised, users,
                                          blend.seen_, truth, 10)
        values.append(ndcg(grid))
        rescored.append(ndcg.rescored)
    assert np.array_equal(values[0], values[1]) and np.array_equal(values[0], values[2])
    total = users.size * len(grid)
    assert rescored[0] == 0 and 0 < rescored[1] < total and rescored[2] == total


def test_without_a_validation_part_the_weights_come_from_a_holdout() -> None:
    ds = clustered()
    blend = Blend(members=("itemknn", "popularity")).fit(ds, TrainingOptions(rng=3))
    assert len(blend.weight_search_) == 11 and blend.weights_.sum() == pytest.approx(1)
    # the members were refitted on every training pair
    for member in blend.members_:
        assert member.seen_.nnz == ds.matrix("binary").nnz
    itemknn = create_model("itemknn").fit(ds, TrainingOptions(rng=0))
    assert np.array_equal(blend.named_members()["itemknn"].score(np.arange(5)),
                          itemknn.score(np.arange(5)))


def test_too_little_data_for_a_holdout_is_refused() -> None:
    tiny = prepare(pl.DataFrame({"user": [1, 1, 2, 2], "item": [1, 2, 1, 3]})).dataset
    with pytest.raises(ConfigError, match="validation part or set weights"):
        Blend(members=("itemknn", "popularity")).fit(tiny, TrainingOptions(rng=0))
    fixed = Blend(members=("itemknn", "popularity"), weights=(1, 1)).fit(tiny)
    assert fixed.learned_weights == {"itemknn": 0.5, "popularity": 0.5}


def test_fixed_weights_skip_the_search_and_refit_keeps_learned_ones() -> None:
    split = clustered_split()
    fixed = Blend(members=("itemknn", "popularity"), weights="1,3")
    fixed.fit(split.train, TrainingOptions(rng=0, valid=split.valid))
    assert fixed.weights_.tolist() == [0.25, 0.75] and fixed.weight_search_.shape == (0, 3)

    learned = Blend(members=("itemknn", "popularity"))
    learned.fit(split.train, TrainingOptions(rng=0, valid=split.valid))
    weights = tuple(learned.weights_)
    full = split.train.with_events(pl.concat([split.train.events, split.valid.events]))
    learned.refit_with_weights(full, options=TrainingOptions(rng=1))
    assert learned.config.weights == pytest.approx(weights)
    assert learned.weight_search_.shape == (0, 3)
    direct = Blend(members=("itemknn", "popularity"), weights=weights).fit(
        full, TrainingOptions(rng=1))
    users = np.arange(10)
    assert np.array_equal(learned.score(users), direct.score(users))
    by_name = Blend(members=("itemknn", "popularity")).refit_with_weights(
        full, {"popularity": 1.0})
    assert by_name.learned_weights == {"itemknn": 0.0, "popularity": 1.0}


@pytest.mark.parametrize(("params", "message"), [
    ({"members": ("ease",)}, "two to four members"),
    ({"members": "ease,als,bpr,itemknn,popularity"}, "two to four members"),
    ({"members": "ease,ease"}, "appear once"),
    ({"members": "ease,nope"}, "unknown model 'nope'"),
    ({"members": "ease,blend"}, "cannot be a member"),
    ({"member_params": {"bpr": {"factors": 8}}}, "not a member"),
    ({"member_params": {"ease": {"nope": 1}}}, "unknown parameter 'nope'"),
    ({"weights": (1.0,)}, "weights needs 2"),
    ({"weights": (0, 0)}, "not all 0"),
    ({"weight_step": 0.3}, "whole number"),
])
def test_config_is_checked(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Blend(**params)


def test_config_from_cli_strings() -> None:
    blend = create_model("blend", {"members": "ease, als", "weights": "0.7,0.3",
                                   "member_params": '{"ease": {"l2": "300"}}'})
    assert blend.config.members == ("ease", "als")
    assert blend.config.weights == pytest.approx((0.7, 0.3))
    assert blend.config.member_params == {"ease": {"l2": 300.0}}  # typed by the member
    assert Blend.Config.from_params(blend.config.model_dump(mode="json")) == blend.config


def test_normalisations_use_the_unseen_items_only() -> None:
    s = np.array([[9.0, 1.0, 2.0, 3.0, 3.0]], dtype=np.float32)
    mask = np.array([[True, False, False, False, False]])
    z = _zscores(s, mask, 60.0)
    assert z[0, 1:].mean() == pytest.approx(0, abs=1e-6)
    assert z[0, 1:].std() == pytest.approx(1, abs=1e-5) and np.isfinite(z).all()
    assert not _zscores(np.ones((1, 4), np.float32), np.zeros((1, 4), bool), 60.0).any()
    rr = _reciprocal_ranks(s, mask, 10.0)
    # ranks among the unseen: 3.0, 3.0 share rank 1, then 2.0 (3), 1.0 (4); the seen item last
    assert np.allclose(rr[0], 1 / (10 + np.array([5, 4, 3, 1, 1])))


def test_simplex_grid() -> None:
    grid = simplex_grid(3, 10)
    assert len(grid) == 66 and len(set(grid)) == 66
    assert all(sum(w) == pytest.approx(1) for w in grid)
    assert grid[0] == pytest.approx((0.4, 0.3, 0.3)) or grid[0] == pytest.approx(
        (0.3, 0.3, 0.4)) or grid[0] == pytest.approx((0.3, 0.4, 0.3))


def test_slice_winners_names_each_slices_best(tmp_path: Path) -> None:
    split = clustered_split()
    blend = Blend(members=("itemknn", "popularity"))
    results = {"blend": fit_and_evaluate(blend, split, [10], rng=0, history="trained")}
    for name, member in blend.named_members().items():
        results[name] = evaluate(member, split, [10], history="trained")
    table = slice_winners(results)
    assert table["slice"][0] == "all users"
    for row in table.iter_rows(named=True):
        values = {n: (r.metrics["ndcg@10"] if row["slice"] == "all users"
                      else r.slices[row["slice"]]["ndcg@10"]) for n, r in results.items()}
        assert row["ndcg@10"] == max(values.values()) and values[row["best"]] == row["ndcg@10"]
        assert row["ahead by"] == pytest.approx(row["ndcg@10"] - sorted(values.values())[-2])
    assert slice_winners({"blend": results["blend"]}).height == 0
    paths = write_report(results, tmp_path / "r")
    assert "Who wins which slice" in paths["markdown"].read_text(encoding="utf-8")


def test_compare_reports_a_blends_members(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = clustered().save(tmp_path / "d")
    report = tmp_path / "report"
    code, out, err = run(["compare", "--data", str(data), "--variant",
                          "b=blend:members=itemknn,popularity", "--history", "trained",
                          "--k", "10", "--report", str(report), "--json"], capsys)
    assert code == 0, err
    assert set(json.loads(out)) == {"b", "b/itemknn", "b/popularity"}
    assert "Who wins which slice" in (report / "report.md").read_text(encoding="utf-8")
