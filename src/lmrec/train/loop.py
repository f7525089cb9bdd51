"""One epoch loop for every iteratively trained model.

API::

    from lmrec.train import Trainer, TrainConfig, TrainTask, run_epochs, train

    class MyTrainer(Trainer):                        # any model with an epoch to run
        def train_epoch(self, epoch: int) -> EpochStats: ...   # one pass, mean loss
        def validate(self) -> float | None: ...      # optional, higher is better

    result = run_epochs(MyTrainer(...), epochs=40)   # BPR trains this way

    class MyTask:                                     # a torch model: the TrainTask protocol
        def build_module(self) -> nn.Module: ...      # called once, under the loop's seeded RNG
        def batches(self, epoch: int, rng: np.random.Generator
                    ) -> Iterable[dict[str, Tensor]]: ...   # the epoch's mini-batches
        def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor: ...
        def validate(self, module: nn.Module) -> float | None: ...  # higher is better

    result = train(MyTask(), TrainConfig(epochs=10, patience=3), rng)   # a TorchTrainer
    result.module, result.history, result.best_epoch, result.examples_per_s

`run_epochs` is the loop: epochs, validation every `eval_every` epochs with early stopping
after `patience` validations without improvement and the best state restored, a wall-clock
budget (it stops after the epoch that crosses it), a checkpoint after every epoch in
`checkpoint_dir` that `resume=True` continues from with the same result as an uninterrupted
run, a Rich progress bar (terminal only), and history.json plus curve.png in the run folder.

`TorchTrainer` runs a TrainTask: device choice (CUDA when present), optimizer, learning-rate
schedule (stepped per epoch), gradient clipping and distributed data parallelism.

Contract of a task:
  * `batches` draws all its randomness (order, negatives) from the Generator it is given, and
    every tensor of a batch has the examples along dim 0 (the loop counts examples from the
    first tensor). The trainer moves batches to the device.
  * `loss` must run the forward pass by calling `model(...)`: in a distributed run `model` is
    the DistributedDataParallel wrapper, whose forward arms the gradient all-reduce. The
    module may return anything from forward (scores, tower outputs); the loss reduces it.
  * `validate` gets the bare module in eval mode under torch.no_grad (rank 0 only) and
    returns the metric (e.g. NDCG@10 on a holdout), or None to skip early stopping.

Determinism: the seed (TrainConfig.seed, or drawn from the Generator passed in) seeds a private
numpy Generator for the batches and torch's RNG inside `torch.random.fork_rng`, so dropout and
initialisation are reproducible on CPU while the caller's global torch RNG state is left
untouched. Distributed runs: see `lmrec.train.distributed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from lmrec.train import checkpoint as ckpt
from lmrec.train import distributed as D
from lmrec.train.config import TrainConfig
from lmrec.train.epochs import EpochStats, Trainer, run_epochs


class TrainTask(Protocol):
    """What a model supplies to the loop (see the module docstring)."""

    def build_module(self) -> nn.Module: ...

    def batches(self, epoch: int, rng: np.random.Generator) -> Iterable[dict[str, Tensor]]: ...

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor: ...

    def validate(self, module: nn.Module) -> float | None: ...


@dataclass
class TrainResult:
    module: nn.Module  # the trained module (best weights when validated), eval mode, on device
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0  # 1-based epoch of the restored weights (the last one without validation)
    best_metric: float | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    examples: int = 0  # training examples processed (this rank)
    device: str = "cpu"

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0


def resolve_device(name: str, env: D.DistEnv | None = None) -> torch.device:
    """"auto" -> cuda (this rank's GPU) when available, else cpu."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", (env or D.DistEnv()).local_rank % max(1,
                        torch.cuda.device_count()))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` torch intra-op threads (0: leave as is), restoring the count afterwards."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """torch's RNG seeded with `seed` inside, the caller's RNG state restored afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed % (2**63))
        yield


def derive_seed(config: TrainConfig, rng: np.random.Generator | int | None) -> int:
    if config.seed is not None:
        return int(config.seed)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return int(gen.integers(0, 2**62))


def _optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer,
               cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs,
                                               gamma=cfg.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def _to(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _n_examples(batch: dict[str, Tensor]) -> int:
    first = next(iter(batch.values()), None)
    return int(first.shape[0]) if isinstance(first, Tensor) and first.dim() else 1


def train(task: TrainTask, config: TrainConfig | None = None,
          rng: np.random.Generator | int | None = None, *, title: str = "train",
          time_budget_s: float | None = None, device: str | None = None) -> TrainResult:
    """Train `task` as `config` says, through `run_epochs`; see the module docstring.

    `device` (a TrainingOptions value) overrides `config.device` when given.
    """
    cfg = config or TrainConfig()
    env = D.dist_env()
    dev = resolve_device(device or cfg.device, env)
    D.init_distributed(env, dev)
    seed = derive_seed(cfg, rng)
    with torch_threads(cfg.num_threads), seeded_torch(seed, dev):
        trainer = TorchTrainer(task, cfg, seed, env, dev)
        loop = run_epochs(trainer, epochs=cfg.epochs, patience=cfg.patience,
                          eval_every=cfg.eval_every, time_budget_s=time_budget_s,
                          checkpoint_dir=cfg.checkpoint_dir, resume=cfg.resume, title=title,
                          progress=cfg.progress, env=env, device=dev, seed=seed)
        module = trainer.module
        D.broadcast_module(module, env)
        module.eval()
    return TrainResult(module, loop.history, loop.best_epoch, loop.best_metric,
                       loop.stopped_early, loop.seconds, loop.examples, str(dev))


class TorchTrainer(Trainer):
    """A TrainTask's module with its optimizer and schedule, trained an epoch at a time."""

    def __init__(self, task: TrainTask, cfg: TrainConfig, seed: int, env: D.DistEnv,
                 device: torch.device) -> None:
        self.task, self.cfg, self.env, self.device = task, cfg, env, device
        self.batch_rng = np.random.default_rng(seed)
        self.module = task.build_module().to(device)
        self.opt = _optimizer(self.module.parameters(), cfg)
        self.sched = _scheduler(self.opt, cfg)
        self.model = D.wrap(self.module, env, device)

    def train_epoch(self, epoch: int) -> EpochStats:
        module, opt = self.module, self.opt
        module.train()
        batches = D.shard(list(self.task.batches(epoch, self.batch_rng)), self.env)
        loss_sum, n_seen = 0.0, 0
        for raw in batches:
            batch = _to(raw, self.device)
            opt.zero_grad(set_to_none=True)
            loss = self.task.loss(self.model, batch)
            loss.backward()
            if self.cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(module.parameters(), self.cfg.grad_clip)
            opt.step()
            n = _n_examples(batch)
            loss_sum += float(loss.detach()) * n
            n_seen += n
        lr = opt.param_groups[0]["lr"]
        self.sched.step()
        mean_loss = D.all_reduce_mean(loss_sum / max(n_seen, 1), self.env, self.device)
        return EpochStats(mean_loss, n_seen, lr)

    def validate(self) -> float | None:
        self.module.eval()
        with torch.no_grad():
            return self.task.validate(self.module)

    def snapshot(self) -> dict[str, Tensor]:
        return ckpt.clone_state(self.module)

    def restore(self, snapshot: dict[str, Tensor]) -> None:
        self.module.load_state_dict(snapshot)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "numpy_rng": self.batch_rng.bit_generator.state,
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.batch_rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
