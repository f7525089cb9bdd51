"""The re-ranking stage in `evaluate` and `lmrec evaluate/compare` (`lmrec.evaluate.lists`,
`lmrec.evaluate.tradeoffs`): the lists scored are the re-ranked ones, the group metrics are
those of `lmrec.group_metrics`, hard constraints hold in every list, and the compare report
draws the trade-off curves. Serving and `lmrec recommend`: test_rerank_serving.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers_cli import one_error_line, run
from lmrec import group_metrics as G
from lmrec.columns import Role
from lmrec.data.dataset import Dataset, FeatureSpec
from lmrec.evaluate import evaluate, fit_and_evaluate, make_splits
from lmrec.evaluate.lists import GroupMetrics, ListReranker, rerank_data
from lmrec.evaluate.splits import Split
from lmrec.metrics import cooccurrence_features
from lmrec.models import create_model
from lmrec.rerank import RerankData
from lmrec.testing import planted_dataset

SUITABLE = "suitability=risk<=tolerance"


def risk_dataset() -> Dataset:
    """The planted dataset with an item `risk` (A items 1, B0-B5 2, the other B items 3) and a
    user `tolerance` (a users 1, b users 3, but b0 unknown: null)."""
    ds = planted_dataset()
    items = ds.item_table["item"].to_list()
    risk = [1 if i.startswith("A") else 2 if int(i[1:]) < 6 else 3 for i in items]
    users = ds.user_table["user"].to_list()
    tolerance = [None if u == "b0" else 1 if u.startswith("a") else 3 for u in users]
    return Dataset(ds.users, ds.items, ds.events,
                   ds.user_table.with_columns(pl.Series("tolerance", tolerance,
                                                        dtype=pl.Int64)),
                   ds.item_table.with_columns(pl.Series("risk", risk, dtype=pl.Int64)),
                   {"tolerance": FeatureSpec(Role.NUMERIC, mean=2.0, std=1.0)},
                   {**ds.item_schema, "risk": FeatureSpec(Role.NUMERIC, mean=2.0, std=1.0)},
                   ds.behaviour_weights, "planted-risk")


@pytest.fixture(scope="module")
def split() -> Split:
    return make_splits(planted_dataset(), "random", ratios=(0.8, 0.1, 0.1), seed=0)[0]


@pytest.fixture(scope="module")
def risk_split() -> Split:
    return make_splits(risk_dataset(), "random", ratios=(0.8, 0.1, 0.1), seed=0)[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return risk_dataset().save(tmp_path_factory.mktemp("wiring") / "data")


# --- evaluate ------------------------------------------------------------------------------
def test_group_metrics_are_reported_without_rerank(split: Split) -> None:
    r = fit_and_evaluate(create_model("ease"), split, (5, 10))
    assert r.rerank == "" and r.to_dict()["rerank"] == ""
    for k in (5, 10):
        assert 0 <= r.metrics[f"miscalibration@{k}"] < np.log(100)
        assert 0 <= r.metrics[f"exposure_gini@{k}"] < 1
        assert 0 < r.metrics[f"tail_exposure@{k}"] < 1
        assert 0 < r.metrics[f"group_coverage@{k}"] <= 1
        assert r.per_user[f"miscalibration@{k}"].shape == r.users.shape


def test_group_metrics_match_group_metrics_on_the_same_lists(split: Split) -> None:
    """The values evaluate reports are lmrec.group_metrics' on the lists it scored (rebuilt
    here by recommend_idx with the same masks), group coverage a per-list loop."""
    model = create_model("ease").fit(split.train)
    r = evaluate(model, split, (10,), history="trained")
    warm = r.users[~r.cold]
    exclude = split.valid.matrix("binary").tocsr()
    top, _ = model.recommend_idx(warm, 10, exclude=exclude)
    data = RerankData.from_dataset(split.train)
    dist, labels = data.item_distribution("genres")
    p = G.user_distributions(split.train.matrix("binary").tocsr()[warm], dist)
    mis = G.miscalibration(top, p, dist, 10)
    assert r.metrics["miscalibration@10"] == pytest.approx(np.nanmean(mis))
    assert r.metrics["exposure_gini@10"] == pytest.approx(
        G.exposure_gini(top, split.train.n_items, 10))
    tail = data.long_tail().astype(np.int64)
    assert r.metrics["tail_exposure@10"] == pytest.approx(
        G.group_exposure(top, tail, 2, 10)[1])
    has = dist.toarray() > 0
    per_list = [has[row[row >= 0]].any(axis=0).mean() for row in top]
    assert r.metrics["group_coverage@10"] == pytest.approx(np.mean(per_list))
    assert len(labels) == 3  # alpha, beta, film


def test_group_coverage_agrees_with_group_metrics_for_a_single_valued_column(
        split: Split) -> None:
    train = split.train
    items = train.item_table.with_columns(
        pl.col("genres").list.first().alias("category"))
    ds = Dataset(train.users, train.items, train.events, train.user_table, items,
                 train.user_schema, {**train.item_schema,
                                     "category": FeatureSpec(Role.CATEGORICAL)})
    data = RerankData.from_dataset(ds)
    metrics = GroupMetrics(data, data.long_tail(), (3, 10))
    assert metrics.column == "genres"  # the calibration default comes first
    data.category_column = lambda arg=None: "category"  # type: ignore[method-assign]
    metrics = GroupMetrics(data, data.long_tail(), (3, 10))
    rng = np.random.default_rng(0)
    top = np.stack([rng.permutation(train.n_items)[:10] for _ in range(20)])
    top[3, 5:] = -1
    groups, names = data.groups("category")
    per_user = metrics.per_user(top, train.sequences().take(np.arange(20)))
    for k in (3, 10):
        assert np.nanmean(per_user[f"group_coverage@{k}"]) == pytest.approx(
            G.group_coverage(top, groups, len(names), k))


def test_calibration_lowers_miscalibration(split: Split) -> None:
    """Popularity shows everyone the B (beta) items; a users' histories are all alpha."""
    model = create_model("popularity").fit(split.train)
    plain = evaluate(model, split, (10,))
    calibrated = evaluate(model, split, (10,), rerank=["calibration=0.9"])
    assert calibrated.rerank == "calibration=0.9:genres"
    assert calibrated.metrics["miscalibration@10"] < 0.5 * plain.metrics["miscalibration@10"]
    # the lists changed, so accuracy did too (the a users' test items are alpha items)
    assert calibrated.metrics["ndcg@10"] > plain.metrics["ndcg@10"]


def test_exposure_reranking_moves_exposure_to_the_long_tail(split: Split) -> None:
    model = create_model("popularity").fit(split.train)
    plain = evaluate(model, split, (5,))
    fairer = evaluate(model, split, (5,), rerank=["exposure=0.8"])
    assert fairer.metrics["tail_exposure@5"] > plain.metrics["tail_exposure@5"]
    assert fairer.metrics["exposure_gini@5"] < plain.metrics["exposure_gini@5"]


def test_suitability_leaves_no_unsuitable_item_in_any_list(risk_split: Split) -> None:
    train = risk_split.train
    model = create_model("popularity").fit(train)  # B items first: the riskiest
    features = cooccurrence_features(train.matrix("binary"))
    stage = ListReranker([SUITABLE], rerank_data(train, features, None))
    users = np.arange(train.n_users)
    lists = stage.lists(model, users, 10, None, None, train.sequences())
    risk = train.item_table["risk"].to_numpy()
    tolerance = train.user_table["tolerance"].to_numpy(allow_copy=True)
    for u, row in zip(users, lists, strict=True):
        shown = risk[row[row >= 0]]
        assert shown.size > 0
        limit = 1 if np.isnan(tolerance[u]) else tolerance[u]  # unknown: the minimum only
        assert (shown <= limit).all(), (train.users.to_python(int(u)), shown)
    # and in evaluate: the a users (tolerance 1) are never shown a B item
    r = evaluate(model, risk_split, (10,), rerank=[SUITABLE])
    assert r.rerank == SUITABLE
    plain = evaluate(model, risk_split, (10,))
    a_users = np.array([str(u).startswith("a") for u in train.users.ids.to_list()])
    a_rows = a_users[r.users]
    assert r.metrics["miscalibration@10"] < plain.metrics["miscalibration@10"]
    assert np.nanmean(r.per_user["recall@10"][a_rows & ~r.cold]) > np.nanmean(
        plain.per_user["recall@10"][a_rows & ~plain.cold])


def test_rerank_with_folds_and_the_trained_history(risk_split: Split) -> None:
    from lmrec.evaluate import cross_validate

    splits = make_splits(risk_dataset(), "kfold", folds=2, seed=0)
    cv = cross_validate(lambda: create_model("itemknn"), splits, (5,),
                        rerank=["mmr=0.5", "fair=0.4"])
    assert cv["ndcg@5"]["n"] == 2 and np.isfinite(cv["exposure_gini@5"]["mean"])
    r = fit_and_evaluate(create_model("ease"), risk_split, (5,), history="trained",
                         rerank=["mmr=0.3"])
    assert r.rerank == "mmr=0.3" and np.isfinite(r.metrics["ndcg@5"])


def test_a_bad_spec_is_refused_before_scoring(split: Split) -> None:
    from lmrec.errors import ConfigError

    model = create_model("popularity").fit(split.train)
    with pytest.raises(ConfigError, match=r"--rerank 'calibration=0\.5:nope'"):
        evaluate(model, split, (5,), rerank=["calibration=0.5:nope"])
    with pytest.raises(ConfigError, match="--rerank"):
        evaluate(model, split, (5,), rerank=["loud=1"])


# --- the CLI ---------------------------------------------------------------------------------
def test_cli_evaluate_with_rerank(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["evaluate", "--data", str(data_dir), "--model", "popularity", "--k", "5",
            "--json"]
    code, out, err = run(base, capsys)
    assert code == 0, err
    plain = json.loads(out)
    assert "rerank" not in plain and "miscalibration@5" in plain
    code, out, err = run([*base, "--rerank", "calibration=0.9", "--rerank", SUITABLE], capsys)
    assert code == 0, err
    reranked = json.loads(out)
    assert reranked["rerank"] == f"calibration=0.9:genres, {SUITABLE}"
    assert reranked["miscalibration@5"] < plain["miscalibration@5"]
    code, out, err = run([*base[:-1], "--rerank", "mmr=0.4"], capsys)
    assert code == 0 and "re-ranked by mmr=0.4" in " ".join(out.split())
    assert "exposure_gini@5" in out


@pytest.mark.parametrize(("spec", "needle"), [
    ("loud=1", "unknown re-ranker"), ("calibration", "NAME=WEIGHT"),
    ("calibration=2", "[0, 1]"), ("calibration=0.5:nope", "nope"),
    ("suitability=risk<=age", "age"), ("freshness=0.2", "time column")])
def test_cli_refuses_a_bad_rerank_in_one_line(data_dir: Path, spec: str, needle: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["evaluate", "--data", str(data_dir), "--model", "popularity",
                          "--rerank", spec], capsys)
    assert needle in one_error_line(code, err, "--rerank", out)


def test_cli_compare_sweeps_and_draws_the_tradeoffs(
        data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report"
    code, out, err = run(["compare", "--data", str(data_dir), "--models", "popularity,ease",
                          "--k", "5,10", "--report", str(report),
                          "--rerank", "calibration=0.8", "--rerank", "exposure=0.6"], capsys)
    assert code == 0, err
    assert "Re-ranking trade-offs" in out
    doc = json.loads((report / "results.json").read_text())
    sweep = doc["tradeoffs"]["calibration:genres"]
    assert set(sweep) == {"popularity", "ease"}
    assert [p["weight"] for p in sweep["popularity"]] == pytest.approx([0, .2, .4, .6, .8])
    mis = [p["metrics"]["miscalibration@10"] for p in sweep["popularity"]]
    assert mis[-1] < mis[0]  # more weight, closer to the users' histories
    assert doc["tradeoffs"]["exposure:long-tail"]["ease"][0]["metrics"] == \
        doc["results"]["ease"]["metrics"]  # weight 0: the model's own lists
    for name in ("calibration-genres", "exposure-long-tail"):
        png = report / f"tradeoff_{name}.png"
        assert png.stat().st_size > 1000
        assert f"![plot_tradeoff_{name}]({png.name})" in (report / "report.md").read_text()
        assert f"alt='plot_tradeoff_{name}'" in (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    assert "## Re-ranking trade-offs" in md and "| calibration:genres | popularity | 0.8" in md
    assert "miscalibration@10" in md and "exposure_gini@10" in md


@pytest.mark.parametrize(("args", "needle"), [
    (["--rerank", SUITABLE], "no weight to sweep"),
    (["--rerank", "mmr=0.2", "--rerank", "mmr=0.4"], "given twice"),
    (["--rerank", "calibration=0.4:title"], "title")])
def test_cli_compare_refuses_what_it_cannot_sweep(
        data_dir: Path, tmp_path: Path, args: list[str], needle: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["compare", "--data", str(data_dir), "--models", "popularity",
                          "--report", str(tmp_path / "r"), *args], capsys)
    assert needle in one_error_line(code, err, "--rerank", out)
