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

Default k, from the data (`userknn_k`): 400 neighbours up to a mean history of 7 items per user,
100 at 22 and 50 from 60 on, log-linear between; shrink 0. Users with short histories are each
weak evidence, so more of them vote. Fitted on the validation parts (`benchmarks/data_defaults.py`,
grid k 25-400 x shrink 0-100): best k 50 on ML-100K, latest-small and a dense synthetic set (69,
87 and 66 items per user), 100 on shop-100k (22), 200-400 on Amazon Beauty (6.7; k 50 lost 11%)
and 400 on Amazon Sports (6.2); shrink 0 was best or within 1% everywhere. A first rule with 200
up to 7 items per user lost 3.0% on Amazon Sports, then left out; refitted with it, the rule was
checked on three new sets (BENCHMARKS.md, "Data-aware defaults").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data.dataset import Dataset, Sequences
from lmrec.data.stats import DataStats, log_interp
from lmrec.models.explanations import (
    Explanation,
    history_items,
    history_row_values,
    user_neighbours,
)
from lmrec.models.itemknn import KNNConfig, NeighbourModel, cosine_topk, topk_similarity
from lmrec.models.redaction import UserRows, drop_entries
from lmrec.train.options import TrainingOptions


class UserKNNConfig(KNNConfig):
    k: int | None = Field(None, ge=1, description="neighbour users kept per user; None: from "
                          "the data (400 to 50 as histories grow; module docstring)")
    shrink: float = Field(0.0, ge=0, description="shrinkage added to the cosine denominator")


def userknn_k(cfg: UserKNNConfig, stats: DataStats) -> int:
    """k: the config's, or the data rule's (module docstring)."""
    if cfg.k is not None:
        return cfg.k
    return round(log_interp(stats.per_user, (7.0, 22.0, 60.0), (400.0, 100.0, 50.0)))


class UserKNN(NeighbourModel):
    """User-user neighbourhood model. State: the sparse (n_users, n_users) similarity S and,
    for weighted input, the user-item matrix X."""

    name = "userknn"
    Config = UserKNNConfig
    config: UserKNNConfig

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        self.settings_ = self.data_settings(DataStats.of(dataset))
        self.S_ = cosine_topk(self._matrix(dataset), self.settings_["k"], cfg.shrink,
                              cfg.normalize)
        self._cache_norms()

    def data_settings(self, stats: DataStats) -> dict[str, Any]:
        return {"k": userknn_k(self.config, stats)}

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
        return self._vote(self._neighbours(histories))

    def _neighbours(self, histories: Sequences) -> sp.csr_matrix:
        """(B, n_users) the kept neighbours of each history with their weights."""
        cfg = self.config
        h = self._history_rows(histories, cfg.weighting)  # (B, n_items)
        norms = np.sqrt(np.asarray(h.multiply(h).sum(axis=1), np.float32).ravel())  # (B,)
        dots = (h @ self.input_t_).toarray()  # (B, n_users)
        # the same float32 arithmetic as cosine_topk, so that ties break the same way
        sims = dots / (norms[:, None] * self.user_norms_[None, :]
                       + np.float32(cfg.shrink + 1e-12))
        return topk_similarity(sims, self._setting("k"), cfg.normalize)

    def _explain(self, user: int, seqs: Sequences, items: np.ndarray) -> Explanation:
        # the neighbours who voted, and the history items through which they were found
        hist = history_items(seqs)
        values = history_row_values(self, seqs, hist, self.config.weighting)
        return user_neighbours(values, hist, self._neighbours(seqs), self._input(), items)

    def _vote(self, neighbours: sp.csr_matrix) -> np.ndarray:
        # (B, n_users) sparse @ (n_users, n_items) sparse -> dense (B, n_items)
        return (neighbours @ self._input()).toarray().astype(np.float32, copy=False)
