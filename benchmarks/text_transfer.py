"""Text-native items: sasrec / hstu with items as ids, ids + text, or text alone, on items unseen
in training (cold items) and applied zero-shot to another dataset (ML-100K <-> ML latest-small).

Items (`--reprs`): "id" (the default models), "id+text" (`text=true`: id embedding, gated to a
learned "unknown item" row for items without training events, plus a linear projection of the
item's frozen MiniLM vector) and "text" (`text_only=true`: a trained MLP of the text vector, no
id). Item text "{title}. Genres: {genres}." for every text model: the fields both datasets have
(latest-small also has tags, ML-100K none; a transferred model must read texts made like its
training texts).

Protocols (seed 0, every fit early-stops on its own validation part within `--budget` seconds;
read settings off the validation columns, never the test ones):
    cold      benchmarks/cold_start.py's: the dataset as released; 20% of the items with events
              leave training with all their events (test), another 10% are the validation
              part; full ranking of the whole catalogue (warm and cold items), training items
              masked; recall@20 / NDCG@20; users ranked from their training histories.
    transfer  the issue's sequential protocol: no rating filter, 5-core, time-ordered
              leave-one-out (last item test, the one before valid), full ranking, seen items
              excluded, history of the model's `max_len` (50); @10; each user ranked from
              their events as of the evaluated part. A model trained on dataset A
              (early-stopped on A's validation part) is applied to B with `model.transfer(B's
              training part)`: B's texts encoded, the weights kept, no training and nothing of
              B's validation part used. Compared with popularity fitted on B and with the
              same model trained on B ("in-domain").

    .venv/bin/python benchmarks/text_transfer.py                            # everything
    .venv/bin/python benchmarks/text_transfer.py --parts transfer --models sasrec \\
        --reprs text --budget 120 --jsonl out.jsonl
    .venv/bin/python benchmarks/text_transfer.py --parts cold --params '{"text_hidden": 0}'
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
from sequential_protocol import emit  # the benchmarks' JSON-row printing (this folder)

from lmrec.data.dataset import Dataset
from lmrec.datasets import load_dataset
from lmrec.evaluate import HistoryPolicy, Split, evaluate, split_cold_items, split_loo
from lmrec.models import Popularity, create_model
from lmrec.models.sequential import SequentialRecommender
from lmrec.prepare import PrepareConfig
from lmrec.train.options import TrainingOptions

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
LOADERS = {"ml-100k": "movielens-100k", "ml-latest-small": "movielens-latest-small"}
TEMPLATE = "{title}. Genres: {genres}."
REPRS: dict[str, dict[str, Any]] = {
    "id": {}, "id+text": {"text": True, "text_template": TEMPLATE},
    "text": {"text_only": True, "text_template": TEMPLATE}}
PROTOCOLS = {"cold": (20, "trained"), "transfer": (10, "observed")}


def load(name: str, part: str) -> Dataset:
    config = PrepareConfig(core=5) if part == "transfer" else None
    return load_dataset(LOADERS[name], SHARED / name, download=False, config=config).dataset


def make_split(ds: Dataset, part: str, seed: int) -> Split:
    if part == "transfer":
        return split_loo(ds, valid=True)
    return split_cold_items(ds, 0.2, seed=seed, valid_share=0.1)


def measure(model: Any, split: Split, part: str) -> dict[str, float]:
    """valid_* and test_* metrics of a model fitted (or transferred) on `split.train`."""
    k, history = PROTOCOLS[part]
    policy: HistoryPolicy = history  # type: ignore[assignment]
    out = {}
    for which in ("valid", "test"):
        m = evaluate(model, split, [k], part=which, history=policy).metrics
        for key in (f"ndcg@{k}", f"recall@{k}" if part == "cold" else f"hit@{k}"):
            out[f"{which}_{key}"] = round(m[key], 4)
    return out


def fit(model_name: str, params: dict[str, Any], split: Split, seed: int, budget: float
        ) -> tuple[SequentialRecommender, dict[str, Any]]:
    model = create_model(model_name, params)
    assert isinstance(model, SequentialRecommender)
    t0 = time.perf_counter()
    model.fit(split.train, TrainingOptions(rng=seed, valid=split.valid, time_budget_s=budget))
    secs = [h["seconds"] for h in model.train_result_.history]
    return model, {"fit_s": round(time.perf_counter() - t0, 1), "epochs": len(secs),
                   "best_epoch": model.train_result_.best_epoch,
                   "s_per_epoch": round(float(np.mean(secs)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="cold,transfer")
    ap.add_argument("--data", default="ml-100k,ml-latest-small")
    ap.add_argument("--models", default="sasrec,hstu")
    ap.add_argument("--reprs", default="id,id+text,text")
    ap.add_argument("--params", default="{}", help="extra model settings (a JSON object)")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds per fit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jsonl", type=Path, default=None, help="also append results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.data.split(",")
    extra = {"progress": False, "epochs": 200, **json.loads(args.params)}
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        emit(row, args.jsonl)

    for part in args.parts.split(","):
        splits = {n: make_split(load(n, part), part, args.seed) for n in names}
        for n, s in splits.items():
            print(f"{part} {n}: {s.train!r}, split {s.name} {s.sizes()}", flush=True)
        for n, s in splits.items():  # the floor: popularity on each dataset
            pop = Popularity().fit(s.train)
            record({"part": part, "model": "popularity", "items": "-", "train": n, "eval": n,
                    **measure(pop, s, part)})
        for model_name in args.models.split(","):
            for rep in args.reprs.split(","):
                params = {**extra, **REPRS[rep]}
                for a in names:
                    model, info = fit(model_name, params, splits[a], args.seed, args.budget)
                    record({"part": part, "model": model_name, "items": rep, "train": a,
                            "eval": a, **measure(model, splits[a], part), **info})
                    if part != "transfer" or rep == "id":
                        continue
                    for b in names:
                        if b == a:
                            continue
                        t0 = time.perf_counter()
                        moved = model.transfer(splits[b].train)
                        record({"part": part, "model": model_name, "items": rep, "train": a,
                                "eval": b, **measure(moved, splits[b], part),
                                "transfer_s": round(time.perf_counter() - t0, 1)})

    print("\n| part | model | items | trained on | evaluated on | valid | test | fit s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        keys = [k.removeprefix("test_") for k in r if k.startswith("test_")]
        valid = ", ".join(f"{k} {r['valid_' + k]:.4f}" for k in keys)
        test = ", ".join(f"{k} {r['test_' + k]:.4f}" for k in keys)
        print(f"| {r['part']} | {r['model']} | {r['items']} | {r['train']} | {r['eval']} | "
              f"{valid} | {test} | {r.get('fit_s', '-')} |")


if __name__ == "__main__":
    main()
