"""Implicit-feedback matrix factorisation by alternating least squares (Hu, Koren, Volinsky 2008).

Minimises  sum_{u,i} c_ui (p_ui - U_u . V_i)^2 + reg (|U|^2 + |V|^2)  with preference
p_ui = 1 where the user interacted and confidence c_ui = 1 + alpha * x_ui (1 elsewhere).
The solver is `implicit`'s conjugate-gradient ALS (Takacs et al. 2011), compiled and the fastest
CPU option measured here; only its factor matrices are kept: score(u) = U[u] @ V.T.

Any item history is scored by folding it in (`score(users, histories)`): the ALS user step
solved exactly against the fixed item factors, with the model's reg and alpha,

    u_h = (V^T V + V^T (C_h - I) V + reg I)^-1  V^T C_h p_h

batched as one (B, f, f) solve. For a training user's own history this is the step the
solver's last sweep approximates (with `cg_steps` conjugate-gradient steps against the item
factors of the sweep before), so it reproduces U[u] closely once training has converged.
An empty history has no evidence: its regularised solution is the zero vector, which is also
what an unknown user gets and what a forgotten user's row of U becomes, so all three score 0.
The model is an `EmbeddingModel`: score = user vector @ item vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import threadpool_limits

from lmrec.data.dataset import Dataset, Sequences
from lmrec.models.base import Recommender
from lmrec.models.hyperparams import FloatRange, IntRange, ModelConfig, SearchSpace
from lmrec.models.kinds import EmbeddingModel
from lmrec.models.redaction import UserRows
from lmrec.train.options import TrainingOptions

# Entries of the padded (b, L, f) history block held at once by the fold-in (32 MB float64)
_FOLD_IN_ELEMENTS = 1 << 22


class ALSConfig(ModelConfig):
    # 64 factors x 15 iterations as asked; reg and alpha chosen once on the ML100K validation
    # part (ratings >= 3, 10-core, random per-user 8:1:1 split, fit on train, valid NDCG@10):
    # reg 10/30/60 x alpha 2/4/8/16, then reg 20/30/45 x alpha 3/4/6; best reg 30 alpha 3 .2444
    # (reg 30 alpha 4 .2403, reg 45 alpha 6 .2421, reg 10 alpha 2 .2142, reg 60 alpha 8 .2339).
    factors: int = Field(64, ge=1, description="latent dimension")
    iterations: int = Field(15, ge=1, description="ALS sweeps (users then items)")
    reg: float = Field(30.0, ge=0, description="L2 regularisation of both factor matrices")
    alpha: float = Field(3.0, ge=0, description="confidence c = 1 + alpha * x of an interaction")
    weighting: Literal["binary", "weight"] = Field(
        "binary", description="x: 1 per (user, item), or summed event weights")
    cg_steps: int = Field(3, ge=1, description="conjugate-gradient steps per least-squares solve")
    num_threads: int = Field(
        0, ge=0, description="solver threads; 0 = all cores (results do not depend on it)")

    search_space: ClassVar[SearchSpace] = {
        "factors": IntRange(16, 256, log=True), "reg": FloatRange(1.0, 200.0, log=True),
        "alpha": FloatRange(0.5, 30.0, log=True)}


class ALS(EmbeddingModel, Recommender):
    """Implicit ALS. State: user factors U (n_users, f) and item factors V (n_items, f)."""

    name = "als"
    Config = ALSConfig
    config: ALSConfig

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        from implicit.cpu.als import AlternatingLeastSquares  # heavy import, only when used

        rng = options.generator
        cfg = self.config
        x = dataset.matrix(cfg.weighting).tocsr().astype(np.float32)
        conf = x.copy()
        # implicit's solver takes the confidence itself (and treats p_ui = 1 where it is > 0)
        conf.data = (1.0 + cfg.alpha * conf.data).astype(np.float32)
        # BLAS threads inside implicit's solver slow it down badly; the solver's own threads
        # are independent per row, so the factors do not depend on num_threads.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=cfg.factors, regularization=cfg.reg, alpha=1.0, use_cg=True,
                iterations=cfg.iterations, calculate_training_loss=False,
                num_threads=cfg.num_threads, random_state=int(rng.integers(2**31 - 1)),
                dtype=np.float32)
            model.cg_steps = cfg.cg_steps  # not a constructor argument in implicit 0.7
            model.fit(conf, show_progress=False)
        self.U_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.V_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def user_state(self) -> tuple[UserRows, ...]:
        return (UserRows(self.U_),)  # a forgotten user's factors become 0, the fold-in of []

    def _fold_in(self, histories: Sequences) -> np.ndarray:
        """B checked histories -> (B, f) float32 folded-in user factors (0 for an empty one)."""
        x = self._history_rows(histories, self.config.weighting)
        return fold_in(x, self.V_, self.config.reg, self.config.alpha)

    # --- EmbeddingModel ---------------------------------------------------------------
    def item_embeddings(self) -> np.ndarray:
        """(n_items, f) float32 item factors V."""
        self._check_fitted()
        return self.V_

    def user_embeddings(self, users: np.ndarray,
                        histories: Sequences | Sequence[np.ndarray] | None = None
                        ) -> np.ndarray:
        """(B,) internal users -> (B, f) float32: without histories the trained factors U[u]
        (an unknown user, -1, gets 0: an empty history's); with B histories their folded-in
        factors (see the module docstring), whoever the users are."""
        users, seqs = self._checked_query(users, histories)
        if seqs is not None:
            return self._fold_in(seqs)
        out = self.U_[np.maximum(users, 0)]
        out[users < 0] = 0.0
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"U": self.U_, "V": self.V_}

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.U_ = arrays["U"]
        self.V_ = arrays["V"]


def fold_in(x: sp.csr_matrix, v: np.ndarray, reg: float, alpha: float) -> np.ndarray:
    """Exact implicit-ALS user factors for rows x (B, n_items) against item factors v (n, f).

    Confidence c = 1 + alpha * x where x > 0 (preference 1), 1 elsewhere (preference 0):
    u = (V^T V + reg I + sum_i (c_i - 1) v_i v_i^T)^-1 sum_i c_i v_i over the row's items.
    The per-row sums run on a zero-padded (b, L, f) block, in float64; returns (B, f) float32.
    An empty row gets exactly 0 (no evidence), the factors of an unknown user.
    """
    x = sp.csr_matrix(x)
    x.sum_duplicates()
    b_total, f = x.shape[0], v.shape[1]
    out = np.zeros((b_total, f), dtype=np.float32)
    if x.nnz == 0:
        return out  # no evidence: the regularised solution is 0
    vd = v.astype(np.float64)
    gram = vd.T @ vd + reg * np.eye(f)  # (f, f), shared by every row
    lengths = np.diff(x.indptr)
    width = int(lengths.max())
    step = max(1, _FOLD_IN_ELEMENTS // (width * f))
    conf = 1.0 + alpha * x.data.astype(np.float64)
    for start in range(0, b_total, step):
        stop = min(b_total, start + step)
        pos = np.arange(width)[None, :]  # (1, L)
        valid = pos < lengths[start:stop, None]  # (b, L)
        src = np.where(valid, x.indptr[start:stop, None] + pos, 0)
        items = np.where(valid, x.indices[src], 0)
        c = np.where(valid, conf[src], 0.0)  # (b, L); padding adds nothing
        vp = vd[items]  # (b, L, f)
        a = gram + np.matmul(vp.transpose(0, 2, 1) * np.where(valid, c - 1.0, 0.0)[:, None, :],
                             vp)  # (b, f, f)
        rhs = np.einsum("bl,blf->bf", c, vp)  # (b, f)
        out[start:stop] = np.linalg.solve(a, rhs[..., None])[..., 0]
    out[lengths == 0] = 0.0  # an empty row (zero right-hand side) is exactly 0, as above
    return out
