"""Training throughput of lmrec's neural models on MovieLens-100K, as a table.

Each model trains `--epochs` epochs with its default hyperparameters on the RecBole-protocol
training part (ratings >= 3, 10-core, random 8:1:1, seed 0) through the shared loop
(`lmrec.train`); the loop counts the examples of every batch (positives for NeuMF and the
two-tower, training windows for the sequential models) and the seconds spent training.

    .venv/bin/python benchmarks/neural_throughput.py                   # every neural model
    .venv/bin/python benchmarks/neural_throughput.py --models neumf --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from lmrec.datasets import load_dataset
from lmrec.evaluate import split_random
from lmrec.models import MODELS, create_model
from lmrec.prepare import PrepareConfig
from lmrec.train.options import TrainingOptions

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
NEURAL = ("neumf", "two-tower", "gru4rec", "sasrec")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "ml-100k")
    ap.add_argument("--models", default=",".join(NEURAL),
                    help="comma-separated; names not registered are skipped")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    ds = load_dataset("movielens-100k", args.data, download=False,
                      config=PrepareConfig(min_rating=3, core=10)).dataset
    train = split_random(ds, (0.8, 0.1, 0.1), seed=0).train
    print(f"ml-100k train part: {train.n_users} users, {train.n_items} items, "
          f"{train.n_events} events; {args.threads} thread(s), {args.epochs} epoch(s)")
    rows = []
    for name in args.models.split(","):
        if name not in MODELS:
            print(f"{name}: not registered, skipped")
            continue
        model = create_model(name, {"epochs": args.epochs, "progress": False,
                                    "device": args.device, "num_threads": args.threads,
                                    "patience": None})
        t0 = time.perf_counter()
        model.fit(train, TrainingOptions(rng=0))
        fit_s = time.perf_counter() - t0
        res = model.train_result_
        rows.append((name, res.device, res.examples // max(len(res.history), 1),
                     res.seconds / max(len(res.history), 1), res.examples_per_s, fit_s))
    print("\n| model | device | examples/epoch | s/epoch | examples/s | fit s (total) |")
    print("|---|---|---|---|---|---|")
    for name, dev, n, s, eps, fit_s in rows:
        print(f"| {name} | {dev} | {n} | {s:.2f} | {eps:,.0f} | {fit_s:.1f} |")


if __name__ == "__main__":
    main()
