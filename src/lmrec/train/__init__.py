"""The shared training loop of lmrec's neural models: config, loop, losses, negatives.

See `lmrec.train.loop` for the task protocol and `lmrec.train.distributed` for torchrun runs.
"""

from lmrec.train.config import TRAIN_FIELDS, TrainConfig
from lmrec.train.distributed import DistEnv, dist_env
from lmrec.train.loop import TrainResult, TrainTask, resolve_device, seeded_torch, train
from lmrec.train.losses import (
    bce_loss,
    bpr_loss,
    full_softmax_loss,
    in_batch_softmax_loss,
    sampled_softmax_loss,
)
from lmrec.train.negatives import NegativeSampler, seen_keys

__all__ = [
    "TRAIN_FIELDS",
    "DistEnv",
    "NegativeSampler",
    "TrainConfig",
    "TrainResult",
    "TrainTask",
    "bce_loss",
    "bpr_loss",
    "dist_env",
    "full_softmax_loss",
    "in_batch_softmax_loss",
    "resolve_device",
    "sampled_softmax_loss",
    "seeded_torch",
    "seen_keys",
    "train",
]
