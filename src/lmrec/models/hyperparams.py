"""Model hyperparameters: the typed config every model declares and its tuning ranges.

`ModelConfig` is the base of each model's pydantic config (frozen, unknown keys refused);
`IntRange`, `FloatRange` and `Choice` make up the `search_space` that `--tune` explores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from lmrec.errors import ConfigError


@dataclass(frozen=True)
class IntRange:
    """An integer hyperparameter range for tuning (both ends included)."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    """A real hyperparameter range for tuning."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """A hyperparameter taking one of a few values."""

    values: tuple[Any, ...]


SearchSpace = dict[str, IntRange | FloatRange | Choice]


class ModelConfig(BaseModel):
    """Base of every model's hyperparameter config: typed, frozen, unknown keys refused.

    `search_space` names the hyperparameters worth tuning and their ranges (`--tune`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    search_space: ClassVar[SearchSpace] = {}

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> Self:
        """Build from user-supplied values (strings from the CLI are coerced by type)."""
        try:
            return cls.model_validate(dict(params or {}))
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                if err["type"] == "extra_forbidden":
                    known = ", ".join(cls.model_fields) or "none"
                    problems.append(f"unknown parameter {loc!r} (known: {known})")
                else:
                    problems.append(f"parameter {loc!r}: {err['msg']}")
            raise ConfigError(f"{cls.__name__}: " + "; ".join(problems)) from None
