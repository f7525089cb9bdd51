"""Scaling of the sequential models: NDCG@10 against model size and against training users.

Protocol: benchmarks/sequential_protocol.py's (time-ordered leave-one-out, last item test, the
one before valid, full ranking, seen items excluded, each user ranked from their observed
sequence, early stopping on validation NDCG@10 with the epoch cap lifted), on
ml-latest-small (its "recbole" preparation: ratings >= 3, 10-core, history 50) and on a large
generated shop (`lmrec.datasets.shop_dataset`, one row per (user, item): the first event, so
that a sequence is the order in which a user discovered items; 5-core; history 50).

Sweeps, for sasrec and hstu, each run under the same wall-clock training budget
(`TrainingOptions(time_budget_s=...)`; a run the budget stops is marked `budget_cut`):
- size: layers x width (hidden; sasrec's MLP width stays 4 x hidden, 2 heads throughout), all
  training users;
- data: a fraction of the training users at the default size (2 layers, hidden 64). The users
  are a seeded random permutation of those with training events, and the fractions are its
  prefixes (nested subsets). The model is fitted on those users' training sequences and
  early-stops on those users' validation items; it is then evaluated exactly as the full run
  is, on every user's validation and test item, each ranked from that user's own observed
  sequence (sequential models read a history, so users outside the fraction are scored too),
  with every user's training items masked.

Parameters are counted from the torch module. One JSON row per run is appended to
benchmarks/results/scaling.jsonl (a run whose key is already there is skipped), and the plots
are benchmarks/results/scaling_<data>_<sweep>.png.

    # as measured (BENCHMARKS.md): about 45 + 30 minutes on a shared 2-core machine
    .venv/bin/python benchmarks/sequential_scaling.py --data ml-latest-small --budget 180
    .venv/bin/python benchmarks/sequential_scaling.py --data shop --budget 150  # 10k users
    .venv/bin/python benchmarks/sequential_scaling.py --plot-only      # plots + table from jsonl
    # one more point, e.g. 3 layers at a longer budget (other budgets: table, not plots)
    .venv/bin/python benchmarks/sequential_scaling.py --data shop --sizes 3x128 --fractions ''
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential_protocol import emit, load_split

from lmrec import columns as C
from lmrec.datasets import shop_dataset
from lmrec.evaluate import evaluate, split_loo
from lmrec.evaluate.splits import Split
from lmrec.models import create_model
from lmrec.prepare import PrepareConfig
from lmrec.train.options import TrainingOptions

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SIZE = (2, 64)  # (layers, hidden) of sasrec's and hstu's defaults
SIZES = ((1, 32), (2, 64), (2, 128))
FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def load(name: str, shop_users: int, shop_items: int) -> tuple[Split, dict[str, Any]]:
    if name == "shop":
        # one row per (user, item), its first event: carts and purchases follow a view of the
        # same item, which would otherwise be next-item targets already in the history
        cfg = PrepareConfig(core=5, dedupe="user-item", dedupe_keep="first")
        ds = shop_dataset(shop_users, shop_items, seed=0, config=cfg).dataset
        split = split_loo(ds, valid=True)
    else:
        _, split = load_split(name, "recbole")
    parts = (split.train, split.valid, split.test)
    info = {"n_users": split.train.n_users, "n_items": split.train.n_items,
            "n_events": sum(p.n_events for p in parts if p is not None)}
    if name == "shop":
        info.update(generated={"n_users": shop_users, "n_items": shop_items, "seed": 0})
    return split, info


def user_subset(split: Split, fraction: float, seed: int) -> np.ndarray:
    """The first ceil(fraction * n) users of a seeded permutation of the training users."""
    users = np.unique(split.train.events[C.USER_IDX].to_numpy())
    perm = np.random.default_rng(seed).permutation(users)
    return np.sort(perm[: math.ceil(fraction * perm.size)])


def model_params(name: str, layers: int, hidden: int) -> dict[str, Any]:
    params: dict[str, Any] = {"layers": layers, "hidden": hidden}
    if name == "sasrec":
        params["inner"] = 4 * hidden  # the default's ratio (64 -> 256)
    return params


def run(name: str, split: Split, layers: int, hidden: int, fraction: float, budget_s: float,
        seed: int) -> dict[str, Any]:
    params = model_params(name, layers, hidden)
    model = create_model(name, {"progress": False, "epochs": 300, **params})
    train, valid = split.train, split.valid
    assert valid is not None
    n_train_users = int(np.unique(train.events[C.USER_IDX].to_numpy()).size)
    if fraction < 1.0:
        keep = pl.Series(user_subset(split, fraction, seed))
        train = train.with_events(train.events.filter(pl.col(C.USER_IDX).is_in(keep)))
        valid = valid.with_events(valid.events.filter(pl.col(C.USER_IDX).is_in(keep)))
        n_train_users = int(keep.len())
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(train, TrainingOptions(rng=seed, valid=valid, time_budget_s=budget_s))
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    if fraction < 1.0:
        # the evaluation masks "seen" items from the fitted state: every user's training items,
        # as in the full run (the users outside the fraction were not in the fitted data)
        model.seen_ = split.train.matrix("binary").tocsr().astype(np.float32)
    ev_valid = evaluate(model, split, [10], part="valid", history="observed")
    ev_test = evaluate(model, split, [10], part="test", history="observed")
    result = model.train_result_
    secs = [h["seconds"] for h in result.history]
    patience = model.config.patience
    by_patience = patience is not None and len(secs) - result.best_epoch >= patience
    return {"model": name, "layers": layers, "hidden": hidden, "fraction": fraction,
            "train_users": n_train_users,
            "n_params": sum(p.numel() for p in model.net_.parameters()),
            # the budget is wall-clock: on a shared machine the CPU seconds the run got and
            # the load average say how much of it was compute
            "budget_s": budget_s, "fit_s": round(fit_s, 1), "cpu_s": round(cpu_s, 1),
            "load1": round(os.getloadavg()[0], 1), "epochs": len(secs),
            "best_epoch": result.best_epoch, "s_per_epoch": round(float(np.mean(secs)), 2),
            # stopped_early is patience or the budget
            "budget_cut": bool(result.stopped_early and not by_patience),
            "valid_ndcg@10": round(ev_valid.metrics["ndcg@10"], 4),
            "valid_hr@10": round(ev_valid.metrics["hit@10"], 4),
            "test_ndcg@10": round(ev_test.metrics["ndcg@10"], 4),
            "test_hr@10": round(ev_test.metrics["hit@10"], 4),
            "seed": seed, "params": params}


def key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["dataset"], row["model"], row["layers"], row["hidden"], row["fraction"],
            row["budget_s"], row["seed"])


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of `path`, the last one of each key (a rerun replaces an earlier run)."""
    if not path.exists():
        return []
    rows = {key(r): r for r in map(json.loads, path.read_text().splitlines()) if r}
    return list(rows.values())


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    written = []
    for data in sorted({r["dataset"] for r in rows}):
        for sweep in ("size", "data"):
            # one budget per plot: the one most runs of the dataset had (others: table only)
            budgets = [r["budget_s"] for r in rows if r["dataset"] == data]
            budget = max(set(budgets), key=budgets.count)
            sel = [r for r in rows if r["dataset"] == data and r["budget_s"] == budget and (
                r["fraction"] == 1.0 if sweep == "size"
                else (r["layers"], r["hidden"]) == DEFAULT_SIZE)]
            if not sel:
                continue
            fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=90)
            for i, model in enumerate(sorted({r["model"] for r in sel})):
                pts = sorted((r for r in sel if r["model"] == model),
                             key=lambda r: (r["n_params"], r["fraction"]))
                x = [r["n_params"] if sweep == "size" else r["fraction"] for r in pts]
                colour = f"C{i}"
                for part, style in (("test", "-"), ("valid", "--")):
                    y = [r[f"{part}_ndcg@10"] for r in pts]
                    ax.plot(x, y, style, color=colour, label=f"{model} {part}")
                    # hollow markers: runs the time budget stopped before early stopping did
                    for xi, yi, r in zip(x, y, pts, strict=True):
                        ax.plot(xi, yi, "o", color=colour,
                                mfc="white" if r["budget_cut"] else colour)
                if sweep == "size":
                    for xi, r in zip(x, pts, strict=True):
                        ax.annotate(f"{r['layers']}x{r['hidden']}", (xi, r["test_ndcg@10"]),
                                    textcoords="offset points", xytext=(3, -10), fontsize=7)
            ax.set_xscale("log", base=10 if sweep == "size" else 2)
            ax.xaxis.set_minor_formatter(NullFormatter())  # crowded on a short log axis
            ax.margins(x=0.12)  # room for the point labels
            ax.set_xlabel("parameters" if sweep == "size" else "fraction of training users")
            ax.set_ylabel("NDCG@10")
            ax.set_title(f"{data}: {'layers x hidden' if sweep == 'size' else 'users'} "
                         f"(budget {budget:g} s; hollow = cut)", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out / f"scaling_{data}_{sweep}.png"
            fig.savefig(path)
            plt.close(fig)
            written.append(path)
    return written


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | model | layers x hidden | users | params | budget s | epochs (best) "
             "| s/epoch | fit s (CPU s) | cut | valid NDCG@10 | valid HR@10 | test NDCG@10 "
             "| test HR@10 |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["model"], r["fraction"],
                                         r["n_params"], r["budget_s"])):
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['layers']}x{r['hidden']} | "
            f"{r['fraction']:g} ({r['train_users']}) | {r['n_params']:,} | {r['budget_s']:g} "
            f"| {r['epochs']} "
            f"({r['best_epoch']}) | {r['s_per_epoch']} | {r['fit_s']} ({r.get('cpu_s', '-')}) "
            f"| {'yes' if r['budget_cut'] else 'no'} | "
            f"{r['valid_ndcg@10']:.4f} | {r['valid_hr@10']:.4f} | {r['test_ndcg@10']:.4f} | "
            f"{r['test_hr@10']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=["ml-latest-small", "shop"],
                    help="ml-latest-small (or another sequential_protocol name) and/or shop")
    ap.add_argument("--models", default="sasrec,hstu")
    ap.add_argument("--sizes", default=",".join(f"{a}x{b}" for a, b in SIZES),
                    help="LAYERSxHIDDEN,... at all users")
    ap.add_argument("--fractions", default=",".join(map(str, FRACTIONS)),
                    help="fractions of the training users at the default size")
    ap.add_argument("--budget", type=float, default=150.0, help="training seconds per run")
    ap.add_argument("--shop-users", type=int, default=10_000)
    ap.add_argument("--shop-items", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jsonl", type=Path, default=RESULTS / "scaling.jsonl")
    ap.add_argument("--plot-only", action="store_true", help="re-plot from --jsonl and exit")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if not args.plot_only:
        torch.set_num_threads(args.threads)
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
        fractions = [float(f) for f in args.fractions.split(",") if f]
        # the size sweep, then the data sweep; the default (on both curves) first, once
        grid = [(a, b, 1.0) for a, b in sizes] + [(*DEFAULT_SIZE, f) for f in fractions]
        grid = sorted(dict.fromkeys(grid), key=lambda g: g != (*DEFAULT_SIZE, 1.0))
        done = {key(r) for r in read_rows(args.jsonl)}
        for data in args.data:
            split, info = load(data, args.shop_users, args.shop_items)
            print(f"{data}: {json.dumps(info)}", flush=True)
            for layers, hidden, fraction in grid:
                for model in args.models.split(","):
                    probe = {"dataset": data, "model": model, "layers": layers,
                             "hidden": hidden, "fraction": fraction,
                             "budget_s": args.budget, "seed": args.seed}
                    if key(probe) in done:
                        continue
                    row = {"dataset": data, "data": info,
                           **run(model, split, layers, hidden, fraction, args.budget,
                                 args.seed)}
                    emit(row, args.jsonl)
    rows = read_rows(args.jsonl)
    for path in plot(rows, RESULTS):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    print(table(rows))


if __name__ == "__main__":
    main()
