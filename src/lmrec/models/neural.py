"""`NeuralRecommender`: the bridge between the Recommender contract and `lmrec.train`.

A neural model subclasses it, sets `name` and `Config` (a `NeuralConfig`: the loop's
TrainConfig fields, flat, so `--param epochs=5` works, plus the model's own), implements
`_score(users, histories)` and `user_state()` (the Recommender contract), and these hooks:

    _prepare(dataset, x)          precompute from the training Dataset; `x` (n_users, n_items)
                                  CSR of behaviour weights is the part the loop trains on
    _build_module() -> nn.Module  a fresh torch module (sizes from self.users_ / self.items_ and
                                  what _prepare or _load_extra_arrays set)
    _extend_batch(users, items, rng) -> dict[str, np.ndarray]
                                  extra per-batch arrays, e.g. sampled negatives (optional)
    _loss(model, batch) -> Tensor the training loss; call model(...) for the forward pass
    _score_module(module, users) -> (B, n_items) float32 Tensor of training users, eval mode,
                                  no grad (holdout validation; `_module_scores` for `_score`)
    _extra_arrays() / _load_extra_arrays(arrays)
                                  non-module state to save (optional), restored before the
                                  module is rebuilt
    _after_load()                 once the module is in place, after fit as after load (e.g.
                                  to cache item vectors; optional)

Batches: the training pairs are the distinct (user, item) pairs of `x`, shuffled every epoch,
cut into `batch_size` slices {"user": (b,) int64, "item": (b,) int64, "weight": (b,) float32}
plus `_extend_batch`'s arrays.

Validation never touches the caller's validation or test data (`TrainingOptions.valid` is not
used). When `patience` is set, the model holds out a seeded `valid_share` of each user's
training pairs (users with at least `1 / valid_share` pairs, at least one pair each), trains on
the rest, computes NDCG@10 with full ranking on the holdout (the other training items masked;
`lmrec.train.validation.ranking_ndcg`) after every `eval_every` epochs, stops early and
restores the best epoch. With `refit=True` it then trains again from scratch on all training
pairs for the best number of epochs (within what is left of `time_budget_s`). Without
`patience` it trains on all pairs for `epochs` epochs (the defaults were chosen that way on a
validation split).

Schedule from the data. A subclass whose Config declares `epochs` and `batch_size` as
`int | None` (defaulting to None) gets them from the training set (`data_settings`): batch
size = training pairs / `STEPS_PER_EPOCH` (within [`MIN_BATCH`, `MAX_BATCH`]) and `EPOCHS`
epochs. A fixed batch size makes the number of optimiser steps grow with the data: a schedule
chosen on 65k pairs then runs ten times as many steps on 650k and lands somewhere else. The
constants are each model's (its module docstring says where they were chosen).

State: the module's state_dict is saved as numpy arrays ("state.<name>") in the model's npz,
so save/load is exact and needs no pickle. A fitted model rebuilds its module from those arrays
as a loaded one does (with `_prepare`'s arrays of every training pair), so fit and load score
alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BeforeValidator, Field
from torch import Tensor, nn

from lmrec.data.dataset import Dataset
from lmrec.data.stats import DataStats
from lmrec.models.base import Recommender
from lmrec.models.hyperparams import ModelConfig
from lmrec.train.config import TrainConfig
from lmrec.train.loop import TrainResult, seeded_torch, torch_threads, train
from lmrec.train.options import TrainingOptions
from lmrec.train.validation import ranking_ndcg

_STATE, _EXTRA = "state.", "extra."  # key prefixes of the module's weights / extra arrays


def _int_list(value: Any) -> Any:
    """CLI strings "128,64" / "128" / "" -> (128, 64) / (128,) / ()."""
    if isinstance(value, str):
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    return value


# layer sizes: a tuple of ints, also from a comma-separated string (`--param layers=128,64`)
IntTuple = Annotated[tuple[int, ...], BeforeValidator(_int_list)]


class NeuralConfig(TrainConfig, ModelConfig):
    """The loop's fields (see TrainConfig; `TrainConfig.of(config)` picks them out) plus
    holdout validation settings."""

    valid_share: float = Field(0.1, gt=0, lt=1, description="share of each user's training "
                               "pairs held out for early stopping (only when patience is set)")
    refit: bool = Field(False, description="after early stopping, retrain on all training "
                                           "pairs for the best number of epochs")


def holdout_split(x: sp.csr_matrix, share: float, rng: np.random.Generator
                  ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Per user, a random `share` of the pairs (floor, users with >= 1/share pairs) held out.

    Returns (fit, holdout), both (n_users, n_items) CSR with the weights of `x`.
    """
    x = sp.csr_matrix(x)
    counts = np.diff(x.indptr)
    users = np.repeat(np.arange(x.shape[0]), counts)
    # rank of each pair within its user under a random key, vectorised: sort by (user, key)
    key = rng.random(users.size)
    order = np.lexsort((key, users))
    rank = np.empty(users.size, dtype=np.int64)
    rank[order] = np.arange(users.size) - np.repeat(x.indptr[:-1], counts)
    n_hold = np.floor(counts * share).astype(np.int64)
    hold = rank < n_hold[users]
    coo = x.tocoo()
    # csr -> coo keeps the row-major order, so `hold` lines up with coo entries
    fit = sp.csr_matrix((coo.data[~hold], (coo.row[~hold], coo.col[~hold])), shape=x.shape)
    held = sp.csr_matrix((coo.data[hold], (coo.row[hold], coo.col[hold])), shape=x.shape)
    return fit, held


class _Task:
    """Adapts a NeuralRecommender to the loop's TrainTask protocol."""

    def __init__(self, model: NeuralRecommender, x: sp.csr_matrix,
                 holdout: sp.csr_matrix | None) -> None:
        self.model = model
        self.x = x
        self.holdout = holdout
        coo = x.tocoo()
        self.users = coo.row.astype(np.int64)
        self.items = coo.col.astype(np.int64)
        self.weights = coo.data.astype(np.float32)
        self.batch_size = model.settings_["batch_size"]

    def build_module(self) -> nn.Module:
        return self.model._build_module()

    def batches(self, epoch: int, rng: np.random.Generator) -> Iterator[dict[str, Tensor]]:
        order = rng.permutation(self.users.size)
        for s in range(0, order.size, self.batch_size):
            idx = order[s : s + self.batch_size]
            u, i = self.users[idx], self.items[idx]
            arrays = {"user": u, "item": i, "weight": self.weights[idx],
                      **self.model._extend_batch(u, i, rng)}
            yield {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return self.model._loss(model, batch)

    def validate(self, module: nn.Module) -> float | None:
        if self.holdout is None:
            return None
        return ranking_ndcg(lambda u: self.model._score_module(module, u),
                            np.arange(self.x.shape[0]), self.x, self.holdout)


class NeuralRecommender(Recommender):
    """Base of the torch models trained on user-item pairs; see the module docstring."""

    Config = NeuralConfig
    config: NeuralConfig
    # the schedule left to the data (module docstring, "Schedule from the data")
    STEPS_PER_EPOCH: int = 16
    EPOCHS: int = 20
    MIN_BATCH, MAX_BATCH = 256, 65536

    def data_settings(self, stats: DataStats) -> dict[str, Any]:
        cfg = self.config
        steps = self._steps_per_epoch(stats)
        batch = cfg.batch_size or int(np.clip(np.ceil(stats.n_interactions / steps),
                                              self.MIN_BATCH, self.MAX_BATCH))
        return {"epochs": cfg.epochs or self.EPOCHS, "batch_size": batch}

    def _steps_per_epoch(self, stats: DataStats) -> float:
        """Optimiser steps per epoch when the batch size is left to the data."""
        return float(self.STEPS_PER_EPOCH)

    # --- hooks ------------------------------------------------------------------------
    def _prepare(self, dataset: Dataset, x: sp.csr_matrix) -> None:
        """Precompute what the module and batches need from the training data."""

    def _build_module(self) -> nn.Module:
        raise NotImplementedError

    def _extend_batch(self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator
                      ) -> dict[str, np.ndarray]:
        return {}

    def _loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def _score_module(self, module: nn.Module, users: np.ndarray) -> Tensor:
        raise NotImplementedError

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _load_extra_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what `_extra_arrays` returned, before the module is rebuilt."""

    def _after_load(self) -> None:
        """Called once the module is in place, after fit and after load."""

    # --- Recommender ------------------------------------------------------------------
    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        rng = options.generator
        budget, t_start = options.time_budget_s, time.perf_counter()
        x = dataset.matrix("weight").tocsr()
        x.sum_duplicates()
        self.settings_ = schedule = self.data_settings(DataStats.of(dataset))
        fit_x, held = (x, None) if cfg.patience is None else holdout_split(
            x, cfg.valid_share, rng)
        self._prepare(dataset, fit_x)
        result = train(_Task(self, fit_x, held), TrainConfig.of(cfg, **schedule), rng,
                       title=self.name, time_budget_s=budget, device=options.device)
        if held is not None:
            self._prepare(dataset, x)  # score (and refit) with every training pair
            if cfg.refit:
                left = None if budget is None else max(
                    0.0, budget - (time.perf_counter() - t_start))
                result = train(_Task(self, x, None),
                               TrainConfig.of(cfg, **{**schedule,
                                                      "epochs": max(1, result.best_epoch)},
                                              patience=None, checkpoint_dir=None),
                               rng, title=self.name, time_budget_s=left, device=options.device)
        self.train_result_: TrainResult = result
        self.training_log_ = result.history
        self.module_ = result.module.to("cpu")
        self._load_arrays(self._arrays())  # the module as a loaded model has it

    def _module_scores(self, users: np.ndarray) -> np.ndarray:
        """(B, n_items) float32 scores of training users from the fitted module."""
        with torch.no_grad(), torch_threads(self.config.num_threads):
            out = self._score_module(self.module_, users)
        return out.numpy().astype(np.float32, copy=False)

    def _arrays(self) -> dict[str, np.ndarray]:
        state = {_STATE + k: v.detach().cpu().numpy()
                 for k, v in self.module_.state_dict().items()}
        return {**state, **{_EXTRA + k: v for k, v in self._extra_arrays().items()}}

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._load_extra_arrays({k.removeprefix(_EXTRA): v for k, v in arrays.items()
                                 if k.startswith(_EXTRA)})
        with seeded_torch(0, torch.device("cpu")):  # the initial values are overwritten
            module = self._build_module()
        module.load_state_dict({k.removeprefix(_STATE): torch.from_numpy(np.array(v))
                                for k, v in arrays.items() if k.startswith(_STATE)})
        self.module_ = module.eval()
        self._after_load()
