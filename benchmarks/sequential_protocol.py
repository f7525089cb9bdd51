"""RecBole's sequential protocol, run with lmrec's next-item models and its best classic ones.

Protocol (shared/peers/recbole_sequential.py, RecBole `ml-1m_seq`): ratings >= 3 kept,
iterative 10-core on users and items, time-ordered leave-one-out (last item test, the one
before valid), full ranking, history of the last 50 items; the test history includes the
validation item. lmrec masks each user's earlier items (RecBole does not mask for sequential
models; MovieLens has no repeated pairs, so only already-seen items that would outrank the
target are removed). gru4rec and sasrec early-stop on validation NDCG@10; ease and als are
fitted on the training part with their defaults.

History policy (`lmrec.evaluate.evaluate`'s `history`): the next-item models are evaluated with
"observed", each user ranked from their time-ordered events as of the evaluated part
(training, plus the validation item when testing), as RecBole's sequential protocol does; the
general baselines ease and als with "trained", each user ranked from the fitted state (RecBole's
general protocol), as before.

Also measured: seconds per epoch of sasrec on RecBole's SASRec architecture (2 layers, 2
heads, hidden 64, inner 256, batch 512, dropout .5, cross-entropy; an lmrec epoch covers
every training target once, as RecBole's prefix augmentation does), and the test NDCG@10 that
architecture reaches within a 10-minute training budget.

    .venv/bin/python benchmarks/sequential_protocol.py                    # ml-100k
    .venv/bin/python benchmarks/sequential_protocol.py --data ml-latest-small --threads 1

Measured on 2 shared CPU cores, one torch thread (other jobs running, so epoch times are
upper bounds), seed 0, test part, @10:

    dataset          model                   s/epoch  epochs (best)  NDCG    HR
    ml-100k          ease                    -        -              .0739   .1416
    ml-100k          als                     -        -              .0729   .1491
    ml-100k          gru4rec                 5.2      31 (21)        .1111   .2162
    ml-100k          sasrec                  4.9      38 (28)        .1199   .2268
    ml-100k          sasrec, RecBole arch    6.3      51 (41)        .0935   .1778   347 s fit
    ml-latest-small  ease                    -        -              .0353   .0829
    ml-latest-small  als                     -        -              .0348   .0829
    ml-latest-small  gru4rec                 5.9      45 (35)        .0548   .1194
    ml-latest-small  sasrec                  6.1      50 (40)        .0656   .1459

RecBole's SASRec/GRU4Rec take 205-284 s per epoch on this machine (shared/peers/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.datasets import load_dataset
from lmrec.evaluate import HistoryPolicy, evaluate, split_loo
from lmrec.evaluate.splits import Split
from lmrec.models import create_model
from lmrec.models.sequential import SequentialRecommender
from lmrec.prepare import PrepareConfig
from lmrec.train.options import TrainingOptions

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
LOADERS = {"ml-100k": "movielens-100k", "ml-latest-small": "movielens-latest-small",
           "ml-1m": "movielens-1m", "amazon-beauty": "amazon-beauty",
           "amazon-sports": "amazon-sports"}
# name -> (preparation, history length of the sequential models):
# "recbole" is RecBole's ml-1m_seq (ratings >= 3, 10-core, history 50); "issue15" the
# frontier benchmark's (no rating filter, 5-core, history 200: SASRec/HSTU on ML-1M, and the
# S3-Rec/TIGER Amazon files, which are 5-core already)
PROTOCOLS: dict[str, tuple[PrepareConfig, int]] = {
    "recbole": (PrepareConfig(min_rating=3, core=10), 50),
    "issue15": (PrepareConfig(core=5), 200)}
MODELS = ("ease", "als", "gru4rec", "sasrec")
RECBOLE_SASREC = {"layers": 2, "heads": 2, "hidden": 64, "inner": 256, "batch_size": 512,
                  "dropout": 0.5, "loss": "ce", "lr": 1e-3}
RECBOLE_S_PER_EPOCH = (205, 284)  # shared/peers/README.md, one thread, same machine
BUDGET_S = 600.0


def emit(row: dict[str, Any], jsonl: Path | None) -> None:
    """Print one result row as JSON (and append it to `jsonl` when given)."""
    print(json.dumps(row), flush=True)
    if jsonl:
        with jsonl.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


def load_split(spec: str, protocol: str = "recbole") -> tuple[str, Split]:
    """`spec` is NAME or NAME=PATH; the time-ordered leave-one-out split (with validation)
    of that dataset prepared as `protocol` says."""
    name, _, path = spec.partition("=")
    source = Path(path) if path else SHARED / name
    prepare, _ = PROTOCOLS[protocol]
    ds = load_dataset(LOADERS[name], source, download=False, config=prepare).dataset
    split = split_loo(ds, valid=True)
    print(f"{name} ({protocol}): {ds.n_users} users, {ds.n_items} items, {ds.n_events} "
          f"interactions", flush=True)
    return name, split


def run_model(name: str, split: Split, params: dict[str, Any], seed: int) -> dict[str, Any]:
    model = create_model(name, params)
    # next-item models rank the observed sequence; the general baselines their fitted state
    history: HistoryPolicy = ("observed" if isinstance(model, SequentialRecommender)
                              else "trained")
    t0 = time.perf_counter()
    # the validation part is there for the models that early-stop on it; the others ignore it
    model.fit(split.train, TrainingOptions(rng=seed, valid=split.valid))
    fit_s = time.perf_counter() - t0
    valid = evaluate(model, split, [10], part="valid", history=history)
    test = evaluate(model, split, [10], part="test", history=history)
    row: dict[str, Any] = {
        "model": name, "params": params, "history": history, "fit_s": round(fit_s, 1),
        "valid_ndcg@10": round(valid.metrics["ndcg@10"], 4),
        "valid_hr@10": round(valid.metrics["hit@10"], 4),
        "test_ndcg@10": round(test.metrics["ndcg@10"], 4),
        "test_hr@10": round(test.metrics["hit@10"], 4)}
    result = getattr(model, "train_result_", None)
    if result is not None:
        secs = [h["seconds"] for h in result.history]
        row.update({"epochs": len(secs), "best_epoch": result.best_epoch,
                    "s_per_epoch": round(float(np.mean(secs)), 2)})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=["ml-100k"],
                    help="NAME or NAME=PATH (NAME in ml-100k, ml-latest-small, ml-1m)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (RecBole ran on 1)")
    ap.add_argument("--no-recbole-arch", action="store_true",
                    help="skip the RecBole-architecture timing and 10-minute budget run")
    ap.add_argument("--jsonl", type=Path, default=None, help="also append results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for spec in args.data:
        name, split = load_split(spec)
        # next-item models: defaults, with the epoch cap lifted so that early stopping on
        # validation NDCG@10 decides when they have converged
        runs: list[tuple[str, str, dict[str, Any]]] = [
            (m, m, {"progress": False, "epochs": 300} if m in ("gru4rec", "sasrec") else {})
            for m in args.models.split(",")]
        if not args.no_recbole_arch:
            # RecBole's architecture under a 10-minute budget: as many epochs as fit, early
            # stopping on validation as for the defaults (epochs capped from a timed epoch)
            runs.append(("sasrec (RecBole arch)", "sasrec", {**RECBOLE_SASREC,
                                                             "progress": False}))
        for label, model, params in runs:
            if label.endswith("(RecBole arch)"):
                probe = run_model(model, split, {**params, "epochs": 1, "patience": None},
                                  args.seed)
                params = {**params, "epochs": max(1, int(BUDGET_S // max(
                    probe["s_per_epoch"] * 1.15, 1e-3)))}  # 15% for validation passes
            row = {"dataset": name, "label": label, **run_model(model, split, params,
                                                                args.seed)}
            rows.append(row)
            emit(row, args.jsonl)

    print("\n| dataset | model | s/epoch | epochs (best) | fit s | valid NDCG@10 | valid HR@10 "
          "| test NDCG@10 | test HR@10 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ep = f"{r['epochs']} ({r['best_epoch']})" if "epochs" in r else "-"
        print(f"| {r['dataset']} | {r['label']} | {r.get('s_per_epoch', '-')} | {ep} | "
              f"{r['fit_s']} | {r['valid_ndcg@10']:.4f} | {r['valid_hr@10']:.4f} | "
              f"{r['test_ndcg@10']:.4f} | {r['test_hr@10']:.4f} |")
    lo, hi = RECBOLE_S_PER_EPOCH
    print(f"\nRecBole SASRec/GRU4Rec on this machine: {lo}-{hi} s per epoch (one thread).")


if __name__ == "__main__":
    main()
