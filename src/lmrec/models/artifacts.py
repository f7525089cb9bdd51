"""The saved-model format: config.json plus an .npz of named arrays, never pickle.

What `Recommender.save` / `Recommender.load` and the models' `_arrays` / `_load_arrays` share:
the format marker, the checks a loaded artifact passes (its metadata, the seen-items matrix
and the per-user arrays against the vocabularies), and the packing of CSR matrices,
`Sequences` and id vocabularies as plain arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec.data.dataset import Sequences
from lmrec.data.vocab import IdVocabulary
from lmrec.errors import InputError, Location
from lmrec.jsonfile import read_json
from lmrec.version import __version__

ARTIFACT_FORMAT = "lmrec-model"
ARTIFACT_VERSION = 1
# version 2: the same files with some model arrays in reduced precision (`lmrec.models.precision`)
QUANTIZED_VERSION = 2
ARRAYS_FILE = "arrays.npz"


def artifact_meta(model: str, config: Mapping[str, Any], users: IdVocabulary,
                  items: IdVocabulary) -> dict[str, Any]:
    """What config.json says of a saved model."""
    return {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_VERSION,
        "lmrec_version": __version__,
        "model": model,
        "config": dict(config),
        "user_id_type": "int" if users.dtype == pl.Int64 else "str",
        "item_id_type": "int" if items.dtype == pl.Int64 else "str",
    }


def common_arrays(users: IdVocabulary, items: IdVocabulary, seen: sp.csr_matrix,
                  popularity: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays every saved model holds besides its own ("model.*")."""
    seen = seen.tocsr()
    return {"user_ids": ids_array(users), "item_ids": ids_array(items),
            "seen.indptr": seen.indptr, "seen.indices": seen.indices, "popularity": popularity}


def read_common(arrays: Mapping[str, np.ndarray]
                ) -> tuple[IdVocabulary, IdVocabulary, sp.csr_matrix, np.ndarray]:
    """Users, items, seen items and popularity of a saved model, checked against each other
    (ValueError on a mismatch)."""
    users = IdVocabulary(ids_series(arrays["user_ids"]))
    items = IdVocabulary(ids_series(arrays["item_ids"]))
    seen = seen_matrix(arrays, len(users), len(items))
    popularity = arrays["popularity"]
    if popularity.shape != (len(items),):
        raise ValueError(f"popularity has shape {popularity.shape}, expected ({len(items)},)")
    return users, items, seen, popularity


def read_artifact_meta(folder: Path) -> dict[str, Any]:
    """config.json of the saved model in `folder`, refused (InputError) when it is not one
    this lmrec reads."""
    cfg = folder / "config.json"
    if not cfg.exists() or not (folder / "arrays.npz").exists():
        raise InputError("not a saved lmrec model (config.json and arrays.npz expected)",
                         location=Location(str(folder)))
    meta = read_json(cfg)
    if meta.get("format") != ARTIFACT_FORMAT:
        raise InputError("not a saved lmrec model", location=Location(str(cfg)))
    if meta.get("format_version") not in (ARTIFACT_VERSION, QUANTIZED_VERSION):
        raise InputError(
            f"model saved in format version {meta.get('format_version')} by lmrec "
            f"{meta.get('lmrec_version')}; this lmrec ({__version__}) reads versions "
            f"{ARTIFACT_VERSION} and {QUANTIZED_VERSION}: train the model again",
            location=Location(str(cfg)))
    return meta


def seen_matrix(arrays: Mapping[str, np.ndarray], n_users: int, n_items: int
                ) -> sp.csr_matrix:
    """The saved seen items as (n_users, n_items) CSR, checked against the vocabularies."""
    indptr, indices = arrays["seen.indptr"], arrays["seen.indices"]
    if indptr.shape != (n_users + 1,) or indptr[0] != 0 or indptr[-1] != indices.size \
            or np.any(np.diff(indptr) < 0):
        raise ValueError(f"seen.indptr does not describe {n_users} users' rows")
    if indices.size and (indices.min() < 0 or indices.max() >= n_items):
        raise ValueError(f"seen.indices outside [0, {n_items})")
    return sp.csr_matrix((np.ones(indices.size, dtype=np.float32), indices, indptr),
                         shape=(n_users, n_items))


def pack_csr(m: sp.csr_matrix, prefix: str) -> dict[str, np.ndarray]:
    """A CSR matrix as named arrays for an .npz artifact (shape kept exactly)."""
    m = m.tocsr()
    return {f"{prefix}.data": m.data, f"{prefix}.indices": m.indices,
            f"{prefix}.indptr": m.indptr, f"{prefix}.shape": np.asarray(m.shape, np.int64)}


def unpack_csr(arrays: Mapping[str, np.ndarray], prefix: str) -> sp.csr_matrix:
    """The inverse of `pack_csr`."""
    shape = tuple(int(v) for v in arrays[f"{prefix}.shape"])
    return sp.csr_matrix((arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"],
                          arrays[f"{prefix}.indptr"]), shape=shape)


def pack_sequences(seqs: Sequences, prefix: str, *, timestamps: bool = True
                   ) -> dict[str, np.ndarray]:
    """`Sequences` as named arrays for an .npz artifact: `prefix.indptr` (n + 1,) and
    `prefix.items`, `prefix.events`, `prefix.timestamps` (n_events,) each, the row-compressed
    group layout `redact_users` empties rows of. The event types are the caller's to save."""
    out = {f"{prefix}.indptr": np.asarray(seqs.indptr), f"{prefix}.items": np.asarray(seqs.items),
           f"{prefix}.events": np.asarray(seqs.events)}
    if timestamps:
        out[f"{prefix}.timestamps"] = np.asarray(seqs.timestamps)
    return out


def unpack_sequences(arrays: Mapping[str, np.ndarray], prefix: str,
                     event_types: Sequence[str] = ()) -> Sequences:
    """The inverse of `pack_sequences`; timestamps -1 (unknown) where none were saved."""
    events = arrays[f"{prefix}.events"]
    key = f"{prefix}.timestamps"
    times = arrays[key] if key in arrays else np.full(events.size, -1, np.int64)
    return Sequences(arrays[f"{prefix}.indptr"], arrays[f"{prefix}.items"], events, times,
                     tuple(event_types))


def ids_array(vocab: IdVocabulary) -> np.ndarray:
    if vocab.dtype == pl.Int64:
        return vocab.ids.to_numpy().astype(np.int64)
    return np.asarray(vocab.ids.to_list(), dtype=np.str_)


def ids_series(arr: np.ndarray) -> pl.Series:
    if arr.dtype.kind in "iu":
        return pl.Series(arr.astype(np.int64))
    return pl.Series(arr.astype(str).tolist(), dtype=pl.String)
