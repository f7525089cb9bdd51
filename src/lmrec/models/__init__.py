"""Models behind one Recommender contract."""

from lmrec.models.admm_slim import ADMMSLIM, ADMMSLIMConfig
from lmrec.models.als import ALS, ALSConfig
from lmrec.models.base import Recommender
from lmrec.models.blend import Blend, BlendConfig
from lmrec.models.bpr import BPR, BPRConfig
from lmrec.models.content import Content, ContentConfig
from lmrec.models.content_text import ContentText, ContentTextConfig
from lmrec.models.ease import EASE, EASEConfig
from lmrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from lmrec.models.hstu import HSTU, HSTUConfig
from lmrec.models.hyperparams import ModelConfig
from lmrec.models.io import load_model
from lmrec.models.itemknn import ItemKNN, ItemKNNConfig
from lmrec.models.kinds import EmbeddingModel, TextQueries
from lmrec.models.neumf import NeuMF, NeuMFConfig
from lmrec.models.neural import NeuralConfig, NeuralRecommender
from lmrec.models.popularity import Popularity, PopularityConfig
from lmrec.models.ranking import Recommendations, top_k
from lmrec.models.recvae import RecVAE, RecVAEConfig
from lmrec.models.redaction import UserRows
from lmrec.models.registry import (
    MODELS,
    create_model,
    model_class,
    register_model,
    unregister_model,
)
from lmrec.models.sasrec import SASRec, SASRecConfig
from lmrec.models.sequential import SequentialConfig, SequentialRecommender
from lmrec.models.slim import SLIM, SLIMConfig
from lmrec.models.two_tower import TwoTower
from lmrec.models.two_tower_config import TwoTowerConfig
from lmrec.models.userknn import UserKNN, UserKNNConfig
from lmrec.models.vae import MultVAE, MultVAEConfig

# the blend makes its members through the registry, so it registers itself here, not there
register_model(Blend, shipped=True)

__all__ = [
    "ADMMSLIM",
    "ALS",
    "BPR",
    "EASE",
    "HSTU",
    "MODELS",
    "SLIM",
    "ADMMSLIMConfig",
    "ALSConfig",
    "BPRConfig",
    "Blend",
    "BlendConfig",
    "Content",
    "ContentConfig",
    "ContentText",
    "ContentTextConfig",
    "EASEConfig",
    "EmbeddingModel",
    "GRU4Rec",
    "GRU4RecConfig",
    "HSTUConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "ModelConfig",
    "MultVAE",
    "MultVAEConfig",
    "NeuMF",
    "NeuMFConfig",
    "NeuralConfig",
    "NeuralRecommender",
    "Popularity",
    "PopularityConfig",
    "RecVAE",
    "RecVAEConfig",
    "Recommendations",
    "Recommender",
    "SASRec",
    "SASRecConfig",
    "SLIMConfig",
    "SequentialConfig",
    "SequentialRecommender",
    "TextQueries",
    "TwoTower",
    "TwoTowerConfig",
    "UserKNN",
    "UserKNNConfig",
    "UserRows",
    "create_model",
    "load_model",
    "model_class",
    "register_model",
    "top_k",
    "unregister_model",
]
