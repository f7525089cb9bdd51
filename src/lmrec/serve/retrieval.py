"""Top-k item retrieval by inner product: exact (matrix product) or approximate (faiss HNSW).

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

Threads: the build uses all cores (`threads`); searches run on `search_threads` OpenMP threads
(1 by default: one request per server worker thread; the setting is per calling thread).

Saved as a folder: `index.json` (kind, sizes, parameters) plus `hnsw.faiss`
(faiss.write_index) or `vectors.npy` for the exact kind; no pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmrec.errors import ConfigError, InputError, Location
from lmrec.jsonfile import read_json
from lmrec.serve.vector_ties import Duplicates, find_duplicates, tie_duplicates

INDEX_FORMAT = "lmrec-item-index"
INDEX_VERSION = 1
_META = "index.json"
_HNSW_FILE = "hnsw.faiss"
_VECTORS_FILE = "vectors.npy"
_SCORE_BLOCK_BYTES = 128 * 2**20  # (rows, n_items) float32 scores computed at once
_ADD_CHUNK = 50_000  # HNSW insertions per faiss call (progress granularity)
# Catalogues from this size up get an HNSW index (below it exact search is fast: 100k x 64
# float32 inner products take about 1 ms a query).
DEFAULT_ANN_THRESHOLD = 100_000
GRAPH_NORM_POWER = 0.5  # the HNSW graph is built on v * |v|^(p - 1): norms damped to |v|^p

Kind = Literal["exact", "hnsw"]


class ItemIndex:
    """Inner-product top-k over a fixed item catalogue. Build with `ItemIndex.build`."""

    kind: Kind
    n_items: int
    dim: int

    def __init__(self, kind: Kind, vectors: np.ndarray, *, faiss_index: Any = None,
                 params: dict[str, int] | None = None) -> None:
        """Internal: use `build` or `load`. `vectors` (n_items, dim) float32, possibly a view
        into `faiss_index`'s storage (which must then stay alive with it)."""
        self.kind = kind
        self.n_items, self.dim = vectors.shape
        self._vectors = vectors
        self._faiss = faiss_index
        self.params = dict(params or {})
        self.search_threads = 1
        self._dups: Duplicates | bool | None = False  # False: not looked for yet

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
    ) -> ItemIndex:
        """Index `item_vecs` (n_items, d) for inner-product search.

        `kind`: "exact", "hnsw", or "auto" (exact below `exact_below` items, else hnsw).
        `threads`: OpenMP threads for the HNSW build (default: all cores).
        """
        vecs = _as_matrix(item_vecs, "item_vecs")
        if vecs.shape[0] == 0 or vecs.shape[1] == 0:
            raise InputError("item_vecs: need at least one item and one dimension",
                             found=f"shape {vecs.shape}")
        if not np.isfinite(vecs).all():
            raise InputError("item_vecs: contains NaN or infinite values")
        if kind == "auto":
            kind = "exact" if vecs.shape[0] < exact_below else "hnsw"
        if kind == "exact":
            return cls("exact", np.ascontiguousarray(vecs))
        if kind != "hnsw":
            raise ConfigError(f"kind: unknown index kind {kind!r} (known: auto, exact, hnsw)")
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
        view = _storage_view(index, n, d)
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
    def item_vectors(self) -> np.ndarray:
        """(n_items, dim) float32 item vectors (read-only; a view for hnsw)."""
        view = self._vectors.view()
        view.flags.writeable = False
        return view

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
        if self.kind == "exact":
            self._search_exact(q, k, excl, allow, np.arange(b), out_i, out_s)
        else:
            self._search_hnsw(q, k, excl, allow, out_i, out_s)
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
        vecs = self._vectors if subset is None else self._vectors[subset]  # (m, d)
        m = vecs.shape[0]
        block = max(1, _SCORE_BLOCK_BYTES // (4 * m))
        for start in range(0, rows.size, block):
            r = rows[start : start + block]
            scores = q[r] @ vecs.T  # (len(r), m)
            self._tie_duplicates(q[r], scores, subset)
            if blank is not None:
                scores[:, blank] = -np.inf
            if excl is not None:
                row_of, items = _flatten_rows([excl[i] for i in r])
                if subset is not None:  # item index -> position in the subset (if allowed)
                    pos = np.minimum(np.searchsorted(subset, items), m - 1)
                    keep = subset[pos] == items
                    row_of, items = row_of[keep], pos[keep]
                scores[row_of, items] = -np.inf
            idx, vals = _top_k(scores, k)
            if subset is not None:
                idx = np.where(idx >= 0, subset[np.maximum(idx, 0)], -1)
            out_i[r, : idx.shape[1]] = idx
            out_s[r, : idx.shape[1]] = vals

    def _tie_duplicates(self, q: np.ndarray, scores: np.ndarray,
                        subset: np.ndarray | None) -> None:
        """Give the items of each set of identical vectors one score, computed once, in
        `scores` (len(q), n_items), or (len(q), len(subset)) over the items `subset`."""
        if self._dups is False:
            self._dups = find_duplicates(self._vectors)
        if isinstance(self._dups, Duplicates):
            tie_duplicates(self._dups, q, scores, subset)

    def _search_hnsw(self, q: np.ndarray, k: int, excl: list[np.ndarray] | None,
                     allow: np.ndarray | None, out_i: np.ndarray, out_s: np.ndarray) -> None:
        import faiss

        b = q.shape[0]
        n_allowed = self.n_items if allow is None else int(allow.sum())
        if n_allowed == 0:
            return
        n_excl = np.zeros(b, np.int64) if excl is None else np.array([e.size for e in excl])
        # neighbours to fetch so that k survive the exclusions and the filter, on average
        fetch = np.ceil((k + n_excl) * (self.n_items / n_allowed)).astype(np.int64)
        # A search for f neighbours visits about f * 2M vectors; past the allowed subset's
        # size, exact search over that subset is both cheaper and complete.
        visits_per_result = 2 * self.params["hnsw_m"]
        pending = np.arange(b)
        faiss.omp_set_num_threads(self.search_threads)
        while pending.size:
            too_costly = fetch[pending] * visits_per_result >= n_allowed
            if too_costly.any():
                self._search_exact(q, k, excl, allow, pending[too_costly], out_i, out_s)
                pending = pending[~too_costly]
                if not pending.size:
                    break
            f = int(fetch[pending].max())
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, f))
            _, cand = self._faiss.search(q[pending], f, params=params)  # (P, f), -1 padded
            cand.sort(axis=1)  # by item index, so that ties go to the smaller one
            valid = cand >= 0
            if allow is not None:
                valid &= allow[np.maximum(cand, 0)]
            if excl is not None:
                valid &= ~_member(cand, [excl[i] for i in pending], self.n_items)
            # exact inner products for the candidates, -inf where filtered out
            safe = np.where(valid, cand, 0)
            scores = np.einsum("pd,pfd->pf", q[pending], self._vectors[safe])
            scores[~valid] = -np.inf
            n_valid = valid.sum(axis=1)
            finished = n_valid >= k
            # a walk that returned fewer than f neighbours cannot gain from a bigger fetch
            ran_dry = ~finished & (cand < 0).any(axis=1)
            idx, vals = _top_k(scores[finished], k)
            rows = pending[finished]
            out_i[rows] = np.take_along_axis(cand[finished], idx, axis=1)
            out_s[rows] = vals
            if ran_dry.any():
                self._search_exact(q, k, excl, allow, pending[ran_dry], out_i, out_s)
            pending = pending[~(finished | ran_dry)]
            fetch[pending] *= 2

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

    # --- persistence ------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write `index.json` plus `hnsw.faiss` (faiss.write_index) or `vectors.npy`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"format": INDEX_FORMAT, "format_version": INDEX_VERSION, "kind": self.kind,
                "n_items": self.n_items, "dim": self.dim, "params": self.params,
                "graph_norm_power": GRAPH_NORM_POWER if self.kind == "hnsw" else None}
        if self.kind == "hnsw":
            import faiss

            faiss.write_index(self._faiss, str(folder / _HNSW_FILE))
        else:
            np.save(folder / _VECTORS_FILE, self._vectors, allow_pickle=False)
        (folder / _META).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> ItemIndex:
        """Read an index written by `save`."""
        folder = Path(folder)
        meta_path = folder / _META
        if not meta_path.exists():
            raise InputError(f"not a saved item index ({_META} missing)",
                             location=Location(str(folder)))
        meta = read_json(meta_path)
        if meta.get("format") != INDEX_FORMAT or meta.get("format_version") != INDEX_VERSION:
            raise InputError(f"not a version {INDEX_VERSION} lmrec item index",
                             location=Location(str(meta_path)),
                             found=f"{meta.get('format')} v{meta.get('format_version')}")
        n, d = int(meta["n_items"]), int(meta["dim"])
        if meta["kind"] == "exact":
            vecs = np.load(folder / _VECTORS_FILE, allow_pickle=False)
            if vecs.shape != (n, d) or vecs.dtype != np.float32:
                raise InputError("item vectors do not match index.json",
                                 location=Location(str(folder / _VECTORS_FILE)),
                                 expected=f"float32 ({n}, {d})",
                                 found=f"{vecs.dtype} {vecs.shape}")
            return cls("exact", vecs)
        if meta["kind"] != "hnsw":
            raise InputError(f"unknown index kind {meta['kind']!r}",
                             location=Location(str(meta_path), column="kind"))
        import faiss

        path = folder / _HNSW_FILE
        if not path.exists():
            raise InputError("HNSW index file missing", location=Location(str(path)))
        index = faiss.read_index(str(path))
        if index.ntotal != n or index.d != d:
            raise InputError("faiss index does not match index.json",
                             location=Location(str(path)),
                             expected=f"{n} vectors of {d} dimensions",
                             found=f"{index.ntotal} of {index.d}")
        return cls("hnsw", _storage_view(index, n, d), faiss_index=index,
                   params={k: int(v) for k, v in meta["params"].items()})

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.params.items())
        return f"ItemIndex(kind={self.kind!r}, n_items={self.n_items}, dim={self.dim}{extra})"


# --- helpers ----------------------------------------------------------------------------
def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise InputError(f"{name}: must be a 2-D array (rows, dimensions)",
                         found=f"{arr.ndim}-D array of shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name}: must hold numbers", found=str(arr.dtype))
    return np.ascontiguousarray(arr, dtype=np.float32)


def _storage_view(index: Any, n: int, d: int) -> np.ndarray:
    """(n, d) view of an IndexHNSWFlat's stored vectors (no copy: they are kept once)."""
    import faiss

    storage = faiss.downcast_index(index.storage)
    return faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, m) scores -> best-first (B, min(k, m)) positions and values; -inf becomes -1."""
    from lmrec.models.ranking import top_k

    return top_k(scores, k)


def _flatten_rows(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-row arrays -> (row number, value) pairs, both int64."""
    sizes = np.fromiter((r.size for r in rows), np.int64, len(rows))
    values = np.concatenate(rows) if rows else np.empty(0, np.int64)
    return np.repeat(np.arange(len(rows)), sizes), values.astype(np.int64, copy=False)


def _member(cand: np.ndarray, rows: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """(P, f) bool: cand[p, j] is one of rows[p]'s items (vectorised over all rows)."""
    row_of, items = _flatten_rows(rows)
    keys = np.unique(row_of * n_items + items)
    cand_keys = np.arange(cand.shape[0])[:, None] * n_items + cand
    return np.isin(cand_keys, keys)


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
