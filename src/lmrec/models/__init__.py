"""Models behind one Recommender contract."""

from lmrec.models.base import ModelConfig, Recommendations, Recommender, top_k
from lmrec.models.popularity import Popularity
from lmrec.models.registry import MODELS, create_model, model_class

__all__ = [
    "MODELS",
    "ModelConfig",
    "Popularity",
    "Recommendations",
    "Recommender",
    "create_model",
    "model_class",
    "top_k",
]
