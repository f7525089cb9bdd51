"""A feature-rich two-tower retrieval model.

The towers (architecture and tensor shapes) are in `lmrec.models.two_tower_net`, the
configuration and its tuning log in `lmrec.models.two_tower_config`, the feature and history
arrays in `lmrec.features.tower_inputs`.

Training uses sampled softmax with in-batch negatives and log-Q correction (Yi et al., RecSys
2019) by default, optionally plus shared uniform negatives, or a full softmax over the catalogue
(`loss="full"`, small catalogues). While training, the target item is removed from its own
history (else the model learns to find it there), and the user id is dropped (replaced by the
"unknown" row 0) with probability `id_dropout`, so that the tower also works for users known
only by their history: `score(users, histories)` and `recommend_history` serve users unseen
in training from a few events given at request time. `item_embeddings()` exports the
(n_items, d) item vectors for an ANN index.

Text and cold items (`text=True`): the item tower also reads a frozen sentence vector of each
item's text (`lmrec.models.text_items`), through a learned projection. Items without training
events use a learned "unknown item" row instead of their (untrained) id embedding, and while
training the id of an item is replaced by that row with probability `item_id_dropout`, so the
tower learns to place items by text and attributes alone: items never seen in training are
scored from those. A history given at scoring time ignores such items (their id rows carry
nothing).

The model is an `EmbeddingModel`: score = user vector . item vector, the learned scale folded
into the user side. `user_embeddings(users)` are the trained users (id, attributes, training
history); `user_embeddings(users, histories)` runs the user tower over the given histories,
with the trained id embedding and attributes of each user >= 0 and the unknown id (row 0) and
unknown attributes (code 0, numerics 0) for -1, so live events do not cost a known user the
id (history alone: ML-100K NDCG@10 .192 against .269 with the id, RecBole protocol).
`user_embedding_from_history` embeds a history with attribute values given at request time.

Forgetting a user (`user_state`): their id row becomes a copy of the unknown row 0, their
attribute codes and numerics 0 and their stored training history empty, so the tower gets
exactly the inputs of an unknown user with an empty history, and scores them alike.

Feature arrays are kept as numpy state (saved in the npz) and handed to the module as
non-persistent buffers, so the module's state_dict holds only learned weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from lmrec.data.dataset import Dataset, Sequences
from lmrec.data.stats import DataStats, log_interp
from lmrec.errors import InputError
from lmrec.features.tower_inputs import (
    encode_user,
    recent_history,
    side_arrays,
    user_meta_arrays,
    user_meta_from_arrays,
)
from lmrec.models.explanations import Explanation
from lmrec.models.explanations_neural import two_tower as explain_two_tower
from lmrec.models.kinds import EmbeddingModel
from lmrec.models.neural import NeuralRecommender
from lmrec.models.redaction import UserRows, kept_entries
from lmrec.models.sequential import gather_windows
from lmrec.models.text_items import cold_item_mask, item_text_matrix
from lmrec.models.two_tower_config import TwoTowerConfig
from lmrec.models.two_tower_net import TwoTowerModule
from lmrec.train.losses import full_softmax_loss, in_batch_softmax_loss
from lmrec.train.options import TrainingOptions


class TwoTower(EmbeddingModel, NeuralRecommender):
    """Two-tower retrieval. State: tower weights plus feature and history arrays."""

    name = "two-tower"
    Config = TwoTowerConfig
    config: TwoTowerConfig

    def _steps_per_epoch(self, stats: DataStats) -> float:
        # from the mean history length (TwoTowerConfig's epochs comment)
        return log_interp(stats.per_user, (22.0, 87.0), (32.0, 128.0), geometric=True)

    def user_state(self) -> tuple[UserRows, ...]:
        ids = self.module_.user_id.weight.data  # row 0: the unknown user, row u + 1: user u
        a = self.arrays_  # what the module's user buffers are built from (on every load)
        return (UserRows(ids[1:], unknown=ids[0].clone()),
                UserRows(a["user_cat_codes"]),  # code 0: unknown
                UserRows(a["user_num"]),  # 0: the average (numerics are standardised)
                UserRows(a["user_hist"]))  # 0: padding, an empty history

    # --- data -------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        self.arrays_ = {}  # no item texts of an earlier fit (see _prepare)
        super()._fit(dataset, options)

    def _prepare(self, dataset: Dataset, x: sp.csr_matrix) -> None:
        cfg = self.config
        # the text vectors do not depend on the training pairs, but holdout validation
        # prepares twice: read them once per fit
        text = self.arrays_.get("item_text")
        if text is None and cfg.text:
            text = item_text_matrix(dataset, cfg, progress=cfg.progress)
        users, ucards, self.user_meta_ = side_arrays(dataset, "user", cfg.user_features)
        items, icards, _ = side_arrays(dataset, "item", cfg.item_features)
        self.arrays_ = {
            "user_cat_codes": users["cat"], "user_num": users["num"],
            "user_hist": recent_history(dataset, x, cfg.history_len),
            "item_cat_codes": items["cat"], "item_num": items["num"],
            **{f"item_multi_{j}": m for j, m in enumerate(items["multi"])},
            "item_cold": cold_item_mask(x),
        }
        if text is not None:
            self.arrays_["item_text"] = text
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
    def _score_module(self, module: nn.Module, users: np.ndarray) -> Tensor:
        dev = module.log_scale.device
        u = torch.as_tensor(np.asarray(users, dtype=np.int64), device=dev)
        return (module.scale() * module.users(u) @ module.all_items().T).float().cpu()

    def _after_load(self) -> None:
        with torch.no_grad():
            self.item_vecs_ = self.module_.all_items().numpy()  # (n_items, d)
            self.scale_ = float(self.module_.scale())

    def item_embeddings(self) -> np.ndarray:
        """(n_items, d) float32 item vectors (unit length with cosine similarity)."""
        self._check_fitted()
        return self.item_vecs_.copy()

    def user_embeddings(self, users: np.ndarray, histories: Sequences | None = None
                        ) -> np.ndarray:
        """(B,) internal users (-1: unknown) and optional B histories (internal item indices,
        oldest first) -> (B, d) float32 user vectors times the learned scale.

        The user tower reads each user's id, attributes and training history (row 0, code 0,
        numerics 0 and nothing for -1); given histories replace the training ones."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64).ravel()
        known, rows = users >= 0, np.maximum(users, 0)
        if histories is None:
            hist = self.arrays_["user_hist"][rows]  # (B, L), as the module's users() reads it
            hist[~known] = 0
        else:
            hist = self._history_codes(histories)
            if hist.shape[0] != users.size:
                raise InputError(f"{hist.shape[0]} histories for {users.size} users")
        cat = self.arrays_["user_cat_codes"][rows]  # (B, Cu)
        num = self.arrays_["user_num"][rows]  # (B, Pu)
        cat[~known], num[~known] = 0, 0.0
        uid = np.where(known, users + 1, 0)  # row 0 of the id table: unknown user
        return self.scale_ * self._tower(uid, cat, num, hist)

    def user_embedding_from_history(self, item_idx: np.ndarray,
                                    user_features: Mapping[str, Any] | None = None
                                    ) -> np.ndarray:
        """(d,) float32 vector, without the scale, of a user described only by a history
        and attribute values given now (the one thing `user_embeddings` cannot take).

        item_idx: internal item indices, oldest first (the last `history_len` are used).
        user_features: optional raw attribute values {column: value} (categorical labels,
        numbers); missing columns count as unknown / average.
        """
        self._check_fitted()
        hist = self._history_codes([np.asarray(item_idx, dtype=np.int64)])
        cat, num = encode_user(self.user_meta_, user_features or {})
        return self._tower(np.zeros(1, dtype=np.int64), cat[None, :], num[None, :], hist)[0]

    def _explain(self, user: int, seqs: Sequences, items: np.ndarray) -> Explanation:
        # gradient x input over history items and user features (explanations_neural)
        return explain_two_tower(self, user, seqs, items)

    def _tower(self, uid: np.ndarray, cat: np.ndarray, num: np.ndarray, hist: np.ndarray
               ) -> np.ndarray:
        """The user tower on (B,) id rows, (B, Cu) codes, (B, Pu) numerics, (B, L) history
        codes -> (B, d) float32."""
        with torch.no_grad():
            u = self.module_.user_tower(torch.from_numpy(uid), torch.from_numpy(cat),
                                        torch.from_numpy(num), torch.from_numpy(hist))
        return u.numpy().astype(np.float32, copy=False)

    def _history_codes(self, histories: Sequences | list[np.ndarray]) -> np.ndarray:
        """(B, L) int64 item + 1 of each history's last L items that have training events,
        right-aligned, 0 = padding (the layout of the user_hist buffer); InputError for an
        item index out of range."""
        seqs = Sequences.from_lists(histories).checked(self.n_items)
        items = np.asarray(seqs.items, dtype=np.int64)
        cold = np.flatnonzero(self.arrays_["item_cold"])  # no trained id row: left out
        indptr, keep = kept_entries(np.asarray(seqs.indptr, dtype=np.int64),
                                    np.zeros(0, dtype=np.int64), items, cold)
        return gather_windows(items[keep], indptr[:-1], indptr[1:],
                              self.arrays_["user_hist"].shape[1], offset=1)

    # --- state ------------------------------------------------------------------------
    def _extra_arrays(self) -> dict[str, np.ndarray]:
        out = {f"a.{k}": v for k, v in self.arrays_.items()}
        out.update({f"c.{k}": v for k, v in self.cards_.items()})
        out["log_q"] = self.log_q_
        out.update(user_meta_arrays(self.user_meta_))
        return out

    def _load_extra_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays_ = {k.removeprefix("a."): v for k, v in arrays.items()
                        if k.startswith("a.")}
        if "item_cold" not in self.arrays_:  # saved before cold items were tracked
            self.arrays_["item_cold"] = np.zeros(self.arrays_["item_num"].shape[0], dtype=bool)
        self.cards_ = {k.removeprefix("c."): v for k, v in arrays.items()
                       if k.startswith("c.")}
        self.log_q_ = arrays["log_q"]
        self.user_meta_ = user_meta_from_arrays(arrays)
