"""The two-tower network (nn modules) of `lmrec.models.two_tower`.

    user tower  f(W1 . h(u)),  h(u) = [user id embedding || categorical embeddings ||
                                       normalised numerics || pooled behaviour history]
    item tower  f(W2 . h(v)),  h(v) = [item id embedding || categorical embeddings ||
                                       multi-valued bags (EmbeddingBag, mean) || normalised
                                       numerics || vector columns || P . text vector]
                (fusion "concat"), or h(v) = id + A . [attributes] + sum_j V_j . vector_j +
                P . text, every modality projected to id_dim (fusion "sum")
    score(u, v) = s * sim(user(u), item(v)),  sim cosine (default) or dot, s = 1 / temperature
                  learned (log-parameterised)

f is a small MLP (`layers`, ReLU, dropout). The history is the user's most recent
`history_len` training items, pooled by masked mean ("mean"), a GRU ("gru") or a one-layer
transformer ("transformer"). Feature arrays enter the module as non-persistent buffers, so
its state_dict holds only learned weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmrec.models.text_items import ItemIdGate
from lmrec.models.two_tower_config import TwoTowerConfig


def _mlp(n_in: int, layers: Sequence[int], n_out: int, dropout: float) -> nn.Sequential:
    mods: list[nn.Module] = []
    for h in layers:
        mods += [nn.Linear(n_in, h), nn.ReLU(), nn.Dropout(dropout)]
        n_in = h
    mods.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*mods)


class HistoryEncoder(nn.Module):
    """(B, L) item codes (item + 1, 0 = padding, most recent last) -> (B, d) user summary."""

    def __init__(self, n_items: int, dim: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.emb.weight, std=0.05)
        with torch.no_grad():
            self.emb.weight[0].zero_()
        if kind == "gru":
            self.rnn = nn.GRU(dim, dim, batch_first=True)
        elif kind == "transformer":
            self.enc = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=2 * dim,
                                                  dropout=0.1, batch_first=True)

    def forward(self, hist: Tensor) -> Tensor:
        if self.kind == "mean":
            # a bag per row skips padding without materialising (B, L, d): 3x faster to train
            return F.embedding_bag(hist, self.emb.weight, mode="mean", padding_idx=0)  # (B, d)
        return self.pool(self.emb(hist), hist)

    def pool(self, e: Tensor, hist: Tensor) -> Tensor:
        """The summary of embedded histories e (B, L, d) with codes hist (B, L): what forward
        computes after the lookup (explanations differentiate through it)."""
        valid = hist > 0  # (B, L)
        if self.kind == "gru":
            # left padding: the final state has read every real item, most recent last
            return self.rnn(e)[1][0]  # (B, d)
        if self.kind == "transformer":
            pad = ~valid
            pad[:, -1] = pad[:, -1] & valid.any(dim=1)  # keep one slot open for empty histories
            e = self.enc(e, src_key_padding_mask=pad)  # (B, L, d)
        w = valid.to(e.dtype)[:, :, None]  # (B, L, 1)
        return (e * w).sum(1) / w.sum(1).clamp_min(1.0)  # masked mean, (B, d)


class TwoTowerModule(nn.Module):
    """User and item towers over ids, attributes and history (see the module docstring).

    Feature arrays (non-persistent buffers): user_cat (n_users, Cu) int64 codes, user_num
    (n_users, Pu) float32, user_hist (n_users, L) int64, item_cat (n_items, Ci), item_multi_j
    (n_items, Lj) int64 label codes + 1 (0 = padding), item_num (n_items, Pi) float32 numerics
    and vectors, item_text (n_items, T) float32 text vectors (text only), item_cold
    (n_items,) bool items without training events (in the id gate).
    `cards["item_num_groups"]` (Pi,) says which column of item_num is a plain numeric (0) or
    belongs to vector column j (j >= 1): the "sum" fusion projects each vector column apart.
    """

    def __init__(self, cfg: TwoTowerConfig, n_users: int, n_items: int,
                 arrays: Mapping[str, np.ndarray], cards: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        self.n_items = n_items
        self.id_dropout = cfg.id_dropout
        self.history_dropout = cfg.history_dropout
        for k, v in arrays.items():
            if k != "item_cold":  # held by the id gate
                self.register_buffer(k, torch.from_numpy(np.ascontiguousarray(v)),
                                     persistent=False)
        self.n_multi = int(cards["item_multi"].size)
        fd, idd = cfg.feature_dim, cfg.id_dim
        # user tower: row 0 of the id table is "unknown user"
        self.user_id = nn.Embedding(n_users + 1, idd)
        self.user_cat = nn.ModuleList(nn.Embedding(int(c) + 1, fd) for c in cards["user_cat"])
        self.history = HistoryEncoder(n_items, idd, cfg.history)
        n_user_in = idd + fd * len(self.user_cat) + arrays["user_num"].shape[1] + idd
        dropout = cfg.tower_dropout
        self.user_mlp = _mlp(n_user_in, cfg.layers, cfg.dim, dropout)
        # item tower; with shared embeddings item i is row i + 1 of the history's table
        self.share = cfg.share_embeddings
        self.item_id = None if self.share else nn.Embedding(n_items, idd)
        self.item_cat = nn.ModuleList(nn.Embedding(int(c) + 1, fd) for c in cards["item_cat"])
        self.item_multi = nn.ModuleList(nn.EmbeddingBag(int(c) + 1, fd, mode="mean",
                                                        padding_idx=0)
                                        for c in cards["item_multi"])
        cold = arrays.get("item_cold", np.zeros(n_items, dtype=bool))
        self.item_gate = ItemIdGate(idd, torch.from_numpy(np.ascontiguousarray(cold)),
                                    cfg.text_item_id_dropout)
        text = arrays.get("item_text")
        self.text_proj = nn.Linear(text.shape[1], idd) if text is not None else None
        self.fusion = cfg.fusion
        n_num = arrays["item_num"].shape[1]
        groups = np.asarray(cards.get("item_num_groups", np.zeros(n_num, np.int64)))
        n_attr = fd * (len(self.item_cat) + self.n_multi)
        if self.fusion == "concat":
            n_item_in = idd + n_attr + n_num + (idd if text is not None else 0)
        else:
            plain = np.flatnonzero(groups == 0)
            self.register_buffer("num_plain", torch.from_numpy(plain), persistent=False)
            self.attr_proj = nn.Linear(n_attr + plain.size, idd) if n_attr + plain.size else None
            self.vec_proj = nn.ModuleList()
            for j in range(1, int(groups.max(initial=0)) + 1):
                cols = np.flatnonzero(groups == j)
                self.register_buffer(f"num_vec_{j}", torch.from_numpy(cols), persistent=False)
                self.vec_proj.append(nn.Linear(cols.size, idd))
            n_item_in = idd
        self.item_mlp = _mlp(n_item_in, cfg.layers, cfg.dim, dropout)
        self.cosine = cfg.similarity == "cosine"
        init = 1.0 / cfg.temperature if self.cosine else 1.0
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)))
        for emb in (self.user_id, self.item_id):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.05)

    def scale(self) -> Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()  # scalar, at most 100

    def _norm(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.cosine else x

    def user_tower(self, uid: Tensor, cat: Tensor, num: Tensor, hist: Tensor) -> Tensor:
        """uid (B,) user + 1 (0 unknown), cat (B, Cu), num (B, Pu), hist (B, L) -> (B, d)."""
        parts = [self.user_id(uid)]  # (B, id_dim)
        parts += [emb(cat[:, j]) for j, emb in enumerate(self.user_cat)]  # (B, fd) each
        parts += [num, self.history(hist)]  # (B, Pu), (B, id_dim)
        return self._norm(self.user_mlp(torch.cat(parts, dim=1)))

    def users(self, user: Tensor, target: Tensor | None = None) -> Tensor:
        """user (B,) internal indices -> (B, d); in training the `target` items (B,) leave
        the history and ids / history items are dropped at random."""
        uid = user + 1
        hist = self.user_hist[user]  # (B, L)
        if self.training:
            if target is not None:
                hist = hist.masked_fill(hist == (target + 1)[:, None], 0)
            if self.id_dropout > 0:
                uid = uid.masked_fill(torch.rand(uid.shape, device=uid.device)
                                      < self.id_dropout, 0)
            if self.history_dropout > 0:
                hist = hist.masked_fill(torch.rand(hist.shape, device=hist.device)
                                        < self.history_dropout, 0)
        return self.user_tower(uid, self.user_cat_codes[user], self.user_num[user], hist)

    def items(self, item: Tensor) -> Tensor:
        """item (N,) -> (N, d)."""
        ids = self.item_id(item) if self.item_id is not None else self.history.emb(item + 1)
        ids = self.item_gate(ids, item)  # (N, id_dim); cold or dropped: the unknown row
        attrs = [emb(self.item_cat_codes[item, j]) for j, emb in enumerate(self.item_cat)]
        attrs += [bag(getattr(self, f"item_multi_{j}")[item])
                  for j, bag in enumerate(self.item_multi)]  # (N, fd) each
        num = self.item_num[item]  # (N, Pi)
        text = self.text_proj(self.item_text[item]) if self.text_proj is not None else None
        return self.fuse_items(ids, attrs, num, text)

    def fuse_items(self, ids: Tensor, attrs: list[Tensor], num: Tensor, text: Tensor | None
                   ) -> Tensor:
        """The item tower above its inputs: ids (N, id_dim), attribute embeddings (N, fd)
        each, numeric columns (N, Pi), projected text (N, .) or None -> (N, d). The serving
        catalogue calls it on the feature rows of items added after training."""
        if self.fusion == "concat":
            parts = [ids, *attrs, num, *([text] if text is not None else [])]
            h = torch.cat(parts, dim=1)
        else:  # every modality projected to id_dim, then summed: (N, id_dim)
            h = ids
            if self.attr_proj is not None:
                h = h + self.attr_proj(torch.cat([*attrs, num[:, self.num_plain]], dim=1))
            for j, proj in enumerate(self.vec_proj, start=1):
                h = h + proj(num[:, getattr(self, f"num_vec_{j}")])
            if text is not None:
                h = h + text
        return self._norm(self.item_mlp(h))

    def all_items(self) -> Tensor:
        return self.items(torch.arange(self.n_items, device=self.log_scale.device))

    def forward(self, user: Tensor, item: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """user (B,), item (B,) -> user vectors (B, d), item vectors (B, d), scale ()."""
        return self.users(user, item), self.items(item), self.scale()
