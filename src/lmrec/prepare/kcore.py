"""Iterative k-core filtering of an interaction list."""

from __future__ import annotations

import numpy as np


def kcore_mask(
    users: np.ndarray, items: np.ndarray, user_k: int | None, item_k: int | None
) -> np.ndarray:
    """Rows to keep so that every kept user has >= user_k rows and every kept item >= item_k.

    `users` and `items` are dense codes 0..n-1, one entry per interaction row; rows (not
    distinct pairs) are counted, as in RecBole's filter. Repeats until nothing changes: the
    result is the largest such sub-list, the unique fixed point.
    """
    keep = np.ones(users.shape[0], dtype=bool)
    if not user_k and not item_k:
        return keep
    n_users = int(users.max()) + 1 if users.size else 0
    n_items = int(items.max()) + 1 if items.size else 0
    while True:
        u_cnt = np.bincount(users[keep], minlength=n_users)
        i_cnt = np.bincount(items[keep], minlength=n_items)
        bad = np.zeros_like(keep)
        if user_k:
            bad |= u_cnt[users] < user_k
        if item_k:
            bad |= i_cnt[items] < item_k
        bad &= keep
        if not bad.any():
            return keep
        keep &= ~bad
