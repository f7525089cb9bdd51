"""Data-aware defaults: the statistics they read, each rule's known answers, and that a fit
runs with (and a saved model remembers) what the rule chose."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lmrec.collect import ColumnMapping
from lmrec.data.stats import DataStats, log_interp
from lmrec.models import create_model, load_model
from lmrec.models.als import ALSConfig, als_settings
from lmrec.models.ease import ease_l2
from lmrec.models.itemknn import ItemKNNConfig, itemknn_settings
from lmrec.models.userknn import UserKNNConfig, userknn_k
from lmrec.prepare import prepare
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions


def stats(n_users: int, n_items: int, n_interactions: int, head: float | None = None
          ) -> DataStats:
    per_item = n_interactions / n_items
    return DataStats(n_users=n_users, n_items=n_items, n_interactions=n_interactions,
                     n_events=n_interactions, value_type="binary",
                     head_degree=per_item if head is None else head)


def test_stats_of_a_dataset_count_distinct_pairs_and_the_head() -> None:
    ds = planted_dataset()  # 12 A users x 6 items, 24 B users x 6 items, 12 + 12 items
    s = DataStats.of(ds)
    assert (s.n_users, s.n_items, s.n_interactions) == (36, 24, 216)
    assert s.value_type == "binary"
    assert s.per_user == 6.0 and s.per_item == 9.0
    # A items have 6 users, B items 12: sum d^2 / sum d = (12*36 + 12*144) / 216
    assert s.head_degree == pytest.approx(10.0)
    repeated = prepare(pl.DataFrame({"user": [1, 1, 1, 2], "item": [1, 1, 2, 1],
                                     "time": [1, 2, 3, 4]})).dataset
    r = DataStats.of(repeated)
    assert (r.n_interactions, r.n_events, r.value_type) == (3, 4, "counts")
    rated = prepare(pl.DataFrame({"user": [1, 2], "item": [1, 1], "rating": [4.0, 5.0]}),
                    mapping=ColumnMapping(value="rating")).dataset
    assert DataStats.of(rated).value_type == "ratings"


def test_log_interp_holds_the_ends_and_is_linear_in_log_between() -> None:
    assert log_interp(1.0, (10.0, 100.0), (5.0, 50.0)) == 5.0
    assert log_interp(1000.0, (10.0, 100.0), (5.0, 50.0)) == 50.0
    assert log_interp(np.sqrt(1000.0), (10.0, 100.0), (5.0, 50.0)) == pytest.approx(27.5)
    # several anchors, and geometric interpolation of values spanning orders of magnitude
    assert log_interp(30.0, (15.0, 30.0, 60.0), (200.0, 50.0, 200.0)) == pytest.approx(50.0)
    assert log_interp(np.sqrt(10.0 * 100.0), (10.0, 100.0), (0.01, 1.0),
                      geometric=True) == pytest.approx(0.1)


def test_ease_lambda_is_seven_times_the_item_degree_within_its_range() -> None:
    assert ease_l2(stats(1000, 1000, 30_000)) == 210.0  # 30 per item
    assert ease_l2(stats(1000, 1000, 2_000)) == 50.0  # 2 per item: the floor
    assert ease_l2(stats(1000, 100, 90_000)) == 500.0  # 900 per item: the ceiling


def test_itemknn_shrinks_short_histories_harder_and_dips_k_at_mid_density() -> None:
    cfg = ItemKNNConfig()
    short = itemknn_settings(cfg, stats(4000, 1000, 30_000))  # 7.5 per user, 30 per item
    mid = itemknn_settings(cfg, stats(1000, 1000, 30_000))  # 30 per user, 30 per item
    dense = itemknn_settings(cfg, stats(1000, 1000, 100_000))  # 100 and 100
    assert short == {"k": 200, "shrink": 100.0}
    assert mid == {"k": 50, "shrink": 10.0}
    assert dense == {"k": 200, "shrink": 10.0}
    assert itemknn_settings(ItemKNNConfig(k=7, shrink=3.0), stats(10, 10, 10)) == {
        "k": 7, "shrink": 3.0}


def test_userknn_takes_more_neighbours_for_shorter_histories() -> None:
    assert userknn_k(UserKNNConfig(), stats(1000, 5000, 5_000)) == 400  # 5 per user
    assert userknn_k(UserKNNConfig(), stats(1000, 5000, 80_000)) == 50  # 80 per user
    between = userknn_k(UserKNNConfig(), stats(1000, 5000, 30_000))  # 30 per user
    assert 50 < between < 100
    assert userknn_k(UserKNNConfig(k=9), stats(1000, 5000, 5_000)) == 9


def test_als_regularisation_keeps_pace_with_alpha_and_the_head() -> None:
    cfg = ALSConfig()
    long_flat = als_settings(cfg, stats(1000, 1000, 50_000, head=100.0))  # 50 per user
    assert long_flat["alpha"] == 3.0 and long_flat["reg"] == pytest.approx(7.5 * 4)
    heavy = als_settings(cfg, stats(1000, 1000, 50_000, head=400.0))
    assert heavy["reg"] == pytest.approx(7.5 * 4 ** 0.4 * 4, rel=1e-3)
    short = als_settings(cfg, stats(10_000, 1000, 50_000, head=100.0))  # 5 per user
    assert short["alpha"] == 30.0 and short["reg"] < 4.0
    assert als_settings(cfg, stats(100, 500, 1000))["factors"] == 64
    assert als_settings(cfg, stats(100, 20_000, 1000))["factors"] == 256
    fixed = als_settings(ALSConfig(factors=8, reg=1.0, alpha=2.0), stats(100, 500, 1000))
    assert fixed == {"factors": 8, "reg": 1.0, "alpha": 2.0, "weighting": "binary"}
    counted = DataStats(n_users=100, n_items=500, n_interactions=1000, n_events=2500,
                        value_type="counts", head_degree=2.0)
    assert als_settings(cfg, counted)["weighting"] == "count"  # repeated pairs: play counts


@pytest.mark.parametrize(("name", "keys"), [
    ("ease", {"l2"}), ("admm-slim", {"l2"}), ("slim", {"alpha"}), ("itemknn", {"k", "shrink"}),
    ("userknn", {"k"}),
    ("als", {"factors", "reg", "alpha", "weighting"}), ("bpr", {"epochs", "batch_size"}),
    ("neumf", {"epochs", "batch_size"}), ("two-tower", {"epochs", "batch_size"}),
])
def test_a_fit_runs_with_the_rule_and_a_saved_model_remembers_it(
        name: str, keys: set[str], tmp_path: Path) -> None:
    ds = planted_dataset()
    small = {"neumf": {"epochs": 1}, "two-tower": {"epochs": 1}, "bpr": {"epochs": 2}}
    model = create_model(name, small.get(name, {})).fit(ds, TrainingOptions(rng=0))
    rule = model.data_settings(DataStats.of(ds))
    if name == "als":  # alpha and reg chosen on a holdout among five candidates (als_select)
        keys = keys | {"candidates"}
        table = model.settings_["candidates"]
        best = max(table, key=lambda row: row[2])
        assert [model.settings_["alpha"], model.settings_["reg"]] == best[:2]
        assert model.settings_["factors"] == rule["factors"] and len(table) == 5
    else:
        assert model.settings_ == rule
    assert set(model.settings_) == keys
    model.save(tmp_path / name)
    saved = json.loads((tmp_path / name / "config.json").read_text())
    assert saved["settings"] == model.settings_
    assert load_model(tmp_path / name).settings_ == model.settings_


def test_the_ease_rule_is_what_ease_fits_with() -> None:
    ds = planted_dataset()
    ruled = create_model("ease").fit(ds)
    pinned = create_model("ease", {"l2": ease_l2(DataStats.of(ds))}).fit(ds)
    other = create_model("ease", {"l2": 400.0}).fit(ds)
    users = np.arange(ds.n_users)
    np.testing.assert_array_equal(ruled.score(users), pinned.score(users))
    assert not np.allclose(ruled.score(users), other.score(users))


def test_neural_batch_follows_the_pairs_within_its_bounds() -> None:
    model = create_model("neumf")
    assert model.data_settings(stats(100, 100, 1_000))["batch_size"] == 256  # the floor
    big = model.data_settings(stats(10_000, 5000, 800_000))
    assert big["batch_size"] == -(-800_000 // type(model).STEPS_PER_EPOCH)
    assert create_model("neumf", {"batch_size": 99, "epochs": 3}).data_settings(
        stats(10_000, 5000, 800_000)) == {"epochs": 3, "batch_size": 99}


def test_als_on_counts_folds_in_a_history_as_counts() -> None:
    from lmrec.data.dataset import Sequences
    from lmrec.models.history import history_matrix

    rows = history_matrix(Sequences.from_lists([np.array([1, 1, 2]), np.array([], int)]), 4,
                          "count").toarray()
    np.testing.assert_array_equal(rows, [[0, 2, 1, 0], [0, 0, 0, 0]])
    # a dataset with repeated pairs: ALS confides in the counts, and a user's own history
    # folds in to (nearly) the trained factors, counts included
    ds = prepare(pl.DataFrame({"user": [1, 1, 1, 2, 2, 3, 3, 3], "item": [1, 1, 2, 2, 3, 1, 3, 3],
                               "time": list(range(8))})).dataset
    model = create_model("als", {"factors": 4, "iterations": 50, "cg_steps": 8, "reg": 0.1,
                                 "alpha": 2.0}).fit(ds, TrainingOptions(rng=0))
    assert model.settings_["weighting"] == "count"
    folded = model.user_embeddings(np.arange(ds.n_users), ds.sequences())
    np.testing.assert_allclose(folded, model.U_, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize(("name", "params"), [("userknn", {"k": 5}),
                                              ("als", {"factors": 4, "reg": 5.0, "alpha": 3.0})])
def test_a_model_saved_before_its_rule_scores_histories_from_its_config(
        name: str, params: dict, tmp_path: Path) -> None:
    ds = planted_dataset()
    model = create_model(name, params).fit(ds, TrainingOptions(rng=0))
    model.save(tmp_path / name)
    meta = json.loads((tmp_path / name / "config.json").read_text())
    del meta["settings"]  # as an artifact written before the data rules
    (tmp_path / name / "config.json").write_text(json.dumps(meta))
    old = load_model(tmp_path / name)
    assert old.settings_ == {}
    users = np.arange(ds.n_users)
    np.testing.assert_allclose(old.score(users, ds.sequences()),
                               model.score(users, ds.sequences()), rtol=1e-5, atol=1e-6)
