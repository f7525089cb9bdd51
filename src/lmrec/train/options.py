"""`TrainingOptions`: what every `fit` gets besides the training data.

Hyperparameters live in each model's typed config; these are the run's circumstances, the same
for every model (as LensKit's `TrainingOptions`):

    rng            the random source: a numpy Generator, a seed, or None (fresh entropy). `fit`
                   resolves it once, so a model draws everything from one Generator.
    device         "auto" | "cpu" | "cuda" for torch models; None keeps the model config's.
    valid          a validation Dataset sharing the training vocabularies (a Split's valid
                   part) that models which early-stop on it may use; never the test part.
    time_budget_s  wall-clock seconds the epoch loop may spend; it stops after the epoch that
                   crosses the budget (closed-form models finish regardless).
    teacher        a fitted model to distil from: sequential models add a KL term to its
                   softmax to their loss (`lmrec.models.distill`); never saved with the model.

A model that has no use for an option ignores it: the options describe the run, they do not
tell the model what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from lmrec.errors import ConfigError, InputError

if TYPE_CHECKING:
    from lmrec.data.dataset import Dataset
    from lmrec.models.base import Recommender


@dataclass(frozen=True)
class TrainingOptions:
    rng: np.random.Generator | int | None = None
    device: Literal["auto", "cpu", "cuda"] | None = None
    valid: Dataset | None = None
    time_budget_s: float | None = None
    teacher: Recommender | None = None

    def __post_init__(self) -> None:
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"time_budget_s must be positive, got {self.time_budget_s}")
        if self.device not in (None, "auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")

    @property
    def generator(self) -> np.random.Generator:
        """The Generator behind `rng` (a new one from a seed; the same object once resolved)."""
        rng = self.rng
        return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    def resolved(self) -> TrainingOptions:
        """These options with `rng` turned into its Generator, so every draw of one fit comes
        from one stream."""
        return replace(self, rng=self.generator)

    def check_valid(self, train: Dataset) -> Dataset | None:
        """The validation Dataset, checked to share `train`'s vocabularies (None: none given
        or it holds no events)."""
        valid = self.valid
        if valid is None or valid.n_events == 0:
            return None
        if (valid.n_items, valid.n_users) != (train.n_items, train.n_users):
            raise InputError("the validation data must share the training data's user and item "
                             "vocabularies (use the parts of one Split)")
        return valid
