"""A feature-rich two-tower retrieval model.

The towers (architecture and tensor shapes) are in `lmrec.models.two_tower_net`, the
configuration and its tuning log in `lmrec.models.two_tower_config`, the feature and history
arrays in `lmrec.features.tower_inputs`.

Training uses sampled softmax with in-batch negatives and log-Q correction (Yi et al., RecSys
2019) by default, optionally plus shared uniform negatives, or a full softmax over the catalogue
(`loss="full"`, small catalogues). While training, the target item is removed from its own
history (else the model learns to find it there), and the user id is dropped (replaced by the
"unknown" row 0) with probability `id_dropout`, so that the tower also works for users known
only by their history: `user_embedding_from_history` and `recommend_from_history` serve users
unseen in training from a few events given at request time. `item_embeddings()` exports the
(n_items, d) item vectors for an ANN index.

Text and cold items (`text=True`): the item tower also reads a frozen sentence vector of each
item's text (`lmrec.models.text_items`), through a learned projection. Items without training
events use a learned "unknown item" row instead of their (untrained) id embedding, and while
training the id of an item is replaced by that row with probability `item_id_dropout`, so the
tower learns to place items by text and attributes alone: items never seen in training are
scored from those. A history given at scoring time ignores such items (their id rows carry
nothing).

The model is an `EmbeddingScorer`: score = user vector . item vector, the learned scale folded
into the user side; `history_embeddings` embeds any given history through the user tower with
an unknown user id and unknown user attributes (serving uses it for live events and new users).
`history_embeddings(h, user_idx)` keeps a known user's id and attributes beside the given
history. `score_histories` (no user ids) scores histories as unknown users; the evaluation
protocol does not use it (`evaluates_from_history` keeps its default, False): dropping the
trained id and attributes costs about 30% NDCG@10 on ML-100K (RecBole protocol: .269 -> .192).

Feature arrays are kept as numpy state (saved in the npz) and handed to the module as
non-persistent buffers, so the module's state_dict holds only learned weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from lmrec.data.dataset import Dataset, Sequences
from lmrec.errors import InputError
from lmrec.features.tower_inputs import (
    encode_user,
    recent_history,
    side_arrays,
    user_meta_arrays,
    user_meta_from_arrays,
)
from lmrec.models.history import checked_histories
from lmrec.models.neural import NeuralRecommender
from lmrec.models.ranking import top_k
from lmrec.models.redaction import kept_entries
from lmrec.models.sequential import gather_windows
from lmrec.models.text_items import cold_item_mask, item_text_matrix
from lmrec.models.two_tower_config import TwoTowerConfig
from lmrec.models.two_tower_net import TwoTowerModule
from lmrec.train.losses import full_softmax_loss, in_batch_softmax_loss


class TwoTower(NeuralRecommender):
    """Two-tower retrieval. State: tower weights plus feature and history arrays."""

    name = "two-tower"
    Config = TwoTowerConfig
    config: TwoTowerConfig
    scores_from_history = True
    # row 0 of the user id table is "unknown user"; the feature arrays have one row per user
    user_state = (("state.user_id.weight", 1), ("extra.a.user_cat_codes", 0),
                  ("extra.a.user_num", 0), ("extra.a.user_hist", 0))

    # --- data -------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, rng: np.random.Generator) -> None:
        # the text vectors do not depend on the training pairs, but holdout validation
        # prepares twice: read them once per fit (and never from an earlier fit)
        cfg = self.config
        self._fit_text: np.ndarray | None = (
            item_text_matrix(dataset, cfg, progress=cfg.progress) if cfg.text else None)
        try:
            super()._fit(dataset, rng)
        finally:
            del self._fit_text

    def _prepare(self, dataset: Dataset, x: sp.csr_matrix) -> None:
        cfg = self.config
        users, ucards, self.user_meta_ = side_arrays(dataset, "user", cfg.user_features)
        items, icards, _ = side_arrays(dataset, "item", cfg.item_features)
        self.arrays_ = {
            "user_cat_codes": users["cat"], "user_num": users["num"],
            "user_hist": recent_history(dataset, x, cfg.history_len),
            "item_cat_codes": items["cat"], "item_num": items["num"],
            **{f"item_multi_{j}": m for j, m in enumerate(items["multi"])},
            "item_cold": cold_item_mask(x),
        }
        if self._fit_text is not None:
            self.arrays_["item_text"] = self._fit_text
        self.cards_ = {"user_cat": ucards["cat"], "item_cat": icards["cat"],
                       "item_multi": icards["multi"], "item_num_groups": icards["num_groups"]}
        counts = np.asarray(x.astype(bool).sum(axis=0)).ravel().astype(np.float64)
        # log of each item's share of the training positives: in-batch sampling frequency
        self.log_q_ = np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)).astype(np.float32)

    def _build_module(self) -> nn.Module:
        return TwoTowerModule(self.config, len(self.users_), len(self.items_), self.arrays_,
                              self.cards_)

    def _extend_batch(self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator
                      ) -> dict[str, np.ndarray]:
        m = self.config.uniform_negatives
        if self.config.loss != "sampled" or m == 0:
            return {}
        return {"extra": rng.integers(0, len(self.items_), m, dtype=np.int64)}

    def _loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        u, v, scale = model(batch["user"], batch["item"])  # (B, d), (B, d), ()
        inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        if self.config.loss == "full":
            logits = scale * (u @ inner.all_items().T)  # (B, n_items)
            return full_softmax_loss(logits, batch["item"], batch["weight"])
        log_q = torch.from_numpy(self.log_q_).to(u.device)
        b = u.shape[0]
        extra = extra_ids = extra_lq = None
        if "extra" in batch:
            extra_ids = batch["extra"]
            extra = inner.items(extra_ids)  # (M, d)
            # log of the expected number of draws per batch: B * share (in-batch), M / n (uniform)
            extra_lq = torch.full((extra_ids.shape[0],), math.log(extra_ids.shape[0] /
                                  len(self.items_)), device=u.device)
        return in_batch_softmax_loss(u, v, batch["item"], scale=scale,
                                     log_q=log_q[batch["item"]] + math.log(b), extra=extra,
                                     extra_ids=extra_ids, extra_log_q=extra_lq,
                                     weight=batch["weight"])

    # --- scoring ----------------------------------------------------------------------
    def _score_module(self, module: nn.Module, user_idx: np.ndarray) -> Tensor:
        dev = module.log_scale.device
        users = torch.as_tensor(np.asarray(user_idx, dtype=np.int64), device=dev)
        return (module.scale() * module.users(users) @ module.all_items().T).float().cpu()

    def _after_fit(self, dataset: Dataset, x: sp.csr_matrix) -> None:
        # after holdout validation `_prepare` ran again on every training pair: the module
        # must score with those arrays (full histories, cold items), as a reloaded one does
        for k, v in self.arrays_.items():
            t = torch.from_numpy(np.ascontiguousarray(v))
            if k == "item_cold":
                self.module_.item_gate.cold = t
            else:
                setattr(self.module_, k, t)
        self._cache_items()

    def _after_load(self) -> None:
        self._cache_items()

    def _cache_items(self) -> None:
        with torch.no_grad():
            self.item_vecs_ = self.module_.all_items().numpy()  # (n_items, d)
            self.scale_ = float(self.module_.scale())

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_embeddings(user_idx) @ self.item_vecs_.T  # (B, n_items)

    def _score_histories(self, histories: Sequences) -> np.ndarray:
        return self.history_embeddings(histories) @ self.item_vecs_.T  # (B, n_items)

    # --- EmbeddingScorer --------------------------------------------------------------
    def item_embeddings(self) -> np.ndarray:
        """(n_items, d) float32 item vectors (unit length with cosine similarity)."""
        self._check_fitted()
        return self.item_vecs_.copy()

    def user_embeddings(self, user_idx: np.ndarray) -> np.ndarray:
        """(B,) internal user indices -> (B, d) float32 user vectors times the learned scale."""
        self._check_fitted()
        with torch.no_grad():
            u = self.module_.users(torch.as_tensor(np.asarray(user_idx, dtype=np.int64)))
        return (self.scale_ * u.numpy()).astype(np.float32)

    def history_embeddings(self, histories: Sequences | Sequence[np.ndarray],
                           user_idx: np.ndarray | None = None) -> np.ndarray:
        """B histories (internal item indices, oldest first) -> (B, d) float32, scale folded
        in: the user tower over the given history, with the trained id embedding and
        attributes of `user_idx` (B,) where it is >= 0, else an unknown user id and unknown
        attributes. Serving passes the user so live events do not cost a known user the id
        (history alone: ML-100K NDCG@10 .192 against .269 with the id)."""
        self._check_fitted()
        hist = self._history_codes(histories)  # (B, L)
        b = hist.shape[0]
        users = (np.full(b, -1, dtype=np.int64) if user_idx is None
                 else np.asarray(user_idx, dtype=np.int64).reshape(-1))
        if users.size != b:
            raise InputError(f"user_idx has {users.size} entries for {b} histories")
        known = users >= 0
        cat = np.zeros((b, len(self.user_meta_["cat"])), dtype=np.int64)
        num = np.zeros((b, self.user_meta_["width"]), dtype=np.float32)
        cat[known] = self.arrays_["user_cat_codes"][users[known]]
        num[known] = self.arrays_["user_num"][users[known]]
        uid = np.where(known, users + 1, 0)  # row 0 of the id table: unknown user
        with torch.no_grad():
            u = self.module_.user_tower(torch.from_numpy(uid), torch.from_numpy(cat),
                                        torch.from_numpy(num), torch.from_numpy(hist))
        return (self.scale_ * u.numpy()).astype(np.float32)

    def _history_codes(self, histories: Sequences | Sequence[np.ndarray]) -> np.ndarray:
        """(B, L) int64 item + 1 of each history's last L items that have training events,
        right-aligned, 0 = padding (the layout of the user_hist buffer); InputError for an
        item index out of range."""
        seqs = checked_histories(histories, self.n_items)
        items = np.asarray(seqs.items, dtype=np.int64)
        cold = np.flatnonzero(self.arrays_["item_cold"])  # no trained id row: left out
        indptr, keep = kept_entries(np.asarray(seqs.indptr, dtype=np.int64),
                                    np.zeros(0, dtype=np.int64), items, cold)
        return gather_windows(items[keep], indptr[:-1], indptr[1:],
                              self.module_.user_hist.shape[1], offset=1)

    def user_embedding_from_history(self, item_idx: np.ndarray,
                                    user_features: Mapping[str, Any] | None = None
                                    ) -> np.ndarray:
        """(d,) float32 vector of a user described only by a history given now.

        item_idx: internal item indices, oldest first (the last `history_len` are used).
        user_features: optional raw attribute values {column: value} (categorical labels,
        numbers); missing columns count as unknown / average.
        """
        self._check_fitted()
        hist = self._history_codes([np.asarray(item_idx, dtype=np.int64)])
        cat, num = encode_user(self.user_meta_, user_features or {})
        with torch.no_grad():
            u = self.module_.user_tower(torch.zeros(1, dtype=torch.int64),
                                        torch.from_numpy(cat[None, :]),
                                        torch.from_numpy(num[None, :]), torch.from_numpy(hist))
        return u[0].numpy().astype(np.float32)

    def recommend_from_history(self, items: Sequence[Any], k: int = 10,
                               user_features: Mapping[str, Any] | None = None
                               ) -> list[tuple[Any, float]]:
        """Top-k (external item id, score) for a history of external item ids (unknown ones
        are ignored); the history's items are not recommended again."""
        self._check_fitted()
        idx = self.items_.index(list(items)) if len(items) else np.empty(0, np.int64)
        idx = idx[idx >= 0]
        u = self.user_embedding_from_history(idx, user_features)
        scores = (self.scale_ * (self.item_vecs_ @ u))[None, :].astype(np.float32)  # (1, n)
        scores[0, idx] = -np.inf
        top, vals = top_k(scores, k)
        return [(self.items_.to_python(int(i)), float(s))
                for i, s in zip(top[0], vals[0], strict=True) if i >= 0]

    # --- state ------------------------------------------------------------------------
    def _extra_arrays(self) -> dict[str, np.ndarray]:
        out = {f"a.{k}": v for k, v in self.arrays_.items()}
        out.update({f"c.{k}": v for k, v in self.cards_.items()})
        out["log_q"] = self.log_q_
        out.update(user_meta_arrays(self.user_meta_))
        return out

    def _load_extra_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays_ = {k[2:]: v for k, v in arrays.items() if k.startswith("a.")}
        if "item_cold" not in self.arrays_:  # saved before cold items were tracked
            self.arrays_["item_cold"] = np.zeros(self.arrays_["item_num"].shape[0], dtype=bool)
        self.cards_ = {k[2:]: v for k, v in arrays.items() if k.startswith("c.")}
        self.log_q_ = arrays["log_q"]
        self.user_meta_ = user_meta_from_arrays(arrays)
