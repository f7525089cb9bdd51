"""Compressed item indexes for `lmrec.serve.retrieval.ItemIndex`: the item vectors kept as
codes (faiss, METRIC_INNER_PRODUCT), never as float32.

    quantize  codes per item (d dimensions)    faiss
    fp16      2 d bytes                         ScalarQuantizer QT_fp16
    int8      d bytes (per-dimension min/max)   ScalarQuantizer QT_8bit
    pq        d / 2 bytes (2 dimensions a byte)  ProductQuantizer, 256 centroids a sub-vector

Two kinds hold them: "exact", a flat scan over every code (IndexScalarQuantizer / IndexPQ), and
"ivf", an inverted file (IndexIVFScalarQuantizer / IndexIVFPQ / IndexIVFFlat) that scans the
`nprobe` lists whose centroids have the largest inner product with the query. Items join the
list of their nearest k-means centroid by L2 distance, while queries probe by inner product:
on 100k factor vectors (1,024 lists, 64 probed) the true top 10 lie in the probed lists 97.6%
of the time this way; 95% assigning items by inner product too, but scanning 11 times as many
items (the longest centroids collect most of them); 6% probing by L2, which ignores that a
long centroid's items score high; 81% with faiss's default for inner product (spherical
k-means: unit centroids). The codes encode the vectors themselves, not residuals, so a
score does not depend on which list holds the item.

Why IVF and not HNSW for compressed catalogues: an HNSW graph with M 32 costs about 260 bytes
an item for its links alone, so HNSW over int8 codes (64 + 260 bytes at d 64) is only 1.6
times smaller than HNSW over float32 (256 + 260); an inverted list costs 8 bytes an item (its
id) plus 8 for the id -> position map that decoding needs. Measured in BENCHMARKS.md
(`benchmarks/quantize.py`).

Scores are those faiss computes from the codes (the inner product with the decoded vector), so
items with identical codes score exactly alike. `decode` gives the vectors back on demand.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from lmrec.errors import ConfigError

QUANTIZE = ("none", "fp16", "int8", "pq")
_TRAIN_PER_CENTROID = 64  # k-means training points per centroid (a seeded sample)
_IVF_TRAIN_ITER = 10
_ADD_CHUNK = 100_000


def check_quantize(quantize: str, name: str = "quantize") -> str:
    if quantize not in QUANTIZE:
        raise ConfigError(f"{name}: unknown value {quantize!r} (known: {', '.join(QUANTIZE)})")
    return quantize


def pq_shape(d: int) -> int:
    """PQ sub-vectors for d dimensions: two dimensions each (one when d is odd)."""
    return d // 2 if d % 2 == 0 else d


def default_nlist(n: int) -> int:
    """Inverted lists for n items: about 4 sqrt(n) (a power of two), at least 39 items each
    (faiss's k-means minimum)."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    return int(max(1, min(target, n // 39)))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query: 1/8 of them, at least 8. At 1M factor vectors (4,096 lists)
    int8 codes then keep recall@10 .991 of exact float32 search (1/16: .989), about 1.8 ms a
    query on one thread (BENCHMARKS.md)."""
    return int(min(nlist, max(8, nlist // 8)))


def build_codes(vecs: np.ndarray, kind: str, quantize: str, *, nlist: int | None,
                threads: int | None) -> tuple[Any, dict[str, int]]:
    """A trained faiss index holding `vecs` (n, d) float32 as codes; (index, params)."""
    import faiss

    n, d = vecs.shape
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
    try:
        params: dict[str, int] = {}
        if kind == "exact":
            index = _flat_codes(d, quantize)
        else:
            nl = nlist or default_nlist(n)
            if nl < 1 or nl > n:
                raise ConfigError(f"nlist: must lie in [1, {n}] (the number of items), got {nl}")
            index = _ivf_codes(d, quantize, nl)
            params = {"nlist": nl, "nprobe": default_nprobe(nl)}
        if quantize == "pq":
            params["pq_m"] = pq_shape(d)
        if not index.is_trained:
            index.train(_training_sample(vecs, quantize))
        if kind == "ivf" and quantize in ("fp16", "int8"):
            # faiss trains an IVF's scalar quantiser on a subsample: the per-dimension ranges
            # then clip the longest items, which are the ones queries rank first (recall@10
            # .90 instead of .99 at 1M items); the ranges must cover every item
            index.sq.train(vecs)
        for start in range(0, n, _ADD_CHUNK):
            index.add(vecs[start : start + _ADD_CHUNK])
        if kind == "ivf":
            index.make_direct_map(True)  # reconstruct(i) finds item i's list and offset
    finally:
        faiss.omp_set_num_threads(before)
    return index, params


def _flat_codes(d: int, quantize: str) -> Any:
    import faiss

    if quantize == "pq":
        index = faiss.IndexPQ(d, pq_shape(d), 8, faiss.METRIC_INNER_PRODUCT)
        _quiet(index.pq.cp)
        return index
    return faiss.IndexScalarQuantizer(d, _sq_type(quantize), faiss.METRIC_INNER_PRODUCT)


def _ivf_codes(d: int, quantize: str, nlist: int) -> Any:
    import faiss

    coarse = faiss.IndexFlatL2(d)  # assigns items to lists (searches probe by inner product)
    ip = faiss.METRIC_INNER_PRODUCT
    if quantize == "none":
        index = faiss.IndexIVFFlat(coarse, d, nlist, ip)
    elif quantize == "pq":
        index = faiss.IndexIVFPQ(coarse, d, nlist, pq_shape(d), 8, ip)
        index.by_residual = False
        _quiet(index.pq.cp)
    else:
        index = faiss.IndexIVFScalarQuantizer(coarse, d, nlist, _sq_type(quantize), ip, False)
    index.own_fields = True
    coarse.this.disown()  # the IVF index frees its coarse quantiser
    index.cp.niter = _IVF_TRAIN_ITER
    # faiss makes inner-product IVF k-means spherical (unit centroids): probing by the inner
    # product with unit centroids then ranks lists by cosine alone, and a long centroid's
    # items, which score high, are missed
    index.cp.spherical = False
    _quiet(index.cp)
    return index


def _sq_type(quantize: str) -> int:
    import faiss

    return {"fp16": faiss.ScalarQuantizer.QT_fp16,
            "int8": faiss.ScalarQuantizer.QT_8bit}[quantize]


def _quiet(cp: Any) -> None:
    # small catalogues train on fewer points than faiss's advice (39 a centroid); it would
    # print a warning for each sub-quantiser
    cp.min_points_per_centroid = 1
    # k-means on a seeded sample of this many points a centroid (faiss's default, 256,
    # makes PQ training on 1M items take minutes for little gain)
    cp.max_points_per_centroid = _TRAIN_PER_CENTROID


def _training_sample(vecs: np.ndarray, quantize: str) -> np.ndarray:
    """Rows to train on: all of them (the scalar quantiser's per-dimension ranges must cover
    every item; k-means samples for itself, `max_points_per_centroid`), tiled to 256 rows
    when PQ's 256 centroids a sub-vector need more points than there are items (a tiny
    catalogue: the codebook then holds the items themselves)."""
    if quantize == "pq" and vecs.shape[0] < 256:
        return np.tile(vecs, (math.ceil(256 / vecs.shape[0]), 1))
    return vecs


def flat_codes_view(index: Any) -> np.ndarray:
    """(n, code_size) uint8 view of a flat codes index's storage (no copy)."""
    import faiss

    n, size = index.ntotal, index.code_size
    if n == 0:
        return np.zeros((0, size), np.uint8)
    return faiss.rev_swig_ptr(index.codes.data(), n * size).reshape(n, size)


def decode(index: Any, kind: str, codes: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    """(len(idx), d) float32 decoded vectors of items `idx` (checked by the caller)."""
    if idx.size == 0:
        return np.zeros((0, index.d), np.float32)
    if kind == "exact":
        assert codes is not None
        return np.asarray(index.sa_decode(np.ascontiguousarray(codes[idx])), np.float32)
    return np.asarray(index.reconstruct_batch(np.ascontiguousarray(idx, np.int64)), np.float32)


def code_bytes(index: Any) -> int:
    """Bytes of memory an index holds for its items, as a loaded index does (exact sizes of
    its arrays: codes, ids, id map, centroids, codebooks, graph links)."""
    import faiss

    index = faiss.downcast_index(index)
    n, d = index.ntotal, index.d
    if isinstance(index, faiss.IndexHNSW):
        h = index.hnsw
        graph = 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size()
        return int(graph + code_bytes(index.storage))
    if isinstance(index, faiss.IndexIVF):
        lists = faiss.downcast_InvertedLists(index.invlists)
        stored = sum(lists.list_size(i) for i in range(index.nlist))
        total = stored * (index.code_size + 8) + index.nlist * d * 4  # codes, ids, centroids
        total += 8 * n if index.direct_map.type != faiss.DirectMap.NoMap else 0
        if isinstance(index, faiss.IndexIVFScalarQuantizer):
            total += 4 * index.sq.trained.size()
        if isinstance(index, faiss.IndexIVFPQ):
            total += 4 * index.pq.centroids.size()
        return int(total)
    total = n * index.code_size  # IndexFlat, IndexScalarQuantizer, IndexPQ
    if isinstance(index, faiss.IndexScalarQuantizer):
        total += 4 * index.sq.trained.size()
    if isinstance(index, faiss.IndexPQ):
        total += 4 * index.pq.centroids.size()
    return int(total)


def kind_of(index: Any) -> tuple[str, str]:
    """(kind, quantize) a faiss index read from disk is, for checking it against index.json."""
    import faiss

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf", "none"
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivf", "pq"
    if isinstance(index, faiss.IndexPQ):
        return "exact", "pq"
    for cls, kind in ((faiss.IndexIVFScalarQuantizer, "ivf"),
                      (faiss.IndexScalarQuantizer, "exact")):
        if isinstance(index, cls):
            qt = index.sq.qtype
            q = {faiss.ScalarQuantizer.QT_fp16: "fp16",
                 faiss.ScalarQuantizer.QT_8bit: "int8"}.get(qt, "unknown")
            return kind, q
    return type(index).__name__, "unknown"
