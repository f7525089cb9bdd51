"""Blends against their best member on RecBole's general protocol (weights chosen on valid).

Data as in benchmarks/recbole_protocol.py: ratings >= 3, iterative 10-core, random per-user
8:1:1 split (seed 0), full ranking with the train (and, for test, valid) items masked,
history "trained", NDCG@10. Each blend is fitted on the training part with the validation
part in its options: its members are fitted on train and its weights searched on valid (the
test part is never seen). Its members are then evaluated on their own, as fitted inside the
blend, so "best member" is the member with the best valid NDCG@10 and its test NDCG@10 (the
choice a user without a blend would make). The valid figure of a blend is optimistic: its
weights were chosen there.

    .venv/bin/python benchmarks/blend.py                        # ml-100k, ml-latest-small
    .venv/bin/python benchmarks/blend.py --data ml-1m=PATH --kinds score
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import polars as pl

from lmrec.datasets import load_dataset
from lmrec.evaluate import evaluate, fit_and_evaluate, split_random
from lmrec.evaluate.report import slice_winners
from lmrec.models.blend import Blend
from lmrec.prepare import PrepareConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
LOADERS = {"ml-100k": "movielens-100k", "ml-latest-small": "movielens-latest-small",
           "ml-1m": "movielens-1m"}
BLENDS = "ease+als,ease+als+itemknn"
KEY = "ndcg@10"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=["ml-100k", "ml-latest-small"],
                    help="NAME or NAME=PATH (NAME in ml-100k, ml-latest-small, ml-1m)")
    ap.add_argument("--blends", default=BLENDS, help="comma-separated a+b[+c[+d]]")
    ap.add_argument("--kinds", default="score,rank")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jsonl", type=Path, default=None, help="also append results here")
    args = ap.parse_args()

    rows, winners = [], []
    for spec in args.data:
        name, _, path = spec.partition("=")
        ds = load_dataset(LOADERS[name], Path(path) if path else SHARED / name, download=False,
                          config=PrepareConfig(min_rating=3, core=10)).dataset
        split = split_random(ds, (0.8, 0.1, 0.1), seed=args.seed)
        print(f"{name}: {ds.n_users} users, {ds.n_items} items, {ds.n_events} interactions; "
              f"split {split.sizes()}", flush=True)
        for members in (tuple(b.split("+")) for b in args.blends.split(",")):
            for kind in args.kinds.split(","):
                blend = Blend(members=members, kind=kind)
                test = fit_and_evaluate(blend, split, [10], rng=args.seed, history="trained")
                valid = evaluate(blend, split, [10], part="valid", history="trained")
                alone = {m: (evaluate(f, split, [10], part="valid", history="trained"),
                             evaluate(f, split, [10], history="trained"))
                         for m, f in blend.named_members().items()}
                best = max(alone, key=lambda m: alone[m][0].metrics[KEY])
                row = {"dataset": name, "blend": "+".join(members), "kind": kind,
                       "weights": {m: round(w, 3) for m, w in blend.learned_weights.items()},
                       "valid": round(valid.metrics[KEY], 4), "test": round(test.metrics[KEY], 4),
                       "best_member": best,
                       "member_valid": round(alone[best][0].metrics[KEY], 4),
                       "member_test": round(alone[best][1].metrics[KEY], 4),
                       "members_test": {m: round(r[1].metrics[KEY], 4) for m, r in alone.items()},
                       "fit_s": round(test.fit_seconds or 0.0, 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.jsonl:
                    with args.jsonl.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                if kind == "score" and len(members) > 2:
                    # which member wins each slice, and the blend's figure beside it
                    table = slice_winners({m: r[1] for m, r in alone.items()})
                    blend_of = {"all users": test.metrics[KEY],
                                **{s: v.get(KEY) for s, v in test.slices.items()}}
                    table = table.with_columns(pl.Series(
                        "blend", [blend_of.get(s) for s in table["slice"]], pl.Float64))
                    winners.append((f"{name}, {row['blend']}", table))
    print("\n| dataset | blend | kind | weights | valid NDCG@10 | test NDCG@10 | best member "
          "(by valid) | its valid | its test | test gain | fit s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w = ", ".join(f"{m} {v:.2f}" for m, v in r["weights"].items())
        gain = 100 * (r["test"] - r["member_test"]) / r["member_test"]
        print(f"| {r['dataset']} | {r['blend']} | {r['kind']} | {w} | {r['valid']:.4f} | "
              f"{r['test']:.4f} | {r['best_member']} | {r['member_valid']:.4f} | "
              f"{r['member_test']:.4f} | {gain:+.1f}% | {r['fit_s']} |")
    for name, table in winners:
        print(f"\nWhich member wins which slice ({name}; test NDCG@10, score blend):\n")
        print("| " + " | ".join(table.columns) + " |")
        print("|" + "---|" * len(table.columns))
        for values in table.iter_rows():
            print("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v)
                                    for v in values) + " |")


if __name__ == "__main__":
    main()
