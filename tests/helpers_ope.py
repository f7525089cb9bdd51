"""Shared pieces of the off-policy tests: exact Plackett-Luce marginals by enumeration."""

from __future__ import annotations

import itertools

import numpy as np


def pl_marginals(weights: np.ndarray, k: int) -> np.ndarray:
    """(pool, k) exact P(item i at position j) under Plackett-Luce with these weights, by
    enumerating every ordered slate of k distinct items (tiny pools only)."""
    out = np.zeros((weights.size, k))
    for slate in itertools.permutations(range(weights.size), k):
        left, prob = weights.sum(), 1.0
        for item in slate:
            prob *= weights[item] / left
            left -= weights[item]
        out[list(slate), range(k)] += prob
    return out
