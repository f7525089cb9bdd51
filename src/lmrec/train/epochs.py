"""The epoch loop every iteratively trained model runs: `run_epochs(trainer, ...)`.

A model brings a small `Trainer` (LensKit's `ModelTrainer` in spirit): `train_epoch` runs one
pass over its data and returns the mean loss; `validate` returns a metric to early-stop on
(higher is better) or None; `snapshot`/`restore` keep the best state; `state_dict`/
`load_state_dict` make checkpoints. The loop owns everything that is the same for every model:
the epoch count, validation every `eval_every` epochs, early stopping after `patience`
validations without improvement with the best state restored, a wall-clock budget, per-epoch
checkpoints that `resume` continues from, the progress bar, and the history (one row per
epoch: epoch, loss, metric, lr, seconds, examples_per_s).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmrec.train import checkpoint as ckpt
from lmrec.train import distributed as D


@dataclass
class EpochStats:
    loss: float  # mean training loss of the epoch (over all ranks)
    examples: int  # training examples this rank processed
    lr: float | None = None  # learning rate used in the epoch


class Trainer(ABC):
    """One model's training state, advanced an epoch at a time by `run_epochs`."""

    @abstractmethod
    def train_epoch(self, epoch: int) -> EpochStats:
        """Run epoch `epoch` (0-based) and report it."""

    def validate(self) -> float | None:
        """The early-stopping metric now (higher is better); None: no validation."""
        return None

    def snapshot(self) -> Any:
        """A copy of the learned state, for restoring the best epoch."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep its best state")

    def restore(self, snapshot: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot restore a state")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (checkpoints)."""
        raise NotImplementedError(f"{type(self).__name__} cannot checkpoint")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot resume")


@dataclass
class LoopResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0  # 1-based epoch of the restored state (the last one without validation)
    best_metric: float | None = None
    stopped_early: bool = False  # by patience or by the time budget
    seconds: float = 0.0  # time spent in train_epoch
    examples: int = 0


def run_epochs(trainer: Trainer, *, epochs: int, patience: int | None = None,
               eval_every: int = 1, time_budget_s: float | None = None,
               checkpoint_dir: Path | None = None, resume: bool = False,
               title: str = "train", progress: bool = True, env: D.DistEnv | None = None,
               device: torch.device | None = None, seed: int | None = None) -> LoopResult:
    """Train `trainer` for up to `epochs` epochs; see the module docstring."""
    env = env or D.DistEnv()
    device = device or torch.device("cpu")
    t_start = time.perf_counter()
    history: list[dict[str, Any]] = []
    best_state: Any = None
    best_metric: float | None = None
    best_epoch, bad, start = 0, 0, 0
    stopped = False
    if resume and checkpoint_dir is not None:
        state = ckpt.load_checkpoint(checkpoint_dir)
        if state is not None:
            trainer.load_state_dict(state)
            history = list(state["history"])
            best_state = state["best_state"]
            best_metric = state["best_metric"]
            best_epoch, bad, start = state["best_epoch"], state["bad"], state["epoch"]
            stopped = state["stopped"]
    examples = 0
    t_train = 0.0
    with _progress(title, epochs, progress and env.is_main) as report:
        report(start, None)
        for epoch in range(start, epochs):
            if stopped:
                break
            t0 = time.perf_counter()
            stats = trainer.train_epoch(epoch)
            seconds = time.perf_counter() - t0
            examples += stats.examples
            t_train += seconds
            metric: float | None = None
            if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
                if env.is_main:
                    metric = trainer.validate()
                if metric is not None and (best_metric is None or metric > best_metric):
                    best_metric, best_epoch, bad = metric, epoch + 1, 0
                    best_state = trainer.snapshot()
                elif metric is not None:
                    bad += 1
                stopped = patience is not None and bad >= patience
            if time_budget_s is not None and time.perf_counter() - t_start >= time_budget_s:
                stopped = True
            stopped = D.broadcast_flag(stopped, env, device)
            history.append({"epoch": epoch + 1, "loss": stats.loss, "metric": metric,
                            "lr": stats.lr, "seconds": round(seconds, 4),
                            "examples_per_s": round(stats.examples * env.world_size / seconds, 1)
                            if seconds > 0 else None})
            if checkpoint_dir is not None and env.is_main:
                ckpt.save_checkpoint(checkpoint_dir, {
                    **trainer.state_dict(), "history": history, "best_state": best_state,
                    "best_metric": best_metric, "best_epoch": best_epoch, "bad": bad,
                    "epoch": epoch + 1, "stopped": stopped, "seed": seed})
            report(epoch + 1, history[-1])
    if best_state is not None:
        trainer.restore(best_state)
    else:
        best_epoch = len(history)
    if checkpoint_dir is not None and env.is_main and history:
        summary = {"best_epoch": best_epoch, "best_metric": best_metric, "seed": seed,
                   "stopped_early": stopped, "world_size": env.world_size}
        ckpt.write_history(checkpoint_dir, history, summary)
        ckpt.plot_curve(checkpoint_dir, history, title)
    return LoopResult(history, best_epoch, best_metric, stopped, t_train, examples)


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
