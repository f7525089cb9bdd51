"""Item and user features from pretrained models: item texts, text encoders, a vector cache."""

from lmrec.features.embedding_cache import (
    EmbeddingCache,
    EncodedTexts,
    default_cache_dir,
    encode_cached,
    encode_item_texts,
    item_text_vectors,
    text_vectors,
)
from lmrec.features.item_text import ItemTextTemplate, as_template, item_texts
from lmrec.features.text_encoder import SentenceTransformerEncoder, TextEncoder, get_encoder

__all__ = [
    "EmbeddingCache",
    "EncodedTexts",
    "ItemTextTemplate",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "as_template",
    "default_cache_dir",
    "encode_cached",
    "encode_item_texts",
    "get_encoder",
    "item_text_vectors",
    "item_texts",
    "text_vectors",
]
