"""Dropping users' rows from row-compressed arrays, for `Recommender.redact_users` (erasure
requests): CSR matrices and the `prefix.indptr` groups of a model's saved arrays."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


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
