"""hstu against sasrec on the sequential protocol of benchmarks/sequential_protocol.py.

Same data and split (ratings >= 3, iterative 10-core, time-ordered leave-one-out, full
ranking, seen items excluded, each user ranked from their observed sequence), same early
stopping on validation NDCG@10 with the epoch cap lifted. `--hstu` adds hstu settings to try
(JSON objects, one run each; choose on the valid columns, never on test).

    .venv/bin/python benchmarks/hstu_protocol.py --data ml-100k
    .venv/bin/python benchmarks/hstu_protocol.py --data ml-latest-small --models hstu,sasrec
    .venv/bin/python benchmarks/hstu_protocol.py --data ml-100k --models hstu \\
        --hstu '{"lr": 0.001}' '{"dropout": 0.5}'
    # training speed only: 3 epochs of each run, no validation, twice in turn
    .venv/bin/python benchmarks/hstu_protocol.py --data ml-100k --models hstu,sasrec \\
        --hstu '{"length_buckets": true}' --timing 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential_protocol import PROTOCOLS, emit, load_split

from lmrec.evaluate import evaluate
from lmrec.evaluate.splits import Split
from lmrec.models import create_model
from lmrec.train.options import TrainingOptions


def run(name: str, split: Split, params: dict[str, Any], seed: int,
        budget_s: float | None) -> dict[str, Any]:
    model = create_model(name, {"progress": False, "epochs": 300, **params})
    t0 = time.perf_counter()
    model.fit(split.train, TrainingOptions(rng=seed, valid=split.valid, time_budget_s=budget_s))
    fit_s = time.perf_counter() - t0
    valid = evaluate(model, split, [10], part="valid", history="observed")
    test = evaluate(model, split, [10], part="test", history="observed")
    result = model.train_result_
    secs = [h["seconds"] for h in result.history]
    return {"model": name, "params": params, "fit_s": round(fit_s, 1),
            "epochs": len(secs), "best_epoch": result.best_epoch,
            "s_per_epoch": round(float(np.mean(secs)), 2),
            "valid_ndcg@10": round(valid.metrics["ndcg@10"], 4),
            "valid_hr@10": round(valid.metrics["hit@10"], 4),
            "test_ndcg@10": round(test.metrics["ndcg@10"], 4),
            "test_hr@10": round(test.metrics["hit@10"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=["ml-100k"],
                    help="NAME or NAME=PATH (NAME in ml-100k, ml-latest-small, ml-1m)")
    ap.add_argument("--models", default="hstu,sasrec", help="defaults of these models")
    ap.add_argument("--hstu", nargs="*", default=[], help="extra hstu settings (JSON objects)")
    ap.add_argument("--sasrec", nargs="*", default=[],
                    help="extra sasrec settings (JSON objects; '{\"max_len\": 50}' is today's "
                         "sasrec under --protocol issue15)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=None, help="training seconds per run")
    ap.add_argument("--jsonl", type=Path, default=None, help="also append results here")
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="recbole",
                    help="recbole: ratings >= 3, 10-core, history 50; issue15: no rating "
                         "filter, 5-core, history 200 (max_len of every run)")
    ap.add_argument("--timing", type=int, default=0,
                    help="only time N training epochs of each run (no validation), twice")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    max_len = {} if args.protocol == "recbole" else {"max_len": PROTOCOLS[args.protocol][1]}
    runs = [(m, dict(max_len)) for m in args.models.split(",") if m]
    runs += [("hstu", {**max_len, **json.loads(p)}) for p in args.hstu]
    runs += [("sasrec", {**max_len, **json.loads(p)}) for p in args.sasrec]
    rows = []
    for spec in args.data:
        name, split = load_split(spec, args.protocol)
        if args.timing:
            for model, params in runs * 2:
                fitted = create_model(model, {"progress": False, **params,
                                              "epochs": args.timing}).fit(
                    split.train, TrainingOptions(rng=args.seed))
                secs = [round(h["seconds"], 2) for h in fitted.train_result_.history]
                print(json.dumps({"dataset": name, "model": model, "params": params,
                                  "s_per_epoch": secs}), flush=True)
            continue
        for model, params in runs:
            row = {"dataset": name, **run(model, split, params, args.seed, args.budget)}
            rows.append(row)
            emit(row, args.jsonl)

    print("\n| dataset | model | params | s/epoch | epochs (best) | fit s | valid NDCG@10 "
          "| valid HR@10 | test NDCG@10 | test HR@10 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['model']} | {json.dumps(r['params'])} | "
              f"{r['s_per_epoch']} | {r['epochs']} ({r['best_epoch']}) | {r['fit_s']} | "
              f"{r['valid_ndcg@10']:.4f} | {r['valid_hr@10']:.4f} | "
              f"{r['test_ndcg@10']:.4f} | {r['test_hr@10']:.4f} |")


if __name__ == "__main__":
    main()
