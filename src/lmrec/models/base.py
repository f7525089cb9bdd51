"""The Recommender contract every model follows.

A model implements two methods (docs/adding-a-model.md walks through one):

    _fit(dataset, options)     learn state (internal ids 0..n-1); `options` is a
                               `lmrec.train.TrainingOptions`: Generator, device, valid, budget
    _score(users, histories)   (B,) users -> (B, n_items) scores: from the fitted state without
                               histories (all users known, >= 0); from the B given histories
                               otherwise, used as the model sees fit (users may be -1, unknown)

and, where the defaults do not fit, `_arrays()` / `_load_arrays()` (the learned state as named
numpy arrays; by default the attributes `_fit` set with a trailing underscore) and
`user_state()` (per-user state by reference, `UserRows`, for erasure).

The base class does the rest: `fit` (fresh state, common bookkeeping), `score` (checks; an
unknown user without a history is scored from an empty history), `recommend` (id mapping,
unknown users, masks, top-k), `recommend_history` (top-k for a list of item ids),
`similar_items` (training co-occurrence cosine by default), `explain` (the history items behind
a score: occlusion by default, `lmrec.models.explanations`), save/load and `redact_users`.
Whether and how a model uses a history is its own business; nothing outside the model asks.

Hyperparameters live in one typed pydantic config per model (unknown keys are refused);
artifacts are config JSON plus an .npz of arrays, never pickle. `lmrec.models.load_model`
loads any saved model by its saved name.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from lmrec.data.dataset import Dataset, Sequences
from lmrec.data.stats import DataStats
from lmrec.errors import ConfigError, InputError, LmrecError, UnknownUserError
from lmrec.integrity import IntegrityError, one_line, read_npz, verify_manifest
from lmrec.models.artifacts import (
    ARRAYS_FILE,
    QUANTIZED_VERSION,
    artifact_meta,
    common_arrays,
    pack_csr,
    read_artifact_meta,
    read_common,
    unpack_csr,
)
from lmrec.models.explanations import Explanation, checked_query, occlusion
from lmrec.models.history import history_matrix, weights_arrays, weights_from_arrays
from lmrec.models.hyperparams import ModelConfig
from lmrec.models.precision import check_precision, decode_arrays, encode_arrays
from lmrec.models.ranking import Recommendations, mask_rows, top_k
from lmrec.models.redaction import UserRows, drop_entries
from lmrec.train.options import TrainingOptions

_BATCH = 1024  # users scored at once; (B, n_items) float32 must fit comfortably in memory
# what `fit` sets for every model (saved by `save` itself, not by `_arrays`)
_BASE_STATE = frozenset({"users_", "items_", "seen_", "popularity_", "behaviour_weights_",
                         "settings_"})


class Recommender(ABC):
    """Base class of every model. Subclasses set `name` and `Config`."""

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig  # no hyperparameters by default

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
    def fit(self, dataset: Dataset, options: TrainingOptions | None = None) -> Self:
        """Learn from `dataset`, discarding any earlier state. Returns self."""
        if dataset.n_events == 0:
            raise InputError("cannot fit on a dataset without events")
        options = (options or TrainingOptions()).resolved()
        options.check_valid(dataset)
        self._fitted = False  # a failed refit must not leave old and new state mixed
        self.users_ = dataset.users
        self.items_ = dataset.items
        self.seen_ = dataset.matrix("binary").tocsr().astype(np.float32)
        self.popularity_ = np.asarray(self.seen_.sum(axis=0)).ravel().astype(np.float32)
        self.behaviour_weights_ = dict(dataset.behaviour_weights)
        # the hyperparameters the config left to the data (None), as `_fit` resolved them
        self.settings_: dict[str, Any] = {}
        self._fit(dataset, options)
        self._fitted = True
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None: ...

    def data_settings(self, stats: DataStats) -> dict[str, Any]:
        """The hyperparameters this config leaves to the data (None), as the model's data rule
        sets them for a training set with these statistics (none by default). `_fit` keeps
        them as `settings_`; `auto` starts its search from them."""
        return {}

    def _setting(self, name: str) -> Any:
        """A hyperparameter as the fit ran with it: the data rule's value, else the config's
        (models saved before their rule existed carry no `settings_`)."""
        return self.settings_.get(name, getattr(self.config, name, None))

    @abstractmethod
    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        """(B,) users, optional B histories -> (B, n_items) scores (see the module docstring)."""

    def user_state(self) -> tuple[UserRows, ...]:
        """The per-user learned state, by reference (none by default): what `redact_users`
        replaces with the unknown user's values. Name the attributes directly, so that a
        renamed attribute fails here instead of silently escaping erasure."""
        return ()

    def _arrays(self) -> dict[str, np.ndarray]:
        """Learned state to save (besides vocabularies and seen items).

        By default every attribute that `_fit` set with a trailing underscore (`self.S_`),
        beyond the base class's own, saved by its name: numpy arrays as they are, CSR
        matrices as their parts. A model with other state overrides this and `_load_arrays`.
        """
        out: dict[str, np.ndarray] = {}
        for name, value in vars(self).items():
            if not name.endswith("_") or name.startswith("_") or name in _BASE_STATE:
                continue
            if isinstance(value, np.ndarray):
                out[name] = value
            elif sp.issparse(value) and value.format == "csr":
                out.update(pack_csr(value, f"csr.{name}"))
            else:
                raise TypeError(f"{type(self).__name__}.{name} is a {type(value).__name__}: "
                                "override _arrays and _load_arrays to save it")
        return out

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what `_arrays` returned (the default restores the default's attributes)."""
        for key, value in arrays.items():
            if key.startswith("csr.") and key.endswith(".data"):
                name = key.removeprefix("csr.").removesuffix(".data")
                setattr(self, name, unpack_csr(arrays, f"csr.{name}"))
            elif not key.startswith("csr."):
                setattr(self, key, value)

    # --- scoring on internal ids --------------------------------------------------------
    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.items_)

    def score(self, users: np.ndarray | Sequence[int],
              histories: Sequences | Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Scores of every item, (B, n_items) float32, for internal users (B,) (-1: unknown).

        Without `histories` each user is scored from the fitted state, an unknown one from an
        empty history. With `histories` (one row per user: a `Sequences`, whose behaviour types
        and times models may use, or a list of int arrays, oldest first) the model scores
        those histories, e.g. a training history extended by live events.
        """
        users, seqs = self._checked_query(users, histories)
        if seqs is not None:
            return np.asarray(self._score(users, seqs), dtype=np.float32)
        unknown = users < 0
        if not unknown.any():
            return np.asarray(self._score(users, None), dtype=np.float32)
        out = np.empty((users.size, self.n_items), dtype=np.float32)
        if not unknown.all():
            out[~unknown] = self._score(users[~unknown], None)
        out[unknown] = self._score(users[unknown], Sequences.empty(int(unknown.sum())))
        return out

    def _checked_query(self, users: np.ndarray | Sequence[int],
                       histories: Sequences | Sequence[np.ndarray] | None
                       ) -> tuple[np.ndarray, Sequences | None]:
        """`score`'s arguments checked (InputError): users (B,) int64 in [-1, n_users), and
        the histories as Sequences of B rows of items in range. Public entry points that take
        the same arguments (`EmbeddingModel.user_embeddings`) check them here too."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64).ravel()
        if users.size and (users.min() < -1 or users.max() >= len(self.users_)):
            raise InputError(f"user indices must be -1 (unknown) or in [0, {len(self.users_)})")
        if histories is None:
            return users, None
        seqs = Sequences.from_lists(histories).checked(self.n_items)
        if seqs.n_rows != users.size:
            raise InputError(f"{seqs.n_rows} histories for {users.size} users")
        return users, seqs

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
        is passed to `score`; `exclude_seen` masks the training items.
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
            rows = None if histories is None else histories.take(
                np.arange(start, start + batch.size))
            s = self.score(batch, rows)
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
        _check_k(k)
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

    def item_indices(self, items: Sequence[Any], where: str = "") -> np.ndarray:
        """Internal indices (B,) of external item ids; an unknown one raises InputError
        naming it (and `where` it was given)."""
        items = list(items)
        coerced = [t if t is not None else i
                   for i, t in zip(items, self.items_.coerce(items).to_list(), strict=True)]
        idx = self.items_.index(coerced) if items else np.empty(0, np.int64)
        if (idx < 0).any():
            bad = items[int(np.flatnonzero(idx < 0)[0])]
            place = f" {where}" if where else ""
            raise InputError(f"unknown item id {bad!r}{place} (the model was not trained on it)")
        return idx

    def recommend_history(self, items: Sequence[Any], k: int = 10, *,
                          exclude_seen: bool = True) -> list[tuple[Any, float]]:
        """Top-k (external item id, score) for someone whose history is `items` (external
        ids, oldest first), e.g. a visitor. An unknown item id raises InputError naming it;
        the history's items are left out unless `exclude_seen=False`."""
        self._check_fitted()
        _check_k(k)
        idx = self.item_indices(items, "in the history")
        s = self.score(np.array([-1]), Sequences.from_lists([idx]))
        if exclude_seen and idx.size:
            s[0, idx] = -np.inf
        top, vals = top_k(s, k)
        return [(self.items_.to_python(int(i)), float(v))
                for i, v in zip(top[0], vals[0], strict=True) if i >= 0 and np.isfinite(v)]

    def item_similarity(self, src: np.ndarray, targets: np.ndarray | None = None
                        ) -> np.ndarray:
        """(len(src), n_targets) similarity of items `src` to `targets` (all items when None):
        the cosine of their training user sets by default."""
        self._check_fitted()
        cols, norms = self._item_columns()
        src = np.asarray(src, dtype=np.int64)
        b = cols if targets is None else cols[:, targets]
        dots = np.asarray((cols[:, src].T @ b).toarray(), dtype=np.float32)
        nb = norms if targets is None else norms[targets]
        return dots / np.maximum(norms[src][:, None] * nb[None, :], 1e-12)

    def _item_columns(self) -> tuple[sp.csc_matrix, np.ndarray]:
        """`seen_` by columns and its column norms, cached while `seen_` is the same object
        (fit, load and redact_users replace it)."""
        cached = self.__dict__.get("_columns")
        if cached is None or cached[0] is not self.seen_:
            cols = self.seen_.tocsc()
            norms = np.sqrt(np.asarray(cols.sum(axis=0)).ravel()).astype(np.float32)
            cached = self._columns = (self.seen_, cols, norms)
        return cached[1], cached[2]

    def similar_items(self, item_idx: np.ndarray | Sequence[int], k: int = 10
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The k items most similar to each of the internal items `item_idx` (B,), the item
        itself left out: (B, k) indices (-1 padding) and similarities, by `item_similarity`."""
        _check_k(k)
        item_idx = np.asarray(item_idx, dtype=np.int64).ravel()
        if item_idx.size and (item_idx.min() < 0 or item_idx.max() >= self.n_items):
            raise InputError(f"item indices must be in [0, {self.n_items})")
        sim = self.item_similarity(item_idx)
        sim[np.arange(item_idx.size), item_idx] = -np.inf
        return top_k(sim, k)

    # --- explanations -------------------------------------------------------------------
    def explain(self, user: int, history: Sequences | np.ndarray | Sequence[int],
                items: np.ndarray | Sequence[int]) -> Explanation:
        """Why `items` (internal indices) get their scores `score([user], [history])`: each
        distinct history item's contribution (`lmrec.models.explanations`). By default
        occlusion, the exact score drop when an item's events are removed; models override
        it with exact or gradient attributions. InputError for indices out of range."""
        user, seqs, items = checked_query(self, user, history, items)
        return self._explain(user, seqs, items)

    def _explain(self, user: int, seqs: Sequences, items: np.ndarray) -> Explanation:
        """`explain` on checked arguments: one history (one-row Sequences), items (n,)."""
        return occlusion(self, user, seqs, items)

    # --- forgetting users ---------------------------------------------------------------
    def redact_users(self, user_idx: np.ndarray | Sequence[int]) -> None:
        """Forget training users in place (an erasure request), without retraining.

        For internal users `user_idx` (B,): their rows of `seen_` are emptied, `popularity_`
        is recounted from the remaining seen items, and every `UserRows` of `user_state()`
        gets the unknown user's values in their rows, so that each of them scores exactly like
        an unknown user; `_redact_users` handles state that is not rows (a neighbour model's
        columns). Their ids stay in `users_` (internal indices must not shift). Item-side
        state learned from their data (item factors, similarities, networks) stays until the
        model is retrained without them.
        """
        self._check_fitted()
        idx = np.unique(np.asarray(user_idx, dtype=np.int64).ravel())
        if idx.size and (idx[0] < 0 or idx[-1] >= len(self.users_)):
            raise InputError(f"user indices must be in [0, {len(self.users_)})")
        if idx.size == 0:
            return
        self.seen_ = drop_entries(self.seen_, idx)
        self.popularity_ = np.asarray(self.seen_.sum(axis=0)).ravel().astype(np.float32)
        for state in self.user_state():
            state.forget(idx)
        self._redact_users(idx)
        self._load_arrays(self._arrays())  # rebuild what derives from them (caches, fold-in)

    def _redact_users(self, user_idx: np.ndarray) -> None:  # noqa: B027
        """Per-user state beyond `user_state()`'s rows (nothing by default); called by
        `redact_users` with the sorted (B,) indices once those rows are replaced."""

    # --- persistence --------------------------------------------------------------------
    def save(self, folder: str | Path, *, precision: str = "fp32") -> Path:
        """Write config.json and arrays.npz (no pickle) to `folder`.

        `precision` "fp16" or "int8" stores the model's large float32 arrays (item and user
        factors, embedding tables, ...) in reduced precision, decoded to float32 by `load`
        (`lmrec.models.precision`); "fp32" (the default) writes every array as it is."""
        self._check_fitted()
        precision = check_precision(precision)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = artifact_meta(self.name, self.config.model_dump(mode="json"), self.users_,
                             self.items_)
        if self.settings_:
            meta["settings"] = self.settings_
        arrays = {f"model.{k}": v for k, v in self._arrays().items()}
        arrays.update(common_arrays(self.users_, self.items_, self.seen_, self.popularity_))
        arrays.update(weights_arrays(self.behaviour_weights_))
        if precision != "fp32":
            arrays, encoded = encode_arrays(arrays, precision)
            meta.update(format_version=QUANTIZED_VERSION, array_precision=precision,
                        quantized_arrays=encoded)
        np.savez(folder / ARRAYS_FILE, allow_pickle=False, **arrays)
        (folder / "config.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, verify: bool = True) -> Self:
        """Load a model of this class saved with `save` (`lmrec.models.load_model` loads any).

        In a bundle folder every file is first checked against bundle.json's sha256 digests
        (`verify=False` when the caller has just done so). Damaged files and arrays whose
        shapes do not fit the vocabularies and the config raise IntegrityError (an InputError)
        naming the file. Arrays saved in reduced precision (`save(precision=...)`) come back
        as float32.
        """
        if getattr(cls, "name", None) is None:
            raise ConfigError(f"{cls.__name__}.load needs a concrete model class: use "
                              "lmrec.models.load_model(folder)")
        folder = Path(folder)
        meta = read_artifact_meta(folder)
        if verify:
            verify_manifest(folder)
        if cls.name != meta["model"]:
            raise InputError(f"{folder} holds a {meta['model']!r} model, not {cls.name!r}")
        model = cls(cls.Config.from_params(meta["config"]))
        model.settings_ = dict(meta.get("settings") or {})
        path = folder / ARRAYS_FILE
        arrays = read_npz(path, ("user_ids", "item_ids", "seen.indptr", "seen.indices",
                                 "popularity"))
        try:
            arrays = decode_arrays(arrays, meta)  # float32 again where saved in less
            model.users_, model.items_, model.seen_, model.popularity_ = read_common(arrays)
            prefix = "model."
            model_arrays = {k.removeprefix(prefix): v for k, v in arrays.items()
                            if k.startswith(prefix)}
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
        """Check the per-user state against the vocabulary and score the first and the last
        user once, so that arrays that do not fit each other fail on load rather than on some
        later request."""
        n_users, n_items = len(self.users_), len(self.items_)
        names = {id(v): f"model.{k}" for k, v in self._arrays().items()}
        for state in self.user_state():
            if len(state) != n_users:
                what = names.get(id(state.rows), f"per-user {type(state.rows).__name__}")
                raise ValueError(f"{what} has {len(state)} rows, expected {n_users} "
                                 "(one per user)")
        users = np.unique(np.array([0, n_users - 1], dtype=np.int64))
        scores = self.score(users)
        if scores.shape != (users.size, n_items):
            raise ValueError(f"scores have shape {scores.shape}, expected "
                             f"({users.size}, {n_items})")

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise InputError(f"{type(self).__name__} is not fitted; call fit() first")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
