"""Scoring the classic models from an item history, without retraining
(`score(users, histories)`).

Known answers: a training user's own history reproduces `score(user)` (exactly for the models
whose scores are a function of the user's row; closely for the folded-in factor models), and a
fresh history of one planted group's items ranks that group's other items first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from lmrec.collect import ColumnMapping
from lmrec.data.dataset import Dataset, Sequences
from lmrec.errors import InputError
from lmrec.models import EmbeddingModel, Recommender, create_model, load_model
from lmrec.models.als import fold_in
from lmrec.models.history import history_matrix
from lmrec.models.ranking import top_k
from lmrec.prepare import PrepareConfig, prepare
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions

# tiny-data hyperparameters, as in test_models_contract.py
PARAMS: dict[str, dict[str, Any]] = {
    "als": {"reg": 5.0, "factors": 8},
    "bpr": {"epochs": 20, "factors": 8, "batch_size": 64, "lr": 0.02, "reg": 0.05},
    "neumf": {"epochs": 30, "batch_size": 64, "lr": 0.02, "factors": 8, "mlp_factors": 8,
              "layers": (16,), "init_std": 0.1, "loss": "bpr", "weight_decay": 0.005,
              "dropout": 0.1, "progress": False},
}
NAMES = ["popularity", "itemknn", "userknn", "ease", "content", "als", "bpr", "neumf"]
# scores are a function of the user's interaction row: a history rebuilds it exactly
EXACT = ["popularity", "itemknn", "ease", "content"]
FOLDED = ["bpr", "neumf"]  # amortised fold-in: the ranking is close, not equal


def fitted(name: str, ds: Dataset | None = None, **extra: Any) -> Recommender:
    return create_model(name, {**PARAMS.get(name, {}), **extra}).fit(
        ds or planted_dataset(), TrainingOptions(rng=0))


def weighted_dataset() -> Dataset:
    """The planted events as clicks (weight 1), with a later purchase (weight 4) of every
    third pair and a repeated click of every fifth: rows of summed behaviour weights."""
    base = planted_dataset()
    ev = base.events.select(
        pl.col("user_idx").map_elements(base.users.to_python, return_dtype=pl.String)
        .alias("user"),
        pl.col("item_idx").map_elements(base.items.to_python, return_dtype=pl.String)
        .alias("item"),
    ).with_row_index("n")
    clicks = ev.with_columns(pl.lit("click").alias("event"), pl.col("n").cast(pl.Int64)
                             .alias("timestamp"))
    buys = clicks.filter(pl.col("n") % 3 == 0).with_columns(
        pl.lit("purchase").alias("event"), pl.col("timestamp") + 10_000)
    again = clicks.filter(pl.col("n") % 5 == 0).with_columns(pl.col("timestamp") + 20_000)
    events = pl.concat([clicks, buys, again]).drop("n")
    return prepare(events, items=base.item_table, mapping=ColumnMapping(
        event="event", time="timestamp"), config=PrepareConfig(
        item_roles={"genres": "multi", "title": "text"},
        behaviour_weights={"click": 1.0, "purchase": 4.0})).dataset


def visitors(model: Recommender, histories: list[np.ndarray]) -> np.ndarray:
    """Scores of unknown users (-1) with these histories."""
    return model.score(np.full(len(histories), -1), histories)


def unseen_overlap(model: Recommender, ds: Dataset, k: int = 5) -> float:
    """Mean share of each training user's top-k unseen items that score() and
    the score of their own training history agree on."""
    users = np.arange(ds.n_users)
    seen = ds.matrix("binary").toarray() > 0
    a, b = model.score(users).copy(), model.score(users, ds.sequences())
    a[seen] = b[seen] = -np.inf
    ta, tb = top_k(a, k)[0], top_k(b, k)[0]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb, strict=True)]))


# --- a training user's own history --------------------------------------------------------
@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("weighting", ["binary", "weight"])
def test_own_history_reproduces_score_exactly(name: str, weighting: str) -> None:
    ds = weighted_dataset()
    params = {"weighting": weighting} if name != "popularity" else {}
    model = fitted(name, ds, **params)
    users = np.arange(ds.n_users)
    np.testing.assert_allclose(model.score(users, ds.sequences()), model.score(users),
                               rtol=1e-5, atol=1e-6)


def test_history_rows_rebuild_the_training_matrix() -> None:
    ds = weighted_dataset()
    seqs = ds.sequences()
    for weighting in ("binary", "weight"):
        rows = history_matrix(seqs, ds.n_items, weighting, ds.behaviour_weights)
        assert abs(rows - ds.matrix(weighting)).max() < 1e-6, weighting
    assert set(np.unique(ds.matrix("weight").data)) == {1.0, 2.0, 5.0, 6.0}  # sums of 1s, 4s
    # a bare item list carries no behaviour types: each event weighs 1, repeats add up
    bare = history_matrix(Sequences.from_lists([np.array([3, 3, 5])]), ds.n_items, "weight",
                          ds.behaviour_weights)
    assert bare.toarray()[0, [3, 5]].tolist() == [2.0, 1.0] and bare.nnz == 2
    model = fitted("ease", ds, weighting="weight")
    np.testing.assert_allclose(visitors(model, [np.array([3, 3])]),
                               2 * visitors(model, [np.array([3])]), rtol=1e-6)


@pytest.mark.parametrize("weighting", ["binary", "weight"])
def test_userknn_own_history_changes_no_unseen_score(weighting: str) -> None:
    ds = weighted_dataset()
    # with every training user a neighbour, the user itself (now found as the nearest
    # neighbour) adds votes to its own seen items only
    model = fitted("userknn", ds, k=ds.n_users, shrink=10.0, weighting=weighting)
    seen = ds.matrix("binary").toarray() > 0
    a = model.score(np.arange(ds.n_users))
    b = model.score(np.arange(ds.n_users), ds.sequences())
    np.testing.assert_allclose(b[~seen], a[~seen], rtol=1e-5, atol=1e-6)
    assert (b[seen] >= a[seen] - 1e-6).all()
    assert unseen_overlap(fitted("userknn", ds, k=5), ds) >= 0.9  # one neighbour pushed out


def test_als_fold_in_is_the_exact_user_step() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    ds = planted_dataset()
    model = fitted("als", ds)
    x = ds.matrix("binary").tocsr().astype(np.float32)
    conf = x.copy()
    conf.data = 1.0 + model.settings_["alpha"] * conf.data
    ref = AlternatingLeastSquares(factors=8, regularization=model.settings_["reg"], alpha=1.0)
    ref.item_factors, ref.user_factors = model.V_, model.U_
    exact = ref.recalculate_user(np.arange(ds.n_users), conf)  # implicit's Cholesky solve
    ours = fold_in(x, model.V_, model.settings_["reg"], model.settings_["alpha"])
    np.testing.assert_allclose(ours, exact, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weighting", ["binary", "weight"])
def test_als_fold_in_recovers_converged_user_factors(weighting: str) -> None:
    ds = weighted_dataset()
    # converged: the last user sweep solves (nearly) exactly against the final item factors
    # alpha pinned: the data rule's alpha for these short histories (30) needs more sweeps to
    # converge than this test runs
    model = fitted("als", ds, iterations=60, cg_steps=8, weighting=weighting, alpha=3.0)
    folded = model.user_embeddings(np.arange(ds.n_users), ds.sequences())
    rel = np.linalg.norm(folded - model.U_, axis=1) / np.linalg.norm(model.U_, axis=1)
    assert rel.max() < 1e-3, rel.max()
    users = np.arange(ds.n_users)
    scores = model.score(users)
    assert np.abs(model.score(users, ds.sequences()) - scores).max() < 1e-3 * np.abs(
        scores).max()


@pytest.mark.parametrize("name", FOLDED)
def test_folded_in_ranking_matches_trained_users(name: str) -> None:
    ds = planted_dataset()
    assert unseen_overlap(fitted(name, ds), ds) >= 0.9


# --- a fresh history ----------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in NAMES if n != "popularity"])
@pytest.mark.parametrize("group", ["A", "B"])
def test_fresh_history_of_one_group_ranks_that_group_first(name: str, group: str) -> None:
    ds = planted_dataset()
    model = fitted(name, ds)
    history = ds.items.index([f"{group}0", f"{group}1", f"{group}2"])
    scores = visitors(model, [history])[0]
    scores[history] = -np.inf
    top = [ds.items.to_python(int(i)) for i in top_k(scores[None, :], 5)[0][0]]
    assert all(t.startswith(group) for t in top), top


def test_popularity_ignores_the_history() -> None:
    model = fitted("popularity")
    out = visitors(model, [np.array([0, 1]), np.array([], dtype=np.int64)])
    np.testing.assert_array_equal(out, np.vstack([model.item_scores_] * 2))
    idx, _ = model.recommend_idx(np.array([0, 1]), 3, histories=planted_dataset().sequences())
    assert idx.shape == (2, 3)  # the scores can be masked in place


@pytest.mark.parametrize("name", NAMES)
def test_empty_and_batched_histories(name: str) -> None:
    ds = planted_dataset()
    model = fitted(name, ds)
    seqs = ds.sequences()
    hist = [seqs.of(3), np.array([], dtype=np.int64), seqs.of(7)]
    together = visitors(model, hist)
    assert together.shape == (3, ds.n_items) and together.dtype == np.float32
    assert np.isfinite(together).all()
    # a row's scores do not depend on the other rows of the batch
    np.testing.assert_allclose(together[2], visitors(model, [seqs.of(7)])[0],
                               rtol=1e-5, atol=1e-6)


CLASSIC = ["popularity", "itemknn", "userknn", "ease", "content", "als", "bpr"]


@pytest.mark.parametrize("name", CLASSIC)
@pytest.mark.parametrize("weighting", ["binary", "weight"])
def test_forgotten_user_scores_as_an_unknown_user_and_an_empty_history(
        name: str, weighting: str) -> None:
    ds = weighted_dataset()
    extra = {"weighting": weighting} if name != "popularity" and name != "bpr" else {}
    model = fitted(name, ds, **extra)
    empty = visitors(model, [np.array([], dtype=np.int64)])
    np.testing.assert_allclose(model.score([-1]), empty, rtol=0, atol=1e-6)
    model.redact_users([3])
    np.testing.assert_allclose(model.score([3]), model.score([-1]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.score([3]), empty, rtol=0, atol=1e-6)
    if name == "bpr":  # the zero user vector: the item bias alone
        np.testing.assert_allclose(empty[0], model.b_, rtol=0, atol=1e-6)
    elif name != "popularity":
        assert not empty.any()


@pytest.mark.parametrize("name", NAMES)
def test_history_scores_survive_save_and_load(name: str, tmp_path: Path) -> None:
    ds = weighted_dataset()
    extra = {"weighting": "weight"} if name in ("itemknn", "userknn", "ease", "als") else {}
    model = fitted(name, ds, **extra)
    loaded = load_model(model.save(tmp_path / name))
    seqs = ds.sequences()
    users = np.arange(ds.n_users)
    np.testing.assert_allclose(loaded.score(users, seqs), model.score(users, seqs),
                               rtol=1e-6, atol=1e-7)


# --- EmbeddingModel -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["als", "bpr"])
def test_embedding_scorer_consistency(name: str) -> None:
    ds = planted_dataset()
    model = fitted(name, ds)
    assert isinstance(model, EmbeddingModel)
    users = np.arange(ds.n_users)
    items = model.item_embeddings()
    assert items.shape[0] == ds.n_items and items.dtype == np.float32
    np.testing.assert_allclose(model.user_embeddings(users) @ items.T, model.score(users),
                               rtol=1e-5, atol=1e-5)
    seqs = ds.sequences()
    hist = model.user_embeddings(users, seqs)
    assert hist.dtype == np.float32 and hist.shape == (ds.n_users, items.shape[1])
    np.testing.assert_allclose(hist @ items.T, model.score(users, seqs), rtol=1e-5,
                               atol=1e-5)


def test_models_without_vectors_are_not_embedding_scorers() -> None:
    assert not isinstance(fitted("ease"), EmbeddingModel)


@pytest.mark.parametrize("name", ["als", "bpr"])
def test_history_embeddings_refuse_unknown_items(name: str) -> None:
    model = fitted(name)
    with pytest.raises(InputError, match="internal indices"):
        model.user_embeddings(np.array([-1]), [np.array([0, model.n_items])])
    # a bare list of arrays is accepted as well as Sequences
    assert model.user_embeddings(np.array([-1]), [np.array([0, 1])]).shape[0] == 1
