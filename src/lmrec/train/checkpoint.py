"""Checkpoints and run records of the training loop.

A checkpoint is one `checkpoint.pt` written with `torch.save` holding only tensors, plain dicts,
lists, numbers, strings and None, so `torch.load(..., weights_only=True)` reads it back (no
arbitrary pickle). It holds the module and optimizer/scheduler states, the numpy Generator
state, the torch RNG state, the history and the early-stopping bookkeeping. The file is
written to a temporary name and renamed, so an interrupted save never leaves a broken file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
CURVE = "curve.png"


def save_checkpoint(folder: Path, state: Mapping[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT
    tmp = folder / (CHECKPOINT + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The saved state, or None when the folder holds no checkpoint."""
    path = folder / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the module's state_dict (for best weights)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def write_history(folder: Path, history: Sequence[Mapping[str, Any]],
                  summary: Mapping[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / HISTORY
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
              for k, v in row.items()} for row in history]
    path.write_text(json.dumps({"history": clean, **dict(summary or {})}, indent=2))
    return path


def plot_curve(folder: Path, history: Sequence[Mapping[str, Any]], title: str = "") -> Path:
    """Training loss and validation metric per epoch as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(epochs, [r["loss"] for r in history], color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:blue")
    val = [(r["epoch"], r["metric"]) for r in history if r.get("metric") is not None]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), color="tab:orange", marker="o", label="validation")
        ax2.set_ylabel("validation metric", color="tab:orange")
    ax.set_title(title or "training curve")
    fig.tight_layout()
    path = folder / CURVE
    fig.savefig(path)
    plt.close(fig)
    return path
