"""GRU4Rec: a recurrent network over the item history (Hidasi et al., ICLR 2016).

RecBole's variant: item embedding -> dropout -> GRU -> linear back to the embedding size,
scored against the (tied) item embeddings; trained on every position's next item with the
full cross-entropy (`loss="ce"`) or gSASRec's gBCE against sampled negatives (`loss="gbce"`).

Shapes: B windows, L = max_len positions (right-aligned, token 0 = padding), e = embedding
size, h = GRU hidden size.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from lmrec.models.sequential import (
    GAP_BUCKETS,
    PAD,
    Batch,
    SequenceNet,
    SequentialConfig,
    SequentialRecommender,
)


class GRU4RecConfig(SequentialConfig):
    # Defaults chosen once on the validation part of ML-100K (ratings >= 3, 10-core,
    # time-ordered LOO, valid NDCG@10 with full ranking, early stopping; sizes are RecBole's:
    # embedding 64, hidden 128, ce, max_len 50, batch 128 windows, dropout .2):
    # lr .001 (patience 5) .0391 (stopped at epoch 8: too slow a start); lr .005 patience 10
    # .1182 (best epoch 21); lr .01 .1044; lr .005 + 2 layers .1126; lr .005 + dropout .5
    # .1171 -> lr .005, 1 layer, dropout .2, patience 10; 20 epochs when fit has no `valid`.
    embedding: int = Field(64, ge=1, description="item embedding size e")
    hidden: int = Field(128, ge=1, description="GRU hidden size h")
    layers: int = Field(1, ge=1, description="stacked GRU layers")
    lr: float = Field(5e-3, gt=0, description="Adam learning rate")
    epochs: int = Field(20, ge=1, description="passes over the training targets (the cap "
                                              "when early stopping)")


class GRU4RecNet(SequenceNet):
    def __init__(self, n_items: int, n_event_types: int, cfg: GRU4RecConfig) -> None:
        super().__init__()
        e = cfg.embedding
        self.item_emb = nn.Embedding(n_items + 1, e, padding_idx=PAD)
        self.event_emb = (nn.Embedding(n_event_types + 1, e, padding_idx=PAD)
                          if cfg.use_event_types else None)
        self.gap_emb = (nn.Embedding(GAP_BUCKETS, e, padding_idx=PAD)
                        if cfg.use_time_gaps else None)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(e, cfg.hidden, num_layers=cfg.layers, batch_first=True, bias=False)
        self.out = nn.Linear(cfg.hidden, e)
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def forward(self, batch: Batch) -> Tensor:
        items = batch["items"]  # (B, L)
        x = self.item_emb(items)  # (B, L, e)
        if self.event_emb is not None:
            x = x + self.event_emb(batch["events"])
        if self.gap_emb is not None:
            x = x + self.gap_emb(batch["gaps"])
        # windows are left-padded: the padding steps feed zeros (no GRU bias, so the state
        # stays exactly zero until the first item) and the state then runs over the items
        x = self.drop(x) * (items != PAD)[..., None]
        h, _ = self.gru(x)  # (B, L, h)
        return self.out(h)  # (B, L, e)


class GRU4Rec(SequentialRecommender):
    """Recurrent next-item model; scores = projected last GRU state . item embeddings."""

    name = "gru4rec"
    Config = GRU4RecConfig
    config: GRU4RecConfig

    def _build_net(self, n_items: int, n_event_types: int) -> SequenceNet:
        return GRU4RecNet(n_items, n_event_types, self.config)
