"""`TrainConfig`: every knob of the shared training loop (typed, frozen, unknown keys refused)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """How the loop trains a task. Dropout and the like belong to the model, not here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(20, ge=1, description="maximum passes over the training examples")
    batch_size: int = Field(1024, ge=1, description="training examples per optimizer step")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam or sgd (momentum .9)")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay of the optimizer")
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm")
    lr_schedule: Literal["constant", "cosine", "step"] = Field(
        "constant", description="constant; cosine annealing to 0 over `epochs`; or step decay")
    lr_step_epochs: int = Field(10, ge=1, description="step schedule: decay every this many "
                                                      "epochs")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="step schedule: decay factor")
    patience: int | None = Field(
        None, ge=1, description="stop after this many validations without improvement (None: "
                                "train all epochs); the best weights are restored")
    eval_every: int = Field(1, ge=1, description="validate every this many epochs")
    seed: int | None = Field(None, description="None: derived from the Generator passed in")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda if present")
    num_threads: int = Field(0, ge=0, description="torch intra-op threads (0: leave as is)")
    checkpoint_dir: Path | None = Field(
        None, description="run folder: checkpoint every epoch, history.json, curve.png")
    resume: bool = Field(False, description="continue from the checkpoint in checkpoint_dir")
    progress: bool = Field(True, description="Rich progress bar (only on a terminal)")

    @classmethod
    def of(cls, config: Any, **override: Any) -> TrainConfig:
        """The loop's settings out of a model config that embeds TrainConfig's fields flat (a
        NeuralConfig, a SequentialConfig), with `override` applied."""
        values = {name: getattr(config, name) for name in cls.model_fields}
        return cls(**{**values, **override})
