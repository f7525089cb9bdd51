"""Item-based k-nearest-neighbours: cosine similarity with shrinkage, top-k per item.

    sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrink)      (x_i: column i of the user-item matrix)
    S[:, j]   = the k largest sim(., j), i != j; the rest 0
    score(u)  = X[u] @ S

Each target item j keeps its k most similar items (as RecBole's and Sarwar et al.'s ItemKNN).
The similarity is computed in dense column blocks of the sparse product X^T X, so memory is
O(n_items * block) and there is no Python loop over single items.

Any item history scores the same way (`score(users, histories)`): its row x_h, built as the
training rows are (binary, or summed behaviour weights), times S. A training user's own history
gives exactly `score(user)`; an empty history (an unknown or forgotten user) scores 0.

Defaults, from the data (`itemknn_settings`; p = mean history length, d = mean item degree):
- shrink = 100 up to p = 8 items per user and 10 from p = 20, log-linear in p between. Two
  items co-occur in a user's history, so short histories give co-occurrence counts of one or
  two, and an unshrunk cosine over them is noise: on Amazon Beauty (p 6.7) shrink 0 / 10 / 100
  gave valid NDCG@10 .041 / .052 / .058, on a synthetic set with 7.4 items per user (but 28
  users per item) .066 / .085 / .096 at k 200, while on ML-100K (p 69) shrink 0-10 is best and
  50 loses 2%.
- k = 200, except for long histories on mid-density catalogues: in d it dips from 200 (d <= 15
  and d >= 60) to 50 at d = 30 (log-linear), and that dip fades out as p falls from 20 to 8.
  k 200 was best or within 1.6% on ML-100K, two synthetic sets (d 132 and 77) and both Amazon
  sets (d 12); latest-small (d 28, p 87) wanted 50 (200 lost 6%), shop-100k (d 34, p 22) 50-100.
  With short histories the two Amazon sets disagree (Beauty best at k 50, 400 lost 3.3%; Sports
  best at 400, 50 lost 3.0%), so 200 is the compromise.
This is the third rule: the first (k and shrink from d alone) lost 3.0% on Amazon Sports, the
second 19% on the short-history synthetic set, each left out when it was fitted; the history
length was then brought in (BENCHMARKS.md, "Data-aware defaults", where the last check is on a
set none of the three saw; `benchmarks/data_defaults.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data.dataset import Dataset, Sequences
from lmrec.data.stats import DataStats, log_interp
from lmrec.models.artifacts import pack_csr, unpack_csr
from lmrec.models.base import Recommender
from lmrec.models.explanations import Explanation, linear
from lmrec.models.hyperparams import FloatRange, IntRange, ModelConfig, SearchSpace
from lmrec.models.redaction import UserRows
from lmrec.train.options import TrainingOptions

# Entries of the dense similarity block held at once (16M float32: 64 MB per temporary).
_BLOCK_ELEMENTS = 1 << 24


class KNNConfig(ModelConfig):
    """Fields shared by the neighbourhood models; each sets its own k and shrink."""

    weighting: Literal["binary", "weight"] = Field(
        "binary", description="interaction matrix: 1 per (user, item), or summed event weights")
    normalize: bool = Field(
        False, description="L1-normalise each row's kept neighbour weights (sum to 1)")

    search_space: ClassVar[SearchSpace] = {
        "k": IntRange(10, 500, log=True), "shrink": FloatRange(0.0, 100.0)}


class ItemKNNConfig(KNNConfig):
    # normalize=True lost .05-.13 valid NDCG@10 everywhere on ML-100K; k and shrink: module
    # docstring
    k: int | None = Field(None, ge=1, description="neighbours kept per item; None: from the "
                          "data (200, with a dip to 50 for mid-density catalogues)")
    shrink: float | None = Field(None, ge=0, description="shrinkage added to the cosine "
                                 "denominator; None: from the data (100 to 10 as histories "
                                 "grow)")


class NeighbourModel(Recommender):
    """Shared state of the neighbourhood models: a sparse similarity S and, for weighted
    input, the user-item matrix X (binary input scores from the seen-item matrix)."""

    config: KNNConfig

    def user_state(self) -> tuple[UserRows, ...]:
        # the weighted user-item matrix (weighting != "binary"); binary input is `seen_`,
        # which the base class empties itself
        return () if self.X_ is None else (UserRows(self.X_),)

    def _matrix(self, dataset: Dataset) -> sp.csr_matrix:
        x = dataset.matrix(self.config.weighting).tocsr().astype(np.float32)
        self.X_ = x if self.config.weighting != "binary" else None
        return x

    def _input(self) -> sp.csr_matrix:
        return self.seen_ if self.X_ is None else self.X_

    def _arrays(self) -> dict[str, np.ndarray]:
        out = pack_csr(self.S_, "S")
        if self.X_ is not None:
            out.update(pack_csr(self.X_, "X"))
        return out

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.S_ = unpack_csr(arrays, "S")
        self.X_ = unpack_csr(arrays, "X") if "X.data" in arrays else None


class ItemKNN(NeighbourModel):
    """Item-item neighbourhood model. State: the sparse (n_items, n_items) similarity S."""

    name = "itemknn"
    Config = ItemKNNConfig
    config: ItemKNNConfig

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        x = self._matrix(dataset)
        self.settings_ = self.data_settings(DataStats.of(dataset))
        self.S_ = cosine_topk(x.T.tocsr(), self.settings_["k"], self.settings_["shrink"],
                              cfg.normalize).T.tocsr()

    def data_settings(self, stats: DataStats) -> dict[str, Any]:
        return itemknn_settings(self.config, stats)

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        if histories is None:
            return self._score_rows(self._input()[users])
        return self._score_rows(self._history_rows(histories, self.config.weighting))

    def _explain(self, user: int, seqs: Sequences, items: np.ndarray) -> Explanation:
        # x_h @ S: item j's term x_hj * S[j, i], exactly
        return linear(self, seqs, items, self.S_, self.config.weighting)

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        # (B, n_items) sparse @ (n_items, n_items) sparse -> dense (B, n_items)
        return (rows @ self.S_).toarray().astype(np.float32, copy=False)


def itemknn_settings(cfg: ItemKNNConfig, stats: DataStats) -> dict[str, Any]:
    """k and shrink: the config's, or the data rule's (module docstring) where left as None."""
    d, p = stats.per_item, stats.per_user
    k = cfg.k
    if k is None:
        dip = log_interp(d, (15.0, 30.0, 60.0), (200.0, 50.0, 200.0))  # the long-history k
        k = round(log_interp(p, (8.0, 20.0), (200.0, dip), geometric=True))
    shrink = (cfg.shrink if cfg.shrink is not None
              else round(log_interp(p, (8.0, 20.0), (100.0, 10.0)), 1))
    return {"k": k, "shrink": shrink}


def cosine_topk(rows: sp.csr_matrix, k: int, shrink: float, normalize: bool = False
                ) -> sp.csr_matrix:
    """Row-row cosine similarity with shrinkage, keeping the k largest per row.

    rows: (n, d) sparse, one object per row. Returns a (n, n) float32 CSR whose row r holds the
    (at most k) most similar other rows of r with a positive similarity; the diagonal is 0.
    The result does not depend on the block size (each row is computed independently).
    """
    rows = rows.tocsr().astype(np.float32)
    n = rows.shape[0]
    norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1), dtype=np.float32).ravel())
    cols_t = rows.T.tocsc()
    k = min(k, max(n - 1, 1))
    block = max(1, min(n, _BLOCK_ELEMENTS // max(n, 1)))
    out_rows: list[np.ndarray] = []
    out_cols: list[np.ndarray] = []
    out_vals: list[np.ndarray] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        # (b, n) dense block of dot products between rows start..stop and every row
        dots = (rows[start:stop] @ cols_t).toarray()
        sims = dots / (norms[start:stop, None] * norms[None, :] + np.float32(shrink + 1e-12))
        local = np.arange(stop - start)
        sims[local, start + local] = 0.0  # no self-similarity
        r, c, v = _top_positive(sims, k)
        out_rows.append(r + start)
        out_cols.append(c)
        out_vals.append(v)
    return _sparse_neighbours(out_rows, out_cols, out_vals, (n, n), normalize)


def topk_similarity(sims: np.ndarray, k: int, normalize: bool = False) -> sp.csr_matrix:
    """A dense (B, n) similarity block as a (B, n) CSR that keeps the k largest positive
    entries per row (L1-normalised per row when `normalize`), as `cosine_topk` keeps them."""
    r, c, v = _top_positive(sims, min(k, sims.shape[1]))
    return _sparse_neighbours([r], [c], [v], sims.shape, normalize)


def _top_positive(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of the k largest entries per row of sims (b, n) that are > 0."""
    b, n = sims.shape
    part = (np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n
            else np.tile(np.arange(n), (b, 1)))
    vals = np.take_along_axis(sims, part, axis=1)
    keep = vals > 0
    rows = np.broadcast_to(np.arange(b)[:, None], part.shape)[keep]
    return rows, part[keep], vals[keep].astype(np.float32)


def _sparse_neighbours(rows: list[np.ndarray], cols: list[np.ndarray], vals: list[np.ndarray],
                       shape: tuple[int, int], normalize: bool) -> sp.csr_matrix:
    s = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=shape, dtype=np.float32)
    s.sort_indices()
    if normalize:
        total = np.asarray(s.sum(axis=1)).ravel()
        s = sp.diags(np.where(total > 0, 1.0 / np.maximum(total, 1e-12), 0.0).astype(
            np.float32)) @ s
        s = s.tocsr().astype(np.float32)
    return s
