"""ADMM-SLIM: SLIM's sparse item-item weights, solved by ADMM with one closed-form inverse.

    B = argmin 1/2 ||X - X B||_F^2 + 1/2 sum_i l2_i ||B_i:||^2 + l1 |B|_1
        subject to diag(B) = 0 and (optionally) B >= 0
    score(u) = X[u] @ C        (C: the sparse, nonnegative copy of B that ADMM converges to)

Steck, Dimakopoulou, Riabov & Jebara, "ADMM SLIM: Sparse Recommendations for Many Users",
WSDM 2020. B carries the squared loss, the L2 term and the zero diagonal; C the L1 term and
the sign; Gamma is the dual variable of the constraint B = C. With D = diag(l2_i + rho) and
P = (X^T X + D)^-1 (inverted once), each iteration is

    B~ = P (X^T X + rho C - Gamma) = (I - P D) + P (rho C - Gamma)
    B  = B~ - P diag(diag(B~) / diag(P))        (the Lagrange step that zeroes diag(B))
    C  = max(0, soft_threshold(B + Gamma / rho, l1 / rho))
    Gamma += rho (B - C)

The halves are what these updates (the paper's) minimise (the tests check the minimiser against
a direct solve). l2_i = l2 * mean(x_i)^alpha penalises the weights *from* item i more when i is
popular, as RecBole's ADMMSLIM does (alpha = 0 gives the paper's plain l2).

One iteration is an epoch of the shared loop (`lmrec.train.epochs.run_epochs`, honouring the
options' time budget), its loss the relative primal residual ||B - C|| / ||C||; the loop ends
early once that and the relative dual residual rho ||C - C_prev|| / ||Gamma|| are both below
`tol` (Boyd et al.'s stopping rule). The iterations run in float32 (P from a float64 inverse):
the residuals level off near 1e-7, so a `tol` much below 1e-6 runs every iteration.
Everything is deterministic: no random draws.

Default l2, from the data: twice EASE's lambda rule (`ease.ease_l2`: 7 x the mean item degree
within [50, 500]), so 100 to 1,000. With alpha .5 the validation optimum was flat from 200 to
800 on ML-100K (best 800) and latest-small (best 100-200, 800 -1.8%), 800 on shop-100k and on
a dense synthetic set (200 lost 1.1% and 1.9% there); `benchmarks/data_defaults.py`,
BENCHMARKS.md "Data-aware defaults".
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from lmrec.data.dataset import Dataset
from lmrec.data.stats import DataStats
from lmrec.models.ease import ease_l2, spd_inverse
from lmrec.models.hyperparams import FloatRange, SearchSpace
from lmrec.models.slim import LinearItemConfig, LinearItemModel, check_dense_fits, trim_log
from lmrec.train.epochs import EpochStats, Trainer, run_epochs
from lmrec.train.options import TrainingOptions


class ADMMSLIMConfig(LinearItemConfig):
    # Defaults chosen on the validation parts of ML100K and ML latest-small (RecBole's protocol:
    # ratings >= 3, 10-core, random per-user 8:1:1, seed 0; fit on train, valid NDCG@10, mean of
    # the two; benchmarks/linear_models.py --grid admm-slim), rho 4000, 100 iterations.
    # ML100K, l2 100-2000 x alpha 0/.5/1: l1 30 .207-.220, l1 10 .225-.239, l1 .3/1/3
    # .234-.248 with no trend beyond noise. Both (ML100K / latest-small): RecBole's l1 3
    # l2 200 alpha .5 .2416/.2296; l1 1: l2 200 alpha .5 .2452/.2297, alpha 0 .2453/.2271; l2
    # 100 alpha 0 .2447/.2291; l2 500 alpha .5 .2453/.2284; l2 1000-2000 .2447-.2479/.2158-.2245
    # -> l1 1, l2 200, alpha .5. Iterations 30/50/100: .2462/.2289, .2460/.2306, .2452/.2297
    # -> 50 (half the fit time; the ranking is settled though the residuals still fall).
    l1: float = Field(1.0, ge=0, description="L1 penalty lambda1 on the weights")
    l2: float | None = Field(
        None, ge=0, description="L2 penalty lambda2 (scaled per item by alpha); None: from the "
        "data, twice EASE's lambda (module docstring)")
    alpha: float = Field(
        0.5, ge=0, description="l2_i = l2 * mean(x_i)^alpha: the weights from popular items are "
                               "penalised more (0: the same l2 for every item)")
    rho: float = Field(4000.0, gt=0, description="ADMM penalty on B = C (RecBole's)")
    iterations: int = Field(50, ge=1, description="ADMM iterations at most")
    tol: float = Field(1e-4, ge=0, description="stop once the relative primal and dual "
                                               "residuals are below tol (0: run all iterations)")
    positive_only: bool = Field(True, description="constrain the weights to be >= 0")

    search_space: ClassVar[SearchSpace] = {
        "l1": FloatRange(0.1, 100.0, log=True), "l2": FloatRange(10.0, 5000.0, log=True),
        "alpha": FloatRange(0.0, 1.0)}


class ADMMSLIM(LinearItemModel):
    """ADMM-SLIM. State: C (n_items, n_items) float32 as `B_`, zero diagonal."""

    name = "admm-slim"
    Config = ADMMSLIMConfig
    config: ADMMSLIMConfig

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        # peak: the float64 inversion (G, its factor, the inverse, the two triangles potri's
        # output is rebuilt from and their sum); the float32 iterations hold less (P, I - PD,
        # C, Gamma, B and a few temporaries)
        check_dense_fits(self.name, dataset.n_items, 48.0)
        x = self._matrix(dataset)  # (n_users, n_items)
        gram = (x.T @ x).toarray().astype(np.float64)  # (n_items, n_items)
        means = np.asarray(x.mean(axis=0), dtype=np.float64).ravel()  # (n_items,)
        self.settings_ = self.data_settings(DataStats.of(dataset))
        # (n_items,); alpha 0: l2 (0^0 = 1)
        penalty = self.settings_["l2"] * np.power(means, cfg.alpha)
        trainer = ADMMTrainer(gram, penalty, cfg.l1, cfg.rho, cfg.positive_only, cfg.tol)
        del gram
        result = run_epochs(trainer, epochs=cfg.iterations,
                            time_budget_s=options.time_budget_s, title=self.name,
                            progress=False)
        self.training_log_ = trim_log(result.history, trainer.steps)
        self._set_state(trainer.C, x)

    def data_settings(self, stats: DataStats) -> dict[str, Any]:
        l2 = self.config.l2
        return {"l2": l2 if l2 is not None else 2.0 * ease_l2(stats)}


class ADMMTrainer(Trainer):
    """ADMM-SLIM's iterations (module docstring) in float32, P from a float64 inverse.

    `gram` (X^T X, float64) is overwritten: its diagonal gets D, then it is inverted.
    """

    def __init__(self, gram: np.ndarray, penalty: np.ndarray, l1: float, rho: float,
                 positive: bool, tol: float) -> None:
        n = gram.shape[0]
        d = penalty + rho  # (n,) the diagonal D added to X^T X
        gram[np.diag_indices(n)] += d
        # X^T X + D is symmetric positive definite (rho > 0): a Cholesky inverse
        p = spd_inverse(gram)  # (n, n) float64
        self.P = p.astype(np.float32)
        # P (X^T X) = I - P D, which saves a product
        b_aux = -(p * d[None, :])
        b_aux[np.diag_indices(n)] += 1.0
        self.B_aux = b_aux.astype(np.float32)
        del p, b_aux
        self.diag_p = np.diag(self.P).copy()  # (n,)
        self.rho, self.threshold, self.positive, self.tol = rho, l1 / rho, positive, tol
        self.C = np.zeros((n, n), dtype=np.float32)
        self.Gamma = np.zeros((n, n), dtype=np.float32)
        self.steps = 0  # iterations run before convergence
        self.primal = float("inf")  # relative primal residual of the last iteration
        self.converged = False

    def train_epoch(self, epoch: int) -> EpochStats:
        if self.converged:  # the loop runs out its epoch count; nothing left to do
            return EpochStats(loss=self.primal, examples=0)
        self.steps += 1
        rho = self.rho
        b = self.P @ (rho * self.C - self.Gamma)  # (n, n)
        b += self.B_aux
        b -= self.P * (np.diag(b) / self.diag_p)[None, :]  # diag(B) = 0
        c = b + self.Gamma / rho
        if self.positive:
            c -= self.threshold
            np.maximum(c, 0.0, out=c)
        else:
            c = np.sign(c) * np.maximum(np.abs(c) - self.threshold, 0.0)
        resid = b - c  # (n, n)
        self.Gamma += rho * resid
        c_norm = max(float(np.linalg.norm(c)), 1e-12)
        self.primal = float(np.linalg.norm(resid)) / c_norm
        dual = rho * float(np.linalg.norm(c - self.C)) / max(float(np.linalg.norm(self.Gamma)),
                                                             1e-12)
        self.C = c
        self.converged = self.primal < self.tol and dual < self.tol
        return EpochStats(loss=self.primal, examples=int(c.shape[0]))


__all__ = ["ADMMSLIM", "ADMMSLIMConfig"]
