"""`NeuralRecommender`: the bridge between the Recommender contract and `lmrec.train`.

A neural model subclasses it, sets `name` and `Config` (a `NeuralConfig`: the loop's
TrainConfig fields, flat, so `--param epochs=5` works, plus the model's own), and implements:

    _prepare(dataset, x)          precompute from the training Dataset; `x` (n_users, n_items)
                                  CSR of behaviour weights is the part the loop trains on
    _build_module() -> nn.Module  a fresh torch module (sizes from self.users_ / self.items_ and
                                  what _prepare or _load_extra_arrays set)
    _extend_batch(users, items, rng) -> dict[str, np.ndarray]
                                  extra per-batch arrays, e.g. sampled negatives (optional)
    _loss(model, batch) -> Tensor the training loss; call model(...) for the forward pass
    _score_module(module, user_idx) -> (B, n_items) float32 Tensor, eval mode, no grad
    _extra_arrays() / _load_extra_arrays(arrays)
                                  non-module state to save (optional)

Batches: the training pairs are the distinct (user, item) pairs of `x`, shuffled every epoch,
cut into `batch_size` slices {"user": (b,) int64, "item": (b,) int64, "weight": (b,) float32}
plus `_extend_batch`'s arrays.

Validation never touches the caller's validation or test data. When `patience` is set, the
model holds out a seeded `valid_share` of each user's training pairs (users with at least
`1 / valid_share` pairs, at least one pair each), trains on the rest, computes NDCG@10 with full
ranking on the holdout (the other training items masked) after every `eval_every` epochs,
stops early and restores the best epoch. With `refit=True` it then trains again from scratch
on all training pairs for the best number of epochs. Without `patience` it trains on all
pairs for `epochs` epochs (the defaults were chosen that way on a validation split).

State: the module's state_dict is saved as numpy arrays ("state.<name>") in the model's npz,
so save/load is exact and needs no pickle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BeforeValidator, Field
from torch import Tensor, nn

from lmrec.data.dataset import Dataset
from lmrec.evaluate import metrics as M
from lmrec.models.base import Recommender
from lmrec.models.hyperparams import ModelConfig
from lmrec.train.config import TRAIN_FIELDS, TrainConfig
from lmrec.train.loop import TrainResult, seeded_torch, torch_threads, train

_SCORE_BATCH = 512  # users scored per module call during validation


def _int_list(value: Any) -> Any:
    """CLI strings "128,64" / "128" / "" -> (128, 64) / (128,) / ()."""
    if isinstance(value, str):
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    return value


# layer sizes: a tuple of ints, also from a comma-separated string (`--param layers=128,64`)
IntTuple = Annotated[tuple[int, ...], BeforeValidator(_int_list)]


class NeuralConfig(TrainConfig, ModelConfig):
    """The loop's fields (see TrainConfig) plus holdout validation settings."""

    valid_share: float = Field(0.1, gt=0, lt=1, description="share of each user's training "
                               "pairs held out for early stopping (only when patience is set)")
    refit: bool = Field(False, description="after early stopping, retrain on all training "
                                           "pairs for the best number of epochs")

    def train_config(self, **override: Any) -> TrainConfig:
        values = {k: getattr(self, k) for k in TRAIN_FIELDS}
        values.update(override)
        return TrainConfig(**values)


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


def ndcg_at_k(scores_fn: Any, fit: sp.csr_matrix, truth: sp.csr_matrix, k: int = 10,
              batch: int = _SCORE_BATCH) -> float:
    """Mean NDCG@k over users with truth items; `scores_fn(users) -> (B, n_items)` Tensor."""
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    if users.size == 0:
        return float("nan")
    vals = []
    for s in range(0, users.size, batch):
        ub = users[s : s + batch]
        scores = scores_fn(ub).float().cpu()  # (B, n_items)
        sub = fit[ub].tocoo()
        scores[torch.from_numpy(sub.row.astype(np.int64)),
               torch.from_numpy(sub.col.astype(np.int64))] = float("-inf")
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.numpy()  # (B, k)
        t = truth[ub]
        per = M.accuracy_from_hits(M.hit_matrix(top, t), np.diff(t.indptr), [k])
        vals.append(per[f"ndcg@{k}"])
    return float(np.nanmean(np.concatenate(vals)))


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
        self.batch_size = model.config.batch_size

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
        return ndcg_at_k(lambda u: self.model._score_module(module, u), self.x, self.holdout)


class NeuralRecommender(Recommender):
    """Base of the torch models; see the module docstring for the hooks."""

    Config = NeuralConfig
    config: NeuralConfig

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

    def _score_module(self, module: nn.Module, user_idx: np.ndarray) -> Tensor:
        raise NotImplementedError

    def _after_fit(self, dataset: Dataset, x: sp.csr_matrix) -> None:
        """Called with all training pairs once the module is trained (e.g. to cache vectors)."""

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _load_extra_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what `_extra_arrays` returned, before the module is rebuilt."""

    # --- Recommender ------------------------------------------------------------------
    def _fit(self, dataset: Dataset, rng: np.random.Generator) -> None:
        cfg = self.config
        x = dataset.matrix("weight").tocsr()
        x.sum_duplicates()
        if cfg.patience is not None:
            fit_x, held = holdout_split(x, cfg.valid_share, rng)
        else:
            fit_x, held = x, None
        self._prepare(dataset, fit_x)
        result = train(_Task(self, fit_x, held), cfg.train_config(), rng, title=self.name)
        if held is not None and cfg.refit:
            self._prepare(dataset, x)
            result = train(_Task(self, x, None),
                           cfg.train_config(epochs=max(1, result.best_epoch), patience=None,
                                            checkpoint_dir=None), rng, title=self.name)
        elif held is not None:
            self._prepare(dataset, x)  # score with every training pair (e.g. full histories)
        self.train_result_: TrainResult = result
        self.history_ = result.history
        self.module_ = result.module.to("cpu").eval()
        self._after_fit(dataset, x)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        with torch.no_grad(), torch_threads(self.config.num_threads):
            out = self._score_module(self.module_, user_idx)
        return out.numpy().astype(np.float32, copy=False)

    def _arrays(self) -> dict[str, np.ndarray]:
        state = {f"state.{k}": v.detach().cpu().numpy()
                 for k, v in self.module_.state_dict().items()}
        return {**state, **{f"extra.{k}": v for k, v in self._extra_arrays().items()}}

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._load_extra_arrays({k[6:]: v for k, v in arrays.items() if k.startswith("extra.")})
        with seeded_torch(0, torch.device("cpu")):  # the initial values are overwritten
            module = self._build_module()
        module.load_state_dict({k[6:]: torch.from_numpy(np.array(v))
                                for k, v in arrays.items() if k.startswith("state.")})
        self.module_ = module.eval()
        self._after_load()

    def _after_load(self) -> None:
        """Called once a loaded module is in place (e.g. to cache item vectors)."""
