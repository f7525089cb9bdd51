"""Text-native items of the sequential models (sasrec, hstu): `text_only` (an item is a trained
MLP of its text vector, no id) and zero-shot `transfer` to another catalogue.

Texts are encoded by a tiny deterministic bag-of-words encoder (each word a fixed random unit
vector, a text the normalised sum of its words), patched in for the offline MiniLM: equal texts
get equal vectors, texts sharing words get close ones, and no test waits for the real model.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from lmrec import testing as T
from lmrec.collect import ColumnMapping
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError
from lmrec.features.item_text import item_texts
from lmrec.models import HSTU, SASRec, load_model
from lmrec.models.sasrec import SASRecConfig, SASRecNet
from lmrec.models.text_items import ItemEmbedding, SequentialTextFields
from lmrec.prepare import PrepareConfig, prepare
from lmrec.train.options import TrainingOptions

DIM = 16  # the fake encoder's output size
TINY = {"hidden": 16, "heads": 1, "layers": 1, "epochs": 30, "batch_size": 8, "lr": 0.01,
        "dropout": 0.0, "max_len": 8, "progress": False, "text_hidden": 32}
MODELS = {"sasrec": SASRec, "hstu": HSTU}


def word_vector(word: str) -> np.ndarray:
    seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).normal(size=DIM)


def fake_item_text_vectors(dataset: Dataset, *, template: Any = None, **_: Any) -> np.ndarray:
    """(n_items, DIM) unit bag-of-words vectors of the items' texts (zero rows: no text)."""
    out = np.zeros((dataset.n_items, DIM), dtype=np.float32)
    for i, text in enumerate(item_texts(dataset, template)):
        words = re.findall(r"\w+", text.lower())
        if words:
            v = np.sum([word_vector(w) for w in words], axis=0)
            out[i] = v / np.linalg.norm(v)
    return out


@pytest.fixture(autouse=True)
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    import lmrec.features.embedding_cache as cache

    monkeypatch.setattr(cache, "item_text_vectors", fake_item_text_vectors)


WORDS = {"A": "alpha", "B": "beta"}


def groups(prefix: str = "", users: str = "", order: int = 0,
           retitle: dict[str, str] | None = None) -> Dataset:
    """Users a0..a11 read alpha items A0..A11, b0..b17 beta items B0..B11 (six each, in time
    order); A12 and B12 ("alpha story 12", "beta story 12") have no events. Item ids get
    `prefix`, user ids `users`; `order` > 0 shuffles the item table (another catalogue order);
    `retitle` gives items other titles."""
    rng = np.random.default_rng(0)
    rows = [(f"{users}{g}{u}", f"{prefix}{g.upper()}{i}", t) for g, n in (("a", 12), ("b", 18))
            for u in range(n) for t, i in enumerate(rng.permutation(12)[:6])]
    ids = [f"{g}{i}" for g in "AB" for i in range(13)]
    if order:
        ids = [ids[j] for j in np.random.default_rng(order).permutation(len(ids))]
    titles = {i: f"{WORDS[i[0]]} story {i[1:]}" for i in ids} | (retitle or {})
    items = pl.DataFrame({"item": [prefix + i for i in ids], "title": [titles[i] for i in ids]})
    return prepare(pl.DataFrame(rows, schema=["user", "item", "t"], orient="row"), items=items,
                   mapping=ColumnMapping(time="t"),
                   config=PrepareConfig(item_roles={"title": "text"})).dataset


@pytest.fixture(scope="module")
def data() -> Dataset:
    return groups()


def fitted(name: str, ds: Dataset, **kw: Any) -> Any:
    return MODELS[name](**{**TINY, "text_only": True, **kw}).fit(ds, TrainingOptions(rng=0))


def col(ds: Dataset, item: str) -> int:
    return int(ds.items.index([item])[0])


# --- config and module ----------------------------------------------------------------------
def test_item_repr_of_the_config_fields() -> None:
    assert SASRecConfig().item_repr == "id"
    assert SASRecConfig(text=True).item_repr == "id+text"  # saved configs keep their meaning
    assert SASRecConfig(text_only=True).item_repr == "text"
    assert SASRecConfig(text=True, text_only=True).item_repr == "text"
    with pytest.raises(ConfigError, match="item_id_dropout"):
        SASRecConfig.from_params({"text_only": True, "item_id_dropout": 0.5})


@pytest.mark.parametrize("hidden", [0, 8])
def test_text_only_has_no_weight_per_item(hidden: int) -> None:
    cfg = SequentialTextFields(text_only=True, text_hidden=hidden)
    small, large = (ItemEmbedding(n, 4, cfg, np.ones((n, DIM), np.float32)) for n in (5, 500))
    shapes = {k: v.shape for k, v in small.state_dict().items()}
    assert shapes == {k: v.shape for k, v in large.state_dict().items()}  # no per-item rows
    assert not any("id_emb" in k or "gate" in k for k in shapes)
    assert ("text_proj.mlp.0.weight" in shapes) == (hidden > 0)
    tokens = torch.tensor([[0, 1, 5], [0, 0, 2]])
    out = small(tokens)  # (2, 3, 4)
    assert out.shape == (2, 3, 4) and (out[tokens == 0] == 0).all()  # padding stays zero
    torch.testing.assert_close(small.table()[tokens], out)


@pytest.mark.parametrize("text_only", [True, False])
def test_cold_items_sit_out_the_training_softmax(text_only: bool) -> None:
    cfg = SequentialTextFields(text_only=text_only, text=True, text_hidden=4,
                               item_id_dropout=0.0)  # no random id drops in train mode
    text = np.eye(3, DIM, dtype=np.float32)
    emb = ItemEmbedding(3, 4, cfg, text, np.array([False, True, False]))  # item 1: token 2
    torch.nn.init.normal_(emb.text_proj.skip.weight if text_only else emb.text_proj.weight)
    trained = emb.train().table()  # (4, 4)
    assert (trained[2] == 0).all() and (trained[[1, 3]] != 0).any(dim=1).all()
    scored = emb.eval().table()  # scored by its text (and the unknown-id row) like the rest
    assert (scored[2] != 0).any()
    torch.testing.assert_close(scored[[0, 1, 3]], trained[[0, 1, 3]])


def test_text_only_needs_text_vectors() -> None:
    with pytest.raises(ValueError, match="text vector per item"):
        ItemEmbedding(5, 4, SequentialTextFields(text_only=True))


@pytest.mark.parametrize("text", [False, True])
def test_networks_saved_before_the_items_module_load(text: bool) -> None:
    torch.manual_seed(0)
    cfg = SASRecConfig(hidden=8, heads=1, inner=8, layers=1, max_len=4, text=text)
    vectors = np.eye(6, DIM, dtype=np.float32) if text else None
    net = SASRecNet(6, 0, cfg, vectors).eval()
    # the keys of bundles saved before ItemEmbedding: the items' weights on the network itself
    old = {k.replace("items.id_emb.", "item_emb.").replace("items.", ""): v
           for k, v in net.state_dict().items()}
    assert {"item_emb.weight", "text_proj.weight", "gate.unknown"} & set(old) == (
        {"item_emb.weight", "text_proj.weight", "gate.unknown"} if text else {"item_emb.weight"})
    again = SASRecNet(6, 0, cfg, vectors).eval()
    again.load_state_dict(old)
    torch.testing.assert_close(again.item_table(), net.item_table())
    assert again.item_emb is again.items.id_emb  # the id table, for callers that read it


# --- text-only models -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_text_only_ranks_an_unseen_item_by_its_text(name: str, data: Dataset,
                                                    tmp_path: Path) -> None:
    model = fitted(name, data)
    assert not any("id_emb" in k for k in model.net_.state_dict())
    losses = [h["loss"] for h in model.training_log_]
    assert losses[-1] < losses[0]
    users = np.arange(data.n_users)
    scores = model.score(users)
    is_a = np.array([str(u).startswith("a") for u in data.users.ids.to_list()])
    a12, b12 = col(data, "A12"), col(data, "B12")
    # never seen in training: each is ranked by its own group above every item of the other
    beta = [col(data, f"B{i}") for i in range(12)]
    alpha = [col(data, f"A{i}") for i in range(12)]
    assert (scores[is_a, a12][:, None] > scores[np.ix_(is_a, beta)]).mean() > 0.9
    assert (scores[~is_a, b12][:, None] > scores[np.ix_(~is_a, alpha)]).mean() > 0.9
    again = load_model(model.save(tmp_path / name))
    np.testing.assert_array_equal(again.score(users), scores)


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_text_only_keeps_the_recommender_contract(name: str, tmp_path: Path) -> None:
    def factory() -> Any:
        return MODELS[name](**{**TINY, "text_only": True, "epochs": 10})

    for check in (T.check_refit_from_scratch, T.check_excludes_seen, T.check_deterministic,
                  T.check_unknown_user_fallback, T.check_histories, T.check_recommend_history):
        check(factory)
    T.check_save_load(factory, tmp_path)
    T.check_redacted_user_is_unknown(factory, tmp_path / "r")


# --- transfer -------------------------------------------------------------------------------
def same_text_columns(a: Dataset, b: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the items of `a` and of `b` with equal text, in pairs."""
    ta, tb = item_texts(a, None), item_texts(b, None)
    where = {t: j for j, t in enumerate(tb)}
    pairs = [(i, where[t]) for i, t in enumerate(ta) if t in where]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


@pytest.mark.parametrize(("name", "kw"), [("sasrec", {}), ("hstu", {}),
                                          ("sasrec", {"text_only": False, "text": True})])
def test_transfer_scores_equal_texts_equally(name: str, kw: dict[str, Any], data: Dataset,
                                             tmp_path: Path) -> None:
    model = fitted(name, data, **kw)
    # another catalogue: other item and user ids, another item order
    other = groups(prefix="x", users="v", order=3)
    moved = model.transfer(other)
    assert type(moved) is type(model) and moved.items_ is other.items
    assert len(moved.users_) == other.n_users and model.items_ is data.items  # source intact
    state, src = moved.net_.state_dict(), model.net_.state_dict()
    for k, v in src.items():  # the network's weights, bit for bit (an id table is unused)
        if "id_emb" not in k:
            assert torch.equal(state[k], v), k
    ia, ib = same_text_columns(data, other)
    assert ia.size == data.n_items
    hist_a = [np.array([col(data, f"A{i}") for i in (0, 3, 5)])]
    hist_b = [np.array([col(other, f"xA{i}") for i in (0, 3, 5)])]
    scores_b = moved.score([-1], hist_b)[0]
    if model.config.item_repr == "id+text":
        # every id is the "unknown item" row now: what the source scores with all ids cold
        model.net_.items.gate.cold[:] = True
    scores_a = model.score([-1], hist_a)[0]
    np.testing.assert_allclose(scores_b[ib], scores_a[ia], rtol=1e-5, atol=1e-6)
    # users of the new dataset are scored from their histories there; seen items are masked
    top, _ = moved.recommend_idx(np.arange(other.n_users), 3)
    seen = moved.seen_.toarray() > 0
    assert not np.take_along_axis(seen, top, axis=1).any()
    again = load_model(moved.save(tmp_path / "moved"))
    np.testing.assert_array_equal(again.score(np.arange(other.n_users)),
                                  moved.score(np.arange(other.n_users)))


def test_transfer_reads_the_new_texts(data: Dataset) -> None:
    model = fitted("sasrec", data)
    renamed = groups(prefix="x", users="v")
    changed = groups(prefix="x", users="v", retitle={"A7": "beta story 7"})
    same, edited = model.transfer(renamed), model.transfer(changed)
    hist = [np.array([col(renamed, "xB1"), col(renamed, "xB2")])]
    a, b = same.score([-1], hist)[0], edited.score([-1], hist)[0]
    j = col(renamed, "xA7")
    assert b[j] > a[j]  # now a beta title: a beta history likes it more
    rest = np.arange(renamed.n_items) != j
    np.testing.assert_allclose(a[rest], b[rest], rtol=1e-6)  # nothing else moved


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_transfer_refuses_id_models(name: str, data: Dataset) -> None:
    model = MODELS[name](**{**TINY, "epochs": 1}).fit(data, TrainingOptions(rng=0))
    with pytest.raises(ConfigError, match="text_only=true"):
        model.transfer(groups(prefix="x"))
