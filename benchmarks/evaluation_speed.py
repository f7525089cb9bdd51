"""Full-ranking evaluation speed on MovieLens 100K (RecBole's protocol: ratings >= 3, 10-core).

Scores every test user against every item with random 64-d user and item factors (a factor
model's scoring cost, no learning), masks the training items, takes the top 10 and computes
every metric; users are scored from the fitted factors (history="trained"). One warm-up call
caches the split's matrices and the item cosine used for diversity; the figure is the best of
`--repeat` calls after it. Target: under 0.5 s.

    .venv/bin/python benchmarks/evaluation_speed.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from lmrec.data import Dataset, Sequences
from lmrec.datasets import load_dataset
from lmrec.evaluate import evaluate, split_random
from lmrec.models import ModelConfig, Recommender
from lmrec.prepare import PrepareConfig
from lmrec.train.options import TrainingOptions

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
TARGET_S = 0.5


class RandomFactors(Recommender):
    """Random 64-d user and item factors: a factor model's scoring cost, no learning."""

    name = "random-factors"
    Config = ModelConfig

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        rng = options.generator
        self.u_ = rng.standard_normal((dataset.n_users, 64)).astype(np.float32)
        self.v_ = rng.standard_normal((dataset.n_items, 64)).astype(np.float32)

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        u = self.u_[users]
        if (users < 0).any():  # an unknown user (-1) has a zero vector
            u[users < 0] = 0.0
        return u @ self.v_.T


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ds = load_dataset("movielens-100k", SHARED / "ml-100k", download=False,
                      config=PrepareConfig(min_rating=3, core=10)).dataset
    split = split_random(ds, seed=0)
    model = RandomFactors().fit(split.train, TrainingOptions(rng=0))
    result = evaluate(model, split, ks=(10,), history="trained")  # warm-up
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        evaluate(model, split, ks=(10,), history="trained")
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"ml-100k full-ranking evaluation of {result.n_users} users x {ds.n_items} items "
          f"(random 64-d factors, all metrics @10): best of {args.repeat} {best * 1000:.1f} ms "
          f"(target < {TARGET_S * 1000:.0f} ms)")
    return 0 if best < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
