"""User-based k-nearest-neighbours: cosine similarity with shrinkage, top-k neighbours per user.

    sim(u, v) = <x_u, x_v> / (|x_u| |x_v| + shrink)      (x_u: row u of the user-item matrix)
    N(u)      = the k users most similar to u (u excluded)
    score(u)  = sum over v in N(u) of sim(u, v) * x_v

The similarity is computed in dense row blocks (see `itemknn.cosine_topk`).

A history (`score(users, histories)`) is scored as a new user: its row x_h is compared with
every training user by the same shrunk cosine, and its k nearest training users vote. A
training user's own history finds that user as its nearest neighbour; since the user's row
holds only items of the history, this changes the scores of seen items only, plus the one
neighbour it pushes out of the top k. An empty history has no neighbour and scores 0, as a
forgotten user does (its row and column of S are emptied).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data.dataset import Dataset, Sequences
from lmrec.models.itemknn import KNNConfig, NeighbourModel, cosine_topk, topk_similarity
from lmrec.models.redaction import UserRows, drop_entries
from lmrec.train.options import TrainingOptions


class UserKNNConfig(KNNConfig):
    # Defaults chosen once on the ML100K validation part (ratings >= 3, 10-core, random
    # per-user 8:1:1 split, fit on train, valid NDCG@10), grid k x shrink:
    # k 20/50/100/200 with shrink 0: .2113 .2159 .2161 .2107; k 100 shrink 0/10/50: .2161
    # .2139 .2070 -> k 100, shrink 0.
    k: int = Field(100, ge=1, description="neighbour users kept per user")
    shrink: float = Field(0.0, ge=0, description="shrinkage added to the cosine denominator")


class UserKNN(NeighbourModel):
    """User-user neighbourhood model. State: the sparse (n_users, n_users) similarity S and,
    for weighted input, the user-item matrix X."""

    name = "userknn"
    Config = UserKNNConfig
    config: UserKNNConfig

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        self.S_ = cosine_topk(self._matrix(dataset), cfg.k, cfg.shrink, cfg.normalize)
        self._cache_norms()

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        super()._load_arrays(arrays)
        self._cache_norms()

    def user_state(self) -> tuple[UserRows, ...]:
        # row u of S: user u's neighbours (and the weighted matrix X, if any)
        return (UserRows(self.S_), *super().user_state())

    def _redact_users(self, user_idx: np.ndarray) -> None:
        # a forgotten user is also a neighbour of others: their column of S goes too
        self.S_ = drop_entries(self.S_, user_idx, user_idx)

    def _cache_norms(self) -> None:
        # after fit and load (redact_users reloads): what scoring a history needs of X
        x = self._input()
        self.user_norms_ = np.sqrt(np.asarray(x.multiply(x).sum(axis=1), np.float32).ravel())
        self.input_t_ = x.T.tocsr()  # (n_items, n_users): a CSR product needs no conversion

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        if histories is None:
            return self._vote(self.S_[users])
        cfg = self.config
        h = self._history_rows(histories, cfg.weighting)  # (B, n_items)
        norms = np.sqrt(np.asarray(h.multiply(h).sum(axis=1), np.float32).ravel())  # (B,)
        dots = (h @ self.input_t_).toarray()  # (B, n_users)
        # the same float32 arithmetic as cosine_topk, so that ties break the same way
        sims = dots / (norms[:, None] * self.user_norms_[None, :]
                       + np.float32(cfg.shrink + 1e-12))
        return self._vote(topk_similarity(sims, cfg.k, cfg.normalize))

    def _vote(self, neighbours: sp.csr_matrix) -> np.ndarray:
        # (B, n_users) sparse @ (n_users, n_items) sparse -> dense (B, n_items)
        return (neighbours @ self._input()).toarray().astype(np.float32, copy=False)
