"""SASRec: a causal transformer over the item history (Kang & McAuley, ICDM 2018).

With the gSASRec training improvements (Petrov & Macdonald, RecSys 2023): many sampled
negatives per position and the calibrated gBCE loss (`loss="gbce"`), or the full softmax
cross-entropy where the catalogue is small enough to score every item per position
(`loss="ce"`, RecBole's setting). Optional behaviour-type and time-gap embeddings are added to
the item embedding. Written nanoGPT-style: pre-LayerNorm blocks of causal self-attention and
an MLP, with the item embedding tied to the output layer.

Text (`text=True`): an item's representation, in the input and the tied output layer alike,
is its id embedding plus a learned projection of a frozen sentence vector of its text
(`lmrec.models.text_items.ItemEmbedding`). Items without training events use a learned
"unknown item" row instead of their untrained id embedding, and while training an item's id
is replaced by that row with probability `item_id_dropout`, so that items never seen in
training get scores from their text. Text alone (`text_only=True`): an item is a trained MLP
of its text vector, no id at all; such a model applies to another catalogue without training
(`transfer`). With text the output table is recomputed every step: O(n_items x text dim).

Shapes: B windows, L = max_len positions (right-aligned, token 0 = padding), d = hidden.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from lmrec.models.sequence_input import ItemSequenceNet
from lmrec.models.sequential import (
    Batch,
    SequentialConfig,
)
from lmrec.models.text_items import (
    SequentialTextFields,
)
from lmrec.models.text_transfer import TextItemsRecommender


class SASRecConfig(SequentialTextFields, SequentialConfig):
    # Defaults chosen once on the validation part of ML-100K (ratings >= 3, 10-core,
    # time-ordered LOO, valid NDCG@10 with full ranking, early stopping; RecBole's sizes:
    # 2 layers, 2 heads, hidden 64, inner 256, max_len 50; batch 128 windows):
    # ce, dropout .2: lr .001 .1115 (best epoch 29), lr .003 .1156 (28); lr .003 with dropout
    # .5 .1073; with time-gap embeddings .1084; gbce (256 negatives, t .75) .0373 with
    # patience 5 (stopped at epoch 17 on its slow start), .1137 with patience 20 (best epoch
    # 130 at 2.7 s per epoch vs ce's 28 at 5 s: gbce pays off on catalogues too large for a
    # full softmax) -> ce, lr .003, dropout .2, no side embeddings; 30 epochs when fit has no
    # `valid`; patience 10 (5 in the grid; a longer wait only restores an equal or better
    # epoch; use about 20 with gbce).
    hidden: int = Field(64, ge=1, description="embedding and hidden size d")
    layers: int = Field(2, ge=1, description="transformer blocks")
    heads: int = Field(2, ge=1, description="attention heads (must divide hidden)")
    inner: int = Field(256, ge=1, description="MLP width inside each block")
    block: Literal["pre_ln", "ligr"] = Field(
        "pre_ln", description="pre_ln: x + f(LayerNorm(x)); ligr: eSASRec's LiGR layers, "
                              "x + sigmoid(W LayerNorm(x)) * f(LayerNorm(x)) (gated residual)")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate")
    epochs: int = Field(30, ge=1, description="passes over the training targets (the cap "
                                              "when early stopping)")


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden {d} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)  # query, key, value projections in one matmul
        self.proj = nn.Linear(d, d)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, d = x.shape  # (B, L, d)
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (B, L, d)
        # (B, L, d) -> (B, h, L, d/h)
        q, k, v = (t.view(b, length, self.heads, d // self.heads).transpose(1, 2)
                   for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # bf16 autocast: the projections run in bf16, but the CPU attention kernel is
            # slower in bf16 than in fp32 (measured 0.34 s vs 0.22 s at B 128, L 200)
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                   attn_mask=mask, dropout_p=p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(b, length, d)  # (B, L, d)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x)) (pre-LayerNorm: stable without warm-up).

    `gated` (LiGR, as eSASRec uses it): each residual branch is scaled by a learned sigmoid
    gate of the same normalised input, x + sigmoid(W ln(x)) * f(ln(x)), so a layer can close
    a branch per dimension and position.
    """

    def __init__(self, d: int, heads: int, inner: int, dropout: float,
                 gated: bool = False) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads, dropout)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, inner), nn.GELU(), nn.Linear(inner, d),
                                 nn.Dropout(dropout))
        self.gate1 = nn.Linear(d, d) if gated else None
        self.gate2 = nn.Linear(d, d) if gated else None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.ln1(x)
        a = self.attn(h, mask)
        x = x + (a if self.gate1 is None else torch.sigmoid(self.gate1(h)) * a)
        h = self.ln2(x)
        m = self.mlp(h)
        return x + (m if self.gate2 is None else torch.sigmoid(self.gate2(h)) * m)


class SASRecNet(ItemSequenceNet):
    """`item_text` (n_items, T) float32 text vectors and `item_cold` (n_items,) bool (items
    without training events): the item arrays of `text` / `text_only` (see ItemEmbedding)."""

    def __init__(self, n_items: int, n_event_types: int, cfg: SASRecConfig,
                 item_text: np.ndarray | None = None, item_cold: np.ndarray | None = None
                 ) -> None:
        super().__init__(n_items, n_event_types, cfg, item_text, item_cold, positions=True)
        self.blocks = nn.ModuleList(Block(cfg.hidden, cfg.heads, cfg.inner, cfg.dropout,
                                          gated=cfg.block == "ligr")
                                    for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.hidden)
        self.apply(_init_weights)

    def forward(self, batch: Batch) -> Tensor:
        x, valid = self.embed_inputs(batch)  # (B, L, d), (B, L)
        length = x.shape[1]
        # query t attends to keys s <= t that are items; every query also to itself, so a
        # padding row is never fully masked (its output is ignored anyway)
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=x.device)
        mask = (causal[None] & valid[:, None, :]) | eye[None]  # (B, L, L)
        mask = mask[:, None]  # (B, 1, L, L), broadcast over heads
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)  # (B, L, d)


def _init_weights(module: nn.Module) -> None:
    """GPT-2 style: N(0, 0.02) weights, zero biases; padding embeddings stay zero."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class SASRec(TextItemsRecommender):
    """Causal-transformer next-item model; scores = last hidden state . item embeddings."""

    name = "sasrec"
    Config = SASRecConfig
    config: SASRecConfig
    net_class = SASRecNet
    trims_padding = True
