"""Recall and speed of the HNSW item index on a synthetic 1M-item catalogue of factor vectors.

The vectors imitate what a trained factor model (ALS, two-tower) gives, not isotropic noise
(on which every graph index fails, recall@10 about 0.2): items are low-rank (rank 24 in 64
dimensions, decaying spectrum), grouped in topics whose sizes follow a power law, with norms
that vary per item (popular items get larger norms in implicit-feedback factorisation), plus
a little full-rank noise. Users mix one to three topics.

Measures: build time (all cores), recall@10 of the index against exact search for 1,000
queries at several efSearch values, and single-thread queries/s with one query per call (the
serving pattern) and in a batch. Also recall@10 when each query's exact top 100 is excluded
(`recall@10_excl_top100`): a factor model scores a user's seen items highest, so serving with
seen items removed needs ranks 101-110 found as well as ranks 1-10. The built index is
cached in --cache (keyed by the catalogue parameters) so `serve_load.py` and reruns reuse it.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/ann_recall.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/ann_recall.py --items 200000 --ef 32 64

Prints one JSON line of results (last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from lmrec.serve.retrieval import GRAPH_NORM_POWER, ItemIndex

DEFAULT_CACHE = Path(os.environ.get("LMREC_BENCH_CACHE", "/tmp/lmrec-bench"))


def synthetic_factors(n_items: int, n_users: int, dim: int = 64, *, rank: int = 24,
                      n_topics: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item (n_items, dim) and user (n_users, dim) float32 vectors shaped like trained factors.

    Both sides live near a shared rank-`rank` subspace; items cluster around topic centres,
    topic sizes follow a Zipf law, item norms are log-normal.
    """
    rng = np.random.default_rng(seed)
    spectrum = 1.0 / np.sqrt(np.arange(1, rank + 1))  # per-direction scale of the latent space
    basis = rng.standard_normal((rank, dim)) / np.sqrt(rank)  # (rank, dim)
    centres = rng.standard_normal((n_topics, rank)) * spectrum  # (n_topics, rank)
    topic_p = 1.0 / np.arange(1, n_topics + 1) ** 0.8
    topic_p /= topic_p.sum()

    def side(n: int, spread: float, mix: int) -> np.ndarray:
        out = np.empty((n, dim), np.float32)
        for start in range(0, n, 200_000):  # chunks keep float64 temporaries small
            m = min(200_000, n - start)
            z = np.zeros((m, rank))
            for _ in range(mix):
                z += centres[rng.choice(n_topics, m, p=topic_p)] * rng.random((m, 1))
            z += spread * rng.standard_normal((m, rank)) * spectrum
            v = z @ basis + 0.05 * rng.standard_normal((m, dim))
            out[start : start + m] = v
        return out

    items = side(n_items, 0.5, 1)
    items *= np.exp(0.35 * rng.standard_normal((n_items, 1))).astype(np.float32)
    users = side(n_users, 0.3, 2)
    return items, users


def cached_index(items: np.ndarray, key: str, cache: Path, *, hnsw_m: int,
                 ef_construction: int) -> tuple[ItemIndex, float | None]:
    """The HNSW index of `items` from `cache/key`, building (and saving) it when absent.

    Returns the index and the build time in seconds (None when it came from the cache).
    """
    folder = cache / key
    if (folder / "index.json").exists():
        return ItemIndex.load(folder), None
    t0 = time.perf_counter()
    index = ItemIndex.build(items, kind="hnsw", hnsw_m=hnsw_m, ef_construction=ef_construction,
                            progress=True)
    secs = time.perf_counter() - t0
    index.save(folder)
    return index, secs


def catalogue_key(n_items: int, dim: int, seed: int, hnsw_m: int, ef_construction: int) -> str:
    return (f"hnsw-n{n_items}-d{dim}-s{seed}-m{hnsw_m}-efc{ef_construction}"
            f"-g{GRAPH_NORM_POWER}")


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of `truth` (B, k) present in the same row of `found`."""
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=1)  # (B, k)
    return float(hits.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=32, help="HNSW neighbours per node")
    ap.add_argument("--ef-construction", type=int, default=80)
    ap.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args()

    t0 = time.perf_counter()
    items, users = synthetic_factors(args.items, args.queries, args.dim, seed=args.seed)
    gen_s = time.perf_counter() - t0
    key = catalogue_key(args.items, args.dim, args.seed, args.m, args.ef_construction)
    index, build_s = cached_index(items, key, args.cache, hnsw_m=args.m,
                                  ef_construction=args.ef_construction)
    index.search_threads = 1

    t0 = time.perf_counter()
    deep, _ = ItemIndex.build(items, kind="exact").search(users, 100 + args.k)
    exact_qps = args.queries / (time.perf_counter() - t0)
    truth, seen, truth_after_seen = deep[:, : args.k], list(deep[:, :100]), deep[:, 100:]
    del items

    per_ef = []
    for ef in args.ef:
        index.ef_search = ef
        t0 = time.perf_counter()
        found, _ = index.search(users, args.k)
        batch_qps = args.queries / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for row in range(users.shape[0]):
            index.search(users[row : row + 1], args.k)
        single_s = (time.perf_counter() - t0) / users.shape[0]
        found_deep, _ = index.search(users, args.k, exclude=seen)
        per_ef.append({"ef_search": ef, f"recall@{args.k}": round(recall_at(found, truth), 4),
                       f"recall@{args.k}_excl_top100": round(recall_at(found_deep,
                                                                       truth_after_seen), 4),
                       "qps_batch_1thread": round(batch_qps), "qps_single_1thread":
                       round(1 / single_s), "ms_per_single_query": round(1000 * single_s, 3)})
        print(json.dumps(per_ef[-1]), flush=True)
    print(json.dumps({
        "benchmark": "ann_recall", "items": args.items, "dim": args.dim,
        "queries": args.queries, "hnsw_m": args.m, "ef_construction": args.ef_construction,
        "graph_norm_power": GRAPH_NORM_POWER, "generate_s": round(gen_s, 1),
        "build_s": None if build_s is None else round(build_s, 1),
        "index_cached_at": str(args.cache / key), "cores": os.cpu_count(),
        "exact_qps_batched": round(exact_qps, 1), "results": per_ef}))


if __name__ == "__main__":
    main()
