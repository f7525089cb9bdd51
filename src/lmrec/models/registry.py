"""Model names -> classes. Every model is listed here explicitly, by import."""

from __future__ import annotations

from lmrec.errors import ConfigError
from lmrec.models.base import Recommender
from lmrec.models.popularity import Popularity

MODELS: dict[str, type[Recommender]] = {
    Popularity.name: Popularity,
}


def model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}") from None


def create_model(name: str, params: dict | None = None) -> Recommender:
    klass = model_class(name)
    return klass(klass.Config.from_params(params or {}))
