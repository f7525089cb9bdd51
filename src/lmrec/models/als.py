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

Defaults, from the data (`als_settings`; `benchmarks/data_defaults.py`, BENCHMARKS.md
"Data-aware defaults"). The validation optimum of reg is sharp and moves with alpha as
reg ~ r x (1 + alpha): the confidence of a history item is 1 + alpha, and reg must keep pace
with it. So the rule sets alpha and the ratio r:
- alpha = 30 up to a mean history of 7 items per user, 3 from 20 on, log-linear between. Short
  histories need their few items to outweigh the thousands of unobserved ones: Amazon Beauty
  (6.7 per user) gave valid NDCG@10 .0562 at alpha 30, .0554 at 10, .0466 at 3; the MovieLens
  sets, shop-100k and a dense synthetic set (22-87 per user) were best or within 1.7% at 3.
- r = reg / (1 + alpha) = 7.5 x (h / 100)^0.4 x (p / 50)^0.16 x s, with h the head degree
  (`DataStats`: the mean degree of the item behind an interaction, larger for heavier heads),
  p the mean history length and s a short-history factor, 1 from 20 items per user on and .013
  up to 7, geometric between (a least-squares fit in logs). The best r at alpha 3 (grid reg
  17.5-90) was 5.3 on shop-100k (h 62, p 22), 7.2 on latest-small (57, 87), 7.8 on ML-100K
  (129, 69), 10.6 on a dense synthetic set (225, 66) and 15 on a sparse one with a heavy head
  (601, 28); the formula gives 5.4, 6.5, 8.7, 10.9, 14.2. On Amazon Beauty (6.7 items per user)
  less reg was better all the way down (reg 1-3 at alpha 30, r <= .1). A first rule in the
  geometric-mean degree, fitted without the sparse synthetic set, gave it r 7.1 and lost 35%
  there: the optimum is sharp (ML-100K at alpha 3, reg 22.5 / 32.5 / 50: .2381 / .2470 /
  .2207), so the head of the popularity curve has to be in the rule.
- When neither alpha nor reg is given, the statistics only propose: the fit tries five
  (alpha, reg) pairs around the rule's ratio on a holdout of 20% of the training pairs and keeps
  the best (`lmrec.models.als_select`; `settings_["candidates"]` holds every pair's holdout
  NDCG@10). The rule alone lost 59% on a synthetic set with short histories and a heavy
  popularity head, which wanted alpha 3 and reg 60 where Amazon's short histories want alpha 30
  and reg 1-10. `data_settings` (what `auto` starts from) is the statistics rule.
- factors = 64 up to 2,000 items, 256 from 10,000, log-linear between (rounded to 8): on
  Beauty (12k items) 256 factors reached .0585, 128 .0562, 64 .0507 (alpha 10); on the
  MovieLens sets 32-256 were within 1.5% of each other.
- weighting = "count" where (user, item) pairs repeat (play counts, repeated views), else
  binary: the confidence then grows with the count, as Hu et al. propose. On shop-100k (views,
  carts, purchases; 2.4 events per pair) valid NDCG@10 .2087 with counts, .2068 with behaviour
  weights, .2022 binary; implicit's ALS tuned over 216 points (factors, reg, alpha, count /
  BM25 / log weighting) reached .2098.
Checked on Amazon Sports and a sparser synthetic set, left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import threadpool_limits

from lmrec.data.dataset import Dataset, Sequences
from lmrec.data.stats import DataStats, log_interp
from lmrec.models.als_select import select_alpha_reg
from lmrec.models.base import Recommender
from lmrec.models.explanations import Explanation, history_items, history_row_values
from lmrec.models.explanations import als as als_terms
from lmrec.models.hyperparams import Choice, FloatRange, IntRange, ModelConfig, SearchSpace
from lmrec.models.kinds import EmbeddingModel
from lmrec.models.redaction import UserRows
from lmrec.train.options import TrainingOptions

# Entries of the padded (b, L, f) history block held at once by the fold-in (32 MB float64)
_FOLD_IN_ELEMENTS = 1 << 22


class ALSConfig(ModelConfig):
    # None: from the data (module docstring, "Defaults")
    factors: int | None = Field(None, ge=1, description="latent dimension; None: from the "
                                "data (64 to 256 as the catalogue grows)")
    iterations: int = Field(15, ge=1, description="ALS sweeps (users then items)")
    reg: float | None = Field(None, ge=0, description="L2 regularisation of both factor "
                              "matrices; None: from the data, r(head degree) x (1 + alpha)")
    alpha: float | None = Field(None, ge=0, description="confidence c = 1 + alpha * x of an "
                                "interaction; None: from the data (30 to 3 as histories grow)")
    weighting: Literal["binary", "weight", "count"] | None = Field(
        None, description="x: 1 per (user, item), summed event weights, or event counts (play "
        "counts); None: counts where (user, item) pairs repeat, else binary")
    cg_steps: int = Field(3, ge=1, description="conjugate-gradient steps per least-squares solve")
    num_threads: int = Field(
        0, ge=0, description="solver threads; 0 = all cores (results do not depend on it)")

    search_space: ClassVar[SearchSpace] = {
        "factors": IntRange(16, 256, log=True), "reg": FloatRange(0.1, 200.0, log=True),
        "alpha": FloatRange(0.5, 30.0, log=True),
        # counts or behaviour weights as confidence (play counts, carts over views)
        "weighting": Choice(("binary", "weight", "count"))}


# reg / (1 + alpha) = RATIO x (head degree / 100)^HEAD_POWER x (history / 50)^HISTORY_POWER x a
# short-history factor (module docstring): SHORT_FACTOR up to SHORT_HISTORY items per user, 1
# from LONG_HISTORY on
RATIO, HEAD_POWER, HISTORY_POWER = 7.5, 0.4, 0.16
SHORT_FACTOR, SHORT_HISTORY, LONG_HISTORY = 0.013, 7.0, 20.0


def long_history_ratio(stats: DataStats) -> float:
    """reg / (1 + alpha) of the statistics rule without its short-history factor."""
    return float(RATIO * (max(stats.head_degree, 1.0) / 100.0) ** HEAD_POWER
                 * (max(stats.per_user, 1.0) / 50.0) ** HISTORY_POWER)


def als_settings(cfg: ALSConfig, stats: DataStats) -> dict[str, Any]:
    """factors, reg and alpha: the config's, or the data rule's where left as None."""
    alpha = cfg.alpha
    if alpha is None:
        alpha = round(log_interp(stats.per_user, (7.0, 20.0), (30.0, 3.0)), 2)
    reg = cfg.reg
    if reg is None:
        short = log_interp(stats.per_user, (SHORT_HISTORY, LONG_HISTORY), (SHORT_FACTOR, 1.0),
                           geometric=True)
        reg = round(float(long_history_ratio(stats) * short * (1.0 + alpha)), 2)
    factors = cfg.factors
    if factors is None:
        factors = 8 * round(log_interp(stats.n_items, (2000.0, 10000.0), (64.0, 256.0)) / 8)
    weighting = cfg.weighting or ("count" if stats.value_type == "counts" else "binary")
    return {"factors": factors, "reg": reg, "alpha": alpha, "weighting": weighting}


class ALS(EmbeddingModel, Recommender):
    """Implicit ALS. State: user factors U (n_users, f) and item factors V (n_items, f)."""

    name = "als"
    Config = ALSConfig
    config: ALSConfig

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        rng = options.generator
        cfg = self.config
        stats = DataStats.of(dataset)
        self.settings_ = st = self.data_settings(stats)
        x = dataset.matrix(st["weighting"]).tocsr().astype(np.float32)

        def fit(xm: sp.csr_matrix, alpha: float, reg: float) -> tuple[np.ndarray, np.ndarray]:
            return self._solve(xm, st["factors"], alpha, reg, rng)

        if cfg.alpha is None and cfg.reg is None:  # both left to the data: `als_select`
            chosen = select_alpha_reg(x, long_history_ratio(stats), fit, rng)
            if chosen is not None:
                st["alpha"], st["reg"], st["candidates"] = chosen
        self.U_, self.V_ = fit(x, st["alpha"], st["reg"])

    def _solve(self, x: sp.csr_matrix, factors: int, alpha: float, reg: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """implicit's conjugate-gradient ALS on rows x: float32 (U, V)."""
        from implicit.cpu.als import AlternatingLeastSquares  # heavy import, only when used

        cfg = self.config
        conf = x.copy()
        # implicit's solver takes the confidence itself (and treats p_ui = 1 where it is > 0)
        conf.data = (1.0 + alpha * conf.data).astype(np.float32)
        # BLAS threads inside implicit's solver slow it down badly; the solver's own threads
        # are independent per row, so the factors do not depend on num_threads.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=factors, regularization=reg, alpha=1.0, use_cg=True,
                iterations=cfg.iterations, calculate_training_loss=False,
                num_threads=cfg.num_threads, random_state=int(rng.integers(2**31 - 1)),
                dtype=np.float32)
            model.cg_steps = cfg.cg_steps  # not a constructor argument in implicit 0.7
            model.fit(conf, show_progress=False)
        return (np.ascontiguousarray(model.user_factors, dtype=np.float32),
                np.ascontiguousarray(model.item_factors, dtype=np.float32))

    def data_settings(self, stats: DataStats) -> dict[str, Any]:
        return als_settings(self.config, stats)

    def user_state(self) -> tuple[UserRows, ...]:
        return (UserRows(self.U_),)  # a forgotten user's factors become 0, the fold-in of []

    def _fold_in(self, histories: Sequences) -> np.ndarray:
        """B checked histories -> (B, f) float32 folded-in user factors (0 for an empty one)."""
        x = self._history_rows(histories, self._setting("weighting") or "binary")
        return fold_in(x, self.V_, self._setting("reg"), self._setting("alpha"))

    def _explain(self, user: int, seqs: Sequences, items: np.ndarray) -> Explanation:
        """implicit's explanation of the fold-in score (`lmrec.models.explanations.als`): the
        terms sum to the folded-in history's score, which the trained U[u] approximates."""
        hist = history_items(seqs)
        x = history_row_values(self, seqs, hist, self._setting("weighting") or "binary")
        return als_terms(self.V_, self._setting("reg"), self._setting("alpha"), hist, x, items)

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
