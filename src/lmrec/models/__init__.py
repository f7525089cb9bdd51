"""Models behind one Recommender contract."""

from lmrec.models.als import ALS, ALSConfig
from lmrec.models.base import ModelConfig, Recommendations, Recommender, top_k
from lmrec.models.bpr import BPR, BPRConfig
from lmrec.models.content import Content, ContentConfig
from lmrec.models.ease import EASE, EASEConfig
from lmrec.models.itemknn import ItemKNN, ItemKNNConfig
from lmrec.models.popularity import Popularity, PopularityConfig
from lmrec.models.registry import MODELS, create_model, model_class
from lmrec.models.userknn import UserKNN, UserKNNConfig

__all__ = [
    "ALS",
    "BPR",
    "EASE",
    "MODELS",
    "ALSConfig",
    "BPRConfig",
    "Content",
    "ContentConfig",
    "EASEConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "ModelConfig",
    "Popularity",
    "PopularityConfig",
    "Recommendations",
    "Recommender",
    "UserKNN",
    "UserKNNConfig",
    "create_model",
    "model_class",
    "top_k",
]
