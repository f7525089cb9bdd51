"""The deletion test of explanations, per model, with the cost of an explanation.

For each model and each of the first --users users (with at least 2m distinct history items):
explain the best-scored item outside the history (`Recommender.explain`), then score it again
without the m top-attributed history items and without m random ones (5 random sets); report
the mean score drop of each, the share of users whose top-m drop beats their random drop, and
the median time of one `explain` call for the user's top 10 items (the serving engine's extra
cost per explained request) beside that of scoring the history (the model's work in an
unexplained request; on a shared machine both slow down alike).

Data: "shop" is tests/test_explanations_deletion.py's generated shop (200 users, 150 items)
with the test's settings for every registered model; "ml-100k" is MovieLens 100K (every rating
as an event, as lmrec.datasets.movielens loads it) from $LMREC_SHARED_DATASETS with each
model's defaults (by default the models that fit in seconds; name others with --models).

    OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/explain_deletion.py
    ... benchmarks/explain_deletion.py --data ml-100k --models ease itemknn userknn als bpr

Prints a Markdown table, then one JSON line of results (last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from lmrec.data.dataset import Dataset
from lmrec.models import MODELS, create_model
from lmrec.models.explanations import deletion_test, history_items
from lmrec.train.options import TrainingOptions

REPO = Path(__file__).resolve().parents[1]
ML_MODELS = ("popularity", "ease", "itemknn", "userknn", "als", "bpr", "admm-slim")


def dataset(name: str) -> Dataset:
    if name == "shop":
        from lmrec.datasets.shop import shop_dataset

        return shop_dataset(200, 150, seed=0).dataset
    from lmrec.datasets.movielens import load_movielens_100k

    root = Path(os.environ.get("LMREC_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
    return load_movielens_100k(root / "ml-100k").dataset


def params(data: str, name: str) -> dict:
    if data != "shop":
        return {"progress": False} if "progress" in MODELS[name].Config.model_fields else {}
    sys.path.insert(0, str(REPO / "tests"))
    from test_explanations_deletion import deletion_params  # the test's very settings

    return deletion_params(name)


def explain_ms(model, users: np.ndarray, ds: Dataset, k: int = 10) -> tuple[float, float]:
    """Median ms of one explain call of a user's top k unseen items (from their history),
    and of scoring that history (the unexplained request's model work), over 20 users."""
    seqs = ds.sequences()
    times, score_times = [], []
    for u in users[:20]:
        row = seqs.take(np.array([u]))
        t = time.perf_counter()
        s = model.score(np.array([u]), row)[0]
        score_times.append(1000 * (time.perf_counter() - t))
        s[history_items(row)] = -np.inf
        top = np.argsort(-s)[:k]
        t = time.perf_counter()
        model.explain(int(u), row, top)
        times.append(1000 * (time.perf_counter() - t))
    return float(np.median(times)), float(np.median(score_times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("shop", "ml-100k"), default="shop")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--users", type=int, default=60)
    ap.add_argument("--m", type=int, default=3)
    args = ap.parse_args()
    ds = dataset(args.data)
    names = args.models or (sorted(MODELS) if args.data == "shop" else list(ML_MODELS))
    users = np.arange(min(args.users, ds.n_users))
    rows = []
    print(f"{ds}, m = {args.m}\n")
    print("| model | method | users | drop top-m | drop random m | top > random | explain ms "
          "| score ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        t = time.perf_counter()
        model = create_model(name, params(args.data, name)).fit(ds, TrainingOptions(rng=0))
        fit_s = time.perf_counter() - t
        d = deletion_test(model, users, ds.sequences().take(users), m=args.m, draws=5, seed=0)
        ms, score_ms = explain_ms(model, users, ds)
        rows.append({"model": name, "method": d.method, "users": d.users, "top": d.top,
                     "random": d.random, "wins": d.wins, "explain_ms": ms,
                     "score_ms": score_ms, "fit_s": fit_s})
        print(f"| {name} | {d.method} | {d.users} | {d.top:.4f} | {d.random:.4f} | "
              f"{d.wins:.0%} | {ms:.1f} | {score_ms:.1f} |", flush=True)
    print(json.dumps({"data": args.data, "m": args.m, "results": rows}))


if __name__ == "__main__":
    main()
