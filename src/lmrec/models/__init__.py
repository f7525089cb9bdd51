"""Models behind one Recommender contract."""

from lmrec.models.als import ALS, ALSConfig
from lmrec.models.base import EmbeddingScorer, Recommender
from lmrec.models.bpr import BPR, BPRConfig
from lmrec.models.content import Content, ContentConfig
from lmrec.models.content_text import ContentText, ContentTextConfig
from lmrec.models.ease import EASE, EASEConfig
from lmrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from lmrec.models.hyperparams import ModelConfig
from lmrec.models.itemknn import ItemKNN, ItemKNNConfig
from lmrec.models.neumf import NeuMF, NeuMFConfig
from lmrec.models.neural import NeuralConfig, NeuralRecommender
from lmrec.models.popularity import Popularity, PopularityConfig
from lmrec.models.ranking import Recommendations, top_k
from lmrec.models.registry import MODELS, create_model, model_class
from lmrec.models.sasrec import SASRec, SASRecConfig
from lmrec.models.sequential import SequentialConfig, SequentialRecommender
from lmrec.models.two_tower import TwoTower
from lmrec.models.two_tower_config import TwoTowerConfig
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
    "ContentText",
    "ContentTextConfig",
    "EASEConfig",
    "EmbeddingScorer",
    "GRU4Rec",
    "GRU4RecConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "ModelConfig",
    "NeuMF",
    "NeuMFConfig",
    "NeuralConfig",
    "NeuralRecommender",
    "Popularity",
    "PopularityConfig",
    "Recommendations",
    "Recommender",
    "SASRec",
    "SASRecConfig",
    "SequentialConfig",
    "SequentialRecommender",
    "TwoTower",
    "TwoTowerConfig",
    "UserKNN",
    "UserKNNConfig",
    "create_model",
    "model_class",
    "top_k",
]
