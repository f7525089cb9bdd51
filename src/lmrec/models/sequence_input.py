"""The input layer that `sasrec` and `hstu` share: item representations (ids, ids + text or
text alone, `lmrec.models.text_items.ItemEmbedding`) plus the optional absolute position,
behaviour-type and time-gap embeddings, summed, dropped out and zeroed at padding.

Positions count from the right (`max_len - 1` = the most recent item), so a batch trimmed of
left padding (`length_buckets`, scoring at the longest history) gets the positions of the full
window. The attributes keep the names the networks had before this class (`items`, `pos_emb`,
`event_emb`, `gap_emb`, `drop`), so saved bundles load unchanged; `drop` is the input dropout
that gradient x input explanations hook.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from lmrec.models.sequential import GAP_BUCKETS, PAD, Batch, SequenceNet
from lmrec.models.text_items import ItemEmbedding, SequentialTextFields, legacy_item_keys


class ItemSequenceNet(SequenceNet):
    """A sequence network whose layers read `embed_inputs(batch)`. `cfg` is a sequential
    config with text fields (hidden, max_len, dropout, use_event_types, use_time_gaps);
    `item_text` (n_items, T) and `item_cold` (n_items,) bool as `ItemEmbedding` takes them;
    `positions`: add a learned absolute position embedding."""

    def __init__(self, n_items: int, n_event_types: int, cfg: SequentialTextFields,
                 item_text: np.ndarray | None, item_cold: np.ndarray | None, *,
                 positions: bool) -> None:
        super().__init__()
        d = cfg.hidden  # type: ignore[attr-defined]
        self.items = ItemEmbedding(n_items, d, cfg, item_text, item_cold)
        self.register_load_state_dict_pre_hook(legacy_item_keys)  # bundles of older versions
        self.pos_emb = nn.Embedding(cfg.max_len, d) if positions else None  # type: ignore[attr-defined]
        self.event_emb = (nn.Embedding(n_event_types + 1, d, padding_idx=PAD)
                          if cfg.use_event_types else None)  # type: ignore[attr-defined]
        self.gap_emb = (nn.Embedding(GAP_BUCKETS, d, padding_idx=PAD)
                        if cfg.use_time_gaps else None)  # type: ignore[attr-defined]
        self.drop = nn.Dropout(cfg.dropout)  # type: ignore[attr-defined]

    @property
    def item_emb(self) -> nn.Embedding | None:
        """The id embedding table (None with text_only), for callers that read it."""
        return self.items.id_emb

    def item_table(self) -> Tensor:
        return self.items.table()  # (n_items + 1, d)

    def embed_inputs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(B, L, d) the summed, dropped-out inputs (zero at padding) and (B, L) bool, the
        positions that hold an item."""
        items = batch["items"]  # (B, L)
        valid = items != PAD  # (B, L)
        x = self.items(items)  # (B, L, d)
        if self.pos_emb is not None:
            n_pos, length = self.pos_emb.num_embeddings, items.shape[1]
            x = x + self.pos_emb(torch.arange(n_pos - length, n_pos, device=items.device))[None]
        if self.event_emb is not None:
            x = x + self.event_emb(batch["events"])
        if self.gap_emb is not None:
            x = x + self.gap_emb(batch["gaps"])
        return self.drop(x) * valid[..., None], valid  # padding positions carry nothing
