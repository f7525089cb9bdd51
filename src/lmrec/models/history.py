"""Item histories as the input rows of the classic models, for scoring without retraining.

A classic model scores a training user from that user's row of the interaction matrix X
(binary, or summed behaviour weights). `history_matrix` builds the same row from any history
(a fresh one from the event store, or the training one), so a model's `_score` can use the same
scoring on rows, and a training user's own history reproduces `score(user)`.

Behaviour weights ("click" 1, "purchase" 5, ...) come from the training Dataset; every
`Recommender` keeps them (`weights_arrays` / `weights_from_arrays` save them in its npz) and
builds history rows with `Recommender._history_rows`. Behaviour types unknown to the model
weigh 1, as unconfigured ones do in `lmrec.prepare`.

This module imports nothing from `lmrec.models.base`, so that the base class can use it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from lmrec.data.dataset import Sequences


def history_matrix(histories: Sequences, n_items: int, weighting: str = "binary",
                   behaviour_weights: Mapping[str, float] | None = None) -> sp.csr_matrix:
    """(B, n_items) float32 CSR: one row per history, as `Dataset.matrix(weighting)` builds it.

    "binary": 1 for every item in the history; "weight": the sum of the behaviour weights of
    the history's events on each item; "count": the number of its events on each item.
    """
    b = histories.indptr.size - 1
    rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(histories.indptr))
    if weighting == "weight":
        weights = dict(behaviour_weights or {})
        lookup = np.array([weights.get(t, 1.0) for t in histories.event_types], np.float32)
        # histories given as bare item arrays have no behaviour types: each event weighs 1
        data = lookup[histories.events] if lookup.size else np.ones(rows.size, np.float32)
    else:
        data = np.ones(rows.size, dtype=np.float32)
    m = sp.csr_matrix((data, (rows, histories.items.astype(np.int64))), shape=(b, n_items),
                      dtype=np.float32)
    m.sum_duplicates()
    if weighting not in ("weight", "count"):
        m.data[:] = 1.0
    return m


def weights_arrays(weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Behaviour weights as two npz-safe arrays (no pickle)."""
    names = sorted(weights)
    return {"behaviour_types": np.asarray(names, dtype=np.str_),
            "behaviour_weights": np.asarray([weights[n] for n in names], dtype=np.float64)}


def weights_from_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The inverse of `weights_arrays`; {} for artifacts saved before weights were kept."""
    if "behaviour_types" not in arrays:
        return {}
    return {str(n): float(w) for n, w in zip(arrays["behaviour_types"],
                                            arrays["behaviour_weights"], strict=True)}


def mean_item_features(x: sp.csr_matrix, item_features: np.ndarray) -> np.ndarray:
    """(B, d + 1) float64: the mean feature vector of each row's items, then a constant 1.

    x (B, n_items) sparse rows (any value > 0 counts once), item_features (n_items, d). An
    empty row gives zeros and the constant.
    """
    x = sp.csr_matrix(x)
    ind = sp.csr_matrix((np.ones(x.nnz), x.indices, x.indptr), shape=x.shape)
    ind.sum_duplicates()
    ind.data[:] = 1.0
    n = np.asarray(ind.sum(axis=1)).ravel()
    mean = sp.diags(np.divide(1.0, n, out=np.zeros_like(n), where=n > 0)) @ ind
    feats = np.asarray(mean @ item_features.astype(np.float64, copy=False))
    return np.hstack([feats, np.ones((x.shape[0], 1))])


def fit_linear_fold_in(x: sp.csr_matrix, item_features: np.ndarray, user_vectors: np.ndarray,
                       l2: float = 1e-3) -> np.ndarray:
    """W (d + 1, f) such that mean_item_features(x_u) @ W approximates user u's trained vector.

    A ridge regression over the training users (x: their rows, user_vectors (n_users, f)),
    with penalty `l2` times the mean diagonal of the normal matrix (scale-free). It folds a new
    history into a model whose user vectors came from gradient training, where no closed-form
    user step exists: one small matrix product per history instead of an optimisation.
    """
    x = sp.csr_matrix(x)
    # users without items (e.g. forgotten ones) carry no evidence about the map
    has = np.diff(x.indptr) > 0
    m = mean_item_features(x[has], item_features)  # (n_users with items, d + 1)
    user_vectors = user_vectors[has]
    if not has.any():
        return np.zeros((m.shape[1], user_vectors.shape[1]))
    gram = m.T @ m
    gram[np.diag_indices_from(gram)] += l2 * np.trace(gram) / gram.shape[0]
    return np.linalg.solve(gram, m.T @ user_vectors.astype(np.float64))
