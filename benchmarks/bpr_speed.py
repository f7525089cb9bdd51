"""BPR fit time and accuracy at a million interactions, beside implicit's BPR on the same split.

The data is a seeded Zipf low-rank synthetic set (`zipf_lowrank`) the shape of MovieLens-1M
scaled to a million training interactions: 7,000 users, 3,500 items, lognormal history
lengths (mean 183, at least 20), item popularity ~ rank^-0.9, and a rank-16 taste; each user's
items are drawn without replacement from softmax(2 u.v / 4 + log popularity) (Gumbel top-k).
On its test part popularity reaches NDCG@10 .128 and EASE .317, about what they reach on
MovieLens-100K (.128 / .294); its taste being exactly low-rank, BPR does better still. Split:
random per-user 8:1:1 (RecBole's rounding); full ranking, train items masked, each user scored
from the fitted state (history="trained"). Times are wall and CPU seconds of the fit alone,
with the load average before it (the machine may be shared).

    .venv/bin/python benchmarks/bpr_speed.py        # defaults, earlier defaults, implicit
    .venv/bin/python benchmarks/bpr_speed.py --config '{"threads": 2}' --implicit-iterations ""
    .venv/bin/python benchmarks/bpr_speed.py --implicit-iterations 10,30,60 \
        --implicit-lr 0.01,0.05 --implicit-reg 0.01,0.001
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np
import polars as pl

from lmrec.data.dataset import Dataset
from lmrec.evaluate import evaluate, split_random
from lmrec.evaluate.splits import Split
from lmrec.models import create_model
from lmrec.models.base import Recommender
from lmrec.prepare import PrepareConfig, prepare
from lmrec.train.options import TrainingOptions

EARLIER = '{"epochs": 40, "batch_size": 2048, "lr": 0.005, "lr_schedule": "constant"}'


def zipf_lowrank(n_users: int = 7000, n_items: int = 3500, *, mean_length: float = 183.0,
                 rank: int = 16, signal: float = 2.0, zipf: float = 0.9, sigma: float = 0.9,
                 seed: int = 0, min_length: int = 20, core: int = 10) -> Dataset:
    """A seeded synthetic implicit-feedback Dataset (`core`-core); see the module docstring."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, rank))
    items = rng.normal(size=(n_items, rank))
    log_pop = -zipf * np.log(np.arange(1, n_items + 1))
    lengths = np.exp(rng.normal(np.log(mean_length) - sigma**2 / 2, sigma, n_users))
    lengths = np.clip(lengths, min_length, n_items // 2).astype(np.int64)
    u_parts, i_parts = [], []
    for b0 in range(0, n_users, 500):
        b1 = min(b0 + 500, n_users)
        logit = signal * (users[b0:b1] @ items.T) / np.sqrt(rank) + log_pop
        logit += rng.gumbel(size=logit.shape)  # Gumbel top-k: sampling without replacement
        order = np.argsort(-logit, axis=1)
        take = np.arange(n_items)[None, :] < lengths[b0:b1, None]
        u_parts.append(np.broadcast_to(np.arange(b0, b1)[:, None], order.shape)[take])
        i_parts.append(order[take])
    frame = pl.DataFrame({"user": np.concatenate(u_parts) + 1,
                          "item": np.concatenate(i_parts) + 1})
    return prepare(frame, config=PrepareConfig(core=core), name="zipf-lowrank").dataset


def ndcg(model: Recommender, split: Split, part: str) -> float:
    res = evaluate(model, split, [10], part=part, history="trained")
    return float(res.metrics["ndcg@10"])


def implicit_bpr(split: Split, *, factors: int, iterations: int, lr: float, reg: float,
                 threads: int, seed: int) -> tuple[Recommender, float, float]:
    """implicit's BPR fitted on the train part, wrapped as an lmrec BPR for evaluation (its
    last factor column is the item bias, with the user's fixed at 1). Returns the model, the
    wall and the CPU seconds of implicit's fit."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    x = split.train.matrix("binary").tocsr()
    peer = BayesianPersonalizedRanking(factors=factors, learning_rate=lr, regularization=reg,
                                       iterations=iterations, num_threads=threads,
                                       random_state=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    peer.fit(x, show_progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    shell = create_model("bpr", {"epochs": 1, "factors": 1}).fit(split.train,
                                                                  TrainingOptions(rng=seed))
    uf, vf = np.asarray(peer.user_factors), np.asarray(peer.item_factors)
    shell._load_arrays({"U": uf[:, :-1].copy(), "V": vf[:, :-1].copy(),
                        "b": vf[:, -1].copy()})
    return shell, wall, cpu


def timed_fit(params: dict, split: Split, seed: int) -> tuple[Recommender, float, float]:
    model = create_model("bpr", params)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(split.train, TrainingOptions(rng=seed))
    return model, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", action="append", default=[],
                    help="a JSON object of BPR parameters, one row each (default: {}, and "
                         "the earlier defaults: " + EARLIER + ")")
    ap.add_argument("--implicit-iterations", default="30,100",
                    help="comma-separated epochs for implicit's BPR (empty: skip it)")
    ap.add_argument("--implicit-lr", default="0.01", help="comma-separated learning rates")
    ap.add_argument("--implicit-reg", default="0.01", help="comma-separated regularisations")
    ap.add_argument("--implicit-threads", type=int, default=2)
    ap.add_argument("--jsonl", default=None, help="also append the rows here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    ds = zipf_lowrank(seed=args.seed)
    split = split_random(ds, (0.8, 0.1, 0.1), seed=args.seed)
    print(f"zipf-lowrank: {ds.n_users} users, {ds.n_items} items, {ds.n_events} interactions, "
          f"train {split.train.n_events} (built in {time.perf_counter() - t0:.1f} s); "
          f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for spec in args.config or ["{}", EARLIER]:
        params = json.loads(spec)
        load = os.getloadavg()[0]
        model, wall, cpu = timed_fit(params, split, args.seed)
        rows.append({"model": f"lmrec bpr {spec}", **model.settings_, "fit_s": round(wall, 1),
                     "cpu_s": round(cpu, 1), "load": round(load, 1),
                     "valid_ndcg@10": round(ndcg(model, split, "valid"), 4),
                     "test_ndcg@10": round(ndcg(model, split, "test"), 4)})
        print(json.dumps(rows[-1]), flush=True)
    grid = itertools.product(filter(None, args.implicit_iterations.split(",")),
                             args.implicit_lr.split(","), args.implicit_reg.split(","))
    for iterations, lr, reg in grid:
        load = os.getloadavg()[0]
        model, wall, cpu = implicit_bpr(split, factors=64, iterations=int(iterations),
                                        lr=float(lr), reg=float(reg),
                                        threads=args.implicit_threads, seed=args.seed)
        rows.append({"model": f"implicit bpr lr {lr} reg {reg} threads {args.implicit_threads}",
                     "epochs": int(iterations), "batch_size": 1, "fit_s": round(wall, 1),
                     "cpu_s": round(cpu, 1), "load": round(load, 1),
                     "valid_ndcg@10": round(ndcg(model, split, "valid"), 4),
                     "test_ndcg@10": round(ndcg(model, split, "test"), 4)})
        print(json.dumps(rows[-1]), flush=True)
    if args.jsonl:
        with open(args.jsonl, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    print("\n| model | epochs | batch | fit s (wall) | CPU s | load avg | valid NDCG@10 | "
          "test NDCG@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['epochs']} | {r['batch_size']} | {r['fit_s']} | "
              f"{r['cpu_s']} | {r['load']} | {r['valid_ndcg@10']:.4f} | "
              f"{r['test_ndcg@10']:.4f} |")


if __name__ == "__main__":
    main()
