"""Pieces shared by the neural models that read item text: config fields, vectors, the id gate.

A text-aware model represents an item by its id embedding plus a learned projection of a
frozen sentence vector of the item's text (`lmrec.features.item_text_vectors`: title, genres,
tags, ... through an offline encoder). The text vectors are computed once per fit and stored
with the model's arrays, so a saved bundle scores without the encoder.

Cold items. An item without training events has an untrained id row. `ItemIdGate` replaces
the id embedding of such items by one learned "unknown item" row, always; and while training
it also replaces the id of random items (probability `item_id_dropout`), so the model learns
to score items from their text and attributes alone.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from lmrec.data.dataset import Dataset

_TEXT_ITEM_ID_DROPOUT = 0.5  # item_id_dropout's default with text


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

