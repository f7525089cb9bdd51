"""Bayesian Personalized Ranking matrix factorisation (Rendle et al., UAI 2009).

For each observed (u, i) and an item j the user has not interacted with, maximise
log sigmoid(s_ui - s_uj), with s_ui = U_u . V_i + b_i, by mini-batch Adam in torch (hand-written
gradients, torch's fused Adam kernel, the learning rate decayed along half a cosine; the fast
path is described in `lmrec.models.bpr_trainer`).

Negatives are drawn uniformly from the items the user has not seen (vectorised rejection
sampling), one per positive per epoch, as RecBole does. All randomness (initialisation, order,
negatives) comes from the numpy Generator of `fit`'s options, so the result is reproducible
without touching torch's global seed, and does not depend on the thread count. Training runs
in the shared epoch loop (`lmrec.train.epochs.run_epochs`, through `BPRTrainer`), which also
honours the options' time budget (a fit stopped by it ends before its learning rate has
decayed); its per-epoch history is kept as `training_log_`, the epochs and batch size it ran
with as `settings_`.

Defaults. Chosen on the validation part (NDCG@10, full ranking, train items masked, trained
user vectors) of random per-user 8:1:1 splits of ML-100K and ML latest-small (ratings >= 3,
10-core; three seeds each), Amazon Beauty (5-core) and three Zipf low-rank synthetic sets
(`benchmarks/bpr_speed.py`: 116k, 378k and 1.0M training interactions; 116, 49 and 290 per
item), and checked on Amazon Sports, left out:
- batch size = interactions / 32 (at least 64): 32 Adam steps per epoch whatever the data's
  size. With the earlier fixed batch of 2048 the steps grow with the data and the fit runs past
  its best: on the 1M set valid .2405 after 40 epochs (at most .2430 at any epoch up to 80)
  against .2814 with batches of 32k;
- learning rate .01 decayed along half a cosine (earlier .005, constant): valid ML-100K .2407
  vs .2301 at 40 epochs, latest-small .1952 vs .1849 (means of three seeds), 1M set .2872 vs
  .2814; .02 was no better;
- epochs: 60 up to 50 interactions per item, 40 from 120 on, log-linear in between. The dense
  sets overfit sooner (valid at 40 / 60 epochs: 1M set .2872 / .2679, 116k set .2772 / .2696),
  the sparse ones later (Beauty .0378 / .0400, 378k set .1184 / .1237, latest-small .1952 /
  .1995); ML-100K (64 per item, 54 epochs) is flat from 40 to 100;
- reg 1e-2, 64 factors, init std .01, item bias: as chosen before on ML-100K.
Left out, Amazon Sports (12 interactions per item: 60 epochs, batches of 6,892): valid .0266
against .0267 for the best of epochs 40/60/80 x lr .005/.01/.02, and .0211 with the earlier
defaults. On RecBole's protocol (test, seed 0) ML-100K went from .2868 to .2978 and
latest-small from .2095 to .2238.

Any item history is scored by folding it in (`score(users, histories)`). BPR has no
closed-form user step, so the fold-in is amortised: a ridge regression W, fitted once on the
training users, maps the mean [V_i, b_i] over a history's items (plus a constant) to a user
vector, u_h = [mean V, mean b, 1] @ W. On MovieLens 100K (ratings >= 3, 10-core, random 80:20
split) it ranks the held-out items as well as the trained user vectors (NDCG@10 .386 vs .378)
and shares 81% of their top 10; an ALS-style least-squares solve on V reached .31, and
optimising the BPR loss for u on every (history, non-history) pair .406 on 60 users at a cost
far too high to serve. An empty history carries no evidence and folds in to the zero user
vector (not W's intercept), so it scores the item bias b alone: exactly what an unknown user
gets and what a forgotten user (whose row of U is zeroed) scores. The model is an
`EmbeddingModel` with the item bias as one more dimension: user vector [u, 1], item vector
[V_i, b_i].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from lmrec.data.dataset import Dataset, Sequences
from lmrec.data.stats import DataStats, log_interp
from lmrec.models.base import Recommender
from lmrec.models.bpr_trainer import BPRTrainer
from lmrec.models.history import fit_linear_fold_in, history_matrix, mean_item_features
from lmrec.models.hyperparams import FloatRange, IntRange, ModelConfig, SearchSpace
from lmrec.models.kinds import EmbeddingModel
from lmrec.models.redaction import UserRows
from lmrec.train.epochs import run_epochs
from lmrec.train.loop import torch_threads
from lmrec.train.options import TrainingOptions

STEPS_PER_EPOCH = 32  # Adam steps per pass when the batch size is left to the data
MIN_BATCH = 64
# epochs left to the data: EPOCHS_SPARSE up to SPARSE_DEGREE interactions per item, EPOCHS_DENSE
# from DENSE_DEGREE on, log-linear in between (module docstring, "Defaults")
EPOCHS_SPARSE, EPOCHS_DENSE = 60, 40
SPARSE_DEGREE, DENSE_DEGREE = 50.0, 120.0


class BPRConfig(ModelConfig):
    # How the defaults were chosen: module docstring, "Defaults".
    factors: int = Field(64, ge=1, description="latent dimension")
    epochs: int | None = Field(
        None, ge=1, description=f"passes over the observed interactions (None: from "
                                f"{EPOCHS_SPARSE} down to {EPOCHS_DENSE} as the interactions "
                                f"per item rise from {SPARSE_DEGREE:g} to {DENSE_DEGREE:g})")
    batch_size: int | None = Field(
        None, ge=1, description=f"(user, positive, negative) triples per Adam step (None: the "
                                f"interactions / {STEPS_PER_EPOCH}, at least {MIN_BATCH})")
    lr: float = Field(0.01, gt=0, description="Adam's (peak) learning rate")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "cosine", description="the learning rate over the steps: constant, or decayed "
                              "linearly or along half a cosine towards 0")
    reg: float = Field(1e-2, ge=0, description="L2 penalty on the embeddings of each triple")
    item_bias: bool = Field(True, description="learn a per-item bias b_i")
    init_std: float = Field(0.01, gt=0, description="std of the normal initialisation")
    threads: int = Field(
        1, ge=0, description="torch threads while training (0: torch's setting); on 2 shared "
                             "cores a second one did not help; results do not depend on it")

    search_space: ClassVar[SearchSpace] = {
        "epochs": IntRange(10, 80), "lr": FloatRange(1e-3, 2e-2, log=True),
        "reg": FloatRange(1e-4, 1e-1, log=True)}


def bpr_schedule(cfg: BPRConfig, n_interactions: int, n_items: int) -> dict[str, int]:
    """The epochs and batch size a fit runs with: the config's, or the data rule's (module
    docstring, "Defaults") for those left as None."""
    batch = cfg.batch_size or max(MIN_BATCH, -(-n_interactions // STEPS_PER_EPOCH))
    epochs = cfg.epochs
    if epochs is None:
        degree = max(n_interactions, 1) / max(n_items, 1)
        epochs = round(log_interp(degree, (SPARSE_DEGREE, DENSE_DEGREE),
                                  (EPOCHS_SPARSE, EPOCHS_DENSE)))
    return {"epochs": epochs, "batch_size": batch}


class BPR(EmbeddingModel, Recommender):
    """BPR-MF. State: U (n_users, f), V (n_items, f), b (n_items,)."""

    name = "bpr"
    Config = BPRConfig
    config: BPRConfig

    def data_settings(self, stats: DataStats) -> dict[str, Any]:
        return bpr_schedule(self.config, stats.n_interactions, stats.n_items)

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        x = dataset.matrix("binary").tocsr()
        self.settings_ = schedule = self.data_settings(DataStats.of(dataset))
        trainer = BPRTrainer(cfg, x, options.generator, batch_size=schedule["batch_size"],
                             lr=cfg.lr, epochs=schedule["epochs"])
        with torch_threads(cfg.threads):
            result = run_epochs(trainer, epochs=schedule["epochs"],
                                time_budget_s=options.time_budget_s, title=self.name,
                                progress=False)
        self.training_log_ = result.history
        n_users = trainer.n_users
        self.U_ = trainer.table[:n_users].numpy().copy()
        self.V_ = trainer.table[n_users:].numpy().copy()
        self.b_ = trainer.bias.numpy().copy()
        self._fit_fold_in()

    def user_state(self) -> tuple[UserRows, ...]:
        # a forgotten user's vector becomes 0: scores b, as an empty history (module docstring)
        return (UserRows(self.U_),)

    def _fit_fold_in(self) -> None:
        # derived from U, V, b and the seen items alone, so it is not saved but rebuilt after
        # fit and load (redact_users reloads); the item side is cached for per-call scoring
        self.item_side_ = np.hstack([self.V_, self.b_[:, None]]).astype(np.float32)  # (n, f+1)
        self.item_side64_ = self.item_side_.astype(np.float64)
        self.fold_in_ = fit_linear_fold_in(self.seen_, self.item_side64_, self.U_)

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        if histories is None:  # trained users: U V^T + b, the product of the embeddings
            return self.U_[users] @ self.V_.T + self.b_[None, :]  # (B, n_items)
        return super()._score(users, histories)  # (B, f + 1) @ (f + 1, n_items)

    def _fold_in(self, histories: Sequences) -> np.ndarray:
        """B checked histories -> (B, f + 1) float32: [u_h, 1]; u_h = 0 for an empty one."""
        x = history_matrix(histories, self.n_items)
        u = mean_item_features(x, self.item_side64_) @ self.fold_in_  # (B, f)
        u[histories.lengths() == 0] = 0.0  # no evidence: the unknown user's vector
        return np.hstack([u, np.ones((u.shape[0], 1))]).astype(np.float32)

    # --- EmbeddingModel ---------------------------------------------------------------
    def item_embeddings(self) -> np.ndarray:
        """(n_items, f + 1) float32: [V_i, b_i]."""
        self._check_fitted()
        return self.item_side_

    def user_embeddings(self, users: np.ndarray,
                        histories: Sequences | Sequence[np.ndarray] | None = None
                        ) -> np.ndarray:
        """(B,) internal users -> (B, f + 1) float32 [u, 1]: without histories u = U[u] (0 for
        an unknown user, -1, as for an empty history); with B histories u is folded in from
        each (see the module docstring), whoever the users are."""
        users, seqs = self._checked_query(users, histories)
        if seqs is not None:
            return self._fold_in(seqs)
        u = self.U_[np.maximum(users, 0)]
        u[users < 0] = 0.0
        return np.hstack([u, np.ones((u.shape[0], 1), np.float32)])

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"U": self.U_, "V": self.V_, "b": self.b_}

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.U_, self.V_, self.b_ = arrays["U"], arrays["V"], arrays["b"]
        self._fit_fold_in()
