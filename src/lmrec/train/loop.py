"""One training loop for every neural model.

API::

    from lmrec.train import TrainConfig, TrainTask, train

    class MyTask:                                     # satisfies the TrainTask protocol
        def build_module(self) -> nn.Module: ...      # called once, under the loop's seeded RNG
        def batches(self, epoch: int, rng: np.random.Generator
                    ) -> Iterable[dict[str, Tensor]]: ...   # the epoch's mini-batches
        def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor: ...
        def validate(self, module: nn.Module) -> float | None: ...  # higher is better

    result = train(MyTask(), TrainConfig(epochs=10, patience=3), rng)
    result.module, result.history, result.best_epoch, result.examples_per_s

Contract of a task:
  * `batches` draws all its randomness (order, negatives) from the Generator it is given, and
    every tensor of a batch has the examples along dim 0 (the loop counts examples from the
    first tensor). The loop moves batches to the device.
  * `loss` must run the forward pass by calling `model(...)`: in a distributed run `model` is
    the DistributedDataParallel wrapper, whose forward arms the gradient all-reduce. The
    module may return anything from forward (scores, tower outputs); the loss reduces it.
  * `validate` gets the bare module in eval mode under torch.no_grad (rank 0 only) and
    returns the metric (e.g. NDCG@10 on a holdout), or None to skip early stopping.

The loop does the rest: device choice (CUDA when present), optimizer, learning-rate schedule
(stepped per epoch), gradient clipping, validation every `eval_every` epochs with early
stopping after `patience` validations without improvement and the best weights restored,
a checkpoint after every epoch in `checkpoint_dir` that `resume=True` continues from with the
same result as an uninterrupted run, a Rich progress bar (terminal only), and history.json
plus curve.png in the run folder. Determinism: the seed (TrainConfig.seed, or drawn from the
Generator passed in) seeds a private numpy Generator for the batches and torch's RNG inside
`torch.random.fork_rng`, so dropout and initialisation are reproducible on CPU while the
caller's global torch RNG state is left untouched. Distributed runs: see
`lmrec.train.distributed`.
"""

from __future__ import annotations

import time
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
          rng: np.random.Generator | int | None = None, *, title: str = "train") -> TrainResult:
    """Train `task` as `config` says; see the module docstring."""
    cfg = config or TrainConfig()
    env = D.dist_env()
    device = resolve_device(cfg.device, env)
    D.init_distributed(env, device)
    seed = derive_seed(cfg, rng)
    with torch_threads(cfg.num_threads), seeded_torch(seed, device):
        return _train(task, cfg, seed, env, device, title)


def _train(task: TrainTask, cfg: TrainConfig, seed: int, env: D.DistEnv,
           device: torch.device, title: str) -> TrainResult:
    batch_rng = np.random.default_rng(seed)
    module = task.build_module().to(device)
    opt = _optimizer(module.parameters(), cfg)
    sched = _scheduler(opt, cfg)
    history: list[dict[str, Any]] = []
    best_state: dict[str, Tensor] | None = None
    best_metric: float | None = None
    best_epoch = 0
    bad = 0
    start = 0
    stopped = False
    run_dir = cfg.checkpoint_dir
    if cfg.resume and run_dir is not None:
        state = ckpt.load_checkpoint(run_dir)
        if state is not None:
            module.load_state_dict(state["module"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            batch_rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            history = list(state["history"])
            best_state = state["best_state"]
            best_metric = state["best_metric"]
            best_epoch, bad, start = state["best_epoch"], state["bad"], state["epoch"]
            stopped = state["stopped"]
    model = D.wrap(module, env, device)
    examples = 0
    t_train = 0.0
    with _progress(title, cfg.epochs, cfg.progress and env.is_main) as report:
        report(start, None)
        for epoch in range(start, cfg.epochs):
            if stopped:
                break
            t0 = time.perf_counter()
            module.train()
            batches = D.shard(list(task.batches(epoch, batch_rng)), env)
            loss_sum, n_seen = 0.0, 0
            for raw in batches:
                batch = _to(raw, device)
                opt.zero_grad(set_to_none=True)
                loss = task.loss(model, batch)
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
                opt.step()
                n = _n_examples(batch)
                loss_sum += float(loss.detach()) * n
                n_seen += n
            lr = opt.param_groups[0]["lr"]
            sched.step()
            seconds = time.perf_counter() - t0
            examples += n_seen
            t_train += seconds
            mean_loss = D.all_reduce_mean(loss_sum / max(n_seen, 1), env, device)
            metric: float | None = None
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                if env.is_main:
                    module.eval()
                    with torch.no_grad():
                        metric = task.validate(module)
                if metric is not None and (best_metric is None or metric > best_metric):
                    best_metric, best_epoch, bad = metric, epoch + 1, 0
                    best_state = ckpt.clone_state(module)
                elif metric is not None:
                    bad += 1
                stopped = cfg.patience is not None and bad >= cfg.patience
            stopped = D.broadcast_flag(stopped, env, device)
            history.append({"epoch": epoch + 1, "loss": mean_loss, "metric": metric, "lr": lr,
                            "seconds": round(seconds, 4),
                            "examples_per_s": round(n_seen * env.world_size / seconds, 1)
                            if seconds > 0 else None})
            if run_dir is not None and env.is_main:
                ckpt.save_checkpoint(run_dir, {
                    "module": module.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "numpy_rng": batch_rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "history": history,
                    "best_state": best_state, "best_metric": best_metric,
                    "best_epoch": best_epoch, "bad": bad, "epoch": epoch + 1,
                    "stopped": stopped, "seed": seed})
            report(epoch + 1, history[-1])
    if best_state is not None:
        module.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    D.broadcast_module(module, env)
    module.eval()
    if run_dir is not None and env.is_main and history:
        summary = {"best_epoch": best_epoch, "best_metric": best_metric, "seed": seed,
                   "stopped_early": stopped, "world_size": env.world_size}
        ckpt.write_history(run_dir, history, summary)
        ckpt.plot_curve(run_dir, history, title)
    return TrainResult(module, history, best_epoch, best_metric, stopped, t_train, examples,
                       str(device))


@contextmanager
def _progress(title: str, epochs: int, enabled: bool) -> Iterator[Any]:
    """A Rich bar over epochs showing the loss and validation metric (terminal only)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lmrec.console import err

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=err, transient=False,
                        disable=not (enabled and err.is_terminal))
    with progress:
        bar = progress.add_task(title, total=epochs, info="")

        def report(done: int, row: dict[str, Any] | None) -> None:
            info = ""
            if row is not None:
                info = f"loss {row['loss']:.4f}"
                if row.get("metric") is not None:
                    info += f"  valid {row['metric']:.4f}"
            progress.update(bar, completed=done, info=info)

        yield report
