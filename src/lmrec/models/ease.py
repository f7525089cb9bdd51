"""EASE: Steck's shallow linear item-item autoencoder with a closed-form solution.

    G = X^T X + lambda I,  P = G^-1,  B = I - P / diag(P)  (column-wise, so diag(B) = 0)
    score(u) = X[u] @ B

Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.

Any item history scores as x_h @ B (`score(users, histories)`), its row built as the training
rows are; a training user's own history gives exactly `score(user)`, an empty one (an unknown
or forgotten user) scores 0.

Default lambda, from the data (`ease_l2`): 7 x the mean item degree (distinct training users per
item), within [50, 500]. The Gram matrix's diagonal holds the item degrees, so lambda is a
shrinkage relative to them; a fixed lambda over-regularises sparse catalogues. Fitted on the
validation parts (random per-user 8:1:1, NDCG@10, `benchmarks/data_defaults.py`, grid 6.25 to
3200 by factors of 2): best lambda 400 on ML-100K (64 per item), 200 on latest-small (28) and
on shop-100k (34), 400 on a dense synthetic set (132), 50 on Amazon Beauty (12; 100 within
.7%). Checked on Amazon Sports and a sparser synthetic set, left out (BENCHMARKS.md,
"Data-aware defaults").
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import scipy.linalg
from pydantic import Field

from lmrec.data.dataset import Dataset
from lmrec.data.stats import DataStats
from lmrec.models.hyperparams import FloatRange, SearchSpace
from lmrec.models.slim import LinearItemConfig, LinearItemModel, check_dense_fits
from lmrec.train.options import TrainingOptions

# Peak working set per entry of the n_items x n_items matrices: G, its Cholesky factor and
# inverse and B, about six dense copies in the inversion's dtype (measured as the peak RSS of a
# fit); a catalogue that would not fit in the memory available is refused before any of it.
PEAK_COPIES = 6
# lambda = L2_PER_DEGREE x mean item degree, clipped to L2_RANGE (module docstring)
L2_PER_DEGREE, L2_RANGE = 7.0, (50.0, 500.0)


def ease_l2(stats: DataStats) -> float:
    """The data rule for EASE's lambda (and ADMM-SLIM's l2): module docstring."""
    return round(float(np.clip(L2_PER_DEGREE * stats.per_item, *L2_RANGE)), 1)


class EASEConfig(LinearItemConfig):
    l2: float | None = Field(
        None, gt=0, description="L2 regularisation lambda added to diag(X^T X); None: from the "
        "data, 7 x the mean item degree within [50, 500] (module docstring)")
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
        self.settings_ = self.data_settings(DataStats.of(dataset))
        gram[np.diag_indices(n)] += self.settings_["l2"]
        # G is symmetric positive definite: a Cholesky inverse is twice as fast as LU
        p = spd_inverse(gram)
        b = p / (-np.diag(p))[None, :]  # B_ij = -P_ij / P_jj
        self._set_state(b, x)  # B as float32 with a zero diagonal; X kept when weighted

    def data_settings(self, stats: DataStats) -> dict[str, Any]:
        l2 = self.config.l2
        return {"l2": l2 if l2 is not None else ease_l2(stats)}


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
