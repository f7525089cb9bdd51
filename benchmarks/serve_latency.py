"""End-to-end latency of the HTTP service: a real `lmrec serve` process, measured from clients.

Builds a shop catalogue (`--users`, `--items`), trains `--model` on it, writes the bundle, starts
the server on a free local port with a SQLite store (or `--store`), then measures with
`--concurrency` client threads:

    recommend   GET /v1/users/{id}/recommendations?k=10 for random known users
    realtime    POST one event, then GET that user's recommendations (the time from sending an
                event to having recommendations that include it)
    ingest      POST /v1/events batches of 100 (durable on answer): events/s

Prints one JSON line (last line of stdout): latency percentiles in ms and throughputs.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/serve_latency.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/serve_latency.py --model two-tower \
        --param epochs=5 --users 20000 --items 5000 --concurrency 8
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/serve_latency.py --workers 2

The load generator runs on the same machine as the server: on few cores the two compete, so
compare runs made on the same machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from lmrec.datasets.shop import shop_dataset
from lmrec.models import create_model
from lmrec.serve.bundle import write_bundle
from lmrec.train.options import TrainingOptions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2)}


def _run(concurrency: int, total: int, task: Callable[[httpx.Client, int], None]
         ) -> tuple[list[float], float]:
    """Run `task` `total` times over `concurrency` threads; (latencies in ms, wall seconds)."""
    lat: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        with httpx.Client(timeout=60) as c:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                t = time.perf_counter()
                task(c, n)
                dt = (time.perf_counter() - t) * 1e3
                with lock:
                    lat.append(dt)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return lat, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ease")
    ap.add_argument("--param", action="append", default=[], help="KEY=VALUE for the model")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--store", default=None, help="store URL (default: SQLite in a temp dir)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lmrec-serve-bench-"))
    ds = shop_dataset(args.users, args.items, seed=0).dataset
    params = dict(p.split("=", 1) for p in args.param)
    t0 = time.perf_counter()
    rec = create_model(args.model, params).fit(ds, TrainingOptions(rng=0))
    fit_s = time.perf_counter() - t0
    bundle = write_bundle(rec, ds, tmp / "bundle")
    key = secrets.token_urlsafe(24)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    store = args.store or f"sqlite:///{tmp / 'events.db'}"
    env = {**os.environ, "LMREC_API_KEYS": key, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "lmrec.cli", "serve", str(bundle), "--store",
                             store, "--port", str(port), "--workers", str(args.workers),
                             "--log-level", "warning"], env=env)
    try:
        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{url}/v1/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 180:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        start_s = time.perf_counter() - t0
        users = ds.users.ids.to_list()
        items = ds.items.ids.to_list()
        rng = np.random.default_rng(0)
        picks = rng.integers(0, len(users), size=args.requests)
        headers = {"Authorization": f"Bearer {key}"}

        def recommend(c: httpx.Client, n: int) -> None:
            r = c.get(f"{url}/v1/users/{users[picks[n]]}/recommendations", params={"k": 10})
            r.raise_for_status()

        def realtime(c: httpx.Client, n: int) -> None:
            user = f"bench-{n % 500}"
            event = {"user": user, "item": str(items[int(picks[n]) % len(items)])}
            c.post(f"{url}/v1/events", json={"events": [event]}, headers=headers
                   ).raise_for_status()
            c.get(f"{url}/v1/users/{user}/recommendations", params={"k": 10}
                  ).raise_for_status()

        def ingest(c: httpx.Client, n: int) -> None:
            batch = [{"user": f"ingest-{(n * 100 + j) % 2000}", "item": str(items[j % len(items)]),
                      "event_id": f"b{n}-{j}"} for j in range(100)]
            c.post(f"{url}/v1/events", json={"events": batch}, headers=headers
                   ).raise_for_status()

        _run(args.concurrency, 100, recommend)  # warm-up
        rec_lat, rec_s = _run(args.concurrency, args.requests, recommend)
        rt_lat, _ = _run(args.concurrency, max(args.requests // 4, 50), realtime)
        n_batches = max(args.requests // 20, 20)
        ing_lat, ing_s = _run(args.concurrency, n_batches, ingest)
        result = {
            "model": args.model, "users": ds.n_users, "items": ds.n_items,
            "events": ds.n_events, "fit_s": round(fit_s, 2), "server_start_s": round(start_s, 2),
            "workers": args.workers, "concurrency": args.concurrency,
            "store": store.split(":", 1)[0],
            "recommend": {**_percentiles(rec_lat), "req_per_s": round(len(rec_lat) / rec_s, 1)},
            "event_then_recommend": _percentiles(rt_lat),
            "ingest_batch_100": {**_percentiles(ing_lat),
                                 "events_per_s": round(100 * n_batches / ing_s, 1)},
            "cpu_count": os.cpu_count(),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
