"""Model names -> classes. Every shipped model is listed here explicitly, by import; a model
defined elsewhere (your package, a test) is added with `register_model`, so that the CLI, the
evaluation and a served bundle find it by the name it saves under."""

from __future__ import annotations

from typing import Any

from lmrec.errors import ConfigError
from lmrec.models.admm_slim import ADMMSLIM
from lmrec.models.als import ALS
from lmrec.models.base import Recommender
from lmrec.models.bpr import BPR
from lmrec.models.content import Content
from lmrec.models.content_text import ContentText
from lmrec.models.ease import EASE
from lmrec.models.gru4rec import GRU4Rec
from lmrec.models.hstu import HSTU
from lmrec.models.itemknn import ItemKNN
from lmrec.models.neumf import NeuMF
from lmrec.models.popularity import Popularity
from lmrec.models.recvae import RecVAE
from lmrec.models.sasrec import SASRec
from lmrec.models.slim import SLIM
from lmrec.models.two_tower import TwoTower
from lmrec.models.userknn import UserKNN
from lmrec.models.vae import MultVAE

MODELS: dict[str, type[Recommender]] = {
    klass.name: klass
    for klass in (Popularity, Content, ContentText, ItemKNN, UserKNN, ALS, BPR, EASE, SLIM,
                  ADMMSLIM, NeuMF, MultVAE, RecVAE, TwoTower, GRU4Rec, SASRec,
                  HSTU)
}
_SHIPPED = set(MODELS)


def register_model(klass: type[Recommender], *, shipped: bool = False) -> type[Recommender]:
    """Make `klass` known by `klass.name` (usable as a class decorator). Registering another
    class under a taken name is refused; registering the same class again does nothing.
    `shipped` marks one of lmrec's own models that cannot be listed above because it builds
    its members through this registry (the blend), so that it cannot be unregistered."""
    name = getattr(klass, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{klass.__name__} needs a `name` to be registered")
    if not issubclass(klass, Recommender):
        raise ConfigError(f"{klass.__name__} is not a Recommender")
    if MODELS.get(name, klass) is not klass:
        raise ConfigError(f"model name {name!r} is taken by {MODELS[name].__name__}")
    MODELS[name] = klass
    if shipped:
        _SHIPPED.add(name)
    return klass


def unregister_model(name: str) -> None:
    """Forget a model added by `register_model` (the shipped ones stay)."""
    if name in _SHIPPED:
        raise ConfigError(f"{name!r} is a shipped model and cannot be unregistered")
    MODELS.pop(name, None)


def model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}") from None


def create_model(name: str, params: dict[str, Any] | None = None) -> Recommender:
    klass = model_class(name)
    return klass(klass.Config.from_params(params or {}))
