"""Ranking scores into top-k lists: the deterministic top-k selection, the masking of
excluded items, and `Recommendations`, the top-k lists with external ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec.data.vocab import IdVocabulary


@dataclass
class Recommendations:
    """Top-k lists for a batch of users. Rows shorter than k are padded with item -1."""

    users: list[Any]  # external user ids, as asked
    item_idx: np.ndarray  # (B, k) int64 internal item indices, -1 = padding
    scores: np.ndarray  # (B, k) float32
    items_vocab: IdVocabulary
    notes: dict[Any, str] = field(default_factory=dict)  # per-user notes, e.g. cold-start fallback

    def items_of(self, row: int) -> list[Any]:
        idx = self.item_idx[row]
        return [self.items_vocab.to_python(int(i)) for i in idx[idx >= 0]]

    def to_records(self) -> list[dict[str, Any]]:
        """[{"user": id, "items": [{"item": id, "score": s}, ...]}, ...] with external ids."""
        out = []
        for r, user in enumerate(self.users):
            valid = self.item_idx[r] >= 0
            rec: dict[str, Any] = {
                "user": user,
                "items": [
                    {"item": self.items_vocab.to_python(int(i)), "score": round(float(s), 6)}
                    for i, s in zip(self.item_idx[r][valid], self.scores[r][valid], strict=True)
                ],
            }
            if user in self.notes:
                rec["note"] = self.notes[user]
            out.append(rec)
        return out

    def to_frame(self) -> pl.DataFrame:
        """Long format: user, rank (1-based), item, score."""
        rows = [(rec["user"], rank, it["item"], it["score"])
                for rec in self.to_records() for rank, it in enumerate(rec["items"], start=1)]
        return pl.DataFrame(rows, schema=["user", "rank", "item", "score"], orient="row")


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (B, k) and values of the k largest entries per row, best first; -inf ranks last.

    Entries equal to -inf are reported as index -1 so that filtered items never appear.
    """
    n = scores.shape[1]
    k = min(k, n)
    if k <= 0:
        return np.empty((scores.shape[0], 0), np.int64), np.empty((scores.shape[0], 0), np.float32)
    if k < n:
        part = _ties_to_smaller(scores, np.argpartition(-scores, k - 1, axis=1)[:, :k])
    else:
        part = np.tile(np.arange(n), (scores.shape[0], 1))
    vals = np.take_along_axis(scores, part, axis=1)
    # stable order: score descending, then item index ascending (deterministic ties)
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1)
    idx[~np.isfinite(vals)] = -1
    return idx, vals.astype(np.float32)


def _ties_to_smaller(scores: np.ndarray, part: np.ndarray) -> np.ndarray:
    """`part` (B, k), the positions argpartition picked, with the items tied at the cut (the
    k-th best score) replaced by the smallest positions holding it: argpartition keeps any k
    of them."""
    k = part.shape[1]
    kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
    at_cut = scores == kth[:, None]
    short = np.count_nonzero(at_cut, axis=1) > np.count_nonzero(
        np.take_along_axis(at_cut, part, axis=1), axis=1)
    for r in np.flatnonzero(short & np.isfinite(kth)):  # -inf is never returned: no matter
        above = np.flatnonzero(scores[r] > kth[r])
        part[r] = np.concatenate([above, np.flatnonzero(at_cut[r])[: k - above.size]])
    return part


def mask_rows(scores: np.ndarray, mask: sp.csr_matrix, rows: np.ndarray) -> None:
    """Set the entries of `mask`'s rows `rows` to -inf in `scores` (B, n_items), in place."""
    sub = mask[rows].tocoo()
    scores[sub.row, sub.col] = -np.inf
