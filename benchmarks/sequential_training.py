"""Training speed and accuracy of the sequential models' training options (issue 15, point 2).

One run per call: a model fitted on the RecBole sequential protocol's split (ratings >= 3,
10-core, time-ordered leave-one-out, full ranking, seen items excluded; the loading of
benchmarks/sequential_protocol.py), early stopping on validation NDCG@10; prints one JSON row
with seconds per epoch, examples/s (training windows a second), and valid/test NDCG@10 / HR@10.
`--epochs N --no-eval` times N epochs only (no validation, no test).

    .venv/bin/python bench15_training.py --data ml-100k --param precision=bf16
    .venv/bin/python bench15_training.py --data ml-latest-small --param max_len=200 \
        --param length_buckets=true --epochs 2 --no-eval
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from lmrec.datasets import load_dataset
from lmrec.evaluate import evaluate, split_loo
from lmrec.models import create_model
from lmrec.prepare import PrepareConfig
from lmrec.train.options import TrainingOptions

SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", "/work/shared/datasets"))
LOADERS = {"ml-100k": ("movielens-100k", PrepareConfig(min_rating=3, core=10)),
           "ml-latest-small": ("movielens-latest-small", PrepareConfig(min_rating=3, core=10)),
           "amazon-beauty": ("amazon-beauty", None)}


def coerce(v: str) -> object:
    for f in (int, float):
        try:
            return f(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="ml-100k")
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--budget", type=float, default=None, help="training seconds")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loader, prep = LOADERS[args.data]
    ds = load_dataset(loader, SHARED / args.data, download=False, config=prep).dataset
    split = split_loo(ds, valid=True)
    params = {"progress": False, "epochs": args.epochs,
              **{k: coerce(v) for k, v in (p.split("=", 1) for p in args.param)}}
    if args.no_eval:
        params["patience"] = None
    model = create_model(args.model, params)
    t0 = time.perf_counter()
    model.fit(split.train, TrainingOptions(rng=args.seed, valid=None if args.no_eval
                                           else split.valid, time_budget_s=args.budget))
    fit_s = time.perf_counter() - t0
    hist = model.train_result_.history
    secs = [h["seconds"] for h in hist]
    row = {"data": args.data, "label": args.label, "params": {k: v for k, v in params.items()
                                                              if k != "progress"},
           "fit_s": round(fit_s, 1), "epochs": len(hist),
           "best_epoch": model.train_result_.best_epoch,
           "s_per_epoch": round(float(np.mean(secs)), 2),
           "examples_per_s": round(float(np.mean([h["examples_per_s"] for h in hist])), 0),
           "last_loss": round(hist[-1]["loss"], 4)}
    if not args.no_eval:
        for part in ("valid", "test"):
            m = evaluate(model, split, [10], part=part, history="observed").metrics
            row[f"{part}_ndcg@10"] = round(m["ndcg@10"], 4)
            row[f"{part}_hr@10"] = round(m["hit@10"], 4)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
