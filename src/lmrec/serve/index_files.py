"""An `ItemIndex` on disk: `index.json` plus one faiss or numpy file, never pickle.

    index.json    format, format_version, kind, quantize, n_items, dim, params, and for a
                  compressed or IVF index code_size and file
    vectors.npy   float32 (n_items, dim): an exact float32 index
    hnsw.faiss    faiss.write_index of an IndexHNSWFlat: an hnsw float32 index
    codes.faiss   faiss.write_index of a flat codes / IVF index: a compressed or ivf index

Float32 indexes are written as format version 1, which lmrec versions from before
compression read too; compressed and IVF ones as version 2. Whatever is read is checked
against index.json (sizes, kind, code size), and a mismatch names the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.errors import InputError, Location
from lmrec.jsonfile import read_json
from lmrec.serve import codes as C

INDEX_FORMAT = "lmrec-item-index"
INDEX_VERSION = 2  # 2: quantize and the ivf kind; version 1 (float32 only) still loads
PLAIN_VERSION = 1  # written for float32 exact/hnsw indexes, which older lmrec reads too
META = "index.json"
HNSW_FILE = "hnsw.faiss"
VECTORS_FILE = "vectors.npy"
CODES_FILE = "codes.faiss"


@dataclass(frozen=True)
class IndexParts:
    """What `ItemIndex.__init__` takes, as read from a folder."""

    kind: str
    vectors: np.ndarray | None  # float32 vectors (a view into faiss_index for hnsw), or None
    faiss_index: Any
    params: dict[str, int]
    quantize: str


def write_index(folder: Path, *, kind: str, quantize: str, n_items: int, dim: int,
                params: dict[str, int], vectors: np.ndarray | None, faiss_index: Any,
                graph_norm_power: float) -> None:
    """Write an index's files (`vectors` None: `faiss_index` holds codes)."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = vectors is not None
    meta: dict[str, Any] = {
        "format": INDEX_FORMAT, "format_version": PLAIN_VERSION if plain else INDEX_VERSION,
        "kind": kind, "n_items": n_items, "dim": dim, "params": params,
        "graph_norm_power": graph_norm_power if kind == "hnsw" else None}
    if not plain:
        import faiss

        meta.update(quantize=quantize, code_size=int(faiss_index.sa_code_size()),
                    file=CODES_FILE)
        faiss.write_index(faiss_index, str(folder / CODES_FILE))
    elif kind == "hnsw":
        import faiss

        faiss.write_index(faiss_index, str(folder / HNSW_FILE))
    else:
        np.save(folder / VECTORS_FILE, vectors, allow_pickle=False)
    (folder / META).write_text(json.dumps(meta, indent=2))


def read_index(folder: Path) -> IndexParts:
    """Read and check what `write_index` wrote (InputError naming the file otherwise)."""
    meta_path = folder / META
    if not meta_path.exists():
        raise InputError(f"not a saved item index ({META} missing)",
                         location=Location(str(folder)))
    meta = read_json(meta_path)
    if (meta.get("format") != INDEX_FORMAT
            or meta.get("format_version") not in (PLAIN_VERSION, INDEX_VERSION)):
        raise InputError(f"not a version {PLAIN_VERSION} or {INDEX_VERSION} lmrec item "
                         "index", location=Location(str(meta_path)),
                         found=f"{meta.get('format')} v{meta.get('format_version')}")
    n, d = int(meta["n_items"]), int(meta["dim"])
    params = {k: int(v) for k, v in meta.get("params", {}).items()}
    if meta.get("quantize", "none") != "none" or meta["kind"] == "ivf":
        return _read_codes(folder, meta, n, d, params)
    if meta["kind"] == "exact":
        vecs = np.load(folder / VECTORS_FILE, allow_pickle=False)
        if vecs.shape != (n, d) or vecs.dtype != np.float32:
            raise InputError("item vectors do not match index.json",
                             location=Location(str(folder / VECTORS_FILE)),
                             expected=f"float32 ({n}, {d})",
                             found=f"{vecs.dtype} {vecs.shape}")
        return IndexParts("exact", vecs, None, {}, "none")
    if meta["kind"] != "hnsw":
        raise InputError(f"unknown index kind {meta['kind']!r}",
                         location=Location(str(meta_path), column="kind"))
    import faiss

    path = folder / HNSW_FILE
    if not path.exists():
        raise InputError("HNSW index file missing", location=Location(str(path)))
    index = faiss.read_index(str(path))
    if index.ntotal != n or index.d != d:
        raise InputError("faiss index does not match index.json",
                         location=Location(str(path)),
                         expected=f"{n} vectors of {d} dimensions",
                         found=f"{index.ntotal} of {index.d}")
    return IndexParts("hnsw", storage_view(index, n, d), index, params, "none")


def _read_codes(folder: Path, meta: dict[str, Any], n: int, d: int,
                params: dict[str, int]) -> IndexParts:
    """A compressed or ivf index: `codes.faiss`, checked against index.json."""
    import faiss

    kind, quantize = str(meta["kind"]), str(meta.get("quantize", "none"))
    path = folder / str(meta.get("file", CODES_FILE))
    if not path.exists():
        raise InputError("index codes file missing", location=Location(str(path)))
    index = faiss.read_index(str(path))  # already of its concrete class
    found = C.kind_of(index)
    if (found != (kind, quantize) or index.ntotal != n or index.d != d
            or int(index.sa_code_size()) != int(meta.get("code_size", -1))):
        raise InputError("faiss index does not match index.json",
                         location=Location(str(path)),
                         expected=f"{kind} {quantize}, {n} vectors of {d} dimensions",
                         found=f"{found[0]} {found[1]}, {index.ntotal} of {index.d}")
    return IndexParts(kind, None, index, params, quantize)


def storage_view(index: Any, n: int, d: int) -> np.ndarray:
    """(n, d) view of an IndexHNSWFlat's stored vectors (no copy: they are kept once)."""
    import faiss

    storage = faiss.downcast_index(index.storage)
    return faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)
