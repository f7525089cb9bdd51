"""Cold-start protocols (cold items, few-shot users) and the text-aware neural models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers_cli import run
from lmrec import columns as C
from lmrec.collect import ColumnMapping
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError, InputError
from lmrec.evaluate import fit_and_evaluate, make_splits, split_cold_items, split_cold_users
from lmrec.models import EmbeddingModel, Popularity, SASRec, TwoTower, load_model
from lmrec.prepare import PrepareConfig, prepare
from lmrec.train.options import TrainingOptions


# --- tiny data ---------------------------------------------------------------------------
def make_dataset(rows: list[tuple[str, str, int]], n_catalogue: int = 25) -> Dataset:
    """(user, item, time) rows plus an item table of items "i0".."i{n-1}" with a title and
    genres, so items without events are in the catalogue too."""
    events = pl.DataFrame(rows, schema={"user": pl.String, "item": pl.String, "t": pl.Int64},
                          orient="row")
    items = pl.DataFrame({"item": [f"i{j}" for j in range(n_catalogue)],
                          "title": [f"film number {j}" for j in range(n_catalogue)],
                          "genres": [["even" if j % 2 == 0 else "odd"]
                                     for j in range(n_catalogue)]})
    return prepare(events, items=items, mapping=ColumnMapping(time="t"),
                   config=PrepareConfig(item_roles={"title": "text", "genres": "multi"})
                   ).dataset


def base_rows() -> list[tuple[str, str, int]]:
    """12 users over items i0..i19 (i20..i24 have no events); user u has 4 + u % 5 items."""
    rng = np.random.default_rng(3)
    rows, t = [], 0
    for u in range(12):
        for j in rng.choice(20, size=4 + u % 5, replace=False):
            t += 1
            rows.append((f"u{u}", f"i{j}", t))
    for j in range(20):  # every one of i0..i19 has at least one event
        t += 1
        rows.append(("u0" if j % 2 else "u1", f"i{j}", t))
    return rows


def item_set(ds: Dataset | None) -> set[int]:
    return set() if ds is None else set(ds.events[C.ITEM_IDX].unique().to_list())


def pair_set(ds: Dataset | None) -> set[tuple[int, int]]:
    return set() if ds is None else set(ds.events.select(C.USER_IDX, C.ITEM_IDX).iter_rows())


# --- cold items --------------------------------------------------------------------------
def test_cold_items_hold_out_whole_items_with_exact_shares() -> None:
    ds = make_dataset(base_rows())
    assert ds.n_items == 25  # 20 items with events + 5 catalogue-only items
    split = split_cold_items(ds, 0.2, seed=0, valid_share=0.1)
    test_items, valid_items, train_items = (item_set(split.test), item_set(split.valid),
                                            item_set(split.train))
    # shares of the 20 items with events: round(0.2 * 20) = 4 test, round(0.1 * 20) = 2 valid
    assert len(test_items) == 4 and len(valid_items) == 2 and len(train_items) == 14
    assert not test_items & train_items and not valid_items & train_items
    assert not test_items & valid_items
    # every event on a held-out item left training: nothing of it is in the training part
    ev = ds.events
    on_test = ev.filter(pl.col(C.ITEM_IDX).is_in(list(test_items))).height
    assert split.test.n_events == on_test
    assert split.train.n_events + split.valid.n_events + split.test.n_events == ds.n_events
    # catalogue-only items are never drawn, and every part keeps the whole catalogue
    assert all(ds.items.to_python(i) not in {f"i{j}" for j in range(20, 25)}
               for i in test_items | valid_items)
    assert split.train.n_items == ds.n_items and split.train.item_table.height == 25
    assert set(split.cold_items().tolist()) == test_items
    assert split.kind == "cold-items" and "4 of 20 items" in split.notes[0]


def test_cold_items_are_seeded_and_test_ignores_valid_share() -> None:
    ds = make_dataset(base_rows())
    a = split_cold_items(ds, 0.2, seed=5)
    b = split_cold_items(ds, 0.2, seed=5, valid_share=0.0)
    assert item_set(a.test) == item_set(b.test) and b.valid is None
    assert pair_set(a.test) == pair_set(split_cold_items(ds, 0.2, seed=5).test)
    draws = {frozenset(item_set(split_cold_items(ds, 0.2, seed=s).test)) for s in range(6)}
    assert len(draws) > 1  # the seed matters


def test_cold_items_count_users_left_without_training_events() -> None:
    rows = base_rows()
    held = split_cold_items(make_dataset(rows), 0.2, seed=0)
    test_ids = [held.train.items.to_python(i) for i in sorted(item_set(held.test))]
    # a late user who rated only two held-out items: same items with events, same draw
    ds = make_dataset([*rows, ("late", test_ids[0], 10_000), ("late", test_ids[1], 10_001)])
    split = split_cold_items(ds, 0.2, seed=0)
    assert item_set(split.test) == item_set(held.test)
    late = ds.users.index(["late"])[0]
    assert split.cold_users().tolist() == [late]
    assert any("1 test users have no training events" in n for n in split.notes)


def test_cold_items_bad_shares() -> None:
    ds = make_dataset(base_rows())
    with pytest.raises(ConfigError, match="holdout_share"):
        split_cold_items(ds, 0.0)
    with pytest.raises(ConfigError, match="valid_share"):
        split_cold_items(ds, 0.6, valid_share=0.4)
    tiny = make_dataset([("a", "i0", 1), ("b", "i0", 2)], n_catalogue=3)
    with pytest.raises(InputError, match="too few items"):
        split_cold_items(tiny, 0.5)


# --- few-shot users ----------------------------------------------------------------------
def test_cold_users_keep_their_earliest_items() -> None:
    ds = make_dataset(base_rows())
    split = split_cold_users(ds, 3, holdout_share=0.25, seed=1, valid_share=0.25)
    seqs = ds.sequences()
    n_pairs = np.array([np.unique(seqs.of(u)).size for u in range(ds.n_users)])
    eligible = int((n_pairs > 3).sum())
    test_users = set(split.test.events[C.USER_IDX].unique().to_list())
    valid_users = set(split.valid.events[C.USER_IDX].unique().to_list())
    assert len(test_users) == round(0.25 * eligible) and len(valid_users) == round(0.25 * eligible)
    assert not test_users & valid_users
    for u in test_users | valid_users:
        seq = seqs.of(u)  # time-ordered; u0 and u1 repeat some items later
        hist = seq[np.sort(np.unique(seq, return_index=True)[1])]  # distinct, by first event
        part = split.test if u in test_users else split.valid
        train_items = set(split.train.events.filter(pl.col(C.USER_IDX) == u)[C.ITEM_IDX])
        held = set(part.events.filter(pl.col(C.USER_IDX) == u)[C.ITEM_IDX])
        assert train_items == set(hist[:3].tolist()) and held == set(hist[3:].tolist())
    # everyone else is fully in training
    others = set(range(ds.n_users)) - test_users - valid_users
    assert all(split.train.events.filter(pl.col(C.USER_IDX) == u).height == seqs.of(u).size
               for u in others)
    assert split.cold_users().size == 0


def test_zero_shot_users_are_cold() -> None:
    ds = make_dataset(base_rows())
    split = split_cold_users(ds, 0, holdout_share=0.25, seed=0, valid_share=0.0)
    assert split.cold_users().size == 3  # round(0.25 * 12) users without any training event
    assert any("3 test users have no training events" in n for n in split.notes)


def test_make_splits_knows_the_cold_kinds() -> None:
    ds = make_dataset(base_rows())
    (items,) = make_splits(ds, "cold-items", holdout_share=0.3, seed=2)
    assert items.kind == "cold-items" and len(item_set(items.test)) == 6
    assert items.valid is not None  # the cold splits have a validation part by default
    (users,) = make_splits(ds, "cold-users", max_train_events=2, seed=2)
    assert users.kind == "cold-users"


# --- CLI ---------------------------------------------------------------------------------
def test_cli_evaluate_cold_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_dataset(base_rows()).save(tmp_path / "data")
    code, out, err = run(["evaluate", "--data", str(folder), "--model", "content", "--split",
                          "cold-items", "--holdout-share", "0.2", "--k", "5", "--seed", "0",
                          "--json"], capsys)
    assert code == 0, err
    metrics = json.loads(out)
    assert 0.0 <= metrics["recall@5"] <= 1.0 and "ndcg@5" in metrics
    assert "4 of 20 items" in err
    code, out, err = run(["evaluate", "--data", str(folder), "--model", "popularity",
                          "--split", "cold-users", "--max-train-events", "3", "--k", "5",
                          "--json"], capsys)
    assert code == 0, err
    assert "keep their first 3 in training" in err
    code, out, err = run(["compare", "--data", str(folder), "--models", "popularity,content",
                          "--report", str(tmp_path / "report"), "--split", "cold-items",
                          "--holdout-share", "0.3", "--k", "5", "--json"], capsys)
    assert code == 0, err
    # every test item is cold: popularity (no training events, no score) cannot rank one
    assert json.loads(out)["popularity"]["recall@5"] == 0.0 and "6 of 20 items" in err
    # the same model twice under labels, with parameters (`--variant LABEL=MODEL:k=v,...`)
    code, out, err = run(["compare", "--data", str(folder), "--models", "popularity",
                          "--variant", "content-genre=content:columns=genres",
                          "--variant", "content-all=content:min_df=1,idf=false",
                          "--report", str(tmp_path / "report2"), "--split", "cold-items",
                          "--k", "5", "--json"], capsys)
    assert code == 0, err
    assert set(json.loads(out)) == {"popularity", "content-genre", "content-all"}
    code, _, err = run(["compare", "--data", str(folder), "--variant", "popularity=content",
                        "--models", "popularity", "--report", str(tmp_path / "r3")], capsys)
    assert code != 0 and "already taken" in err


def test_parse_variant_keeps_list_values_together() -> None:
    from lmrec.cli import parse_variant

    assert parse_variant("tt=two-tower:text=true,layers=128,64, dim=32") == (
        "tt", "two-tower", {"text": "true", "layers": "128,64", "dim": "32"})
    assert parse_variant("plain=ease") == ("plain", "ease", {})
    with pytest.raises(ConfigError, match="LABEL=MODEL"):
        parse_variant("no-model=")


# --- text-aware models -------------------------------------------------------------------
TINY = {"epochs": 20, "batch_size": 32, "lr": 0.01, "dim": 16, "id_dim": 16,
        "feature_dim": 4, "layers": (32,), "temperature": 0.5, "progress": False}
WORDS = {"A": "alpha", "B": "beta"}


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedding cache for the module: each text is encoded once (offline MiniLM)."""
    pytest.importorskip("sentence_transformers")
    return str(tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="module")
def two_groups() -> Dataset:
    """Users a0..a11 read alpha items A0..A11, users b0..b23 beta items B0..B11 (six each,
    in time order); A12 and B12 ("alpha story 12", "beta story 12") have no events. Every
    item has a small vector column `emb` pointing at its group."""
    rng = np.random.default_rng(0)
    rows = [(f"{g}{u}", f"{g.upper()}{i}", t) for g, n in (("a", 12), ("b", 24))
            for u in range(n) for t, i in enumerate(rng.permutation(12)[:6])]
    ids = [f"{g}{i}" for g in "AB" for i in range(13)]
    items = pl.DataFrame({
        "item": ids,
        "title": [f"{WORDS[i[0]]} story {i[1:]}" for i in ids],
        "genres": [[WORDS[i[0]]] for i in ids],
        "emb": ["[1, 0]" if i[0] == "A" else "[0, 1]" for i in ids]})
    return prepare(pl.DataFrame(rows, schema=["user", "item", "t"], orient="row"), items=items,
                   mapping=ColumnMapping(time="t"), config=PrepareConfig(
                       item_roles={"genres": "multi", "title": "text", "emb": "vector"})
                   ).dataset


def group_preference(scores: np.ndarray, ds: Dataset, item: str) -> float:
    """Mean score of `item` for a-users minus its mean for b-users."""
    col = int(ds.items.index([item])[0])
    is_a = np.array([str(u).startswith("a") for u in ds.users.ids.to_list()])
    return float(scores[is_a, col].mean() - scores[~is_a, col].mean())


def test_two_tower_scores_unseen_items_from_text(two_groups: Dataset, text_cache: str,
                                                 tmp_path: Path) -> None:
    ds = two_groups
    model = TwoTower(**TINY, text=True, item_features=False, text_cache_dir=text_cache)
    model.fit(ds, TrainingOptions(rng=0))
    assert model.module_.item_gate.dropout == 0.5  # the default with text
    cold = np.flatnonzero(model.arrays_["item_cold"])
    assert sorted(ds.items.to_python(int(i)) for i in cold) == ["A12", "B12"]
    scores = model.score(np.arange(ds.n_users))
    # no id, no attributes: only the text tells that A12 is an alpha item
    assert group_preference(scores, ds, "A12") > 0 > group_preference(scores, ds, "B12")
    # the bundle holds the text vectors: a reload scores the same without the encoder
    saved = model.save(tmp_path / "tt")
    with np.load(saved / "arrays.npz") as z:
        assert z["model.extra.a.item_text"].shape == (ds.n_items, 384)
    again = load_model(saved)
    np.testing.assert_array_equal(again.score(np.arange(ds.n_users)), scores)


def test_two_tower_embedding_scorer_and_histories(two_groups: Dataset, text_cache: str
                                                  ) -> None:
    ds = two_groups
    model = TwoTower(**TINY, text=True, text_cache_dir=text_cache).fit(
        ds, TrainingOptions(rng=0))
    assert isinstance(model, EmbeddingModel)
    users = np.arange(ds.n_users)
    items = model.item_embeddings()
    np.testing.assert_allclose(model.user_embeddings(users) @ items.T, model.score(users),
                               rtol=1e-5, atol=1e-5)
    a0, a1, a12 = (int(i) for i in ds.items.index(["A0", "A1", "A12"]))
    nobody = np.array([-1, -1])  # new users: unknown id and attributes
    hists = model.user_embeddings(nobody, [np.array([a0, a1]), np.array([a0, a12, a1])])
    # an item without training events has no trained id row: a history ignores it
    np.testing.assert_array_equal(hists[0], hists[1])
    one = model.user_embedding_from_history(np.array([a0, a1]))  # unscaled, unit length
    np.testing.assert_allclose(one * model.scale_, hists[0], rtol=1e-5)
    for bad in (-1, ds.n_items):  # like every model's history entry points
        with pytest.raises(InputError, match="internal indices"):
            model.user_embeddings(nobody[:1], [np.array([a0, bad])])
    # B histories of new users, vectorised, rank their own group first
    top = np.argsort(-(hists @ items.T), axis=1)[:, :3]
    assert all(ds.items.to_python(int(i)).startswith("A") for i in top.ravel())


def test_two_tower_sum_fusion_projects_each_modality(two_groups: Dataset) -> None:
    ds = two_groups
    # no text: ids, genres, `emb`
    model = TwoTower(**TINY, fusion="sum").fit(ds, TrainingOptions(rng=0))
    assert len(model.module_.vec_proj) == 1  # the vector column is its own modality
    assert model.module_.num_vec_1.tolist() == [0, 1]
    assert model.training_log_[-1]["loss"] < model.training_log_[0]["loss"]
    scores = model.score(np.arange(ds.n_users))
    # the vector column and genres place the unseen A12 with the alpha items
    assert group_preference(scores, ds, "A12") > 0 > group_preference(scores, ds, "B12")


def test_two_tower_reads_text_once_per_fit(two_groups: Dataset,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import lmrec.models.two_tower as tt

    calls: list[int] = []

    def fake_text(dataset: Dataset, cfg: object, *, progress: bool) -> np.ndarray:
        calls.append(dataset.n_items)  # one distinct vector per item, no encoder needed
        return np.eye(dataset.n_items, 8, dtype=np.float32)

    monkeypatch.setattr(tt, "item_text_matrix", fake_text)
    params = {**TINY, "epochs": 2, "patience": 1, "text": True}
    # holdout validation prepares twice (holdout, then all pairs): the vectors are read once
    model = TwoTower(**params).fit(two_groups, TrainingOptions(rng=0))
    assert calls == [two_groups.n_items]
    # a new fit on other data reads its own texts, never the previous fit's
    other = make_dataset(base_rows())
    model.fit(other, TrainingOptions(rng=0))
    assert calls == [two_groups.n_items, other.n_items]
    assert model.arrays_["item_text"].shape == (other.n_items, 8)
    assert not hasattr(model, "_fit_text")  # nothing of the fit's scratch state is kept


def test_sasrec_text_scores_unseen_items(two_groups: Dataset, text_cache: str,
                                         tmp_path: Path) -> None:
    ds = two_groups
    model = SASRec(text=True, epochs=30, hidden=16, heads=1, inner=32, layers=1, lr=0.01,
                   progress=False, text_cache_dir=text_cache).fit(ds, TrainingOptions(rng=0))
    losses = [h["loss"] for h in model.train_result_.history]
    assert losses[-1] < losses[0]
    scores = model.score(np.arange(ds.n_users))
    assert np.isfinite(scores).all()
    # never seen in training, yet each unseen item is preferred by its own group's users
    assert group_preference(scores, ds, "A12") > 0 > group_preference(scores, ds, "B12")
    again = load_model(model.save(tmp_path / "sasrec"))
    np.testing.assert_array_equal(again.score(np.arange(ds.n_users)), scores)


# --- end to end on ML-100K -----------------------------------------------------------------
def test_ml100k_cold_items_text_two_tower(shared_datasets: Path, text_cache: str) -> None:
    from lmrec.datasets import load_dataset

    ds = load_dataset("movielens-100k", shared_datasets / "ml-100k", download=False).dataset
    split = split_cold_items(ds, 0.2, seed=0)
    # a short fit (about 5 s; the benchmark's full one reaches recall@20 near .10)
    model = TwoTower(epochs=4, lr=0.005, batch_size=512, dim=32, id_dim=32, layers=(64,),
                     text=True, progress=False, text_cache_dir=text_cache)
    tt = fit_and_evaluate(model, split, [20], rng=0)
    pop = fit_and_evaluate(Popularity(), split, [20], rng=0)
    # every test item is cold: popularity never ranks one; the text tower must
    assert pop.metrics["recall@20"] == 0.0
    assert tt.metrics["recall@20"] > 0.03, tt.metrics
    assert tt.slices["cold items"]["recall@20"] == pytest.approx(tt.metrics["recall@20"])
    users = np.unique(split.test.events[C.USER_IDX].to_numpy())
    top, _ = model.recommend_idx(users, 20)
    unseen = np.isin(top, split.cold_items()) | np.isin(top, split.valid.events[C.ITEM_IDX])
    assert unseen.any(axis=1).mean() > 0.9  # nearly every list holds items unseen in training
