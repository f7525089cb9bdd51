"""torch.distributed scale-out of the training loop.

Run any script that calls `lmrec.train.train` (or fits a NeuralRecommender) under

    torchrun --nproc_per_node N script.py

and the loop notices the RANK / WORLD_SIZE / LOCAL_RANK variables: it joins the process group
(gloo on CPU, nccl on GPU), wraps the module in DistributedDataParallel, and gives every rank
its shard of each epoch's batches (batch i goes to rank i mod N; the batch list is cut to a
multiple of N so that every rank makes the same number of steps, which DDP's collective
gradient averaging needs). All ranks draw the same batches from the same seeded Generator, so
no data has to be sent around. Rank 0 alone validates, checkpoints, prints and writes the run
folder; its early-stopping decision and its best weights are broadcast to the other ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """The process's place in a torchrun job, from RANK / WORLD_SIZE / LOCAL_RANK (default 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    return DistEnv(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(env: DistEnv, device: torch.device) -> None:
    """Join the process group once (nccl for CUDA, gloo otherwise)."""
    if env.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def wrap(module: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `module` in a distributed run, else `module` itself."""
    if not env.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    # buffers are not re-broadcast every step: ranks start from rank 0's state (DDP syncs it
    # at construction), and lmrec's modules keep only constant feature tables in buffers
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def shard(batches: list[Any], env: DistEnv) -> list[Any]:
    """This rank's batches: i mod world_size == rank, over a multiple of world_size batches."""
    if not env.enabled:
        return batches
    usable = (len(batches) // env.world_size) * env.world_size
    if usable == 0:  # fewer batches than ranks: everyone trains on all (gradients still agree)
        return batches
    return batches[env.rank : usable : env.world_size]


def broadcast_flag(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """Rank 0's boolean, on every rank."""
    if not env.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_module(module: nn.Module, env: DistEnv) -> None:
    """Copy rank 0's parameters and buffers to every rank (e.g. the restored best weights)."""
    if not env.enabled:
        return
    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def all_reduce_mean(value: float, env: DistEnv, device: torch.device) -> float:
    """Mean of a float over the ranks (for logging the training loss)."""
    if not env.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / env.world_size
