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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data.dataset import Dataset, Sequences
from lmrec.models.artifacts import pack_csr, unpack_csr
from lmrec.models.base import Recommender
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
    # Defaults chosen once on the ML100K validation part (ratings >= 3, 10-core, random
    # per-user 8:1:1 split, fit on train, valid NDCG@10), grid k x shrink x normalize:
    # k 20/50/100/200 with shrink 10: .2014 .2076 .2175 .2204; k 200 shrink 0/10/50: .2187
    # .2204 .2154; normalize=True lost .05-.13 everywhere -> k 200, shrink 10, no normalize.
    k: int = Field(200, ge=1, description="neighbours kept per item")
    shrink: float = Field(10.0, ge=0, description="shrinkage added to the cosine denominator")


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
        self.S_ = cosine_topk(x.T.tocsr(), cfg.k, cfg.shrink, cfg.normalize).T.tocsr()

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        if histories is None:
            return self._score_rows(self._input()[users])
        return self._score_rows(self._history_rows(histories, self.config.weighting))

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        # (B, n_items) sparse @ (n_items, n_items) sparse -> dense (B, n_items)
        return (rows @ self.S_).toarray().astype(np.float32, copy=False)


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
