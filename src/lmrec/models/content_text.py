"""Semantic content recommendations from pretrained text embeddings of the items.

Every item is described by one sentence built from its attributes ("Toy Story (1995).
Genres: Animation, Children, Comedy. Tags: pixar.") and embedded by a pretrained sentence
encoder (all-MiniLM-L6-v2 by default; see lmrec.features). A user's profile is the
recency-weighted mean of the vectors of the items in their history:

    w_j = 0.5 ** (r_j / half_life) * behaviour_weight_j     r_j = 0 for the most recent event
    profile = normalise(sum_j w_j * v_{item_j})
    score(i) = profile . v_i                                (cosine: item vectors are unit)

Nothing is learned from interactions, so an item nobody has interacted with is scored from its
text like any other: the model serves new items from day one (cold items), users with a handful
of events (few-shot, `recommend_history` or `score(users, histories)`) and users with no events
at all, from a sentence describing what they like (zero-shot, `recommend_for_text`).

The item vectors are saved with the model, so scoring known items never needs the encoder;
only `recommend_for_text` loads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data.dataset import Dataset, Sequences
from lmrec.errors import ConfigError, InputError
from lmrec.models.artifacts import pack_sequences, unpack_sequences
from lmrec.models.base import Recommender
from lmrec.models.hyperparams import FloatRange, IntRange, ModelConfig, SearchSpace
from lmrec.models.kinds import EmbeddingModel, TextQueries
from lmrec.models.ranking import top_k
from lmrec.models.redaction import UserRows
from lmrec.train.options import TrainingOptions


class ContentTextConfig(ModelConfig):
    # half_life chosen on the ML-100K validation part (ratings >= 3, 10-core, random 8:1:1,
    # seed 0; MiniLM, default template "{title}. Genres: {genres}."), NDCG@10: plain mean
    # .0229, half_life 20 .0236, 8 .0246, 4 .0260, 2 .0294, 1 .0257, 0.5 .0232 (leave-one-out
    # valid: 2 .0303, 1 .0332). Template "title" alone .0311, "genres" alone .0242. Below the
    # TF-IDF content model (.0375) and far below collaborative ones on warm users: its use is
    # items and users without history (cold start, zero-shot from a sentence).
    encoder: str | None = Field(
        None, description="text encoder: None/'default' (all-MiniLM-L6-v2) or the folder of a "
                          "local sentence-transformers model")
    template: str | None = Field(
        None, description="item text: a format string such as '{title}. Genres: {genres}.' or "
                          "comma-separated columns; None: title/genres/tags/... as available")
    cache_dir: str | None = Field(
        None, description="embedding cache folder; None: $LMREC_CACHE_DIR or "
                          "~/.cache/lmrec/embeddings")
    half_life: float | None = Field(
        2.0, gt=0, description="recency decay of the profile in events: the item this many "
                                "events before the most recent counts half; None: plain mean")
    max_history: int | None = Field(
        None, ge=1, description="use only the most recent events of each history")
    use_behaviour_weights: bool = Field(
        True, description="multiply each event by its behaviour's weight (e.g. buy > view)")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "auto", description="where the encoder runs when texts are encoded")
    batch_size: int = Field(64, ge=1, description="texts encoded per batch")
    progress: bool = Field(True, description="show a progress bar while encoding")

    search_space: ClassVar[SearchSpace] = {
        "half_life": FloatRange(1.0, 1000.0, log=True), "max_history": IntRange(5, 500, log=True)}


class ContentText(TextQueries, EmbeddingModel, Recommender):
    """Cosine between a recency-weighted profile of text vectors and each item's text vector.

    State: item_vectors_ (n_items, d) float32 unit rows (zero for items without text), the
    training histories (`Sequences`: its per-user state, the profiles' input) and one weight
    per behaviour type.
    """

    name = "content-text"
    Config = ContentTextConfig
    config: ContentTextConfig

    # --- fitting ----------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        from lmrec.features import encode_item_texts, get_encoder

        cfg = self.config
        res = encode_item_texts(dataset, encoder=get_encoder(cfg.encoder, device=cfg.device),
                                template=cfg.template, cache_dir=cfg.cache_dir,
                                batch_size=cfg.batch_size, progress=cfg.progress)
        self.item_vectors_ = res.vectors
        self.encoder_name_ = res.encoder
        # an object of its own: erasure empties its rows in place, never the Dataset's cache
        self.history_ = replace(dataset.sequences())
        self.event_types_ = self.history_.event_types
        self.event_weights_ = np.array(
            [float(dataset.behaviour_weights.get(t, 1.0)) for t in self.event_types_],
            dtype=np.float32)

    # --- scoring (EmbeddingModel: score = user_embeddings @ item_embeddings.T) ---------------
    def user_state(self) -> tuple[UserRows, ...]:
        return (UserRows(self.history_),)

    def item_embeddings(self) -> np.ndarray:
        """(n_items, d) float32 item text vectors (unit rows; zero where an item has no text)."""
        self._check_fitted()
        return self.item_vectors_

    def user_embeddings(self, users: np.ndarray,
                        histories: Sequences | Sequence[np.ndarray] | None = None
                        ) -> np.ndarray:
        """(B, d) float32 unit profiles: of the users' training events (users (B,) internal
        indices; -1, unknown, has no events) or, given `histories` (B rows of internal item
        indices, oldest first), of those (`users` is then not used).

        An empty history gives a zero profile (every item then scores 0); an item index out
        of range raises InputError.
        """
        users, given = self._checked_query(users, histories)
        if given is None:
            seqs = self.history_.take(np.maximum(users, 0))
            seqs.forget_rows(np.flatnonzero(users < 0))  # an unknown user has no events
        else:
            seqs = given
        w = self._event_weights(seqs)  # (B, n_items) sparse: each item's summed event weight
        profile = np.asarray(w @ self.item_vectors_, dtype=np.float32)  # (B, d)
        norm = np.linalg.norm(profile, axis=1, keepdims=True)
        return np.divide(profile, norm, out=np.zeros_like(profile), where=norm > 0)

    def _event_weights(self, seqs: Sequences) -> sp.csr_matrix:
        """(B, n_items) CSR: recency x behaviour weight of every event, summed per item."""
        cfg = self.config
        n_rows = seqs.indptr.size - 1
        lengths = np.diff(seqs.indptr)
        row = np.repeat(np.arange(n_rows), lengths)
        # distance from the row's most recent event: 0 for the last, 1 for the one before, ...
        recency = (seqs.indptr[1:][row] - 1 - np.arange(seqs.items.size)).astype(np.float64)
        keep = (recency < cfg.max_history) if cfg.max_history is not None else slice(None)
        w = (np.power(0.5, recency / cfg.half_life) if cfg.half_life is not None
             else np.ones(recency.size))
        if cfg.use_behaviour_weights and seqs.events.size:
            w = w * self._behaviour_weights(seqs)
        m = sp.csr_matrix((w[keep].astype(np.float32),
                           (row[keep], np.asarray(seqs.items, dtype=np.int64)[keep])),
                          shape=(n_rows, self.n_items), dtype=np.float32)
        return m

    def _behaviour_weights(self, seqs: Sequences) -> np.ndarray:
        """(n_events,) weight of each event's behaviour; 1 where the type is unknown or unset."""
        if not seqs.event_types:
            return np.ones(seqs.events.size)
        known = dict(zip(self.event_types_, self.event_weights_.tolist(), strict=True))
        lookup = np.array([known.get(t, 1.0) for t in seqs.event_types], dtype=np.float64)
        return lookup[np.asarray(seqs.events, dtype=np.int64)]

    # --- zero-shot ---------------------------------------------------------------------------
    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """(N, d) float32 unit vectors of free texts, by the encoder the items were embedded by.

        Loads the encoder (the first call takes seconds). Raises ConfigError when the
        configured encoder is not the one that made the saved item vectors.
        """
        from lmrec.features import get_encoder, text_vectors

        self._check_fitted()
        encoder = get_encoder(self.config.encoder, device=self.config.device)
        if encoder.name != self.encoder_name_:
            raise ConfigError(
                f"the item vectors were made by encoder {self.encoder_name_!r}, but the "
                f"configured encoder is now {encoder.name!r}; retrain the model")
        return text_vectors(list(texts), encoder=encoder, progress=False)

    def recommend_for_text(self, text: str, k: int = 10) -> list[tuple[Any, float]]:
        """Top-k (external item id, cosine score) for a free-text description of a taste.

        E.g. "I like slow science fiction about space travel": zero-shot, no events needed.
        """
        self._check_fitted()
        if not isinstance(text, str) or not text.strip():
            raise InputError("the text to recommend for is empty")
        query = self.text_embeddings([text])  # (1, d)
        return self._ranked(query @ self.item_vectors_.T, k)

    def _ranked(self, scores: np.ndarray, k: int) -> list[tuple[Any, float]]:
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        idx, vals = top_k(np.asarray(scores, dtype=np.float32), k)
        return [(self.items_.to_python(int(i)), float(v))
                for i, v in zip(idx[0], vals[0], strict=True) if i >= 0]

    # --- persistence ------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_vectors": self.item_vectors_,
                "encoder_name": np.asarray(self.encoder_name_, dtype=np.str_),
                **pack_sequences(self.history_, "history", timestamps=False),
                "event_types": np.asarray(self.event_types_, dtype=np.str_),
                "event_weights": self.event_weights_}

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.item_vectors_ = np.ascontiguousarray(arrays["item_vectors"], dtype=np.float32)
        self.encoder_name_ = str(arrays["encoder_name"])
        self.event_types_ = tuple(str(t) for t in arrays["event_types"])
        self.event_weights_ = arrays["event_weights"].astype(np.float32)
        self.history_ = unpack_sequences(arrays, "history", self.event_types_)
