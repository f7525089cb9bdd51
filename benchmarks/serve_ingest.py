"""Durable ingest speed of the event store, and history read latency.

For each store (SQLite file with synchronous=FULL, the default; SQLite with synchronous=NORMAL;
PostgreSQL), batch size (100, 500) and number of writer threads (1, 4), writes `--events`
events with unique event ids through `add_events` (every call one committed transaction) and
reports events/s. Then it reads `history(user, limit=50)` for random users and reports the
latency percentiles. One JSON line per measurement; the target is >= 5,000 events/s durable.

    .venv/bin/python benchmarks/serve_ingest.py
    .venv/bin/python benchmarks/serve_ingest.py --postgres postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/serve_ingest.py --dir /var/lib/lmrec   # time fsync on that disk

PostgreSQL: `--postgres`, else $LMREC_TEST_POSTGRES_URL, else the local default; it is skipped
when no server answers. It writes into a fresh schema that is dropped afterwards. SQLite files
go to `--dir` (a temporary folder by default: fsync costs depend on that file system).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from lmrec.serve.store import EventIn, EventStore, open_store
from lmrec.serve.store.base import mask_url

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
N_USERS = 5_000
N_ITEMS = 20_000


def make_batches(n_events: int, batch: int, tag: str, rng: np.random.Generator
                 ) -> list[list[EventIn]]:
    """`n_events` events with unique ids, cut into batches (built before the clock starts)."""
    users = rng.integers(0, N_USERS, n_events)
    items = rng.integers(0, N_ITEMS, n_events)
    t0 = 1.7e9
    events = [EventIn(f"user-{u}", f"item-{i}", "view", t0 + k, f"{tag}-{k}")
              for k, (u, i) in enumerate(zip(users.tolist(), items.tolist(), strict=True))]
    return [events[s : s + batch] for s in range(0, n_events, batch)]


def ingest(store: EventStore, batches: list[list[EventIn]], threads: int) -> float:
    """Seconds to store every batch, `threads` writers taking batches in turn."""
    def work(part: list[list[EventIn]]) -> None:
        for b in part:
            store.add_events(b)

    workers = [threading.Thread(target=work, args=(batches[t::threads],))
               for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def read_latency(store: EventStore, rng: np.random.Generator, n: int = 500) -> dict[str, float]:
    users = [f"user-{u}" for u in rng.integers(0, N_USERS, n).tolist()]
    times = []
    for u in users:
        t = time.perf_counter()
        store.history(u, limit=50)
        times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1e3
    return {"history_p50_ms": round(float(np.percentile(ms, 50)), 3),
            "history_p99_ms": round(float(np.percentile(ms, 99)), 3)}


def run_store(name: str, url: str, args: argparse.Namespace, cleanup: Callable[[], None]
              ) -> None:
    rng = np.random.default_rng(0)
    try:
        with open_store(url) as store:
            for batch in (100, 500):
                for threads in (1, 4):
                    tag = f"{batch}-{threads}-{secrets.token_hex(3)}"
                    batches = make_batches(args.events, batch, tag, rng)
                    secs = ingest(store, batches, threads)
                    print(json.dumps({"store": name, "batch": batch, "threads": threads,
                                      "events": args.events, "seconds": round(secs, 3),
                                      "events_per_s": round(args.events / secs)}), flush=True)
            print(json.dumps({"store": name, "stored": store.count_events(),
                              **read_latency(store, rng)}), flush=True)
    finally:
        cleanup()


def with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["options"] = (query.get("options", "") + f" -csearch_path={schema}").strip()
    return urlunsplit(parts._replace(query=urlencode(query)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000, help="events per measurement")
    ap.add_argument("--postgres", default=os.environ.get("LMREC_TEST_POSTGRES_URL", PG_DEFAULT))
    ap.add_argument("--dir", type=Path, default=None, help="folder for the SQLite files")
    args = ap.parse_args()
    print(json.dumps({"cores": os.cpu_count(), "events": args.events}), flush=True)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for sync in ("full", "normal"):
            path = Path(tmp) / f"bench-{sync}.db"
            run_store(f"sqlite-{sync}", f"sqlite:///{path}?synchronous={sync}", args,
                      lambda: None)

    try:
        import psycopg

        with psycopg.connect(args.postgres, connect_timeout=3, autocommit=True) as conn:
            schema = f"lmrec_bench_{os.getpid()}_{secrets.token_hex(3)}"
            conn.execute(f"CREATE SCHEMA {schema}")
    except Exception as exc:  # any failure to reach PostgreSQL only skips that part
        print(json.dumps({"store": "postgres", "skipped": f"{mask_url(args.postgres)}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"}))
        return

    def drop() -> None:
        with psycopg.connect(args.postgres, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")

    run_store("postgres", with_search_path(args.postgres, schema), args, drop)


if __name__ == "__main__":
    main()
