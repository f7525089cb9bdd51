"""Pieces shared by the neural models that read item text: config fields, vectors, the id gate,
and the sequential models' item representation (`ItemEmbedding`).

A text-aware model represents an item by its id embedding plus a learned projection of a
frozen sentence vector of the item's text (`lmrec.features.item_text_vectors`: title, genres,
tags, ... through an offline encoder). The text vectors are computed once per fit and stored
with the model's arrays, so a saved bundle scores without the encoder.

Text alone (the sequential models' `text_only`, as in UniSRec and Recformer): an item is a
trained MLP of its frozen text vector and nothing else, so no learned weight belongs to an
item of the training catalogue: the network scores items it never saw, and applies to another
catalogue as it is (`lmrec.models.text_transfer`).

Cold items. An item without training events has an untrained id row. `ItemIdGate` replaces
the id embedding of such items by one learned "unknown item" row, always; and while training
it also replaces the id of random items (probability `item_id_dropout`), so the model learns
to score items from their text and attributes alone.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, Field, model_validator
from torch import Tensor, nn

from lmrec.data.dataset import Dataset

_TEXT_ITEM_ID_DROPOUT = 0.5  # item_id_dropout's default with text
PAD = 0  # the padding token (lmrec.models.sequential.PAD; item i is token i + 1)
ItemRepr = Literal["id", "id+text", "text"]


class TextItemFields(BaseModel):
    """Config fields of a text-aware model (mixed into its Config)."""

    text: bool = Field(False, description="add a projected sentence vector of each item's text "
                                          "to the item representation")
    text_encoder: str = Field("default", description="text encoder: 'default' (the bundled "
                              "all-MiniLM-L6-v2) or a local sentence-transformers folder")
    text_template: str | None = Field(None, description="item text: a format string "
                                      "('{title}. Genres: {genres}.') or comma-separated "
                                      "columns; None: title/genres/tags/... as present")
    text_cache_dir: str | None = Field(None, description="embedding cache folder (None: "
                                       "$LMREC_CACHE_DIR or ~/.cache/lmrec/embeddings)")
    # .5 chosen for the two-tower on the ML-100K validation parts (see TwoTowerConfig); SASRec
    # uses the same, untuned
    item_id_dropout: float | None = Field(
        None, ge=0, le=1, description="text: replace an item's id by the learned 'unknown "
        "item' row while training (items without training events always use it); None: "
        f"{_TEXT_ITEM_ID_DROPOUT} with text, 0 without")

    @property
    def text_item_id_dropout(self) -> float:
        """`item_id_dropout` as configured, else the default: .5 with text, 0 without."""
        if self.item_id_dropout is not None:
            return self.item_id_dropout
        return _TEXT_ITEM_ID_DROPOUT if self.text else 0.0


def item_text_matrix(dataset: Dataset, cfg: TextItemFields, *, progress: bool) -> np.ndarray:
    """(n_items, d_text) float32 unit rows (zero rows for items without text), item order."""
    from lmrec.features.embedding_cache import item_text_vectors

    vectors = item_text_vectors(dataset, encoder=cfg.text_encoder, template=cfg.text_template,
                                cache_dir=cfg.text_cache_dir, progress=progress)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def cold_item_mask(x: sp.spmatrix) -> np.ndarray:
    """(n_items,) bool: items without any training pair in `x` (n_users, n_items)."""
    return np.asarray((x != 0).sum(axis=0)).ravel() == 0


class ItemIdGate(nn.Module):
    """Id embeddings (N, d) of items (N,) -> the same, with cold or dropped ids replaced.

    `cold` (n_items,) bool is a non-persistent buffer (the owner saves it with its arrays);
    the "unknown item" row starts at zero, i.e. "no id information".
    """

    def __init__(self, dim: int, cold: Tensor, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.unknown = nn.Parameter(torch.zeros(dim))
        self.register_buffer("cold", cold.to(torch.bool), persistent=False)

    def drop_mask(self, item: Tensor) -> Tensor:
        """(N,) bool: which of the items (N,) go without their id (any shape works)."""
        drop = self.cold[item]
        if self.training and self.dropout > 0:
            drop = drop | (torch.rand(item.shape, device=item.device) < self.dropout)
        return drop

    def forward(self, emb: Tensor, item: Tensor) -> Tensor:
        drop = self.drop_mask(item)[..., None]  # (..., 1)
        return torch.where(drop, self.unknown.to(emb.dtype), emb)


# --- the sequential models' items: id, id + text, or text alone ----------------------------
class SequentialTextFields(TextItemFields):
    """Config fields of a sequential model's items (mixed into sasrec's and hstu's Config)."""

    text_only: bool = Field(False, description="represent an item by its text alone: a trained "
                            "MLP of its frozen sentence vector, no id embedding (implies text; "
                            "the weights fit any catalogue: model.transfer(dataset))")
    # 256 (sasrec's MLP width) against 0 (linear): see BENCHMARKS.md, text-native items
    text_hidden: int = Field(256, ge=0, description="text_only: hidden width of the MLP that "
                             "projects an item's text vector (0: a linear projection)")

    @model_validator(mode="after")
    def _ids_to_drop(self) -> SequentialTextFields:
        if self.text_only and self.item_id_dropout:
            raise ValueError("item_id_dropout drops item ids; text_only has none")
        return self

    @property
    def item_repr(self) -> ItemRepr:
        """What an item is made of: "id", "id+text" (`text`) or "text" (`text_only`)."""
        return "text" if self.text_only else "id+text" if self.text else "id"


def item_arrays(dataset: Dataset, cfg: SequentialTextFields, *, progress: bool
                ) -> dict[str, np.ndarray]:
    """The per-item arrays an `ItemEmbedding` reads: none for ids; with text "item_text"
    (n_items, T) and "item_cold" (n_items,) bool, the items without training events."""
    if cfg.item_repr == "id":
        return {}
    return {"item_text": item_text_matrix(dataset, cfg, progress=progress),
            "item_cold": cold_item_mask(dataset.matrix("binary"))}


class TextMLP(nn.Module):
    """(..., T) frozen text vectors -> (..., d): W0 t + W2 GELU(W1 t + b1) (hidden 0: W0 t).

    The linear skip W0 t alone is what `text=true` adds to an id; the hidden layer lets items
    whose sentence vectors are close (sequels, one genre) end up apart, as an id would. No
    LayerNorm at the end: the output layer is tied to these vectors, and their norms carry
    popularity as id embeddings' do (a LayerNorm would give every item about one scale).
    """

    def __init__(self, t: int, hidden: int, d: int) -> None:
        super().__init__()
        self.skip = nn.Linear(t, d, bias=False)
        self.mlp = (nn.Sequential(nn.Linear(t, hidden), nn.GELU(), nn.Linear(hidden, d))
                    if hidden else None)

    def forward(self, t: Tensor) -> Tensor:
        out = self.skip(t)
        return out if self.mlp is None else out + self.mlp(t)


class ItemEmbedding(nn.Module):
    """Item tokens (any shape; 0 = padding, item i = token i + 1) -> representations (..., d),
    used for the input sequence and, tied, as the output layer (`table`).

        id       E[tok]                            E (n_items + 1, d) learned, a row per item
        id+text  gate(E[tok]) + W t[tok]           t (n_items + 1, T) frozen text vectors;
                                                   gate: cold or dropped ids -> "unknown" row
        text     TextMLP(t[tok])                   no per-item weight at all

    `item_text` (n_items, T) and `item_cold` (n_items,) bool (items without training events)
    become non-persistent buffers (the owner saves them with its item arrays). Padding maps to
    zeros in every mode.

    With text, cold items are zero rows of the output `table` while training: logit 0 and no
    gradient. A full softmax over the catalogue would otherwise push down, at every step, the
    items nobody could pick in the training data, and so teach the text projection that their
    texts are never chosen (measured on ML-100K's cold items, benchmarks/text_transfer.py).
    Scored (eval mode), they are their text like every other item.
    """

    def __init__(self, n_items: int, d: int, cfg: SequentialTextFields,
                 item_text: np.ndarray | None = None, item_cold: np.ndarray | None = None
                 ) -> None:
        super().__init__()
        self.repr = cfg.item_repr
        self.id_emb = (nn.Embedding(n_items + 1, d, padding_idx=PAD) if self.repr != "text"
                       else None)
        self.gate: ItemIdGate | None = None
        self.text_proj: nn.Module | None = None
        if self.repr == "id":
            return
        if item_text is None or item_text.shape[0] != n_items:
            raise ValueError(f"items represented by {self.repr!r} need a text vector per item "
                             f"({n_items})")
        pad = np.zeros((1, item_text.shape[1]), dtype=np.float32)
        self.register_buffer("text", torch.from_numpy(np.concatenate([pad, item_text])),
                             persistent=False)  # (n_items + 1, T)
        cold = torch.from_numpy(np.concatenate(
            [[False], np.zeros(n_items, bool) if item_cold is None else item_cold]))
        self.register_buffer("cold", cold, persistent=False)  # (n_items + 1,) bool
        if self.repr == "text":
            self.text_proj = TextMLP(item_text.shape[1], cfg.text_hidden, d)
            return
        self.gate = ItemIdGate(d, cold, cfg.text_item_id_dropout)
        self.text_proj = nn.Linear(item_text.shape[1], d, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:  # (...) -> (..., d)
        if self.repr == "id":
            assert self.id_emb is not None
            return self.id_emb(tokens)
        assert self.text_proj is not None
        if self.repr == "text":
            # the output layer needs the MLP over the whole catalogue every step anyway; the
            # input tokens (B x L, often more than the items) gather from that table
            return self._text_table()[tokens]  # (..., d)
        assert self.id_emb is not None and self.gate is not None
        return self.gate(self.id_emb(tokens), tokens) + self.text_proj(self.text[tokens])

    def _text_table(self) -> Tensor:
        """text alone: (n_items + 1, d), row 0 (padding) zero despite the MLP's biases."""
        assert self.text_proj is not None
        table = self.text_proj(self.text)
        return torch.cat([torch.zeros_like(table[:1]), table[1:]])

    def table(self) -> Tensor:
        """(n_items + 1, d) every item's representation, row 0 = padding (zeros)."""
        if self.repr == "id":
            assert self.id_emb is not None
            return self.id_emb.weight
        table = (self._text_table() if self.repr == "text"
                 else self(torch.arange(self.text.shape[0], device=self.text.device)))
        if self.training:  # cold items take no part in the training softmax (see above)
            table = table * ~self.cold[:, None]
        return table


# state-dict keys of sequential networks saved before `ItemEmbedding` (their items' weights
# sat on the network itself) -> the keys of the network's `items` module
_LEGACY_KEYS = {"item_emb.weight": "items.id_emb.weight",
                "text_proj.weight": "items.text_proj.weight", "gate.unknown": "items.gate.unknown"}


def legacy_item_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str,
                     *_: Any) -> None:
    """A network's load_state_dict pre-hook: renames the older keys in place, so that bundles
    saved before `ItemEmbedding` load as they are."""
    for old, new in _LEGACY_KEYS.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)
