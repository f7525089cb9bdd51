"""Top-k item retrieval by inner product: exact (matrix product) or approximate (faiss HNSW),
over float32 vectors or over compressed codes (fp16, int8, PQ: `lmrec.serve.codes`).

`ItemIndex` answers: for query vectors q (B, d), the k items i maximising q . v_i, with
per-row exclusions (seen items, business rules) and an optional catalogue-wide `allowed` mask
(attribute filters). Item indices are the model's internal ids 0..n_items-1.

- exact: one matrix product (B, d) @ (d, n_items) per batch of rows and an argpartition.
- hnsw: faiss `IndexHNSWFlat` with METRIC_INNER_PRODUCT: the search walks the graph greedily
  by the true inner product and returns exact scores. The graph itself is built on the item
  vectors with their norms damped, v / sqrt(|v|), after which the stored vectors are replaced
  by the originals. Why: a graph built on raw inner products (Morozov & Babenko 2018) links
  nearly every item to a few large-norm hubs, so it finds the top 10 but cannot reach items of
  moderate norm further down the ranking, which is what a query needs once the user's seen
  items (the model's own top scores) are excluded; a graph on unit vectors (cosine) has the
  opposite fault. Measured on 200k synthetic factor vectors (benchmarks/ann_recall.py, ef 64):
  recall@10 0.954 raw, 0.990 damped; recall@110 0.75 raw, 0.88 damped (at 1M items: recall@10
  0.937 raw, 0.976 damped). The textbook reduction
  to L2 (append sqrt(M^2 - |v|^2), Bachrach et al. 2014) did worse still at this ef (0.78):
  the extra coordinate swamps the distances when a few items have large norms.

Filters on the ANN path over-fetch: k + len(exclude[b]) neighbours, scaled by the allowed
fraction, doubled until k results survive. When that fetch would visit about as many vectors
as the allowed subset holds (a very selective filter), the rows are answered by exact search
over the allowed subset instead, so a query always returns k items when k remain.

Ties: equal scores go to the smaller item index (`lmrec.models.ranking.top_k`). Exact search
scores each set of identical item vectors once and gives that score to all of them
(`lmrec.serve.vector_ties`: a BLAS product may score two copies of one vector apart).

Compression (`quantize`: "fp16", "int8" or "pq"; "none" by default): the index keeps faiss
codes instead of the float32 vectors, searched by a flat scan over all codes (kind "exact") or
through an inverted file (kind "ivf", which "auto" picks for large catalogues when quantising;
see `lmrec.serve.codes` for why not HNSW). Scores are the inner products with the decoded
vectors. Exclusions and filters over-fetch as on the HNSW path; a flat scan answers every row
completely, an inverted file whose probed lists run dry scans all lists. A tie between the
k-th score and the weakest fetched one fetches more, so ties still go to the smaller index.
`vectors(idx)` decodes rows on demand and `norms()` gives their lengths: callers never need
the whole float32 matrix.

Threads: the build uses all cores (`threads`); searches run on `search_threads` OpenMP threads
(1 by default: one request per server worker thread; the setting is per calling thread).

Saved as a folder (`lmrec.serve.index_files`): `index.json` (kind, quantize, sizes,
parameters) plus `hnsw.faiss` (faiss.write_index), `vectors.npy` for the exact kind, or
`codes.faiss` for a compressed or IVF index (index.json format_version 2; version 1
folders, written before compression, load as before); no pickle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmrec.errors import ConfigError, InputError
from lmrec.serve import codes as C
from lmrec.serve.index_files import read_index, storage_view, write_index
from lmrec.serve.index_search import flatten_rows, search_codes, search_hnsw, top_k
from lmrec.serve.vector_ties import Duplicates, find_duplicates, tie_duplicates

_SCORE_BLOCK_BYTES = 128 * 2**20  # (rows, n_items) float32 scores computed at once
_ADD_CHUNK = 50_000  # HNSW insertions per faiss call (progress granularity)
_NORM_BLOCK = 65_536  # rows decoded at once for norms()
# Catalogues from this size up get an HNSW index (below it exact search is fast: 100k x 64
# float32 inner products take about 1 ms a query).
DEFAULT_ANN_THRESHOLD = 100_000
GRAPH_NORM_POWER = 0.5  # the HNSW graph is built on v * |v|^(p - 1): norms damped to |v|^p

Kind = Literal["exact", "hnsw", "ivf"]


class ItemIndex:
    """Inner-product top-k over a fixed item catalogue. Build with `ItemIndex.build`."""

    kind: Kind
    quantize: str  # "none", "fp16", "int8" or "pq"
    n_items: int
    dim: int

    def __init__(self, kind: Kind, vectors: np.ndarray | None, *, faiss_index: Any = None,
                 params: dict[str, int] | None = None, quantize: str = "none") -> None:
        """Internal: use `build` or `load`. `vectors` (n_items, dim) float32, possibly a view
        into `faiss_index`'s storage (which must then stay alive with it); None when
        `faiss_index` holds codes (a quantised or IVF index)."""
        self.kind = kind
        self.quantize = quantize
        self._vectors = vectors
        self._faiss = faiss_index
        self.n_items, self.dim = (vectors.shape if vectors is not None
                                  else (int(faiss_index.ntotal), int(faiss_index.d)))
        # (n, code_size) view of a flat codes index, for decoding rows by index
        self._codes = (C.flat_codes_view(faiss_index) if vectors is None and kind == "exact"
                       else None)
        self.params = dict(params or {})
        self.search_threads = 1
        self._dups: Duplicates | bool | None = False  # False: not looked for yet
        self._norms: np.ndarray | None = None

    # --- construction -----------------------------------------------------------------
    @classmethod
    def build(
        cls,
        item_vecs: np.ndarray,
        *,
        kind: str = "auto",
        exact_below: int = DEFAULT_ANN_THRESHOLD,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        threads: int | None = None,
        progress: bool = False,
        quantize: str = "none",
        nlist: int | None = None,
    ) -> ItemIndex:
        """Index `item_vecs` (n_items, d) for inner-product search.

        `kind`: "exact", "hnsw", "ivf", or "auto" (exact below `exact_below` items, else
        hnsw, or ivf when quantising). `quantize`: "none" (float32), "fp16", "int8" or "pq"
        codes (exact or ivf kinds). `nlist`: inverted lists of an ivf index (default about
        4 sqrt(n)). `threads`: OpenMP threads for the build (default: all cores).
        """
        C.check_quantize(quantize)
        vecs = _as_matrix(item_vecs, "item_vecs")
        if vecs.shape[0] == 0 or vecs.shape[1] == 0:
            raise InputError("item_vecs: need at least one item and one dimension",
                             found=f"shape {vecs.shape}")
        if not np.isfinite(vecs).all():
            raise InputError("item_vecs: contains NaN or infinite values")
        if kind == "auto":
            big = "hnsw" if quantize == "none" else "ivf"
            kind = "exact" if vecs.shape[0] < exact_below else big
        if kind not in ("exact", "hnsw", "ivf"):
            raise ConfigError(f"kind: unknown index kind {kind!r} (known: auto, exact, hnsw, "
                              "ivf)")
        if kind == "ivf" or quantize != "none":
            if kind == "hnsw":
                raise ConfigError(f"quantize: an hnsw index keeps float32 vectors; use kind "
                                  f"'ivf' or 'exact' for {quantize} codes")
            index, params = C.build_codes(vecs, kind, quantize, nlist=nlist, threads=threads)
            return cls(kind, None, faiss_index=index, params=params,  # type: ignore[arg-type]
                       quantize=quantize)
        if kind == "exact":
            return cls("exact", np.ascontiguousarray(vecs))
        for name, value in (("hnsw_m", hnsw_m), ("ef_construction", ef_construction),
                            ("ef_search", ef_search)):
            if value < 1:
                raise ConfigError(f"{name}: must be at least 1, got {value}")
        return cls._build_hnsw(vecs, hnsw_m=hnsw_m, ef_construction=ef_construction,
                               ef_search=ef_search, threads=threads, progress=progress)

    @classmethod
    def _build_hnsw(cls, vecs: np.ndarray, *, hnsw_m: int, ef_construction: int,
                    ef_search: int, threads: int | None, progress: bool) -> ItemIndex:
        import faiss

        n, d = vecs.shape
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
        try:
            with _progress_bar(progress, "building HNSW index", n) as advance:
                for start in range(0, n, _ADD_CHUNK):
                    chunk = vecs[start : start + _ADD_CHUNK]
                    norms = np.linalg.norm(chunk, axis=1, keepdims=True)
                    scale = np.where(norms > 0, norms, 1) ** (GRAPH_NORM_POWER - 1)
                    index.add(chunk * scale.astype(np.float32))
                    advance(chunk.shape[0])
        finally:
            faiss.omp_set_num_threads(before)
        view = storage_view(index, n, d)
        view[:] = vecs  # the graph stays; searches and scores use the true vectors
        params = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
        return cls("hnsw", view, faiss_index=index, params=params)

    @property
    def ef_search(self) -> int:
        """HNSW candidate list size at query time (recall vs speed); 0 for exact."""
        return int(self.params.get("ef_search", 0))

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if self.kind != "hnsw":
            raise ConfigError("ef_search: only an hnsw index has it")
        if value < 1:
            raise ConfigError(f"ef_search: must be at least 1, got {value}")
        self.params["ef_search"] = int(value)

    @property
    def nprobe(self) -> int:
        """Inverted lists an ivf index scans per query (recall vs speed); 0 for others."""
        return int(self.params.get("nprobe", 0))

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "ivf":
            raise ConfigError("nprobe: only an ivf index has it")
        if not 1 <= value <= self.params["nlist"]:
            raise ConfigError(f"nprobe: must lie in [1, {self.params['nlist']}], got {value}")
        self.params["nprobe"] = int(value)

    @property
    def item_vectors(self) -> np.ndarray:
        """(n_items, dim) float32 item vectors (read-only; a view for float32 exact and hnsw
        indexes, all rows decoded for a compressed one: prefer `vectors(idx)`)."""
        if self._vectors is None:
            return self.vectors(np.arange(self.n_items))
        view = self._vectors.view()
        view.flags.writeable = False
        return view

    def vectors(self, idx: np.ndarray | Sequence[int]) -> np.ndarray:
        """(len(idx), dim) float32 vectors of the items `idx`, decoded from the codes of a
        compressed index (what its scores are inner products with)."""
        arr = np.asarray(idx)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InputError("idx: item indices must be integers", found=str(arr.dtype))
        arr = arr.astype(np.int64, copy=False).ravel()
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_items):
            raise InputError(f"idx: item indices must lie in [0, {self.n_items})",
                             found=f"range [{arr.min()}, {arr.max()}]")
        if self._vectors is not None:
            return self._vectors[arr]
        return C.decode(self._faiss, self.kind, self._codes, arr)

    def norms(self) -> np.ndarray:
        """(n_items,) float32 lengths of the item vectors (decoded ones when compressed);
        computed once, in blocks, and kept (4 bytes an item)."""
        if self._norms is None:
            out = np.empty(self.n_items, np.float32)
            for start in range(0, self.n_items, _NORM_BLOCK):
                rows = self.vectors(np.arange(start, min(start + _NORM_BLOCK, self.n_items)))
                out[start : start + rows.shape[0]] = np.linalg.norm(rows, axis=1)
            self._norms = out
        view = self._norms.view()
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Bytes of memory the index holds for its items (vectors or codes, graph links,
        inverted lists, codebooks; the norms once computed)."""
        extra = 0 if self._norms is None else self._norms.nbytes
        if self._faiss is None:
            return int(self._vectors.nbytes) + extra  # type: ignore[union-attr]
        return C.code_bytes(self._faiss) + extra

    # --- search -----------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items by inner product for each query row, best first.

        queries (B, dim) float; `exclude[b]` item indices never returned for row b;
        `allowed` (n_items,) bool, False = never returned. Returns idx (B, k) int64 and
        scores (B, k) float32; rows with fewer than k eligible items are padded with
        idx -1 / score -inf. Ties are broken by the smaller item index.
        """
        q = _as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise InputError(f"queries: vectors must have {self.dim} dimensions (the index's)",
                             found=f"shape {q.shape}")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise InputError("k: must be a non-negative integer", found=repr(k))
        k = int(k)
        b = q.shape[0]
        excl = self._check_exclude(exclude, b)
        allow = self._check_allowed(allowed)
        out_i = np.full((b, k), -1, dtype=np.int64)
        out_s = np.full((b, k), -np.inf, dtype=np.float32)
        if b == 0 or k == 0:
            return out_i, out_s
        if self._vectors is None:
            search_codes(self, q, k, excl, allow, out_i, out_s)
        elif self.kind == "exact":
            self._search_exact(q, k, excl, allow, np.arange(b), out_i, out_s)
        else:
            search_hnsw(self, q, k, excl, allow, out_i, out_s)
        return out_i, out_s

    def _search_exact(self, q: np.ndarray, k: int, excl: list[np.ndarray] | None,
                      allow: np.ndarray | None, rows: np.ndarray, out_i: np.ndarray,
                      out_s: np.ndarray) -> None:
        """Exact top-k of queries q[rows] into out_*[rows], over the allowed items only.

        A selective mask scores only the allowed subset (an (m, d) gather); a mask that allows
        most items scores them all and blanks the others, which costs no per-request copy."""
        n_allowed = self.n_items if allow is None else int(allow.sum())
        if n_allowed == 0:
            return
        blank = None  # (n_items,) bool of the disallowed items, when scoring all
        subset = None
        if n_allowed < self.n_items:
            if 2 * n_allowed > self.n_items:
                blank = ~allow
            else:
                subset = np.flatnonzero(allow)
        if subset is None and self._vectors is None:
            raise AssertionError("a compressed index scans its codes (codes.search_codes)")
        # (m, d): a compressed index decodes the allowed subset (a selective filter)
        vecs = self._vectors if subset is None else self.vectors(subset)
        dups = self._duplicates(vecs, subset)
        m = vecs.shape[0]
        block = max(1, _SCORE_BLOCK_BYTES // (4 * m))
        for start in range(0, rows.size, block):
            r = rows[start : start + block]
            scores = q[r] @ vecs.T  # (len(r), m)
            if dups is not None:
                tie_duplicates(dups, q[r], scores, subset if self._vectors is not None else None)
            if blank is not None:
                scores[:, blank] = -np.inf
            if excl is not None:
                row_of, items = flatten_rows([excl[i] for i in r])
                if subset is not None:  # item index -> position in the subset (if allowed)
                    pos = np.minimum(np.searchsorted(subset, items), m - 1)
                    keep = subset[pos] == items
                    row_of, items = row_of[keep], pos[keep]
                scores[row_of, items] = -np.inf
            idx, vals = top_k(scores, k)
            if subset is not None:
                idx = np.where(idx >= 0, subset[np.maximum(idx, 0)], -1)
            out_i[r, : idx.shape[1]] = idx
            out_s[r, : idx.shape[1]] = vals

    def _duplicates(self, vecs: np.ndarray, subset: np.ndarray | None) -> Duplicates | None:
        """The sets of identical item vectors, so that each set is scored once (exact search
        gives them one score): found once over the float32 vectors (positions are item
        indices), or over a compressed index's decoded subset `vecs` (positions in it)."""
        if self._vectors is None:
            return find_duplicates(vecs)
        if self._dups is False:
            self._dups = find_duplicates(self._vectors)
        return self._dups if isinstance(self._dups, Duplicates) else None

    # --- input checks -----------------------------------------------------------------
    def _check_exclude(self, exclude: Sequence[np.ndarray] | None,
                       b: int) -> list[np.ndarray] | None:
        if exclude is None:
            return None
        if len(exclude) != b:
            raise InputError("exclude: need one array of item indices per query row",
                             expected=f"{b} arrays", found=f"{len(exclude)}")
        out = []
        for row, items in enumerate(exclude):
            arr = np.asarray(items)
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise InputError(f"exclude[{row}]: item indices must be integers",
                                 found=str(arr.dtype))
            arr = arr.astype(np.int64, copy=False).ravel()
            if arr.size and (arr.min() < 0 or arr.max() >= self.n_items):
                raise InputError(f"exclude[{row}]: item indices must lie in [0, {self.n_items})",
                                 found=f"range [{arr.min()}, {arr.max()}]")
            out.append(arr)
        return out if any(e.size for e in out) else None

    def _check_allowed(self, allowed: np.ndarray | None) -> np.ndarray | None:
        if allowed is None:
            return None
        mask = np.asarray(allowed)
        if mask.dtype != np.bool_ or mask.shape != (self.n_items,):
            raise InputError("allowed: must be a boolean mask with one entry per item",
                             expected=f"bool array of shape ({self.n_items},)",
                             found=f"{mask.dtype} array of shape {mask.shape}")
        return mask

    # --- persistence (`lmrec.serve.index_files`) --------------------------------------------
    def save(self, folder: Path) -> None:
        """Write `index.json` plus `hnsw.faiss` (faiss.write_index), `vectors.npy`, or
        `codes.faiss` (a compressed or ivf index)."""
        write_index(Path(folder), kind=self.kind, quantize=self.quantize, n_items=self.n_items,
                    dim=self.dim, params=self.params, vectors=self._vectors,
                    faiss_index=self._faiss, graph_norm_power=GRAPH_NORM_POWER)

    @classmethod
    def load(cls, folder: Path) -> ItemIndex:
        """Read an index written by `save`."""
        parts = read_index(Path(folder))
        return cls(parts.kind, parts.vectors, faiss_index=parts.faiss_index,  # type: ignore[arg-type]
                   params=parts.params, quantize=parts.quantize)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.params.items())
        q = "" if self.quantize == "none" else f", quantize={self.quantize!r}"
        return (f"ItemIndex(kind={self.kind!r}{q}, n_items={self.n_items}, dim={self.dim}"
                f"{extra})")


# --- helpers ----------------------------------------------------------------------------
def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise InputError(f"{name}: must be a 2-D array (rows, dimensions)",
                         found=f"{arr.ndim}-D array of shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name}: must hold numbers", found=str(arr.dtype))
    return np.ascontiguousarray(arr, dtype=np.float32)


class _NoProgress:
    def __enter__(self) -> Any:
        return lambda n=1: None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress_bar(enabled: bool, title: str, total: int) -> Any:
    if not enabled:
        return _NoProgress()
    from lmrec.console import bar

    return bar(title, total)
