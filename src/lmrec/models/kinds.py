"""Explicit mixins for what some models can do beyond the Recommender contract.

    class ALS(EmbeddingModel, Recommender): ...
    class ContentText(TextQueries, EmbeddingModel, Recommender): ...

`EmbeddingModel`: scores are inner products of a user vector and item vectors, so serving can
index the item vectors for nearest-neighbour retrieval and items are compared by cosine. The
model implements `user_embeddings(users, histories=None)`, with exactly `score`'s arguments,
and `item_embeddings()`; `_score` is their product.

`TextQueries`: the model ranks items for a free-text description of what someone likes
(`recommend_for_text`), for users with no events at all.

Callers test `isinstance(model, EmbeddingModel)`: a class says what it is, nothing is
inferred from which attributes happen to exist.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from lmrec.data.dataset import Sequences


class EmbeddingModel(ABC):
    """A model whose `score(users, histories)` is `user_embeddings(...) @ item_embeddings().T`
    (any scale, such as a learned temperature, is folded into the user side)."""

    @abstractmethod
    def item_embeddings(self) -> np.ndarray:
        """(n_items, d) float32."""

    @abstractmethod
    def user_embeddings(self, users: np.ndarray, histories: Sequences | None = None
                        ) -> np.ndarray:
        """(B,) users (-1: unknown) and optional B histories -> (B, d) float32, with the
        meaning of `Recommender.score`'s arguments (histories already checked)."""

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        return np.asarray(self.user_embeddings(users, histories)) @ self.item_embeddings().T

    def item_similarity(self, src: np.ndarray, targets: np.ndarray | None = None
                        ) -> np.ndarray:
        """Cosine of the item vectors."""
        vecs = np.asarray(self.item_embeddings(), dtype=np.float32)
        unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        t = unit if targets is None else unit[np.asarray(targets, dtype=np.int64)]
        return unit[np.asarray(src, dtype=np.int64)] @ t.T


class TextQueries(ABC):
    """A model that ranks items for a free-text description of someone's taste."""

    @abstractmethod
    def recommend_for_text(self, text: str, k: int = 10) -> list[tuple[Any, float]]:
        """Top-k (external item id, score) for `text`; InputError for empty text."""
