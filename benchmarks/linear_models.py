"""Linear item-item models (EASE, ADMM-SLIM, SLIM ElasticNet) on RecBole's general protocol.

Protocol and data preparation as benchmarks/recbole_protocol.py: ratings >= 3 kept, iterative
10-core, random per-user 8:1:1 split (seed 0), full ranking with the user's train (and, for
test, valid) items masked, metrics @10, history policy "trained". Defaults were chosen on the
validation part only (`--grid` prints that search; it never looks at the test part).

    .venv/bin/python benchmarks/linear_models.py                    # defaults, valid and test
    .venv/bin/python benchmarks/linear_models.py --grid slim        # valid NDCG@10 over a grid
    .venv/bin/python benchmarks/linear_models.py --set admm-slim l1=1 l2=500
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path
from typing import Any

from lmrec.datasets import load_dataset
from lmrec.evaluate import Split, evaluate, fit_and_evaluate, split_random
from lmrec.models import EASE, Recommender
from lmrec.models.admm_slim import ADMMSLIM
from lmrec.models.slim import SLIM
from lmrec.prepare import PrepareConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
LOADERS = {"ml-100k": "movielens-100k", "ml-latest-small": "movielens-latest-small",
           "ml-1m": "movielens-1m"}
CLASSES: dict[str, type[Recommender]] = {"ease": EASE, "admm-slim": ADMMSLIM, "slim": SLIM}
# the first-round grids (valid parts only); the refinements are in the Config comments, run
# with --values
GRIDS: dict[str, dict[str, list[Any]]] = {
    "admm-slim": {"l1": [1.0, 3.0, 10.0, 30.0], "l2": [100.0, 200.0, 500.0, 1000.0],
                  "alpha": [0.0, 0.5, 1.0]},
    "slim": {"alpha": [0.05, 0.1, 0.2, 0.5, 1.0], "l1_ratio": [0.005, 0.02, 0.1]},
}


def load_split(name: str, seed: int) -> Split:
    ds = load_dataset(LOADERS[name], SHARED / name, download=False,
                      config=PrepareConfig(min_rating=3, core=10)).dataset
    split = split_random(ds, (0.8, 0.1, 0.1), seed=seed)
    print(f"{name}: {ds.n_users} users, {ds.n_items} items, {ds.n_events} interactions; "
          f"split {split.name}", flush=True)
    return split


def run(model: str, params: dict[str, Any], split: Split, seed: int, test: bool
        ) -> dict[str, Any]:
    rec = CLASSES[model](**params)
    # the grid fits and scores the valid part only; the chosen settings also see test
    first = fit_and_evaluate(rec, split, [10], rng=seed, part="test" if test else "valid",
                             history="trained")
    valid = (evaluate(rec, split, [10], part="valid", history="trained") if test else first)
    test_ndcg = round(first.metrics["ndcg@10"], 4) if test else None
    log = getattr(rec, "training_log_", None)
    return {"model": model, **params, "valid_ndcg@10": round(valid.metrics["ndcg@10"], 4),
            "test_ndcg@10": test_ndcg, "fit_s": round(first.fit_seconds, 2),
            "epochs_run": len(log) if log is not None else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=["ml-100k", "ml-latest-small"])
    ap.add_argument("--models", default="ease,admm-slim,slim")
    ap.add_argument("--grid", default=None, help="a model: valid NDCG@10 over its grid only")
    ap.add_argument("--values", nargs="+", default=None, metavar="K=V1,V2",
                    help="with --grid: search these values instead of GRIDS (a refinement)")
    ap.add_argument("--set", nargs="+", default=None, metavar="MODEL K=V",
                    help="one model with these parameters (valid and test)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rows = []
    for name in args.data:
        split = load_split(name, args.seed)
        if args.grid:
            grid = GRIDS[args.grid] if not args.values else {
                k: [float(v) for v in vs.split(",")]
                for k, _, vs in (p.partition("=") for p in args.values)}
            runs = [(args.grid, dict(zip(grid, values, strict=True)), False)
                    for values in itertools.product(*grid.values())]
        elif args.set:
            params = {k: float(v) for k, _, v in (p.partition("=") for p in args.set[1:])}
            runs = [(args.set[0], params, True)]
        else:
            runs = [(m, {}, True) for m in args.models.split(",")]
        for model, params, test in runs:
            row = {"dataset": name, **run(model, params, split, args.seed, test)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if not args.grid:
        print("\n| dataset | model | valid NDCG@10 | test NDCG@10 | fit s | epochs run |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['dataset']} | {r['model']} | {r['valid_ndcg@10']:.4f} | "
                  f"{r['test_ndcg@10']:.4f} | {r['fit_s']} | {r['epochs_run'] or '-'} |")


if __name__ == "__main__":
    main()
