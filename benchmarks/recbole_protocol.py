"""RecBole's published general-recommendation protocol, run with lmrec's classic models.

Protocol (RecBole `ml-1m_general`): ratings >= 3 kept, iterative 10-core on users and items,
random per-user 8:1:1 split (RecBole's rounding), full ranking over all items with the user's
train (and, for test, valid) items masked, metrics @10. Defaults of every model were chosen on
the validation part only; this script reports both parts.

History policy: "trained" (`lmrec.evaluate.evaluate`'s `history`): every user is ranked from
the model's fitted state, `model.score(users)`, as in RecBole's general protocol (a general
model is not shown the validation items when testing; they are only masked).

    .venv/bin/python benchmarks/recbole_protocol.py                       # ml-100k, latest-small
    .venv/bin/python benchmarks/recbole_protocol.py --data ml-1m=PATH     # a folder or ratings file
    .venv/bin/python benchmarks/recbole_protocol.py --split-dir DIR       # RecBole's dumped split
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import polars as pl

from lmrec.datasets import load_dataset
from lmrec.evaluate import evaluate, fit_and_evaluate, split_from_pairs, split_random
from lmrec.models import create_model
from lmrec.prepare import PrepareConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
LOADERS = {"ml-100k": "movielens-100k", "ml-latest-small": "movielens-latest-small",
           "ml-1m": "movielens-1m"}
MODELS = ("popularity", "itemknn", "userknn", "bpr", "als", "ease", "content")
KEYS = ("ndcg@10", "recall@10", "mrr@10", "hit@10", "precision@10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=["ml-100k", "ml-latest-small"],
                    help="NAME or NAME=PATH (NAME in ml-100k, ml-latest-small, ml-1m)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-dir", type=Path, default=None,
                    help="folder with <dataset>.{train,valid,test}.csv (user,item) written by "
                         "shared/peers/recbole_general.py --dump-split")
    ap.add_argument("--jsonl", type=Path, default=None, help="also append results here")
    args = ap.parse_args()

    rows = []
    for spec in args.data:
        name, _, path = spec.partition("=")
        source = Path(path) if path else SHARED / name
        t0 = time.perf_counter()
        ds = load_dataset(LOADERS[name], source, download=False,
                          config=PrepareConfig(min_rating=3, core=10)).dataset
        load_s = time.perf_counter() - t0
        if args.split_dir is not None:
            parts = {p: pl.read_csv(args.split_dir / f"{name}.{p}.csv",
                                    schema_overrides={"user": ds.users.dtype,
                                                      "item": ds.items.dtype})
                     for p in ("train", "valid", "test")}
            split = split_from_pairs(ds, parts, name="recbole")
        else:
            split = split_random(ds, (0.8, 0.1, 0.1), seed=args.seed)
        print(f"{name}: {ds.n_users} users, {ds.n_items} items, {ds.n_events} interactions "
              f"(prepared in {load_s:.2f} s); split {split.name} {split.sizes()}", flush=True)
        for model in args.models.split(","):
            rec = create_model(model)
            test = fit_and_evaluate(rec, split, [10], rng=args.seed, history="trained")
            # the same fit, its valid part
            valid = evaluate(rec, split, [10], part="valid", history="trained")
            row = {"dataset": name, "split": split.name, "model": model,
                   **{k: round(test.metrics[k], 4) for k in KEYS},
                   "valid_ndcg@10": round(valid.metrics["ndcg@10"], 4),
                   "fit_s": round(test.fit_seconds, 3), "eval_s": round(test.eval_seconds, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.jsonl:
                with args.jsonl.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    print("\n| dataset | model | NDCG@10 | Recall@10 | MRR@10 | Hit@10 | Precision@10 | "
          "valid NDCG@10 | fit s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['model']} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | "
              f"{r['mrr@10']:.4f} | {r['hit@10']:.4f} | {r['precision@10']:.4f} | "
              f"{r['valid_ndcg@10']:.4f} | {r['fit_s']} |")


if __name__ == "__main__":
    main()
