"""How a served model scores an item it was not trained on, from the item's attributes and text.

    content-text     the item's text (the one given, else its attributes through the model's
                     template) through the model's encoder: a unit vector beside the trained
                     items' (`TextVectors`)
    two-tower        the item tower on the learned "unknown item" id row, the item's attributes
                     (encoded with the item table's encoders) and its text vector; only for a
                     tower trained to place items without their id (text=true, or
                     item_id_dropout > 0) (`TowerVectors`)
    content          the item's attribute profile: TF-IDF, label and vector blocks with the
                     vocabularies and idf of the bundle's items (`ContentProfiles`)
    any other model  none: the item is in the catalogue, recommended after a retrain

Trust, but verify: the encoders are rebuilt from the bundle's item table (`catalogue_items`),
and before the first new item is encoded each encoder must reproduce what the model saved for
its trained items (vectors, profiles, text vectors); when it does not (a bundle whose item
table was prepared some other way), new items are not scored, and `reason` says why.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from lmrec.data.dataset import Dataset, FeatureSpec, Sequences
from lmrec.errors import LmrecError
from lmrec.features import encode_cached, get_encoder, item_texts
from lmrec.features.tower_inputs import side_arrays
from lmrec.models.content_text import ContentText
from lmrec.models.two_tower import TwoTower
from lmrec.serve.catalogue_items import table_dataset

TEXT_ATOL = 1e-3  # re-encoded texts of trained items vs their saved vectors
VECTOR_ATOL = 1e-4  # rebuilt item vectors and profiles vs the saved ones
CHECK_ROWS = 64  # trained items re-encoded by the check (texts: the first 3 with any text)


@dataclass(frozen=True)
class Encoded:
    """New items' encodings: `rows` (m, d) float32 vectors or (m, f) CSR profiles, and for
    each item why it cannot be recommended (None: it got a usable encoding)."""

    rows: np.ndarray | sp.csr_matrix
    why: tuple[str | None, ...]


class ItemEncoder(ABC):
    """Encodes new items for one loaded model (checked once, on first use)."""

    vectors: bool  # True: rows are embedding vectors (item index); False: content profiles

    def __init__(self, model: Any, items: pl.DataFrame, schema: Mapping[str, FeatureSpec]
                 ) -> None:
        self.model = model
        self.items = items  # the bundle's item table
        self.schema = dict(schema)
        self._lock = threading.Lock()
        self._checked = False
        # item key -> (catalogue row version, its encoding (1 row), why not usable): what
        # earlier builds encoded (`lmrec.serve.catalogue_engine`; one build at a time)
        self.memo: dict[str, tuple[int, Any, str | None]] = {}
        self._why: str | None = None  # once checked: why new items cannot be scored

    def reason(self) -> str | None:
        """Why new items cannot be scored (None: they can); checks on first call."""
        with self._lock:
            if not self._checked:
                try:
                    self._why = self._check()
                except (LmrecError, ValueError, RuntimeError) as exc:
                    self._why = f"its item encoders could not be rebuilt ({exc})"
                self._checked = True
            return self._why

    def encode(self, frame: pl.DataFrame, texts: list[str | None]) -> Encoded:
        """Encode the new items `frame` (rows typed like the item table), with `texts[j]` the
        text given for item j (None: built from its attributes). Only once `reason()` is
        None."""
        if self.reason() is not None:
            raise RuntimeError("this encoder cannot encode new items")
        return self._encode(table_dataset(frame, self.schema), texts)

    def scores(self, users: np.ndarray, histories: Sequences | None,
               rows: sp.csr_matrix) -> np.ndarray:
        """(B, m) scores of the new items' profile `rows` for users as the model's `score`
        takes them (profile encoders only: vector encoders are scored by the item index)."""
        raise NotImplementedError(f"{type(self).__name__} encodes vectors: use the index")

    @abstractmethod
    def _check(self) -> str | None: ...

    @abstractmethod
    def _encode(self, ds: Dataset, texts: list[str | None]) -> Encoded: ...

    def _base(self) -> Dataset:
        return table_dataset(self.items, self.schema)


# --- text -----------------------------------------------------------------------------------
def _texts(ds: Dataset, template: str | None, given: list[str | None]) -> list[str]:
    built = item_texts(ds, template)
    return [g if g is not None else b for g, b in zip(given, built, strict=True)]


def _vectors(texts: list[str], encoder: Any, cache_dir: str | None) -> np.ndarray:
    return encode_cached(texts, encoder, cache_dir=cache_dir, progress=False).vectors


def _text_check(ds: Dataset, template: str | None, saved: np.ndarray, encoder: Any,
                cache_dir: str | None) -> str | None:
    """Whether the first trained items with text encode to their saved vectors again."""
    texts = _texts(ds, template, [None] * ds.n_items)
    rows = [i for i, t in enumerate(texts) if t.strip()][:3]
    again = _vectors([texts[i] for i in rows], encoder, cache_dir)
    if rows and not np.allclose(again, saved[rows], atol=TEXT_ATOL):
        return ("the texts of its trained items, rebuilt from the item table, do not encode "
                "to the vectors it saved")
    return None


def _no_text(model: str) -> str:
    return (f"it has no text for the {model} model: give `text`, or attributes the model's "
            "item template reads")


class TextVectors(ItemEncoder):
    """content-text: the item's text through the encoder that made the trained vectors."""

    vectors = True
    model: ContentText

    def _encoder(self) -> Any:
        return get_encoder(self.model.config.encoder, device=self.model.config.device)

    def _check(self) -> str | None:
        enc = self._encoder()
        if enc.name != self.model.encoder_name_:
            return (f"its item vectors were made by encoder {self.model.encoder_name_!r}, "
                    f"and this server has {enc.name!r}")
        cfg = self.model.config
        return _text_check(self._base(), cfg.template, self.model.item_vectors_, enc,
                           cfg.cache_dir)

    def _encode(self, ds: Dataset, texts: list[str | None]) -> Encoded:
        cfg = self.model.config
        vecs = _vectors(_texts(ds, cfg.template, texts), self._encoder(), cfg.cache_dir)
        ok = np.linalg.norm(vecs, axis=1) > 0
        return Encoded(vecs, tuple(None if o else _no_text(self.model.name) for o in ok))


# --- two-tower --------------------------------------------------------------------------------
class TowerVectors(ItemEncoder):
    """two-tower: the item tower on the unknown-id row, the attributes and the text."""

    vectors = True
    model: TwoTower

    def _encoder(self) -> Any:
        return get_encoder(self.model.config.text_encoder, device="cpu")

    def _features(self, ds: Dataset) -> dict[str, np.ndarray]:
        """The items' attribute arrays, named as the model's `arrays_`."""
        arrays, _, _ = side_arrays(ds, "item", self.model.config.item_features)
        return {"item_cat_codes": arrays["cat"], "item_num": arrays["num"],
                **{f"item_multi_{j}": m for j, m in enumerate(arrays["multi"])}}

    def _check(self) -> str | None:
        module, saved, cfg = self.model.module_, self.model.arrays_, self.model.config
        if module.training:
            return "its network is in training mode"
        base = self._features(self._base())
        for key, value in base.items():
            if key not in saved or saved[key].shape != value.shape \
                    or not np.allclose(saved[key], value, atol=VECTOR_ATOL):
                return f"its item features ({key}) could not be rebuilt from the item table"
        if module.text_proj is not None:
            why = _text_check(self._base(), cfg.text_template, saved["item_text"],
                              self._encoder(), cfg.text_cache_dir)
            if why:
                return why
            base["item_text"] = saved["item_text"]
        n = min(CHECK_ROWS, len(self.items))
        item = torch.arange(n)
        with torch.no_grad():
            ids = module.item_id(item) if module.item_id is not None \
                else module.history.emb(item + 1)
            again = _tower(module, module.item_gate(ids, item),
                           {k: v[:n] for k, v in base.items()})
        if not np.allclose(again, self.model.item_vecs_[:n], atol=VECTOR_ATOL):
            return "its item tower could not be rebuilt"
        return None

    def _encode(self, ds: Dataset, texts: list[str | None]) -> Encoded:
        module, cfg = self.model.module_, self.model.config
        inputs = self._features(ds)
        if module.text_proj is not None:
            inputs["item_text"] = _vectors(_texts(ds, cfg.text_template, texts),
                                           self._encoder(), cfg.text_cache_dir)
        with torch.no_grad():
            unknown = module.item_gate.unknown.detach()[None, :].expand(ds.n_items, -1)
            vecs = _tower(module, unknown, inputs)
        text = inputs.get("item_text")
        has_attrs = _any_value(ds.item_table, self.schema) if cfg.item_features \
            else np.zeros(ds.n_items, dtype=bool)
        ok = has_attrs | (np.linalg.norm(text, axis=1) > 0 if text is not None else False)
        return Encoded(vecs, tuple(None if o else _no_text(self.model.name) for o in ok))


def _tower(module: Any, ids: torch.Tensor, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """`TwoTowerModule.items` on explicit feature rows instead of the module's buffers:
    ids (N, id_dim) id embeddings after the gate, inputs named as the model's `arrays_`."""
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    attrs = [emb(t["item_cat_codes"][:, j]) for j, emb in enumerate(module.item_cat)]
    attrs += [bag(t[f"item_multi_{j}"]) for j, bag in enumerate(module.item_multi)]
    num = t["item_num"]
    text = module.text_proj(t["item_text"]) if module.text_proj is not None else None
    return module.fuse_items(ids, attrs, num, text).numpy().astype(np.float32)


def _any_value(table: pl.DataFrame, schema: Mapping[str, FeatureSpec]) -> np.ndarray:
    """(n,) bool: rows with a value in some attribute column (an empty list is none)."""
    out = np.zeros(table.height, dtype=bool)
    for col in schema:
        s = table[col]
        has = s.list.len().fill_null(0) > 0 if isinstance(s.dtype, pl.List) else s.is_not_null()
        out |= has.to_numpy()
    return out
