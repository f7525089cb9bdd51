"""Compressed item indexes (`lmrec train --quantize`): memory, recall and latency at 1M items,
and the accuracy a real model keeps.

Part `synthetic`: the 1,000,000 x 64 factor-like catalogue of `ann_recall.py` (low rank,
topic clusters, log-normal norms; not Gaussian noise) and 1,000 user queries. For float32,
fp16, int8 and PQ codes, each as an exact flat scan and as an ANN index (HNSW for float32 as
served today, IVF for codes; `lmrec.serve.codes` says why), it measures: the bytes the index
holds in memory (`ItemIndex.nbytes`) and on disk (its saved folder), recall@10 against the
exact float32 top 10, the same with each user's "seen" items excluded (30 drawn from their
exact top 100, as a served query excludes a history), and one-query latency p50/p99 on one
thread (`--latency-queries` queries, one per call: the serving pattern). IVF rows are measured
at several nprobe values. The float32 HNSW index is the one `ann_recall.py` caches.

Part `models`: ALS on ml-latest-small (ratings >= 3, 10-core) and amazon-beauty (5-core),
random per-user 8:1:1 split (seed 0), full ranking with the training items masked: recall@10
and NDCG@10 with the trained float32 item factors and with the factors decoded from each
code (what the compressed flat index scores with).

    OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/quantize.py
    .venv/bin/python benchmarks/quantize.py --part models
    .venv/bin/python benchmarks/quantize.py --items 100000 --part synthetic

Prints one JSON object a line; the last line holds every result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from ann_recall import (
    DEFAULT_CACHE,
    cached_index,
    catalogue_key,
    recall_at,
    synthetic_factors,
)

from lmrec.serve.retrieval import ItemIndex

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
FORMATS = ("none", "fp16", "int8", "pq")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def latency_ms(index: ItemIndex, queries: np.ndarray, k: int) -> tuple[float, float]:
    """p50, p99 of one query per call on one thread, in ms."""
    index.search_threads = 1
    index.search(queries[:5], k)  # warm caches
    times = np.empty(queries.shape[0])
    for row in range(queries.shape[0]):
        t0 = time.perf_counter()
        index.search(queries[row : row + 1], k)
        times[row] = time.perf_counter() - t0
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 99) * 1000)


def measure(name: str, index: ItemIndex, build_s: float | None, users: np.ndarray,
            truth: np.ndarray, seen: list[np.ndarray], truth_seen: np.ndarray, k: int,
            lat_q: int, base_bytes: int, **extra: Any) -> dict[str, Any]:
    found, _ = index.search(users, k)
    found_seen, _ = index.search(users, k, exclude=seen)
    p50, p99 = latency_ms(index, users[:lat_q], k)
    tmp = Path(tempfile.mkdtemp(prefix="lmrec-quantize-"))
    try:
        index.save(tmp / "index")
        disk = folder_bytes(tmp / "index")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row = {"index": name, "kind": index.kind, "quantize": index.quantize, **extra,
           "memory_mb": round(index.nbytes / 2**20, 1), "disk_mb": round(disk / 2**20, 1),
           "smaller_than_exact_fp32": round(base_bytes / index.nbytes, 2),
           f"recall@{k}": round(recall_at(found, truth), 4),
           f"recall@{k}_seen_excluded": round(recall_at(found_seen, truth_seen), 4),
           "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
           "build_s": None if build_s is None else round(build_s, 1)}
    print(json.dumps(row), flush=True)
    return row


def synthetic(args: argparse.Namespace) -> list[dict[str, Any]]:
    items, users = synthetic_factors(args.items, args.queries, args.dim, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    exact = ItemIndex.build(items, kind="exact")
    deep, _ = exact.search(users, 100)
    truth = deep[:, : args.k]
    seen = [np.sort(rng.choice(row, 30, replace=False)) for row in deep]
    truth_seen, _ = exact.search(users, args.k, exclude=seen)
    base = exact.nbytes
    common = (users, truth, seen, truth_seen, args.k, args.latency_queries, base)
    rows = [measure("exact fp32", exact, None, *common)]
    del exact
    for q in FORMATS[1:]:
        if "exact" not in args.kinds or q not in args.formats:
            continue
        t0 = time.perf_counter()
        index = ItemIndex.build(items, kind="exact", quantize=q)
        rows.append(measure(f"exact {q}", index, time.perf_counter() - t0, *common))
        del index
    if "hnsw" in args.kinds:
        key = catalogue_key(args.items, args.dim, args.seed, 32, 80)
        hnsw, build_s = cached_index(items, key, args.cache, hnsw_m=32, ef_construction=80)
        hnsw.ef_search = 64
        rows.append(measure("hnsw fp32 (M 32, ef 64)", hnsw, build_s, *common, ef_search=64))
        # HNSW over int8 codes keeps the same graph: its size follows from this index's
        graph = hnsw.nbytes - args.items * args.dim * 4
        rows.append({"index": "hnsw int8 (derived: same graph, int8 codes)",
                     "memory_mb": round((graph + args.items * args.dim) / 2**20, 1),
                     "smaller_than_exact_fp32": round(base / (graph + args.items * args.dim),
                                                      2)})
        print(json.dumps(rows[-1]), flush=True)
        del hnsw
    for q in FORMATS:
        if "ivf" not in args.kinds or q not in args.formats:
            continue
        t0 = time.perf_counter()
        index = ItemIndex.build(items, kind="ivf", quantize=q)
        build = time.perf_counter() - t0
        default = index.nprobe
        for nprobe in sorted({default // 4, default // 2, default, default * 2}):
            if 1 <= nprobe <= index.params["nlist"]:
                index.nprobe = nprobe
                rows.append(measure(f"ivf {q}", index, build if nprobe == default else None,
                                    *common, nlist=index.params["nlist"], nprobe=nprobe,
                                    default=nprobe == default))
        del index
    return rows


def real_models(args: argparse.Namespace) -> list[dict[str, Any]]:
    from lmrec.datasets import load_dataset
    from lmrec.evaluate import evaluate, split_random
    from lmrec.models import create_model
    from lmrec.prepare import PrepareConfig
    from lmrec.train.options import TrainingOptions

    rows = []
    for name in ("ml-latest-small", "amazon-beauty"):
        if name == "ml-latest-small":
            ds = load_dataset("movielens-latest-small", SHARED / name, download=False,
                              config=PrepareConfig(min_rating=3, core=10)).dataset
        else:
            ds = load_dataset(name, SHARED / name, download=False).dataset
        split = split_random(ds, seed=0)
        model = create_model("als", {}).fit(split.train, TrainingOptions(rng=0))
        trained = np.array(model.V_, copy=True)
        for q in FORMATS:
            if q != "none":
                index = ItemIndex.build(trained, kind="exact", quantize=q)
                model.V_ = index.vectors(np.arange(index.n_items))
            res = evaluate(model, split, ks=(10,), history="trained")
            model.V_ = trained
            row = {"dataset": name, "model": "als", "factors": int(trained.shape[1]),
                   "items": ds.n_items, "quantize": q,
                   "recall@10": round(float(res.metrics["recall@10"]), 4),
                   "ndcg@10": round(float(res.metrics["ndcg@10"]), 4)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("all", "synthetic", "models"), default="all")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--latency-queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--kinds", nargs="+", default=["exact", "hnsw", "ivf"],
                    help="synthetic part: which index kinds (exact float32 always runs)")
    ap.add_argument("--formats", nargs="+", default=list(FORMATS),
                    help="synthetic part: which of none, fp16, int8, pq")
    args = ap.parse_args()
    out: dict[str, Any] = {"benchmark": "quantize", "items": args.items, "dim": args.dim,
                           "queries": args.queries, "cores": os.cpu_count()}
    if args.part in ("all", "models"):
        out["models"] = real_models(args)
    if args.part in ("all", "synthetic"):
        out["synthetic"] = synthetic(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
