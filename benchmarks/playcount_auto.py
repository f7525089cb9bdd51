"""Play counts: lmrec's `auto` beside implicit's ALS tuned over its grid, on the same split.

The question: on implicit feedback with counts (repeated (user, item) events), does lmrec's
`auto_search`, given a time budget, beat implicit's ALS tuned over factors, regularisation,
confidence alpha and count weighting? The data is the shop generator (views, carts and
purchases, so repeated events), 5-core: shop-100k is 3,000 users and 2,000 items (as in
`data_defaults.py`; at seed 0, 2,891 users, 1,826 items, 76k (user, item) pairs and 148k
events after the 5-core filter), shop-300k 9,000 users and 5,000 items. Split: random
per-user 8:1:1 over distinct (user, item) pairs (RecBole's rounding); full ranking, train
items masked, users scored from their trained state (history "trained"), NDCG@10, all by
lmrec's own `evaluate` on both sides.

implicit's ALS (15 iterations, one thread, float32, conjugate gradient) is fed the count
matrix x of the train part as its confidence, with alpha=1 in the constructor (as
`lmrec.models.als` does): weighting "count" c = 1 + alpha x, "bm25" c = 1 + alpha
bm25_weight(x, K1=100, B=0.8), "log" c = 1 + alpha log1p(x). The full grid is factors
{32, 64, 128} x reg {0.01, 0.1, 1, 10, 30, 100} x alpha {1, 5, 20, 40} x weighting {count,
bm25, log} (216 fits); the small one factors {64} x reg {0.1, 1, 10, 30} x alpha {1, 5, 20} x
weighting {count, bm25} (24). Grid points run in a seeded random order, so that a
--max-seconds cut-off leaves a random subset rather than the first corner; the number that
ran is reported. Each fit's factors are loaded into an lmrec ALS shell and scored on the
validation part; the best is refitted on train + valid and tested once, exactly what `auto`
does with its winner. lmrec's `auto` searches its default families on the validation part
within --budget seconds, then refits and tests the same way; lmrec's `als` and `ease`
defaults are fitted on train (scored on valid) and on train + valid (scored on test).
Seconds are wall time of the whole row: search, refit and evaluation.

    .venv/bin/python benchmarks/playcount_auto.py                      # shop-100k, full grid
    .venv/bin/python benchmarks/playcount_auto.py --data shop-300k --budget 600
    .venv/bin/python benchmarks/playcount_auto.py --grid small --max-seconds 20 --budget 30

One JSON line is printed per peer grid point ("trial") and per result ("result"), then the
Markdown table; --jsonl also appends the result rows to a file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from lmrec.data.dataset import Dataset
from lmrec.datasets import shop_dataset
from lmrec.evaluate import evaluate, split_random
from lmrec.evaluate.auto import auto_search
from lmrec.evaluate.splits import Split
from lmrec.models import create_model
from lmrec.models.base import Recommender
from lmrec.prepare import PrepareConfig
from lmrec.train.options import TrainingOptions

GRIDS: dict[str, dict[str, list[Any]]] = {
    "full": {"factors": [32, 64, 128], "reg": [0.01, 0.1, 1.0, 10.0, 30.0, 100.0],
             "alpha": [1.0, 5.0, 20.0, 40.0], "weighting": ["count", "bm25", "log"]},
    "small": {"factors": [64], "reg": [0.1, 1.0, 10.0, 30.0], "alpha": [1.0, 5.0, 20.0],
              "weighting": ["count", "bm25"]},
}


def build(name: str, seed: int) -> Dataset:
    if name == "shop-100k":
        return shop_dataset(3000, 2000, seed=seed, sessions_per_user=9.0,
                            config=PrepareConfig(core=5)).dataset
    if name == "shop-300k":
        return shop_dataset(9000, 5000, seed=seed, sessions_per_user=9.0,
                            config=PrepareConfig(core=5)).dataset
    raise SystemExit(f"unknown dataset {name!r}")


def train_plus_valid(split: Split) -> Split:
    """The split whose train part is train + valid (no valid part), as `auto_search` refits."""
    assert split.valid is not None
    both = split.train.with_events(pl.concat([split.train.events, split.valid.events],
                                             how="vertical_relaxed"))
    return Split(train=both, valid=None, test=split.test, name=split.name, kind=split.kind,
                 notes=split.notes)


def ndcg(model: Recommender, split: Split, part: str) -> float:
    res = evaluate(model, split, [10], part=part, history="trained")
    return float(res.metrics["ndcg@10"])


def confidence(x: sp.csr_matrix, weighting: str, alpha: float) -> sp.csr_matrix:
    """The confidence matrix handed to implicit (alpha=1 there): 1 + alpha w(x) on x's
    nonzeros."""
    if weighting == "bm25":
        from implicit.nearest_neighbours import bm25_weight

        w = sp.csr_matrix(bm25_weight(x, K1=100, B=0.8))
    else:
        w = x.copy()
        if weighting == "log":
            w.data = np.log1p(w.data)
        elif weighting != "count":
            raise ValueError(f"unknown weighting {weighting!r}")
    w.sort_indices()
    w.data = (1.0 + alpha * w.data).astype(np.float32)
    return w.astype(np.float32)


class Peer:
    """implicit's ALS fitted on one part, its factors scored through lmrec ALS shells."""

    def __init__(self, split: Split, seed: int) -> None:
        self.split, self.seed = split, seed
        self.x = split.train.matrix("count").tocsr().astype(np.float32)
        self._shells: dict[int, Recommender] = {}

    def shell(self, factors: int) -> Recommender:
        if factors not in self._shells:  # one per factor count; its arrays are replaced
            self._shells[factors] = create_model("als", {"factors": factors, "iterations": 1}
                                                 ).fit(self.split.train,
                                                       TrainingOptions(rng=self.seed))
        return self._shells[factors]

    def fit(self, factors: int, reg: float, alpha: float, weighting: str) -> Recommender:
        from implicit.cpu.als import AlternatingLeastSquares  # heavy import, only when used

        conf = confidence(self.x, weighting, alpha)
        with threadpool_limits(1, "blas"):
            als = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=1.0,
                                          iterations=15, calculate_training_loss=False,
                                          num_threads=1, random_state=self.seed,
                                          dtype=np.float32)
            als.fit(conf, show_progress=False)
        shell = self.shell(factors)
        shell._load_arrays({
            "U": np.ascontiguousarray(als.user_factors, dtype=np.float32),
            "V": np.ascontiguousarray(als.item_factors, dtype=np.float32)})
        return shell


def peer_search(split: Split, grid: dict[str, list[Any]], max_seconds: float | None,
                seed: int) -> dict[str, Any]:
    """implicit's ALS over the grid (seeded random order) on valid; the best refitted on
    train + valid and tested."""
    t0 = time.perf_counter()
    points = list(itertools.product(*grid.values()))
    order = np.random.default_rng(seed).permutation(len(points))
    peer = Peer(split, seed)
    trials: list[dict[str, Any]] = []
    for n, k in enumerate(order):
        if max_seconds is not None and time.perf_counter() - t0 >= max_seconds:
            break
        params = dict(zip(grid, points[k], strict=True))
        t1 = time.perf_counter()
        valid = ndcg(peer.fit(**params), split, "valid")
        trials.append({"kind": "trial", "number": n, "params": params,
                       "valid": round(valid, 4), "seconds": round(time.perf_counter() - t1, 2)})
        print(json.dumps(trials[-1]), flush=True)
    search_s = time.perf_counter() - t0
    best = max(trials, key=lambda t: t["valid"])
    refit = train_plus_valid(split)
    test = ndcg(Peer(refit, seed).fit(**best["params"]), refit, "test")
    return {"method": "implicit ALS (grid)", "valid": best["valid"], "test": round(test, 4),
            "params": best["params"], "seconds": round(time.perf_counter() - t0, 1),
            "search_s": round(search_s, 1), "ran": len(trials), "grid_size": len(points)}


def lmrec_default(name: str, split: Split, seed: int) -> dict[str, Any]:
    """lmrec's default `name`: fitted on train (valid), and on train + valid (test)."""
    t0 = time.perf_counter()
    model = create_model(name).fit(split.train, TrainingOptions(rng=seed))
    valid = ndcg(model, split, "valid")
    refit = train_plus_valid(split)
    model = create_model(name).fit(refit.train, TrainingOptions(rng=seed))
    test = ndcg(model, refit, "test")
    return {"method": f"lmrec {name} (default)", "valid": round(valid, 4),
            "test": round(test, 4), "params": getattr(model, "settings_", None) or {},
            "seconds": round(time.perf_counter() - t0, 1)}


def lmrec_auto(split: Split, budget_s: float, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = auto_search(split, budget_s, seed=seed, history="trained")
    print(result.describe(), flush=True)
    assert result.test is not None
    return {"method": f"lmrec auto ({result.family})", "valid": round(result.valid_value, 4),
            "test": round(float(result.test.metrics["ndcg@10"]), 4), "params": result.params,
            "seconds": round(time.perf_counter() - t0, 1), "budget_s": budget_s,
            "trials": len(result.trials), "stop": result.stop}


def show(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in params.items()) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["shop-100k", "shop-300k"], default="shop-100k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", choices=sorted(GRIDS), default="full",
                    help="implicit ALS grid (full: 216 fits, small: 24)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop proposing implicit grid points after this many seconds")
    ap.add_argument("--budget", type=float, default=180.0, help="lmrec auto's budget (s)")
    ap.add_argument("--jsonl", default=None, help="also append the result rows here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    ds = build(args.data, args.seed)
    split = split_random(ds, (0.8, 0.1, 0.1), seed=args.seed)
    counts = split.train.matrix("count").data
    print(f"{args.data}: {ds.n_users} users, {ds.n_items} items, "
          f"{ds.matrix('binary').nnz} interactions, {ds.n_events} events; train "
          f"{split.train.matrix('binary').nnz} interactions (count mean {counts.mean():.2f}, "
          f"max {counts.max():.0f}) (built in {time.perf_counter() - t0:.1f} s); "
          f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)

    rows = [peer_search(split, GRIDS[args.grid], args.max_seconds, args.seed)]
    print(json.dumps({"kind": "result", **rows[-1]}), flush=True)
    rows.append(lmrec_auto(split, args.budget, args.seed))
    print(json.dumps({"kind": "result", **rows[-1]}, default=str), flush=True)
    for name in ("als", "ease"):
        rows.append(lmrec_default(name, split, args.seed))
        print(json.dumps({"kind": "result", **rows[-1]}, default=str), flush=True)
    if args.jsonl:
        with open(args.jsonl, "a") as fh:
            fh.writelines(json.dumps({"dataset": args.data, "seed": args.seed, **r},
                                     default=str) + "\n" for r in rows)

    peer = rows[0]
    print(f"\nimplicit grid: {peer['ran']} of {peer['grid_size']} points ran "
          f"({peer['search_s']} s); lmrec auto: {rows[1]['trials']} trials, budget "
          f"{args.budget:g} s (stopped: {rows[1]['stop']})\n")
    print("| method | valid NDCG@10 | test NDCG@10 | params | seconds |")
    print("|---|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['valid']:.4f} | {r['test']:.4f} | {show(r['params'])} | "
              f"{r['seconds']} |")


if __name__ == "__main__":
    main()
