"""Cold-start acceptance: text-aware two-tower vs TF-IDF content and popularity.

Protocols (seed 0):
    cold-items  the datasets as released (no filters); 20% of the items with events leave
                training with all their events (test), another 10% form the validation part;
                full ranking over the whole catalogue (warm + cold items), each user's
                training items masked; metrics @20.
    warm        RecBole's general protocol (benchmarks/recbole_protocol.py): ratings >= 3,
                10-core, random per-user 8:1:1; metrics @10.

Every model is fitted on the training part once and scored on both the validation and the
test part; choose settings by the validation columns only. History policy
(`lmrec.evaluate.evaluate`'s `history`), as before: content-text ("observed") ranks each user's
events as of the evaluated part, its user state being the history itself; the other models
("trained") rank from their fitted state, as RecBole's general protocol does. Data: ML-100K
(title, genres) and ML latest-small (title, genres, tags) from $LMREC_SHARED_DATASETS
(default ../shared/datasets).

    .venv/bin/python benchmarks/cold_start.py                        # everything (~15 min)
    .venv/bin/python benchmarks/cold_start.py --data ml-100k --protocols cold-items \\
        --models content,tt-text --variant tt-text:item_id_dropout=0.3 --jsonl out.jsonl

A variant is NAME:key=value,key=value on top of NAME's model and parameters (see MODELS);
`--variant new=two-tower:text=true,epochs=10` defines a new name.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from lmrec.data.dataset import Dataset
from lmrec.datasets import load_dataset
from lmrec.evaluate import (
    HistoryPolicy,
    Split,
    evaluate,
    fit_and_evaluate,
    split_cold_items,
    split_random,
)
from lmrec.models import create_model
from lmrec.models.registry import MODELS as REGISTRY
from lmrec.prepare import PrepareConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
LOADERS = {"ml-100k": "movielens-100k", "ml-latest-small": "movielens-latest-small"}
# name -> (registered model, parameters); "content-text" is used only where it is registered
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "popularity": ("popularity", {}),
    "content": ("content", {}),
    "content-text": ("content-text", {}),
    "two-tower": ("two-tower", {}),
    "tt-text": ("two-tower", {"text": True}),
}
# the history policy of each model (default "trained")
HISTORY: dict[str, HistoryPolicy] = {"content-text": "observed"}
PROTOCOLS = {"cold-items": (20, ("recall@20", "ndcg@20")), "warm": (10, ("ndcg@10",
                                                                       "recall@10"))}


def load(name: str, protocol: str) -> Dataset:
    config = PrepareConfig(min_rating=3, core=10) if protocol == "warm" else None
    return load_dataset(LOADERS[name], SHARED / name, download=False, config=config).dataset


def make_split(ds: Dataset, protocol: str, seed: int) -> Split:
    if protocol == "warm":
        return split_random(ds, (0.8, 0.1, 0.1), seed=seed)
    return split_cold_items(ds, 0.2, seed=seed, valid_share=0.1)


def parse_variants(specs: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    models = dict(MODELS)
    for spec in specs:
        head, _, body = spec.partition(":")
        name, _, base = head.partition("=")
        if base:  # new=two-tower:...
            model, params = base, {}
        elif name in models:
            model, params = models[name][0], dict(models[name][1])
        else:
            raise SystemExit(f"--variant {spec!r}: unknown name {name!r}; write NAME=MODEL:...")
        for pair in filter(None, body.split(",")):
            key, _, value = pair.partition("=")
            params[key.strip()] = value.strip()
        models[name] = (model, params)
    return models


def run_one(split: Split, model: str, params: dict[str, Any], k: int, seed: int
            ) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    rec = create_model(model, {"progress": False, **params}
                       if "progress" in REGISTRY[model].Config.model_fields else params)
    history = HISTORY.get(model, "trained")
    test = fit_and_evaluate(rec, split, [k], rng=seed, history=history)
    valid = evaluate(rec, split, [k], part="valid", history=history)
    extra = {"fit_s": round(test.fit_seconds or 0.0, 2),
             "cold_items_recall": test.slices.get("cold items", {}).get(f"recall@{k}")}
    return test.metrics, valid.metrics, extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="ml-100k,ml-latest-small")
    ap.add_argument("--protocols", default="cold-items,warm")
    ap.add_argument("--models", default="popularity,content,content-text,two-tower,tt-text")
    ap.add_argument("--variant", action="append", default=[], help="NAME[=MODEL]:k=v,...")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jsonl", type=Path, default=None, help="also append results here")
    args = ap.parse_args()
    models = parse_variants(args.variant)
    rows = []
    for name in args.data.split(","):
        for protocol in args.protocols.split(","):
            k, keys = PROTOCOLS[protocol]
            t0 = time.perf_counter()
            ds = load(name, protocol)
            split = make_split(ds, protocol, args.seed)
            print(f"{name} {protocol}: {ds!r}, split {split.name} {split.sizes()} "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
            for label in args.models.split(","):
                model, params = models[label]
                if model not in REGISTRY:
                    print(f"skipping {label}: model {model!r} is not registered", flush=True)
                    continue
                test, valid, extra = run_one(split, model, params, k, args.seed)
                row = {"dataset": name, "protocol": protocol, "model": label,
                       "params": {key: str(v) for key, v in params.items()},
                       **{key: round(test[key], 4) for key in keys},
                       **{f"valid_{key}": round(valid[key], 4) for key in keys}, **extra}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.jsonl:
                    with args.jsonl.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    print("\n| dataset | protocol | model | test | valid | fit s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        _, keys = PROTOCOLS[r["protocol"]]
        test = ", ".join(f"{key} {r[key]:.4f}" for key in keys)
        valid = ", ".join(f"{key} {r['valid_' + key]:.4f}" for key in keys)
        print(f"| {r['dataset']} | {r['protocol']} | {r['model']} | {test} | {valid} | "
              f"{r['fit_s']} |")


if __name__ == "__main__":
    main()
