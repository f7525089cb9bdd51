"""Speed of the classic models on MovieLens 100K (RecBole's protocol: ratings >= 3, 10-core).

Measures, best of `--repeat` runs on this machine:
- EASE fit;
- ALS, 15 iterations with 64 factors;
- full-ranking evaluation of every test user (score all items, mask seen, top-k, metrics)
  for a factor model (ALS) and for EASE, each user scored from the fitted state
  (history="trained", RecBole's general protocol).

    .venv/bin/python benchmarks/classic_speed.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from threadpoolctl import threadpool_info

from lmrec.datasets import load_dataset
from lmrec.evaluate import evaluate, split_random
from lmrec.models import create_model
from lmrec.prepare import PrepareConfig
from lmrec.train.options import TrainingOptions

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ds = load_dataset("movielens-100k", SHARED / "ml-100k", download=False,
                      config=PrepareConfig(min_rating=3, core=10)).dataset
    split = split_random(ds, seed=0)
    blas = {i["internal_api"]: i.get("num_threads") for i in threadpool_info()}
    print(f"ml-100k: {ds.n_users} users, {ds.n_items} items, {ds.n_events} interactions; "
          f"train {split.train.n_events}; BLAS threads {blas}; cores {os.cpu_count()}")

    options = TrainingOptions(rng=0)
    ease = create_model("ease")
    print(f"EASE fit: {best_of(args.repeat, lambda: ease.fit(split.train, options)):.3f} s")
    als = create_model("als", {"factors": 64, "iterations": 15})
    print(f"ALS fit (64 factors, 15 iterations): "
          f"{best_of(args.repeat, lambda: als.fit(split.train, options)):.3f} s")
    for name, model in (("ALS", als), ("EASE", ease)):
        secs = best_of(args.repeat,
                       lambda m=model: evaluate(m, split, [10], history="trained"))
        res = evaluate(model, split, [10], history="trained")
        print(f"full-ranking evaluation, {name}, {res.n_users} users x {ds.n_items} items: "
              f"{secs:.3f} s (NDCG@10 {res.metrics['ndcg@10']:.4f})")


if __name__ == "__main__":
    main()
