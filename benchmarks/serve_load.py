"""Load test of `lmrec serve` on loopback: recommendation latency at a fixed rate, and ingest.

Starts `lmrec serve BUNDLE --store sqlite:///WORK/...` as a subprocess on a free port, waits
for /v1/ready, then runs the scenarios and prints one JSON line each (and a summary last):

- `ml100k`: a two-tower bundle trained on MovieLens 100K (`lmrec datasets get` from the shared
  copy, `lmrec train --model two-tower`), exact retrieval (1,682 items).
- `synthetic`: a 1,000,000-item ALS bundle whose factors are the synthetic factor vectors of
  `ann_recall.py` (20,000 users with 50 seen items each), with the HNSW index `lmrec train`
  puts in every bundle of 100k+ items (`write_bundle`, built by `ItemIndex`).
- `impressions`: the cost of logging every response's impression (issue 13): the ml100k
  recommendation run twice per round, with `--no-log-impressions` and with logging (the
  default; SQLite, synchronous=FULL, group commit), over --rounds alternating rounds; reports
  each run's p99 and the median difference.
- `hstu`: fresh histories scored by `hstu` on an ML-1M-sized catalogue (3,416 items, 6,040
  users, mean history about 165; `serve_hstu.py`), one bundle per `--max-len` (default 50
  and 200, each its own server): visitors POST their history (`--hstu-mode visitor`), or
  training users GET after one live event each (`--hstu-mode live`).
- `ingest`: POST /v1/events batches (Bearer key from LMREC_API_KEYS) from several threads,
  as fast as the server takes them, against the ml100k bundle; reports events/s.

Recommendations are GET /v1/users/{id}/recommendations?k=10 for random training users, sent
open-loop: request i is due at start + i / rate whatever happened before, and its latency is
measured from that due time, so a stalled server shows up as queueing delay rather than
as a lower send rate (no coordinated omission). The generator is threads with one persistent
httpx.Client each: cheap, since it shares the machine's cores with the server.

Bundles are built once into --work and reused. Commands (the lead's quiet-machine figures):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/serve_load.py --scenario all
    .venv/bin/python benchmarks/serve_load.py --scenario synthetic --rate 200 --duration 30
    .venv/bin/python benchmarks/serve_load.py --scenario ingest --duration 10 --batch 100
    .venv/bin/python benchmarks/serve_load.py --scenario impressions --rate 200 --duration 20
    .venv/bin/python benchmarks/serve_load.py --scenario hstu --rate 200 --duration 30

Targets (2 cores): p99 <= 20 ms at 200 requests/s on the 1M-item synthetic bundle; p99 <= 10 ms
at 200 requests/s for a fresh history scored by `hstu` (issue 15).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMREC_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
LMREC = str(Path(sys.executable).with_name("lmrec"))
SCENARIOS = ("ml100k", "synthetic", "ingest", "impressions", "hstu")
STORE_OPTIONS = [""]  # --store-options: appended to every server's SQLite URL


# --- bundles ----------------------------------------------------------------------------
def ml100k_bundle(work: Path, epochs: int) -> Path:
    """A two-tower bundle on MovieLens 100K (built once)."""
    out = work / f"ml100k-two-tower-e{epochs}"
    if (out / "bundle.json").exists():
        return out
    data = work / "ml100k-data"
    if not (data / "metadata.json").exists():
        subprocess.run([LMREC, "datasets", "get", "movielens-100k", "--from",
                        str(SHARED / "ml-100k"), "--out", str(data)], check=True)
    subprocess.run([LMREC, "train", "--data", str(data), "--model", "two-tower", "--out",
                    str(out), "--param", f"epochs={epochs}", "--param", "progress=false"],
                   check=True)
    return out


def synthetic_bundle(work: Path, n_items: int, n_users: int, seen: int) -> Path:
    """An ALS bundle with synthetic factors and an HNSW index (built once).

    Every item gets exactly one training event (a shuffled catalogue dealt out `seen` per
    user), so all `n_items` are in the vocabulary; ALS is fitted for one sweep only to set up
    the model's state, then its factors are replaced by the synthetic ones.
    """
    out = work / f"synthetic-als-n{n_items}"
    if (out / "bundle.json").exists():
        return out
    import polars as pl
    from ann_recall import synthetic_factors

    from lmrec.models import create_model
    from lmrec.prepare import prepare
    from lmrec.serve.bundle import write_bundle
    from lmrec.train.options import TrainingOptions

    if n_users * seen < n_items:
        raise SystemExit(f"--synthetic-users x {seen} must cover the {n_items} items")
    rng = np.random.default_rng(0)
    items = np.resize(rng.permutation(n_items), n_users * seen)
    events = pl.DataFrame({"user": np.repeat(np.arange(n_users), seen), "item": items,
                           "timestamp": 1_700_000_000 + np.arange(items.size)})
    ds = prepare(events, name="synthetic").dataset
    model = create_model("als", {"factors": 64, "iterations": 1}).fit(ds, TrainingOptions(rng=0))
    item_vecs, user_vecs = synthetic_factors(n_items, n_users, 64, seed=0)
    model.U_ = user_vecs
    model.V_ = item_vecs  # internal item i gets synthetic vector i (ann_recall's catalogue)
    t0 = time.perf_counter()
    write_bundle(model, ds, out)
    print(json.dumps({"synthetic_bundle_written_s": round(time.perf_counter() - t0, 1)}),
          flush=True)
    return out


# --- server -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`lmrec serve` in a subprocess; `with Server(...) as url:` waits until it is ready."""

    def __init__(self, bundle: Path, db: Path, key: str, timeout_s: float,
                 extra: tuple[str, ...] = ()) -> None:
        self.bundle, self.db, self.key, self.timeout_s = bundle, db, key, timeout_s
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    def __enter__(self) -> str:
        for suffix in ("", "-wal", "-shm"):  # a fresh event store every run
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        env = {**os.environ, "LMREC_API_KEYS": self.key, "OMP_WAIT_POLICY": "PASSIVE"}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [LMREC, "serve", str(self.bundle), "--store",
             f"sqlite:///{self.db}{STORE_OPTIONS[0]}", "--host",
             "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *self.extra],
            env=env)
        url = f"http://127.0.0.1:{self.port}"
        while time.perf_counter() - t0 < self.timeout_s:
            if self.proc.poll() is not None:
                raise SystemExit(f"lmrec serve exited with code {self.proc.returncode}")
            try:
                if httpx.get(f"{url}/v1/ready", timeout=2).status_code == 200:
                    self.startup_s = time.perf_counter() - t0
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise SystemExit(f"lmrec serve was not ready after {self.timeout_s} s")

    def rss_mb(self) -> float | None:
        try:
            import psutil

            return round(psutil.Process(self.proc.pid).memory_info().rss / 2**20, 1)
        except Exception:  # psutil is a dev extra; the figure is optional
            return None

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the server has used so far, its workers included."""
        try:
            import psutil

            proc = psutil.Process(self.proc.pid)
            return float(sum(t.user + t.system for t in
                             [p.cpu_times() for p in (proc, *proc.children(recursive=True))]))
        except Exception:
            return None

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- load -------------------------------------------------------------------------------
def percentiles(ms: np.ndarray) -> dict[str, float | None]:
    if ms.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2), "max_ms": round(float(ms.max()), 2)}


def open_loop(url: str, paths: list[Any], rate: float, threads: int) -> dict[str, Any]:
    """Send each request at its due time (start + i / rate); latencies from the due time.
    A request is a path to GET or a (path, json body) to POST."""
    n = len(paths)
    latency = np.full(n, np.nan)  # ms from due time to full response
    service = np.full(n, np.nan)  # ms from actual send to full response
    status = np.zeros(n, dtype=np.int64)  # 0 = transport error
    start = time.perf_counter() + 0.2

    def worker(w: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(w, n, threads):
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent = time.perf_counter()
                try:
                    req = paths[i]
                    r = (client.get(req) if isinstance(req, str)
                         else client.post(req[0], json=req[1]))
                    status[i] = r.status_code
                except httpx.HTTPError:
                    status[i] = 0
                done = time.perf_counter()
                latency[i] = 1000 * (done - due)
                service[i] = 1000 * (done - sent)

    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    ok = status == 200
    codes = {str(c): int((status == c).sum()) for c in np.unique(status) if c != 200}
    return {"requests": n, "target_rate": rate, "achieved_rate": round(n / elapsed, 1),
            "ok": int(ok.sum()), "errors": int((~ok).sum()), "error_codes": codes,
            **percentiles(latency[ok]),
            "service": percentiles(service[ok])}


def recommend_scenario(name: str, bundle: Path, args: argparse.Namespace,
                       extra: tuple[str, ...] = (), paths: list[Any] | None = None,
                       events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Recommendations at args.rate: GETs for random training users, or `paths` (GET paths
    or (path, json body) POSTs, warmup first); `events` are ingested before the run."""
    if paths is None:
        with np.load(bundle / "arrays.npz", allow_pickle=False) as z:
            users = z["user_ids"]
        rng = np.random.default_rng(1)
        n = int(args.rate * args.duration)
        picks = users[rng.integers(0, users.size, n + args.warmup)]
        paths = [f"/v1/users/{u}/recommendations?k={args.k}" for u in picks.tolist()]
    key = secrets.token_hex(16)
    server = Server(bundle, args.work / f"events-{name}.db", key, args.ready_timeout, extra)
    with server as url:
        with httpx.Client(base_url=url, timeout=30,
                          headers={"Authorization": f"Bearer {key}"}) as client:
            for lo in range(0, len(events or ()), 1_000):  # before the run: fresh histories
                client.post("/v1/events", json={"events": events[lo: lo + 1_000]}
                            ).raise_for_status()

            def send(req: Any) -> httpx.Response:
                return (client.get(req) if isinstance(req, str)
                        else client.post(req[0], json=req[1]))

            first = send(paths[0])  # warm caches and code paths
            first.raise_for_status()
            for p in paths[1 : args.warmup]:
                send(p)
        load_before = os.getloadavg()  # 1/5/15-min load: other jobs on the machine
        cpu_before, own_before = server.cpu_s(), time.process_time()
        result = open_loop(url, paths[args.warmup :], args.rate, args.threads)
        result["load_avg"] = {"before": load_before, "after": os.getloadavg()}
        # CPU per request: what a busy machine does not inflate as much as latency
        cpu_after, n = server.cpu_s(), max(result["requests"], 1)
        result["server_cpu_ms_per_request"] = (
            None if cpu_before is None or cpu_after is None
            else round(1000 * (cpu_after - cpu_before) / n, 2))
        result["generator_cpu_ms_per_request"] = round(
            1000 * (time.process_time() - own_before) / n, 2)
        rss = server.rss_mb()
    return {"scenario": name, "bundle": str(bundle), "k": args.k,
            "duration_s": args.duration, "startup_s": round(server.startup_s, 1),
            "server_rss_mb": rss, "example": first.json()["items"][:3], **result}


def hstu_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fresh histories scored by hstu, one server per --max-len (serve_hstu.py)."""
    from serve_hstu import hstu_bundle, hstu_requests

    out = []
    for max_len in args.max_len:
        bundle = hstu_bundle(args.work, max_len, args.hstu_epochs)
        n = int(args.rate * args.duration) + args.warmup
        paths, events, facts = hstu_requests(bundle, args.hstu_mode, n, args.k)
        extra = (*(("--workers", str(args.workers)) if args.workers > 1 else ()),
                 *args.serve_arg)
        res = recommend_scenario(f"hstu-L{max_len}", bundle, args, extra, paths, events)
        out.append({**res, "max_len": max_len, "mode": args.hstu_mode,
                    "workers": args.workers, "serve_args": args.serve_arg, **facts})
    return out


def impressions_scenario(bundle: Path, args: argparse.Namespace) -> dict[str, Any]:
    """p99 with and without impression logging, in alternating rounds (the machine's drift
    then hits both alike)."""
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for r in range(args.rounds):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        for mode in order:
            extra = ("--no-log-impressions",) if mode == "off" else ()
            res = recommend_scenario(f"impressions-{mode}", bundle, args, extra)
            runs[mode].append({k: res[k] for k in ("achieved_rate", "errors", "p50_ms",
                                                  "p99_ms", "service")})
    diff = [on["p99_ms"] - off["p99_ms"] for on, off in zip(runs["on"], runs["off"],
                                                             strict=True)]
    return {"scenario": "impressions", "bundle": str(bundle), "rate": args.rate,
            "duration_s": args.duration, "rounds": runs,
            "p99_added_ms_median": round(float(np.median(diff)), 2),
            "p99_added_ms_each": [round(d, 2) for d in diff]}


def ingest_scenario(bundle: Path, args: argparse.Namespace) -> dict[str, Any]:
    with np.load(bundle / "arrays.npz", allow_pickle=False) as z:
        users, items = z["user_ids"].tolist(), z["item_ids"].tolist()
    key = secrets.token_hex(16)
    server = Server(bundle, args.work / "events-ingest.db", key, args.ready_timeout)
    counts = np.zeros(args.ingest_threads, dtype=np.int64)
    batch_ms: list[list[float]] = [[] for _ in range(args.ingest_threads)]
    errors = np.zeros(args.ingest_threads, dtype=np.int64)

    def worker(w: int, url: str, stop: float) -> None:
        rng = np.random.default_rng(w)
        seq = 0
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
            while time.perf_counter() < stop:
                u = rng.integers(0, len(users), args.batch)
                i = rng.integers(0, len(items), args.batch)
                body = {"events": [
                    {"user": users[a], "item": items[b], "type": "view",
                     "event_id": f"load-{w}-{seq + j}"}
                    for j, (a, b) in enumerate(zip(u.tolist(), i.tolist(), strict=True))]}
                seq += args.batch
                t0 = time.perf_counter()
                r = client.post("/v1/events", json=body)
                batch_ms[w].append(1000 * (time.perf_counter() - t0))
                if r.status_code == 200 and r.json()["accepted"] == args.batch:
                    counts[w] += args.batch
                else:
                    errors[w] += 1

    with server as url:
        t0 = time.perf_counter()
        stop = t0 + args.duration
        pool = [threading.Thread(target=worker, args=(w, url, stop))
                for w in range(args.ingest_threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - t0
    lat = np.array([x for b in batch_ms for x in b])
    return {"scenario": "ingest", "bundle": str(bundle), "batch": args.batch,
            "threads": args.ingest_threads, "duration_s": round(elapsed, 1),
            "events": int(counts.sum()), "events_per_s": round(counts.sum() / elapsed),
            "batches": int(lat.size), "errors": int(errors.sum()),
            "batch_latency": percentiles(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    ap.add_argument("--rate", type=float, default=200.0, help="requests/s (open loop)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    ap.add_argument("--threads", type=int, default=16, help="generator threads")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=50, help="requests before measuring")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmrec-bench/serve-load"))
    ap.add_argument("--epochs", type=int, default=5, help="two-tower epochs (ml100k)")
    ap.add_argument("--synthetic-items", type=int, default=1_000_000)
    ap.add_argument("--synthetic-users", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100, help="events per POST (ingest)")
    ap.add_argument("--ingest-threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="impressions: off/on rounds")
    ap.add_argument("--store-options", default="",
                    help="appended to the SQLite URL, e.g. ?synchronous=normal")
    ap.add_argument("--max-len", type=int, nargs="+", default=[50, 200],
                    help="hstu: history lengths, one bundle and server each")
    ap.add_argument("--hstu-mode", choices=["visitor", "live"], default="visitor")
    ap.add_argument("--workers", type=int, default=1, help="hstu: server processes")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="hstu: an option for `lmrec serve`, e.g. --serve-arg=--no-log-impressions")
    ap.add_argument("--hstu-epochs", type=int, default=1, help="hstu training epochs")
    ap.add_argument("--ready-timeout", type=float, default=900.0)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the bundles")
    args = ap.parse_args()
    STORE_OPTIONS[0] = args.store_options
    args.work.mkdir(parents=True, exist_ok=True)
    if args.rebuild:
        for p in args.work.glob("*-*"):
            if p.is_dir() and (p / "bundle.json").exists():
                shutil.rmtree(p)
    wanted = SCENARIOS if args.scenario == "all" else (args.scenario,)
    results = []
    for name in wanted:
        if name == "ml100k":
            res = recommend_scenario(name, ml100k_bundle(args.work, args.epochs), args)
        elif name == "synthetic":
            bundle = synthetic_bundle(args.work, args.synthetic_items, args.synthetic_users,
                                      seen=50)
            res = recommend_scenario(name, bundle, args)
        elif name == "impressions":
            res = impressions_scenario(ml100k_bundle(args.work, args.epochs), args)
        elif name == "hstu":
            for res in hstu_scenario(args):
                print(json.dumps(res), flush=True)
                results.append(res)
            continue
        else:
            res = ingest_scenario(ml100k_bundle(args.work, args.epochs), args)
        print(json.dumps(res), flush=True)
        results.append(res)
    print(json.dumps({"benchmark": "serve_load", "cores": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # ann_recall, serve_hstu
    main()
