"""Training: the options every fit gets, the one epoch loop, torch trainers, losses, negatives.

See `lmrec.train.epochs` for the loop and the Trainer contract, `lmrec.train.loop` for the
torch task protocol and `lmrec.train.distributed` for torchrun runs.
"""

from lmrec.train.config import TrainConfig
from lmrec.train.distributed import DistEnv, dist_env
from lmrec.train.epochs import EpochStats, LoopResult, Trainer, run_epochs
from lmrec.train.loop import (
    TorchTrainer,
    TrainResult,
    TrainTask,
    resolve_device,
    seeded_torch,
    train,
)
from lmrec.train.losses import (
    bce_loss,
    bpr_loss,
    full_softmax_loss,
    in_batch_softmax_loss,
    sampled_softmax_loss,
)
from lmrec.train.negatives import NegativeSampler, seen_keys
from lmrec.train.options import TrainingOptions

__all__ = [
    "DistEnv",
    "EpochStats",
    "LoopResult",
    "NegativeSampler",
    "TorchTrainer",
    "TrainConfig",
    "TrainResult",
    "TrainTask",
    "Trainer",
    "TrainingOptions",
    "bce_loss",
    "bpr_loss",
    "dist_env",
    "full_softmax_loss",
    "in_batch_softmax_loss",
    "resolve_device",
    "run_epochs",
    "sampled_softmax_loss",
    "seeded_torch",
    "seen_keys",
    "train",
]
