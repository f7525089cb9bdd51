"""Vectorised negative samplers: uniform or popularity^alpha, optionally excluding seen items.

A sampler draws a (n, k) int64 block at once from a numpy Generator passed in. Excluding the
user's seen items is done by rejection against sorted `user * n_items + item` keys (one
`searchsorted` per round), which is cheap while users have seen a small share of the
catalogue; entries still seen after `max_rounds` redraws keep their last draw.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def seen_keys(matrix: sp.spmatrix) -> np.ndarray:
    """Sorted int64 codes user * n_items + item of the nonzero entries of (n_users, n_items)."""
    x = sp.csr_matrix(matrix)
    users = np.repeat(np.arange(x.shape[0], dtype=np.int64), np.diff(x.indptr))
    keys = users * x.shape[1] + x.indices.astype(np.int64)
    keys.sort()
    return keys


class NegativeSampler:
    """Draws negative items for users.

    probs: None for uniform, else item weights (e.g. popularity counts) raised to `alpha`.
    keys: sorted seen codes (`seen_keys`) to exclude, or None to allow seen items.
    """

    def __init__(self, n_items: int, *, popularity: np.ndarray | None = None, alpha: float = 0.0,
                 keys: np.ndarray | None = None, max_rounds: int = 20) -> None:
        self.n_items = n_items
        self.keys = keys
        self.max_rounds = max_rounds
        self.cdf: np.ndarray | None = None
        if popularity is not None and alpha != 0.0:
            w = np.power(np.asarray(popularity, dtype=np.float64) + 1e-12, alpha)
            self.cdf = np.cumsum(w / w.sum())

    def probabilities(self) -> np.ndarray:
        """(n_items,) float64 probability of drawing each item (before seen exclusion)."""
        if self.cdf is None:
            return np.full(self.n_items, 1.0 / self.n_items)
        return np.diff(self.cdf, prepend=0.0)

    def _draw(self, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if self.cdf is None:
            return rng.integers(0, self.n_items, size, dtype=np.int64)
        u = rng.random(size)
        return np.minimum(np.searchsorted(self.cdf, u, side="right"), self.n_items - 1).astype(
            np.int64)

    def sample(self, users: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) int64 users -> (n, k) int64 negatives (unseen by the user when `keys` given)."""
        users = np.asarray(users, dtype=np.int64)
        neg = self._draw((users.size, k), rng)  # (n, k)
        if self.keys is None or self.keys.size == 0:
            return neg
        flat = neg.reshape(-1)
        owner = np.repeat(users, k)
        todo = np.arange(flat.size)
        for _ in range(self.max_rounds):
            code = owner[todo] * self.n_items + flat[todo]
            pos = np.minimum(np.searchsorted(self.keys, code), self.keys.size - 1)
            todo = todo[self.keys[pos] == code]
            if todo.size == 0:
                break
            flat[todo] = self._draw(todo.size, rng)
        return flat.reshape(users.size, k)


def uniform_negatives(n: int, k: int, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """(n, k) int64 items drawn uniformly (seen items allowed)."""
    return NegativeSampler(n_items).sample(np.zeros(n, np.int64), k, rng)
