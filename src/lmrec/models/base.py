"""The Recommender contract every model follows.

`recommend` is a template method: it maps external ids, handles unknown users, scores in
batches, removes seen items and returns external ids. A model implements only:

    _fit(dataset, rng)            learn state from a Dataset (internal ids 0..n-1)
    _score(user_idx)              (B,) int64 -> (B, n_items) float32 scores
    _arrays() / _load_arrays()    the learned state as named numpy arrays

Models that score a user from that user's time-ordered history (sequential models) also set
`scores_from_history = True` and implement `_score_histories(histories)`; callers then score
any history, not only the one seen in training, through `score_histories` (evaluation on a
leave-one-out split feeds train + valid histories this way; serving can feed a fresh one).

Hyperparameters live in one typed pydantic config per model (unknown keys are refused);
artifacts are config JSON plus an .npz of arrays, never pickle.

`redact_users(user_idx)` forgets training users (erasure requests): their seen items and every
per-user array a model declares in `user_state` are emptied; models with per-user state that is
not a row of an array (UserKNN's user-user similarity columns) also override `_redact_users`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec import __version__
from lmrec.data.dataset import Dataset, Sequences
from lmrec.data.vocab import IdVocabulary
from lmrec.errors import ConfigError, InputError, LmrecError, UnknownUserError
from lmrec.integrity import IntegrityError, one_line, read_npz, verify_manifest
from lmrec.models.artifacts import (
    ARRAYS_FILE,
    ARTIFACT_FORMAT,
    ARTIFACT_VERSION,
    check_user_rows,
    ids_array,
    ids_series,
    read_artifact_meta,
    seen_matrix,
)
from lmrec.models.history import (
    checked_histories,
    history_matrix,
    take_histories,
    weights_arrays,
    weights_from_arrays,
)
from lmrec.models.hyperparams import ModelConfig
from lmrec.models.ranking import Recommendations, mask_rows, top_k
from lmrec.models.redaction import drop_entries, drop_group_rows

_BATCH = 1024  # users scored at once; (B, n_items) float32 must fit comfortably in memory


@runtime_checkable
class EmbeddingScorer(Protocol):
    """A fitted model whose scores are inner products of user and item vectors.

    For every user u and item i, `score(u)[i] == user_embeddings(u) @ item_embeddings()[i]`
    and `score_histories(h)[i] == history_embeddings(h) @ item_embeddings()[i]` (up to float
    error; any scale such as a learned temperature is folded into the user side). Serving
    indexes `item_embeddings()` for approximate nearest-neighbour retrieval.
    """

    def item_embeddings(self) -> np.ndarray:
        """(n_items, d) float32."""
        ...

    def user_embeddings(self, user_idx: np.ndarray) -> np.ndarray:
        """(B,) internal user indices -> (B, d) float32."""
        ...

    def history_embeddings(self, histories: Sequences,
                           user_idx: np.ndarray | None = None) -> np.ndarray:
        """B histories (internal item indices, oldest first) -> (B, d) float32.

        `user_idx` (B,) optionally names the trained user behind each history (-1: unknown);
        models with per-user inputs beside the history (a user id embedding, user attributes)
        use them, fold-in models ignore it.
        """
        ...


class Recommender(ABC):
    """Base class of every model. Subclasses set `name` and `Config`."""

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    # True when `fit(train, valid=...)` early-stops on a validation Dataset; the evaluation
    # protocol then hands it the split's validation part (never the test part)
    early_stops_on_valid: ClassVar[bool] = False
    # True when the model scores a user from a time-ordered item history (`score_histories`)
    scores_from_history: ClassVar[bool] = False
    # True when a user's scores do not depend on their history at all (popularity ranks the
    # same items for everyone): no history item can then explain a recommendation, nor say
    # which items are alike
    history_independent: ClassVar[bool] = False
    # True when the evaluation protocol ranks each user from the history as of the evaluated
    # part (train, plus valid when testing) instead of `score(user)`: next-item models, whose
    # user state is that history. Other models may score histories too (serving folds fresh
    # events in) but are evaluated from their trained state, as RecBole evaluates them.
    evaluates_from_history: ClassVar[bool] = False
    # The per-user learned state among the keys of `_arrays()`, for `redact_users`: (name,
    # row offset of user u) pairs. A dense array: row u + offset is user u (offset 1 where
    # row 0 is an "unknown user" row). A row-compressed group, named by its prefix ("X" for
    # pack_csr's X.data / X.indices / X.indptr / X.shape, "history" for Sequences arrays
    # history.indptr / history.items / ...): row u is user u (offset 0). Names absent from a
    # fitted model's arrays (e.g. X with binary input) are skipped.
    user_state: ClassVar[tuple[tuple[str, int], ...]] = ()

    def __init__(self, config: ModelConfig | Mapping[str, Any] | None = None, **params: Any):
        if isinstance(config, ModelConfig):
            if params:
                config = config.model_copy(update=params)
                config = type(config).from_params(config.model_dump())
            if not isinstance(config, self.Config):
                raise ConfigError(f"{type(self).__name__} needs a {self.Config.__name__}")
            self.config = config
        else:
            self.config = self.Config.from_params({**dict(config or {}), **params})
        self._fitted = False

    # --- contract ---------------------------------------------------------------------
    def fit(self, dataset: Dataset, *, rng: np.random.Generator | int | None = None) -> Self:
        """Learn from `dataset`, discarding any earlier state. Returns self."""
        if dataset.n_events == 0:
            raise InputError("cannot fit on a dataset without events")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._fitted = False  # a failed refit must not leave old and new state mixed
        self.users_ = dataset.users
        self.items_ = dataset.items
        self.seen_ = dataset.matrix("binary").tocsr().astype(np.float32)
        self.popularity_ = np.asarray(self.seen_.sum(axis=0)).ravel().astype(np.float32)
        self.behaviour_weights_ = dict(dataset.behaviour_weights)
        self._fit(dataset, rng)
        self._fitted = True
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset, rng: np.random.Generator) -> None: ...

    @abstractmethod
    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        """(B,) int64 internal user indices -> (B, n_items) float32 scores."""

    def _score_histories(self, histories: Sequences) -> np.ndarray:
        """(B,) histories -> (B, n_items) scores; only where `scores_from_history`."""
        raise NotImplementedError

    def _arrays(self) -> dict[str, np.ndarray]:
        """Learned state to save (besides vocabularies and seen items)."""
        return {}

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:  # noqa: B027
        """Restore what `_arrays` returned (nothing to restore by default)."""

    # --- scoring on internal ids --------------------------------------------------------
    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.items_)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of every item for internal user indices, (B, n_items) float32."""
        self._check_fitted()
        user_idx = np.asarray(user_idx, dtype=np.int64)
        return np.asarray(self._score(user_idx), dtype=np.float32)

    def score_histories(self, histories: Sequences | Sequence[np.ndarray]) -> np.ndarray:
        """Scores of every item for B given histories, (B, n_items) float32.

        A history is a user's internal item indices, oldest first: a `Sequences` (with
        behaviour types and timestamps, which models may use) or a list of int arrays. Only
        for models with `scores_from_history`; others raise InputError.
        """
        self._check_fitted()
        if not self.scores_from_history:
            raise InputError(f"{type(self).__name__} does not score from item histories")
        seqs = checked_histories(histories, self.n_items)
        return np.asarray(self._score_histories(seqs), dtype=np.float32)

    def _history_rows(self, histories: Sequences, weighting: str) -> sp.csr_matrix:
        """(B, n_items) float32 CSR rows of the histories, built as `Dataset.matrix(weighting)`
        builds the training rows (with the training behaviour weights)."""
        return history_matrix(histories, self.n_items, weighting, self.behaviour_weights_)

    def recommend_idx(
        self,
        user_idx: np.ndarray,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude: sp.csr_matrix | None = None,
        candidates: np.ndarray | None = None,
        batch_size: int = _BATCH,
        histories: Sequences | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k internal item indices and scores for internal users, in batches.

        `exclude` is an extra (n_users, n_items) mask of items to remove; `candidates` an
        optional array of allowed item indices. `histories` (one row per entry of `user_idx`)
        scores the users from these histories instead of the training ones (models with
        `scores_from_history` only); `exclude_seen` still masks the training items.
        """
        self._check_fitted()
        user_idx = np.asarray(user_idx, dtype=np.int64)
        allowed = None
        if candidates is not None:
            allowed = np.zeros(self.n_items, dtype=bool)
            allowed[np.asarray(candidates, dtype=np.int64)] = True
        out_i = np.full((user_idx.size, min(k, self.n_items)), -1, dtype=np.int64)
        out_s = np.full(out_i.shape, -np.inf, dtype=np.float32)
        for start in range(0, user_idx.size, batch_size):
            batch = user_idx[start : start + batch_size]
            if histories is not None:
                s = self.score_histories(
                    take_histories(histories, np.arange(start, start + batch.size)))
            else:
                s = self.score(batch).copy()
            if exclude_seen:
                mask_rows(s, self.seen_, batch)
            if exclude is not None:
                mask_rows(s, exclude, batch)
            if allowed is not None:
                s[:, ~allowed] = -np.inf
            idx, vals = top_k(s, k)
            out_i[start : start + batch.size] = idx
            out_s[start : start + batch.size] = vals
        return out_i, out_s

    # --- external ids -----------------------------------------------------------------
    def recommend(
        self,
        users: Iterable[Any] | Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        strict: bool = False,
    ) -> Recommendations:
        """Top-k recommendations for external user ids.

        Unknown users get the most popular items with a note, or `UnknownUserError` when
        `strict`.
        """
        self._check_fitted()
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        if isinstance(users, str | int | np.integer):
            users = [users]
        users = list(users)
        # ids typed like the vocabulary ("196" -> 196 for integer ids); unparseable ones stay
        users = [t if t is not None else u
                 for u, t in zip(users, self.users_.coerce(users).to_list(), strict=True)]
        idx = self.users_.index(users) if users else np.empty(0, np.int64)
        unknown = [u for u, i in zip(users, idx, strict=True) if i < 0]
        if unknown and strict:
            raise UnknownUserError(f"unknown user id {unknown[0]!r} (the model was not trained "
                                   "on it)")
        known = idx >= 0
        items = np.full((len(users), min(k, self.n_items)), -1, dtype=np.int64)
        scores = np.full(items.shape, -np.inf, dtype=np.float32)
        if known.any():
            ki, ks = self.recommend_idx(idx[known], k, exclude_seen=exclude_seen)
            items[known], scores[known] = ki, ks
        notes: dict[Any, str] = {}
        if unknown:
            pi, ps = top_k(self.popularity_[None, :].astype(np.float32), k)
            items[~known], scores[~known] = pi[0], ps[0]
            for u in unknown:
                notes[u] = "unknown user: most popular items (cold-start fallback)"
        return Recommendations(users, items, scores, self.items_, notes)

    # --- forgetting users ---------------------------------------------------------------
    def redact_users(self, user_idx: np.ndarray | Sequence[int]) -> None:
        """Forget training users in place (an erasure request), without retraining.

        For internal users `user_idx` (B,): their rows of `seen_` are emptied, `popularity_`
        is recounted from the remaining seen items, and every array named in `user_state` has
        their rows zeroed (dense) or emptied (row-compressed); `_redact_users` handles the
        rest. Their ids stay in `users_` (internal indices must not shift) and map to nothing.
        Item-side state learned from their data (item factors, similarities, networks) stays
        until the model is retrained without them. Scores of a redacted user are meaningless:
        callers treat them as unknown users.
        """
        self._check_fitted()
        idx = np.unique(np.asarray(user_idx, dtype=np.int64).ravel())
        if idx.size and (idx[0] < 0 or idx[-1] >= len(self.users_)):
            raise InputError(f"user indices must be in [0, {len(self.users_)})")
        if idx.size == 0:
            return
        self.seen_ = drop_entries(self.seen_, idx)
        self.popularity_ = np.asarray(self.seen_.sum(axis=0)).ravel().astype(np.float32)
        arrays = dict(self._arrays())
        for name, offset in self.user_state:
            if name in arrays:
                arr = np.array(arrays[name])  # a copy: _arrays may share the live buffers
                arr[idx + offset] = 0
                arrays[name] = arr
            elif f"{name}.indptr" in arrays:
                if offset:
                    raise TypeError(f"{type(self).__name__}.user_state[{name!r}]: a "
                                    "row-compressed group needs offset 0")
                drop_group_rows(arrays, name, idx)
        self._load_arrays(arrays)  # rebuilds what depends on them (modules, caches)
        self._redact_users(idx)

    def _redact_users(self, user_idx: np.ndarray) -> None:  # noqa: B027
        """Per-user state beyond the rows of `user_state` (nothing by default); called by
        `redact_users` with the sorted (B,) indices once those rows are gone."""

    # --- persistence --------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write config.json and arrays.npz (no pickle) to `folder`."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_VERSION,
            "lmrec_version": __version__,
            "model": self.name,
            "config": self.config.model_dump(mode="json"),
            "user_id_type": "int" if self.users_.dtype == pl.Int64 else "str",
            "item_id_type": "int" if self.items_.dtype == pl.Int64 else "str",
        }
        arrays = {f"model.{k}": v for k, v in self._arrays().items()}
        seen = self.seen_.tocsr()
        arrays.update({
            "user_ids": ids_array(self.users_),
            "item_ids": ids_array(self.items_),
            "seen.indptr": seen.indptr, "seen.indices": seen.indices,
            "popularity": self.popularity_,
            **weights_arrays(self.behaviour_weights_),
        })
        np.savez(folder / ARRAYS_FILE, allow_pickle=False, **arrays)
        (folder / "config.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, verify: bool = True) -> Recommender:
        """Load any saved model; `Recommender.load` dispatches on the saved model name.

        In a bundle folder every file is first checked against bundle.json's sha256 digests
        (`verify=False` when the caller has just done so). Damaged files and arrays whose
        shapes do not fit the vocabularies and the config raise IntegrityError (an InputError)
        naming the file.
        """
        from lmrec.models.registry import model_class

        folder = Path(folder)
        meta = read_artifact_meta(folder)
        if verify:
            verify_manifest(folder)
        klass = model_class(meta["model"]) if cls is Recommender else cls
        if klass.name != meta["model"]:
            raise InputError(f"{folder} holds a {meta['model']!r} model, not {klass.name!r}")
        model = klass(klass.Config.from_params(meta["config"]))
        path = folder / ARRAYS_FILE
        arrays = read_npz(path, ("user_ids", "item_ids", "seen.indptr", "seen.indices",
                                 "popularity"))
        try:
            model.users_ = IdVocabulary(ids_series(arrays["user_ids"]))
            model.items_ = IdVocabulary(ids_series(arrays["item_ids"]))
            model.seen_ = seen_matrix(arrays, len(model.users_), len(model.items_))
            model.popularity_ = arrays["popularity"]
            if model.popularity_.shape != (len(model.items_),):
                raise ValueError(f"popularity has shape {model.popularity_.shape}, expected "
                                 f"({len(model.items_)},)")
            model_arrays = {k[6:]: v for k, v in arrays.items() if k.startswith("model.")}
            check_user_rows(klass.user_state, model_arrays, len(model.users_))
            # artifacts without weights load as weight 1; older ones kept them among the model's
            model.behaviour_weights_ = (weights_from_arrays(arrays)
                                        or weights_from_arrays(model_arrays))
            model._load_arrays(model_arrays)
            model._fitted = True
            model._probe()
        except LmrecError:
            raise
        except Exception as exc:  # a wrong shape or a missing array, wherever it shows up
            raise IntegrityError(folder, ARRAYS_FILE, "the arrays do not fit the model's "
                                 f"config and vocabularies ({one_line(exc)})") from exc
        return model

    def _probe(self) -> None:
        """Score the first and the last user once and check the shapes, so that arrays that
        do not fit each other fail on load rather than on some later request."""
        n_users, n_items = len(self.users_), len(self.items_)
        users = np.unique(np.array([0, n_users - 1], dtype=np.int64))
        scores = self.score(users)
        if scores.shape != (users.size, n_items):
            raise ValueError(f"scores have shape {scores.shape}, expected "
                             f"({users.size}, {n_items})")
        if isinstance(self, EmbeddingScorer):
            items = np.asarray(self.item_embeddings())
            if items.ndim != 2 or items.shape[0] != n_items:
                raise ValueError(f"item embeddings have shape {items.shape}, expected "
                                 f"({n_items}, d)")

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise InputError(f"{type(self).__name__} is not fitted; call fit() first")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"
