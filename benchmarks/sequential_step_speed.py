"""Interleaved training-step timing of SASRec: fp32 vs bf16, or full-width vs length-bucketed
batches, on the same data in one process (issue 15, point 2).

On a shared machine, seconds per epoch of separate runs are not comparable; here the two
variants take turns step by step (`--compare precision`: the same batches; the order alternates)
or epoch by epoch (`--compare buckets`), so both see the same load, and the ratio is what to
read. One thread each (`THREADS` to change). Data: the RecBole sequential protocol's loading of
benchmarks/sequential_protocol.py (ratings >= 3, 10-core; amazon-beauty as shipped).

    .venv/bin/python benchmarks/sequential_step_speed.py --data ml-100k --max-len 50 \
        --compare precision
    .venv/bin/python benchmarks/sequential_step_speed.py --data ml-100k --max-len 200 \
        --compare buckets --epochs 3
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from lmrec.datasets import load_dataset
from lmrec.models.sasrec import SASRecConfig, SASRecNet
from lmrec.models.sequence_losses import next_item_loss
from lmrec.models.sequential import SeqData
from lmrec.prepare import PrepareConfig

LOADERS = {"ml-100k": "movielens-100k", "ml-latest-small": "movielens-latest-small",
           "amazon-beauty": "amazon-beauty"}
BATCH = 128
WARMUP = 3  # steps left out of the timing


def _data(name: str) -> tuple[SeqData, int]:
    root = Path(os.environ.get("LMREC_SHARED_DATASETS", "../shared/datasets"))
    prep = None if name == "amazon-beauty" else PrepareConfig(min_rating=3, core=10)
    ds = load_dataset(LOADERS[name], root / name, download=False, config=prep).dataset
    seqs = ds.sequences()
    return SeqData.from_sequences(seqs, seqs.event_types), ds.n_items


def _step(net: SASRecNet, opt: torch.optim.Optimizer, batch: dict, bf16: bool, loss: str
          ) -> float:
    t0 = time.perf_counter()
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        value = next_item_loss(net(batch), batch, net.item_emb.weight, loss=loss)
    value.float().backward()
    opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=sorted(LOADERS), default="ml-100k")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--compare", choices=("precision", "buckets"), default="precision")
    ap.add_argument("--loss", choices=("ce", "sampled"), default="ce")
    ap.add_argument("--steps", type=int, default=40, help="--compare precision: batches timed")
    ap.add_argument("--epochs", type=int, default=3, help="--compare buckets: epochs each")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="--compare buckets: the precision of both")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    data, n_items = _data(args.data)
    cfg = SASRecConfig(max_len=args.max_len)
    variants = ("fp32", "bf16") if args.compare == "precision" else ("full", "buckets")
    torch.manual_seed(0)
    nets = {v: SASRecNet(n_items, 1, cfg) for v in variants}
    opts = {v: torch.optim.Adam(n.parameters(), lr=3e-3) for v, n in nets.items()}
    seconds = dict.fromkeys(variants, 0.0)
    windows = dict.fromkeys(variants, 0)
    negatives = 256 if args.loss == "sampled" else 0
    if args.compare == "precision":
        batches = list(data.epoch_batches(args.max_len, BATCH, np.random.default_rng(0),
                                          n_items=n_items, shared_negatives=negatives))
        for i, b in enumerate(batches[: args.steps]):
            for v in variants if i % 2 else variants[::-1]:
                s = _step(nets[v], opts[v], b, v == "bf16", args.loss)
                if i >= WARMUP:
                    seconds[v] += s
                    windows[v] += b["items"].shape[0]
    else:
        for e in range(args.epochs):
            for v in variants if e % 2 else variants[::-1]:
                for b in data.epoch_batches(args.max_len, BATCH, np.random.default_rng(e),
                                            n_items=n_items, shared_negatives=negatives,
                                            length_buckets=v == "buckets"):
                    seconds[v] += _step(nets[v], opts[v], b, args.precision == "bf16",
                                        args.loss)
                    windows[v] += b["items"].shape[0]
    speed = {v: round(windows[v] / seconds[v], 1) for v in variants}
    print(f"{args.data} max_len {args.max_len} {args.compare} ({args.loss}): {speed} windows/s; "
          f"{variants[1]} / {variants[0]} speed {speed[variants[1]] / speed[variants[0]]:.2f}")


if __name__ == "__main__":
    main()
