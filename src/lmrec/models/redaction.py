"""Forgetting users (erasure requests, `Recommender.redact_users`): the `UserRows` a model
names as its per-user state, and dropping rows from row-compressed arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmrec.data.dataset import Sequences


def drop_entries(m: sp.spmatrix, rows: np.ndarray, cols: np.ndarray | None = None
                 ) -> sp.csr_matrix:
    """`m` as CSR without the stored entries of rows `rows` (and of columns `cols`); the
    shape is kept."""
    m = sp.csr_matrix(m)
    indptr, keep = kept_entries(m.indptr, rows, m.indices if cols is not None else None, cols)
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


def kept_entries(indptr: np.ndarray, rows: np.ndarray, indices: np.ndarray | None = None,
                  cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For a row-compressed layout: the new indptr and the (nnz,) bool mask of the entries
    kept when rows `rows` (and entries whose index is in `cols`) are dropped."""
    dropped = np.zeros(indptr.size - 1, dtype=bool)
    dropped[rows] = True
    keep = ~np.repeat(dropped, np.diff(indptr))
    if indices is not None and cols is not None:
        keep &= ~np.isin(indices, cols)
    kept_before = np.zeros(keep.size + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    return kept_before[indptr].astype(indptr.dtype), keep


def drop_group_rows(arrays: dict[str, np.ndarray], prefix: str, rows: np.ndarray) -> None:
    """Empty rows of the row-compressed group `prefix.*` of an `_arrays()` dict in place:
    every `prefix.<name>` with one entry per stored element follows `prefix.indptr`."""
    indptr = arrays[f"{prefix}.indptr"]
    nnz = int(indptr[-1])
    new_indptr, keep = kept_entries(indptr, rows)
    for key in [k for k in arrays if k.startswith(prefix + ".")]:
        if key.endswith((".indptr", ".shape")):
            continue
        if arrays[key].ndim == 0 or arrays[key].shape[0] != nnz:
            raise ValueError(f"{key}: expected {nnz} entries along the first axis")
        arrays[key] = arrays[key][keep]
    arrays[f"{prefix}.indptr"] = new_indptr


@dataclass(frozen=True)
class UserRows:
    """Per-user learned state, held by reference: row u of `rows` belongs to user u.

    `rows` is the live object the model scores with (not a copy): a numpy array, a torch
    tensor (a parameter's data, sliced so that row u is user u), a CSR matrix or `Sequences`.
    `unknown` is what a user the model never saw has in place of a row (0, or e.g. the
    "unknown user" embedding row), so that a forgotten user scores exactly like an unknown one.
    """

    rows: Any
    unknown: Any = 0

    def __len__(self) -> int:
        if isinstance(self.rows, Sequences):
            return self.rows.n_rows
        return int(self.rows.shape[0])

    def forget(self, users: np.ndarray) -> None:
        """Replace the rows of `users` (sorted internal indices) in place."""
        rows = self.rows
        if isinstance(rows, Sequences):
            rows.forget_rows(users)
        elif sp.issparse(rows):
            if rows.format != "csr":
                raise TypeError(f"per-user sparse state must be CSR, got {rows.format}")
            kept = drop_entries(rows, users)
            rows.data, rows.indices, rows.indptr = kept.data, kept.indices, kept.indptr
        elif isinstance(rows, np.ndarray):
            rows[users] = self.unknown
        else:  # a torch tensor (imported lazily: classic models do not need torch)
            import torch

            with torch.no_grad():
                rows[torch.from_numpy(users)] = torch.as_tensor(self.unknown, dtype=rows.dtype)
