"""Model names -> classes. Every model is listed here explicitly, by import."""

from __future__ import annotations

from typing import Any

from lmrec.errors import ConfigError
from lmrec.models.als import ALS
from lmrec.models.base import Recommender
from lmrec.models.bpr import BPR
from lmrec.models.content import Content
from lmrec.models.content_text import ContentText
from lmrec.models.ease import EASE
from lmrec.models.gru4rec import GRU4Rec
from lmrec.models.itemknn import ItemKNN
from lmrec.models.neumf import NeuMF
from lmrec.models.popularity import Popularity
from lmrec.models.sasrec import SASRec
from lmrec.models.two_tower import TwoTower
from lmrec.models.userknn import UserKNN

MODELS: dict[str, type[Recommender]] = {
    klass.name: klass
    for klass in (Popularity, Content, ContentText, ItemKNN, UserKNN, ALS, BPR, EASE, NeuMF,
                  TwoTower, GRU4Rec, SASRec)
}


def model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}") from None


def create_model(name: str, params: dict[str, Any] | None = None) -> Recommender:
    klass = model_class(name)
    return klass(klass.Config.from_params(params or {}))
