"""Preparation speed and peak memory: MovieLens 100K and 20 million synthetic events.

Runs `lmrec data prepare` as a user would (a subprocess, so start-up and imports count) and
reports wall time and the child's peak resident memory.

    .venv/bin/python benchmarks/prepare_speed.py [--events 20000000] [--skip-large]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
LMREC = [sys.executable, "-m", "lmrec.cli"]


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one lmrec command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(LMREC + args, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(args)}\n{proc.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all children so far (KiB on Linux)
    return seconds, max(peak, before) / 1024**2


def synthetic_events(path: Path, n: int, seed: int = 0) -> None:
    """n events: 1M users and 200k items with Zipf-like popularity, 4 behaviour types."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 1_000_000, n)
    items = np.minimum(rng.zipf(1.3, n) - 1, 199_999)
    ev = rng.choice(np.array(["view", "fav", "cart", "purchase"]), n, p=[0.85, 0.05, 0.06, 0.04])
    ts = 1_700_000_000 + rng.integers(0, 30 * 86_400, n)
    pl.DataFrame({"user_id": users, "item_id": items, "event_type": ev, "ts": ts}).write_csv(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--ml100k", type=Path, default=Path(os.environ.get(
        "LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets")) / "ml-100k")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        if (a.ml100k / "u.data").exists():
            # u.item columns after the title: release date, video date, url, 19 genre flags
            item_cols = ",".join(["item", "title", "release", "video", "url"]
                                 + [f"g{i}" for i in range(19)])
            secs, _ = run(["data", "prepare", "--events", str(a.ml100k / "u.data"),
                           "--no-header", "--columns", "user,item,rating,ts",
                           "--user-col", "user", "--item-col", "item", "--value-col", "rating",
                           "--time-col", "ts", "--out", str(tmpd / "ml100k")])
            print(f"ml-100k u.data only: {secs:.2f} s")
            ml = a.ml100k
            secs, _ = run(["data", "prepare", "--events", str(ml / "u.data"), "--no-header",
                           "--columns", "user,item,rating,ts", "--value-col", "rating",
                           "--time-col", "ts",
                           "--users", str(ml / "u.user"), "--users-delimiter", "|",
                           "--users-columns", "user,age,gender,occupation,zip",
                           "--items", str(ml / "u.item"), "--items-delimiter", "|",
                           "--items-encoding", "latin-1", "--items-columns", item_cols,
                           "--out", str(tmpd / "ml100k-all")])
            print(f"ml-100k u.data + u.user + u.item (`lmrec data prepare`, with start-up): "
                  f"{secs:.2f} s")
            t0 = time.perf_counter()
            from lmrec.datasets import load_dataset

            load_dataset("movielens-100k", a.ml100k, download=False).save(tmpd / "ml100k-full")
            print(f"ml-100k u.data + u.user + u.item (in process, loader): "
                  f"{time.perf_counter() - t0:.2f} s")
            secs, _ = run(["datasets", "get", "movielens-100k", "--from", str(a.ml100k),
                           "--out", str(tmpd / "ml100k-cli")])
            print(f"ml-100k u.data + u.user + u.item (`lmrec datasets get`, with start-up): "
                  f"{secs:.2f} s")
        if not a.skip_large:
            csv = tmpd / "events.csv"
            t0 = time.perf_counter()
            synthetic_events(csv, a.events)
            size = csv.stat().st_size / 1024**2
            print(f"generated {a.events:,} events ({size:.0f} MiB CSV) in "
                  f"{time.perf_counter() - t0:.1f} s")
            secs, peak = run(["data", "prepare", "--events", str(csv), "--user-col", "user_id",
                              "--item-col", "item_id", "--event-col", "event_type",
                              "--time-col", "ts", "--core", "2",
                              "--out", str(tmpd / "large")])
            print(f"{a.events:,} events: `lmrec data prepare` {secs:.1f} s, "
                  f"peak memory {peak:.2f} GB")


if __name__ == "__main__":
    main()
