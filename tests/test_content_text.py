"""ContentText: semantic content recommendations from item text embeddings, and its CLI.

These use the real bundled MiniLM encoder (offline); `get_encoder` shares one loaded model per
process, so it loads once for the whole session. Every cache goes to a temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers_cli import run
from lmrec import testing as T
from lmrec.data.dataset import Dataset, Sequences
from lmrec.datasets.movielens import load_movielens_100k
from lmrec.errors import ConfigError, InputError
from lmrec.models import ContentText, EmbeddingModel, TextQueries, create_model, load_model
from lmrec.prepare import PrepareConfig, prepare


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("embeddings"))


def planted_with_new_items() -> Dataset:
    """The planted two-group data plus two catalogue items nobody has interacted with."""
    base = T.planted_dataset()
    events = base.events.select(
        pl.col("user_idx").map_elements(base.users.to_python, return_dtype=pl.String)
        .alias("user"),
        pl.col("item_idx").map_elements(base.items.to_python, return_dtype=pl.String)
        .alias("item"))
    items = pl.concat([base.item_table.select("item", "genres", "title"), pl.DataFrame({
        "item": ["A-new", "B-new"], "genres": [["alpha", "film"], ["beta", "film"]],
        "title": ["alpha story new", "beta story new"]})])
    return prepare(events, items=items, config=PrepareConfig(
        item_roles={"genres": "multi", "title": "text"})).dataset


# --- the contract and the maths ------------------------------------------------------------------
def test_recommender_contract(cache_dir: str, tmp_path: Path) -> None:
    T.check_recommender(lambda: ContentText(progress=False, cache_dir=cache_dir), tmp_path)


def test_scores_are_inner_products_of_embeddings(cache_dir: str) -> None:
    ds = T.planted_dataset()
    m = ContentText(progress=False, cache_dir=cache_dir).fit(ds)
    assert isinstance(m, EmbeddingModel) and isinstance(m, TextQueries)
    users = np.arange(ds.n_users)
    np.testing.assert_allclose(m.score(users), m.user_embeddings(users) @ m.item_embeddings().T,
                               atol=1e-6)
    hist = [np.array([0, 3]), np.array([5])]
    anon = np.full(2, -1)
    np.testing.assert_allclose(m.score(anon, hist),
                               m.user_embeddings(anon, hist) @ m.item_embeddings().T, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(m.user_embeddings(users), axis=1), 1, atol=1e-5)


def test_profile_is_recency_and_behaviour_weighted(cache_dir: str) -> None:
    m = ContentText(progress=False, cache_dir=cache_dir, half_life=1.0).fit(T.planted_dataset())
    m.item_vectors_ = np.eye(m.n_items, dtype=np.float32)  # item i is axis i: weights show
    m.event_types_, m.event_weights_ = ("buy", "view"), np.array([4.0, 1.0], np.float32)
    seqs = Sequences(indptr=np.array([0, 3, 3]), items=np.array([0, 1, 2], np.int32),
                     events=np.array([1, 0, 1], np.int32), timestamps=np.full(3, -1),
                     event_types=("buy", "view"))
    got = m.user_embeddings(np.full(2, -1), seqs)
    want = np.zeros(m.n_items)
    want[[0, 1, 2]] = [0.25 * 1, 0.5 * 4, 1.0 * 1]  # oldest view, a buy, the latest view
    np.testing.assert_allclose(got[0], want / np.linalg.norm(want), atol=1e-6)
    assert not got[1].any()  # an empty history has a zero profile
    flat = ContentText(progress=False, cache_dir=cache_dir, half_life=None,
                       use_behaviour_weights=False, max_history=2).fit(T.planted_dataset())
    flat.item_vectors_ = m.item_vectors_
    np.testing.assert_allclose(flat.user_embeddings(np.full(2, -1), seqs)[0, :3],
                               [0, 2 ** -0.5, 2 ** -0.5], atol=1e-6)


def test_user_embeddings_refuse_out_of_range_items(cache_dir: str) -> None:
    m = ContentText(progress=False, cache_dir=cache_dir).fit(T.planted_dataset())
    for bad in (-1, m.n_items):
        with pytest.raises(InputError, match="internal indices"):
            m.user_embeddings(np.array([-1]), [np.array([0, bad])])
        with pytest.raises(InputError, match="internal indices"):
            m.score(np.array([-1]), [np.array([0, bad])])
    assert m.user_embeddings(np.array([-1]), [np.array([0, m.n_items - 1])]).shape[0] == 1


def test_redacted_user_has_the_empty_profile(cache_dir: str) -> None:
    ds = T.planted_dataset()
    m = ContentText(progress=False, cache_dir=cache_dir).fit(ds)
    before = m.score(np.arange(ds.n_users))
    m.redact_users([2])
    after = m.score(np.arange(ds.n_users))
    np.testing.assert_array_equal(after[2], m.score(np.array([-1]))[0])
    np.testing.assert_array_equal(after[2], m.score(np.array([-1]), Sequences.empty(1))[0])
    assert not after[2].any()  # an empty history: a zero profile
    np.testing.assert_array_equal(np.delete(after, 2, 0), np.delete(before, 2, 0))
    assert not m.user_embeddings(np.array([2, -1])).any()
    assert ds.sequences().of(2).size > 0  # the training Dataset is left alone


def test_items_nobody_interacted_with_are_scored_from_text(cache_dir: str) -> None:
    ds = planted_with_new_items()
    m = ContentText(progress=False, cache_dir=cache_dir).fit(ds)
    a_new, b_new = ds.items.index(["A-new", "B-new"])
    assert m.popularity_[a_new] == 0 and m.popularity_[b_new] == 0
    groups = np.array([u[0] for u in ds.users.ids.to_list()])
    scores = m.score(np.arange(ds.n_users))
    assert (scores[groups == "a", a_new] > scores[groups == "a", b_new]).all()
    assert (scores[groups == "b", b_new] > scores[groups == "b", a_new]).all()


def test_save_load_keeps_vectors_and_text_search(cache_dir: str, tmp_path: Path) -> None:
    ds = T.planted_dataset()
    m = ContentText(progress=False, cache_dir=cache_dir).fit(ds)
    m.save(tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, ContentText)
    np.testing.assert_array_equal(loaded.item_embeddings(), m.item_embeddings())
    assert loaded.recommend_for_text("alpha", 3) == m.recommend_for_text("alpha", 3)
    assert all(str(i).startswith("A") for i, _ in loaded.recommend_for_text("alpha story", 5))


def test_text_search_refuses_a_different_encoder(cache_dir: str) -> None:
    m = ContentText(progress=False, cache_dir=cache_dir).fit(T.planted_dataset())
    m.encoder_name_ = "some-other-model"
    with pytest.raises(ConfigError, match="retrain the model"):
        m.recommend_for_text("alpha", 3)
    with pytest.raises(InputError, match="empty"):
        m.recommend_for_text("  ", 3)


def test_recommend_history_takes_external_ids(cache_dir: str) -> None:
    ds = T.planted_dataset()
    m = ContentText(progress=False, cache_dir=cache_dir).fit(ds)
    ranked = m.recommend_history(["A1", "A2"], k=5)
    assert len(ranked) == 5 and {"A1", "A2"}.isdisjoint(i for i, _ in ranked)
    assert all(i.startswith("A") for i, _ in ranked)
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    with pytest.raises(InputError, match="unknown item id"):
        m.recommend_history(["A1", "nope"], k=5)


# --- real data: zero-shot and few-shot --------------------------------------------------------
ZERO_SHOT = {
    "Animation": "I love animated films for children",
    "Horror": "scary horror movies",
    "Sci-Fi": "science fiction about space travel and aliens",
    "Romance": "romantic love stories",
    "Documentary": "documentaries about real people and events",
    "War": "war movies about soldiers in battle",
    "Western": "westerns with cowboys and gunfights",
}


@pytest.fixture(scope="module")
def ml100k_model(shared_datasets: Path, cache_dir: str) -> tuple[Dataset, ContentText]:
    ds = load_movielens_100k(shared_datasets / "ml-100k").dataset
    return ds, ContentText(progress=False, cache_dir=cache_dir).fit(ds)


def genre_mask(ds: Dataset, genre: str) -> np.ndarray:
    return np.array([genre in (g or []) for g in ds.item_table["genres"].to_list()])


@pytest.mark.parametrize("genre", sorted(ZERO_SHOT))
def test_zero_shot_sentence_finds_its_genre(ml100k_model: tuple[Dataset, ContentText],
                                            genre: str) -> None:
    ds, m = ml100k_model
    has = genre_mask(ds, genre)
    top = m.recommend_for_text(ZERO_SHOT[genre], 10)
    precision = has[ds.items.index([i for i, _ in top])].mean()
    base = has.mean()
    assert precision >= 0.5 and precision >= 3 * base, (
        f"{genre}: precision@10 {precision:.2f}, base rate {base:.3f}")


def test_few_shot_history_of_three_horror_films(ml100k_model: tuple[Dataset, ContentText]
                                                ) -> None:
    ds, m = ml100k_model
    horror = genre_mask(ds, "Horror")
    history = ds.items.id_of(np.flatnonzero(horror)[:3]).tolist()
    top = m.recommend_history(history, 10)
    assert horror[ds.items.index([i for i, _ in top])].mean() >= 0.5


# --- CLI --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("planted")
    planted_with_new_items().save(folder)
    return folder


def test_cli_embed_fills_the_cache_once(data_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["embed", "--data", str(data_dir), "--cache-dir", str(tmp_path), "--json"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    first = json.loads(out)
    assert first["items"] == 26 and first["dim"] == 384
    assert first["newly_encoded"] == 26 and first["from_cache"] == 0
    code, out, err = run(args, capsys)
    second = json.loads(out)
    assert (second["newly_encoded"], second["from_cache"]) == (0, 26)
    code, out, err = run([*args, "--template", "{title}"], capsys)
    assert code == 0 and json.loads(out)["newly_encoded"] == 26  # other texts, new vectors
    code, out, err = run([*args[:-1], "--show", "2"], capsys)  # the human-readable table
    assert code == 0 and "alpha story" in out and "newly_encoded" in out


def test_cli_embed_bad_template(data_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["embed", "--data", str(data_dir), "--cache-dir", str(tmp_path),
                        "--template", "{plot}"], capsys)
    assert code == 2 and "unknown column(s) ['plot']" in err


def test_cli_recommend_for_text(data_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    code, _, err = run(["train", "--data", str(data_dir), "--model", "content-text", "--out",
                        str(model), "--param", "progress=false", "--param",
                        f"cache_dir={tmp_path}"], capsys)
    assert code == 0, err
    code, out, err = run(["recommend", str(model), "--text", "a beta story", "--k", "3",
                          "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["text"] == "a beta story" and len(got["items"]) == 3
    assert all(it["item"].startswith("B") for it in got["items"])
    code, out, err = run(["recommend", str(model), "--text", "alpha", "--k", "2"], capsys)
    assert code == 0 and "alpha story" in out  # the table shows titles
    code, out, err = run(["recommend", str(model), "--user", "a0", "--k", "2"], capsys)
    assert code == 0 and "a0" in out


def test_cli_recommend_text_needs_a_text_model(data_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["train", "--data", str(data_dir), "--model", "popularity", "--out",
                        str(tmp_path)], capsys)
    assert code == 0, err
    code, _, err = run(["recommend", str(tmp_path), "--text", "anything"], capsys)
    assert code == 2 and "cannot recommend from a text" in err and "content-text" in err
    code, _, err = run(["recommend", str(tmp_path)], capsys)
    assert code == 2 and "--user" in err and "--text" in err


def test_registered_under_its_name() -> None:
    assert isinstance(create_model("content-text", {"half_life": "3"}), ContentText)
