"""Input arrays of the two-tower model (`lmrec.models.two_tower`): attribute columns encoded
per user / item, recent training histories, request-time user attributes, and the user-side
encoders as npz arrays.

Layouts: cat (n, C) int64 codes (0 = unknown), num (n, P) float32 normalised numerics and
vector columns, multi-valued labels (n, L) int64 codes + 1 (0 = padding), histories
(n_users, L) int64 item + 1, left-padded with 0, most recent last.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from lmrec.columns import Role
from lmrec.data.dataset import Dataset
from lmrec.train.negatives import seen_keys

_MAX_LABELS = 32  # multi-valued attributes: at most this many labels per row enter the bag


def side_arrays(dataset: Dataset, side: Literal["user", "item"], use: bool
                ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Stack one side's encoded columns: cat (n, C) int64, num (n, P) float32 (numerics and
    vectors), multi [(n, L) int64 codes + 1]; cardinalities and `num_groups` (P,) int64 (0 for
    a numeric column of num, j for the columns of the j-th vector column); and the user-side
    encoders."""
    n = dataset.n_users if side == "user" else dataset.n_items
    schema = (dataset.user_schema if side == "user" else dataset.item_schema) if use else {}
    enc = dataset.encoded_features(side) if use else {}
    cat, cat_cards, num, multi, multi_cards, groups = [], [], [], [], [], []
    meta: dict[str, Any] = {"cat": [], "num": []}
    width = 0  # columns of `num` so far
    for col, spec in schema.items():
        v = enc[col]
        if spec.role == Role.CATEGORICAL:
            cat.append(np.asarray(v, dtype=np.int64))
            cat_cards.append(len(spec.vocabulary or ()))
            meta["cat"].append((col, tuple(spec.vocabulary or ())))
        elif spec.role in (Role.NUMERIC, Role.TIME):
            num.append(np.asarray(v, dtype=np.float32)[:, None])
            meta["num"].append((col, float(spec.mean or 0.0), float(spec.std or 1.0), width))
            width += 1
            groups.append(np.zeros(1, np.int64))
        elif spec.role == Role.VECTOR:  # at request time a vector counts as zeros (average)
            num.append(np.asarray(v, dtype=np.float32).reshape(n, -1))
            width += num[-1].shape[1]
            n_vectors = sum(int(g.max(initial=0) > 0) for g in groups)
            groups.append(np.full(num[-1].shape[1], n_vectors + 1, np.int64))
        elif spec.role == Role.MULTI and side == "item":
            multi.append(_padded_labels(sp.csr_matrix(v)))
            multi_cards.append(v.shape[1])
    arrays = {
        "cat": np.stack(cat, axis=1) if cat else np.zeros((n, 0), np.int64),
        "num": np.concatenate(num, axis=1) if num else np.zeros((n, 0), np.float32),
        "multi": multi,
    }
    meta["width"] = width
    cards = {"cat": np.asarray(cat_cards, dtype=np.int64),
             "multi": np.asarray(multi_cards, dtype=np.int64),
             "num_groups": np.concatenate(groups) if groups else np.zeros(0, np.int64)}
    return arrays, cards, meta


def _padded_labels(m: sp.csr_matrix) -> np.ndarray:
    """(n, n_labels) multi-hot -> (n, L) int64 label codes + 1, 0-padded (L <= _MAX_LABELS)."""
    counts = np.diff(m.indptr)
    L = int(min(max(counts.max(initial=0), 1), _MAX_LABELS))
    rows = np.repeat(np.arange(m.shape[0]), counts)
    pos = np.arange(m.indices.size) - np.repeat(m.indptr[:-1], counts)
    keep = pos < L
    out = np.zeros((m.shape[0], L), dtype=np.int64)
    out[rows[keep], pos[keep]] = m.indices[keep].astype(np.int64) + 1
    return out


def recent_history(dataset: Dataset, x: sp.csr_matrix, length: int) -> np.ndarray:
    """(n_users, length) int64 item + 1 of each user's most recent events whose pair is in
    `x`, left-padded with 0 (most recent last); vectorised over all events."""
    seq = dataset.sequences()
    n_users, n_items = x.shape
    owner = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(seq.indptr))
    code = owner * n_items + seq.items.astype(np.int64)
    keys = seen_keys(x)
    if keys.size:
        pos = np.minimum(np.searchsorted(keys, code), keys.size - 1)
        keep = keys[pos] == code
    else:
        keep = np.zeros(code.size, dtype=bool)
    owner, items = owner[keep], seq.items[keep].astype(np.int64)
    counts = np.bincount(owner, minlength=n_users)
    ends = np.cumsum(counts)
    from_end = ends[owner] - 1 - np.arange(owner.size)  # 0 = the user's most recent event
    sel = from_end < length
    out = np.zeros((n_users, length), dtype=np.int64)
    out[owner[sel], length - 1 - from_end[sel]] = items[sel] + 1
    return out


def encode_user(meta: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Raw user attributes -> (Cu,) int64 codes and (Pu,) float32 normalised numerics."""
    cat = np.zeros(len(meta["cat"]), dtype=np.int64)
    for j, (col, vocab) in enumerate(meta["cat"]):
        if col in values and str(values[col]) in vocab:
            cat[j] = vocab.index(str(values[col])) + 1
    num = np.zeros(meta["width"], dtype=np.float32)
    for col, mean, std, at in meta["num"]:
        if values.get(col) is not None:
            num[at] = (float(values[col]) - mean) / (std or 1.0)
    return cat, num


def user_meta_arrays(meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The user-side encoders of `side_arrays` as "umeta.*" npz arrays."""
    out = {"umeta.num": np.asarray([[m, s, at] for _, m, s, at in meta["num"]],
                                   dtype=np.float64).reshape(-1, 3),
           "umeta.width": np.asarray([meta["width"]], dtype=np.int64),
           "umeta.num_names": np.asarray([c for c, _, _, _ in meta["num"]], dtype=np.str_),
           "umeta.cat_names": np.asarray([c for c, _ in meta["cat"]], dtype=np.str_)}
    for j, (_, vocab) in enumerate(meta["cat"]):
        out[f"umeta.vocab{j}"] = np.asarray(vocab, dtype=np.str_)
    return out


def user_meta_from_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The inverse of `user_meta_arrays`."""
    names = [str(c) for c in arrays["umeta.cat_names"]]
    cat = [(c, tuple(str(v) for v in arrays[f"umeta.vocab{j}"])) for j, c in enumerate(names)]
    num = [(str(c), float(ms[0]), float(ms[1]), int(ms[2]))
           for c, ms in zip(arrays["umeta.num_names"], arrays["umeta.num"], strict=True)]
    return {"cat": cat, "num": num, "width": int(arrays["umeta.width"][0])}
