"""Two-tower: history encoders, features, cold users served from a history, embeddings,
forgotten users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmrec import testing as T
from lmrec.data.dataset import Sequences
from lmrec.datasets import shop_dataset
from lmrec.evaluate import fit_and_evaluate, split_random
from lmrec.models import EmbeddingModel, Popularity, TwoTower, load_model
from lmrec.train.options import TrainingOptions

TINY = {"epochs": 20, "batch_size": 32, "lr": 0.01, "dim": 16, "id_dim": 16,
        "feature_dim": 4, "layers": (32,), "temperature": 0.5, "progress": False}


@pytest.mark.parametrize(("history", "share"), [("gru", 1.0), ("transformer", 0.85)])
def test_history_encoders_learn_and_save_load(history: str, share: float,
                                              tmp_path: Path) -> None:
    # the transformer is noisier on six-event histories: most users, not all, must be right
    ds = T.planted_dataset()
    params = {**TINY, "history": history, "history_len": 8,
              "similarity": "dot" if share < 1 else "cosine"}
    T.check_learns_planted_groups(lambda: TwoTower(**params), ds, min_share=share)
    T.check_save_load(lambda: TwoTower(**params), tmp_path, ds)


def test_full_softmax_and_extra_negatives_train() -> None:
    ds = T.planted_dataset()
    for params in ({"loss": "full"}, {"uniform_negatives": 8, "similarity": "dot"}):
        model = TwoTower(**{**TINY, **params}).fit(ds, TrainingOptions(rng=0))
        assert np.isfinite(model.score(np.arange(ds.n_users))).all()
        assert model.training_log_[-1]["loss"] < model.training_log_[0]["loss"]


def test_unseen_user_served_from_history() -> None:
    ds = T.planted_dataset()
    model = TwoTower(**TINY).fit(ds, TrainingOptions(rng=0))
    # the item tower reads the one multi-valued column (genres: 3 labels) and nothing else
    assert model.module_.n_multi == 1 and model.cards_["item_multi"].tolist() == [3]
    assert model.module_.item_cat_codes.shape[1] == model.module_.item_num.shape[1] == 0
    emb = model.item_embeddings()
    assert emb.shape == (ds.n_items, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)  # cosine
    for group in "AB":
        history = [f"{group}{i}" for i in range(3)]  # a new user with three events
        recs = model.recommend_history(history, 5)
        got = [item for item, _ in recs]
        assert len(got) == 5 and not set(got) & set(history)
        assert all(item.startswith(group) for item in got), (group, got)
    idx = ds.items.index(["A0", "A1"])
    u = model.user_embedding_from_history(idx)
    assert u.shape == (16,) and u.dtype == np.float32
    # an unknown user id through `recommend` still gets the popularity fallback
    assert "nobody" in model.recommend(["nobody"], 3).notes


def test_known_user_history_keeps_the_trained_id() -> None:
    """Serving scores a known user's updated history with their trained id and attributes:
    on the training history itself that is exactly the trained user vector."""
    ds = T.planted_dataset()
    model = TwoTower(**TINY).fit(ds, TrainingOptions(rng=0))
    users = np.arange(ds.n_users, dtype=np.int64)
    seqs = ds.sequences()
    with_id = model.user_embeddings(users, seqs)
    np.testing.assert_allclose(with_id, model.user_embeddings(users), rtol=1e-4, atol=1e-5)
    nobody = np.full(ds.n_users, -1)
    anonymous = model.user_embeddings(nobody, seqs)
    assert not np.allclose(anonymous, with_id, atol=1e-3)  # the id embedding does matter
    np.testing.assert_allclose(model.score(nobody, seqs), anonymous @ model.item_embeddings().T,
                               rtol=1e-4, atol=1e-4)
    assert isinstance(model, EmbeddingModel)
    np.testing.assert_allclose(model.score(users, seqs), with_id @ model.item_embeddings().T,
                               rtol=1e-4, atol=1e-4)


def test_recommend_history_is_the_anonymous_tower() -> None:
    """A visitor's history goes through the user tower with the unknown id and attributes
    (what `recommend_from_history` did): the scale folded into the user vector."""
    ds = T.planted_dataset()
    model = TwoTower(**TINY).fit(ds, TrainingOptions(rng=0))
    idx = ds.items.index(["A0", "A1", "A2"])
    u = model.user_embedding_from_history(idx)  # unscaled
    expected = model.scale_ * (model.item_embeddings() @ u)
    expected[idx] = -np.inf
    top = np.argsort(-expected, kind="stable")[:5]
    got = model.recommend_history(["A0", "A1", "A2"], 5)
    assert [i for i, _ in got] == [ds.items.to_python(int(i)) for i in top]
    np.testing.assert_allclose([s for _, s in got], expected[top], rtol=1e-5, atol=1e-5)


def test_forgotten_user_scores_as_unknown(tmp_path: Path) -> None:
    """The id row becomes the unknown row, attributes unknown, the stored history empty: the
    tower's inputs are those of an unknown user with an empty history."""
    ds = shop_dataset(60, 40, seed=2).dataset  # users with attributes
    model = TwoTower(**{**TINY, "epochs": 3}).fit(ds, TrainingOptions(rng=0))
    unknown = model.score(np.array([-1]))
    np.testing.assert_array_equal(unknown, model.score([-1], Sequences.empty(1)))
    u = 4
    assert model.arrays_["user_cat_codes"][u].any() and model.arrays_["user_hist"][u].any()
    others = np.setdiff1d(np.arange(ds.n_users), [u])
    before = model.score(others)
    model.redact_users([u])
    w = model.module_.user_id.weight
    assert torch.equal(w[u + 1], w[0])
    assert not model.arrays_["user_cat_codes"][u].any() and not model.arrays_["user_hist"][u].any()
    np.testing.assert_allclose(model.score([u]), unknown, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.score(others), before)
    loaded = load_model(model.save(tmp_path / "redacted"))
    np.testing.assert_allclose(loaded.score([u]), unknown, rtol=1e-6, atol=1e-6)


def test_features_of_shop_data_beat_popularity(tmp_path: Path) -> None:
    ds = shop_dataset(200, 150, seed=1).dataset
    split = split_random(ds, (0.8, 0.1, 0.1), seed=0)
    model = TwoTower(epochs=8, batch_size=256, lr=0.005, dim=32, id_dim=32, layers=(64,),
                     progress=False)
    tt = fit_and_evaluate(model, split, [10], rng=0).metrics["ndcg@10"]
    pop = fit_and_evaluate(Popularity(), split, [10], rng=0).metrics["ndcg@10"]
    # every attribute reaches its tower: users' age band and region, items' category and
    # brand (categorical) and price (numeric); the shop has no multi-valued item column
    assert model.module_.user_cat_codes.shape[1] == 2
    assert model.module_.item_cat_codes.shape[1] == 2
    assert model.module_.item_num.shape[1] == 1 and model.module_.n_multi == 0
    assert tt > pop, (tt, pop)
    saved = load_model(model.save(tmp_path / "tt-shop"))
    u = model.user_embedding_from_history(np.array([0, 1]), {"region": "north"})
    assert np.array_equal(u, saved.user_embedding_from_history(np.array([0, 1]),
                                                               {"region": "north"}))
