"""EASE: Steck's shallow linear item-item autoencoder with a closed-form solution.

    G = X^T X + lambda I,  P = G^-1,  B = I - P / diag(P)  (column-wise, so diag(B) = 0)
    score(u) = X[u] @ B

Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.

Any item history scores as x_h @ B (`score(users, histories)`), its row built as the training
rows are; a training user's own history gives exactly `score(user)`, an empty one (an unknown
or forgotten user) scores 0.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import scipy.linalg
from pydantic import Field

from lmrec.data.dataset import Dataset
from lmrec.models.hyperparams import FloatRange, SearchSpace
from lmrec.models.slim import LinearItemConfig, LinearItemModel, check_dense_fits
from lmrec.train.options import TrainingOptions

# Peak working set per entry of the n_items x n_items matrices: G, its Cholesky factor and
# inverse and B, about six dense copies in the inversion's dtype (measured as the peak RSS of a
# fit); a catalogue that would not fit in the memory available is refused before any of it.
PEAK_COPIES = 6


class EASEConfig(LinearItemConfig):
    # Default chosen once on the ML100K validation part (ratings >= 3, 10-core, random per-user
    # 8:1:1 split as peerdata.split_rs, seed 2020; fit on train, valid NDCG@10):
    # l2 100 .2348, 200 .2417, 300 .2408, 400 .2423, 500 .2417, 800 .2351 -> 400.
    l2: float = Field(400.0, gt=0, description="L2 regularisation lambda added to diag(X^T X)")
    dtype: Literal["float32", "float64"] = Field(
        "float64", description="precision of the inversion; B is stored as float32")

    search_space: ClassVar[SearchSpace] = {"l2": FloatRange(10.0, 5000.0, log=True)}


class EASE(LinearItemModel):
    """Closed-form linear item-to-item model. State: B (n_items, n_items) float32 (scoring,
    saving and per-user state are the shared linear model's, `lmrec.models.slim`)."""

    name = "ease"
    Config = EASEConfig
    config: EASEConfig

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        n = dataset.n_items
        check_dense_fits(self.name, n, PEAK_COPIES * np.dtype(cfg.dtype).itemsize)
        x = self._matrix(dataset)
        dtype = np.dtype(cfg.dtype)
        gram = (x.T @ x).toarray().astype(dtype)  # (n_items, n_items)
        gram[np.diag_indices(n)] += cfg.l2
        # G is symmetric positive definite: a Cholesky inverse is twice as fast as LU
        p = spd_inverse(gram)
        b = p / (-np.diag(p))[None, :]  # B_ij = -P_ij / P_jj
        self._set_state(b, x)  # B as float32 with a zero diagonal; X kept when weighted


def spd_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix (n, n), via Cholesky (LAPACK potri)."""
    c, info = scipy.linalg.lapack.get_lapack_funcs("potrf", (a,))(a, lower=True)
    if info != 0:  # not positive definite in floating point: fall back to a general inverse
        return np.linalg.inv(a)
    inv, info = scipy.linalg.lapack.get_lapack_funcs("potri", (c,))(c, lower=True)
    if info != 0:
        return np.linalg.inv(a)
    # potri fills only the lower triangle
    return np.tril(inv) + np.tril(inv, -1).T
