"""Model-specific checks of the classic families: exact formulas on tiny data, known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lmrec import testing as T
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError
from lmrec.models import (
    ALS,
    BPR,
    EASE,
    Content,
    ItemKNN,
    Popularity,
    Recommender,
    UserKNN,
    bpr_trainer,
)
from lmrec.models.bpr import bpr_schedule
from lmrec.models.bpr_trainer import SeenPairs, sample_negatives
from lmrec.prepare import PrepareConfig, prepare
from lmrec.train.options import TrainingOptions


def events_dataset(pairs: np.ndarray, items: pl.DataFrame | None = None,
                   weights: np.ndarray | None = None, **roles: str) -> Dataset:
    """A Dataset from (user, item) integer pairs (ids as given), optional item table."""
    frame = pl.DataFrame({"user": pairs[:, 0].astype(np.int64),
                          "item": pairs[:, 1].astype(np.int64)})
    mapping = None
    if weights is not None:
        from lmrec.collect import ColumnMapping

        # a behaviour column with one weight per behaviour gives summed weights
        frame = frame.with_columns(pl.Series("e", [f"w{w:g}" for w in weights]))
        mapping = ColumnMapping(event="e")
        cfg = PrepareConfig(behaviour_weights={f"w{w:g}": float(w) for w in set(weights)},
                            item_roles=roles)
    else:
        cfg = PrepareConfig(item_roles=roles)
    return prepare(frame, items=items, mapping=mapping, config=cfg).dataset


def random_pairs(rng: np.random.Generator, n_users: int, n_items: int, density: float
                 ) -> np.ndarray:
    """Random distinct pairs; every user and item appears at least once."""
    m = rng.random((n_users, n_items)) < density
    m[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    m[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(m)
    return np.stack([u, i], axis=1)


def dense(ds: Dataset) -> np.ndarray:
    return ds.matrix("binary").toarray().astype(np.float64)


# --- EASE ------------------------------------------------------------------------------------
def test_ease_matches_the_closed_form(rng: np.random.Generator) -> None:
    ds = events_dataset(random_pairs(rng, 40, 15, 0.3))
    x = dense(ds)
    lam = 7.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    model = EASE(l2=lam).fit(ds)
    np.testing.assert_allclose(model.B_, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.score(np.arange(ds.n_users)), x @ b, rtol=1e-4, atol=1e-5)
    assert np.all(np.diag(model.B_) == 0)


def test_ease_float32_agrees_with_float64(rng: np.random.Generator) -> None:
    ds = events_dataset(random_pairs(rng, 50, 20, 0.3))
    b64 = EASE(l2=10.0).fit(ds).B_
    b32 = EASE(l2=10.0, dtype="float32").fit(ds).B_
    np.testing.assert_allclose(b32, b64, atol=1e-4)


# --- neighbourhood models ----------------------------------------------------------------
def brute_cosine(x: np.ndarray, shrink: float) -> np.ndarray:
    """Column-column cosine with shrinkage, diagonal 0 (x: (n_rows, n_cols))."""
    norms = np.sqrt((x * x).sum(axis=0))
    sim = (x.T @ x) / (norms[:, None] * norms[None, :] + shrink)
    np.fill_diagonal(sim, 0.0)
    return sim


@pytest.mark.parametrize("shrink", [0.0, 3.0])
def test_itemknn_similarity_is_cosine_with_shrinkage(rng: np.random.Generator,
                                                     shrink: float) -> None:
    ds = events_dataset(random_pairs(rng, 30, 12, 0.35))
    x = dense(ds)
    model = ItemKNN(k=100, shrink=shrink).fit(ds)  # k >= n_items: nothing pruned
    np.testing.assert_allclose(model.S_.toarray(), brute_cosine(x, shrink), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(model.score(np.arange(ds.n_users)),
                               x @ brute_cosine(x, shrink), rtol=1e-5, atol=1e-5)


def test_itemknn_keeps_the_k_most_similar_per_item(rng: np.random.Generator) -> None:
    ds = events_dataset(random_pairs(rng, 60, 25, 0.3))
    full = brute_cosine(dense(ds), 2.0)
    s = ItemKNN(k=4, shrink=2.0).fit(ds).S_.toarray()  # column j: neighbours of target j
    for j in range(ds.n_items):
        kept = s[:, j][s[:, j] > 0]
        assert kept.size <= 4
        np.testing.assert_allclose(np.sort(kept)[::-1], np.sort(full[:, j])[::-1][:kept.size],
                                   rtol=1e-5)


def test_itemknn_normalize_makes_weights_sum_to_one(rng: np.random.Generator) -> None:
    ds = events_dataset(random_pairs(rng, 40, 15, 0.3))
    s = ItemKNN(k=5, normalize=True).fit(ds).S_
    sums = np.asarray(s.sum(axis=0)).ravel()  # per target item
    np.testing.assert_allclose(sums[sums > 0], 1.0, rtol=1e-5)


def test_userknn_matches_brute_force(rng: np.random.Generator) -> None:
    ds = events_dataset(random_pairs(rng, 25, 18, 0.3))
    x = dense(ds)
    sim = brute_cosine(x.T, 1.0)  # user-user
    model = UserKNN(k=100, shrink=1.0).fit(ds)
    np.testing.assert_allclose(model.S_.toarray(), sim, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.score(np.arange(ds.n_users)), sim @ x, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("klass", [ItemKNN, UserKNN, EASE, ALS])
def test_weighted_matrix_round_trips(klass: type[Recommender], tmp_path: Path,
                                     rng: np.random.Generator) -> None:
    """weighting="weight" keeps its own user-item matrix; save/load must restore it."""
    pairs = random_pairs(rng, 30, 15, 0.3)
    ds = events_dataset(pairs, weights=rng.choice([1.0, 3.0], size=len(pairs)))
    T.check_save_load(lambda: klass(weighting="weight"), tmp_path, ds)
    a = klass(weighting="weight").fit(ds, TrainingOptions(rng=0)).score(np.arange(ds.n_users))
    b = klass(weighting="binary").fit(ds, TrainingOptions(rng=0)).score(np.arange(ds.n_users))
    assert not np.allclose(a, b), "the weights made no difference"


# --- ALS / BPR ------------------------------------------------------------------------------
def grouped_with_holdout(rng: np.random.Generator, groups: int = 3, users: int = 30,
                         items: int = 15, per_user: int = 8, noise: int = 1,
                         holdout: int = 2) -> tuple[Dataset, np.ndarray]:
    """Users of g groups mostly pick items of their own group; `holdout` picks per user kept
    out of training. Item popularity is near uniform across groups, so popularity is weak.
    Returns the training Dataset and (n_users, n_items) bool test truth (internal indices)."""
    pairs = []
    for g in range(groups):
        own = np.arange(items) + g * items
        other = np.setdiff1d(np.arange(groups * items), own)
        for u in range(users):
            picks = np.r_[rng.choice(own, per_user, replace=False),
                          rng.choice(other, noise, replace=False)]
            pairs += [(g * users + u, i) for i in picks]
    pairs_arr = np.array(pairs)
    full = events_dataset(pairs_arr)
    x = full.matrix("binary").tocsr()
    truth = np.zeros(x.shape, dtype=bool)
    keep = np.ones(full.n_events, dtype=bool)
    ev_u = full.events["user_idx"].to_numpy()
    for u in range(x.shape[0]):
        rows = np.flatnonzero(ev_u == u)
        out = rng.choice(rows, holdout, replace=False)
        keep[out] = False
        truth[u, full.events["item_idx"].to_numpy()[out]] = True
    return full.with_events(full.events.filter(pl.Series(keep))), truth


def recall_at(model: Recommender, ds: Dataset, truth: np.ndarray, k: int = 5) -> float:
    idx, _ = model.recommend_idx(np.arange(ds.n_users), k)
    hits = np.take_along_axis(truth, np.maximum(idx, 0), axis=1) & (idx >= 0)
    return float((hits.sum(1) / truth.sum(1)).mean())


@pytest.mark.parametrize(("klass", "params"), [
    (ALS, {"factors": 8, "reg": 1.0, "iterations": 10}),
    (BPR, {"factors": 8, "epochs": 20, "batch_size": 256, "lr": 0.02, "reg": 0.05}),
    (EASE, {"l2": 10.0}),
    (ItemKNN, {"k": 20}),
    (UserKNN, {"k": 20}),
])
def test_collaborative_models_beat_popularity_on_groups(
        klass: type[Recommender], params: dict, rng: np.random.Generator) -> None:
    ds, truth = grouped_with_holdout(rng)
    pop = recall_at(Popularity().fit(ds), ds, truth)
    got = recall_at(klass(**params).fit(ds, TrainingOptions(rng=1)), ds, truth)
    assert got > pop + 0.15, f"{klass.__name__} recall@5 {got:.3f} vs popularity {pop:.3f}"


def test_als_item_factors_solve_the_weighted_normal_equations(
        rng: np.random.Generator) -> None:
    """The last half-step solves (U^T C_i U + reg I) v_i = U^T C_i p_i, c = 1 + alpha x."""
    ds = events_dataset(random_pairs(rng, 40, 20, 0.25))
    alpha, reg, f = 3.0, 2.0, 4
    model = ALS(factors=f, reg=reg, alpha=alpha, iterations=8, cg_steps=f).fit(
        ds, TrainingOptions(rng=0))
    x = dense(ds)
    u = model.U_.astype(np.float64)
    for i in range(ds.n_items):
        c = 1.0 + alpha * x[:, i]
        lhs = u.T @ (c[:, None] * u) + reg * np.eye(f)
        rhs = u.T @ (c * (x[:, i] > 0))
        np.testing.assert_allclose(model.V_[i], np.linalg.solve(lhs, rhs), rtol=2e-3,
                                   atol=2e-4)


def test_bpr_negative_sampler_avoids_seen_items(rng: np.random.Generator) -> None:
    n_users, n_items = 50, 30
    x = rng.random((n_users, n_items)) < 0.6
    u, i = np.nonzero(x)
    u = u.astype(np.int64)
    seed = int(rng.integers(1 << 30))
    bitmap = SeenPairs(u, i, n_users, n_items)
    searched = SeenPairs(u, i, n_users, n_items, max_bytes=0)  # sorted codes instead
    assert bitmap.bits is not None and searched.bits is None
    neg = sample_negatives(u, bitmap, np.random.default_rng(seed))
    assert not x[u, neg].any()
    assert neg.min() >= 0 and neg.max() < n_items
    # both membership tests give the same draws
    np.testing.assert_array_equal(neg, sample_negatives(u, searched, np.random.default_rng(seed)))
    pu, pi = rng.integers(0, n_users, 500), rng.integers(0, n_items, 500)
    np.testing.assert_array_equal(bitmap.contains(pu, pi), x[pu, pi])
    np.testing.assert_array_equal(searched.contains(pu, pi), x[pu, pi])


def test_bpr_batches_larger_than_a_chunk_give_the_same_fit(
        rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is computed in cache-sized chunks: the same sums in the same order."""
    ds, _ = grouped_with_holdout(rng)
    params = {"factors": 8, "epochs": 3, "batch_size": 100, "lr": 0.02, "reg": 0.05}
    whole = BPR(**params).fit(ds, TrainingOptions(rng=0))
    monkeypatch.setattr(bpr_trainer, "CHUNK", 7)
    chunked = BPR(**params).fit(ds, TrainingOptions(rng=0))
    np.testing.assert_allclose(chunked.U_, whole.U_, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunked.V_, whole.V_, rtol=1e-5, atol=1e-7)
    assert chunked.training_log_[-1]["loss"] == pytest.approx(whole.training_log_[-1]["loss"])


def test_bpr_schedule_follows_the_data_unless_set() -> None:
    cfg = BPR().config
    # batch: 32 steps an epoch; epochs: 60 up to 50 interactions per item, 40 from 120 on
    assert bpr_schedule(cfg, 1_000_000, 3500) == {"epochs": 40, "batch_size": 31_250}
    assert bpr_schedule(cfg, 65_165, 1016) == {"epochs": 54, "batch_size": 2037}
    assert bpr_schedule(cfg, 220_539, 18_357) == {"epochs": 60, "batch_size": 6892}
    assert bpr_schedule(cfg, 100, 10)["batch_size"] == 64  # the smallest batch
    assert bpr_schedule(BPR(epochs=7, batch_size=512).config, 10**6, 10) == {
        "epochs": 7, "batch_size": 512}


def test_bpr_learning_rate_schedules() -> None:
    assert bpr_trainer.lr_factor("constant", 5, 10) == 1.0
    linear = [bpr_trainer.lr_factor("linear", t, 4) for t in range(4)]
    assert linear == [1.0, 0.75, 0.5, 0.25]
    cosine = [bpr_trainer.lr_factor("cosine", t, 100) for t in range(100)]
    assert cosine[0] == 1.0 and cosine[50] == pytest.approx(0.5)
    assert 0 < cosine[-1] < 0.001 and all(np.diff(cosine) < 0)


def test_bpr_trains_in_the_epoch_loop(rng: np.random.Generator) -> None:
    ds, _ = grouped_with_holdout(rng)
    params = {"factors": 8, "epochs": 6, "batch_size": 256, "lr": 0.02, "reg": 0.05}
    model = BPR(**params).fit(ds, TrainingOptions(rng=0))
    log = model.training_log_
    assert [row["epoch"] for row in log] == [1, 2, 3, 4, 5, 6]
    losses = [row["loss"] for row in log]
    assert np.isfinite(losses).all() and losses[-1] < losses[0] < np.log(2) + 0.01
    assert all(row["metric"] is None for row in log)
    # the time budget stops after the epoch that crosses it
    short = BPR(**params).fit(ds, TrainingOptions(rng=0, time_budget_s=1e-9))
    assert len(short.training_log_) == 1
    # the fitted schedule is kept; threads change the speed, not the result
    assert model.settings_ == {"epochs": 6, "batch_size": 256}
    lrs = [row["lr"] for row in log]  # cosine decay by default
    assert lrs[0] < 0.02 and all(np.diff(lrs) < 0) and lrs[-1] < 0.001
    two = BPR(**params, threads=2).fit(ds, TrainingOptions(rng=0))
    np.testing.assert_array_equal(two.U_, model.U_)


# --- content ----------------------------------------------------------------------------------
GENRE_ITEMS = pl.DataFrame({
    "item": [1, 2, 3, 4, 5, 6, 7, 8],
    "genres": [["comedy"], ["comedy"], ["comedy", "romance"], ["romance"], ["horror"],
               ["horror", "thriller"], ["comedy", "horror"], ["thriller"]],
    "title": ["a funny day", "a funny night", "love and laughs", "love story",
              "the dark house", "the dark night", "funny dark", "the chase"],
})


def content_dataset() -> Dataset:
    # user 1 watched comedies only; user 2 horror; others make every item appear
    pairs = np.array([(1, 1), (1, 2), (2, 5), (3, 3), (3, 4), (3, 6), (3, 7), (3, 8)])
    return events_dataset(pairs, items=GENRE_ITEMS, genres="multi", title="text")


def test_content_ranks_items_sharing_the_users_genres_first() -> None:
    ds = content_dataset()
    model = Content(min_df=1).fit(ds)
    recs = model.recommend([1], 6)
    ranked = [int(i) for i in recs.items_of(0)]
    # comedies (sharing genre and the word "funny") before anything without comedy
    assert set(ranked[:2]) == {3, 7}
    assert ranked.index(7) < ranked.index(5) and ranked.index(3) < ranked.index(8)
    scores = model.score(np.array([ds.users.index([1])[0]]))[0]
    item = {v: k for k, v in enumerate(ds.items.ids.to_list())}
    assert scores[item[8]] == 0.0  # shares nothing with the user's items
    horror = [int(i) for i in model.recommend([2], 3).items_of(0)]
    assert horror[0] in (6, 7)


def test_content_genres_only_matches_hand_computed_cosine() -> None:
    ds = content_dataset()
    model = Content(columns=("genres",), idf=False).fit(ds)
    f = ds.encoded_features("item")["genres"].toarray()
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    x = dense(ds)
    prof = x @ f
    prof /= np.linalg.norm(prof, axis=1, keepdims=True)
    np.testing.assert_allclose(model.score(np.arange(ds.n_users)), prof @ f.T, rtol=1e-5,
                               atol=1e-6)


def test_content_without_item_attributes_is_a_clear_error() -> None:
    ds = events_dataset(np.array([(1, 1), (1, 2), (2, 2)]))
    with pytest.raises(ConfigError, match="no item attributes"):
        Content().fit(ds)
    with pytest.raises(ConfigError, match="unknown item attribute"):
        Content(columns=("nope",)).fit(content_dataset())


# --- configs --------------------------------------------------------------------------------
@pytest.mark.parametrize("klass", [EASE, ItemKNN, UserKNN, ALS, BPR, Content])
def test_config_refuses_unknown_keys(klass: type[Recommender]) -> None:
    with pytest.raises(ConfigError, match="unknown parameter 'lambda_'"):
        klass(lambda_=3)


@pytest.mark.parametrize(("klass", "params"), [
    (ItemKNN, {"k": "many"}), (ItemKNN, {"k": 0}), (ItemKNN, {"shrink": -1}),
    (UserKNN, {"weighting": "rating"}), (EASE, {"l2": 0}), (EASE, {"dtype": "float16"}),
    (ALS, {"factors": 2.5}), (ALS, {"alpha": -1}), (BPR, {"lr": 0}),
    (BPR, {"item_bias": "perhaps"}), (Content, {"min_df": 0}),
])
def test_config_refuses_wrong_values(klass: type[Recommender], params: dict) -> None:
    with pytest.raises(ConfigError, match="parameter"):
        klass(**params)


def test_config_coerces_cli_strings_and_is_frozen() -> None:
    model = ALS({"factors": "32", "reg": "0.5"})
    assert model.config.factors == 32 and model.config.reg == 0.5
    with pytest.raises(Exception, match="frozen"):
        model.config.factors = 3  # type: ignore[misc]


def test_content_weighted_profiles_round_trip(tmp_path: Path) -> None:
    pairs = np.array([(1, 1), (1, 5), (2, 5), (3, 3), (3, 4), (3, 6), (3, 7), (3, 8), (2, 2)])
    weights = np.array([5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    ds = events_dataset(pairs, items=GENRE_ITEMS, weights=weights, genres="multi",
                        title="text")
    T.check_save_load(lambda: Content(weighting="weight", min_df=1), tmp_path, ds)
    # user 1 weighted the comedy 5x over the horror film: comedies come first
    first = Content(weighting="weight", min_df=1).fit(ds).recommend([1], 1).items_of(0)
    assert first[0] in (2, 3, 7)
