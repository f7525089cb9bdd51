"""Acceptance tests against a real server process (`python -m lmrec.cli serve`) over HTTP, on
SQLite and on PostgreSQL ($LMREC_TEST_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/
test; skipped with the reason when no server answers; each run uses a schema of its own).

Bundles are tiny models trained on the planted dataset: users a*/b* with disjoint item groups
A*/B* (genres alpha/beta), group B's items the most popular.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from helpers_serve import (
    API_KEY,
    LiveServer,
    auth,
    planted_bundle,
    postgres_base_url,
    postgres_schema,
)
from lmrec.models import create_model
from lmrec.prepare import PrepareConfig, prepare
from lmrec.serve.bundle import read_bundle_meta, write_bundle
from lmrec.serve.store import open_store
from lmrec.serve.store.base import TABLES
from lmrec.train.options import TrainingOptions

REPO = Path(__file__).resolve().parents[1]
STORES = ["sqlite", "postgres"]


@contextmanager
def fresh_store(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'events.db'}"
        return
    with postgres_schema(postgres_base_url()) as url:
        yield url


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_bundle(tmp_path_factory.mktemp("bundles") / "ease", "ease", {"l2": 10.0})


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, bundle: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp(f"server-{request.param}")
    with fresh_store(request.param, folder) as url, LiveServer(bundle, url, folder) as srv:
        yield srv


def _recs(srv: LiveServer, user: str, **params: Any) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/v1/users/{user}/recommendations", params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _post(srv: LiveServer, events: list[dict[str, Any]], key: str | None = API_KEY
          ) -> httpx.Response:
    headers = auth(key) if key else {}
    return httpx.post(f"{srv.url}/v1/events", json={"events": events}, headers=headers,
                      timeout=30)


def _first_rank(items: list[dict[str, Any]], prefix: str) -> int:
    return next((r for r, it in enumerate(items) if it["item"].startswith(prefix)), len(items))


def test_fixed_interface(server: LiveServer) -> None:
    doc = _recs(server, "a1", k=10)
    assert set(doc) == {"user", "items", "model_version", "request_id"} and doc["user"] == "a1"
    assert len(doc["items"]) == 10
    assert all(set(it) == {"item", "score"} and isinstance(it["score"], float)
               for it in doc["items"])
    assert doc["model_version"] == read_bundle_meta(server.bundle)["model_version"]
    event = {"user": "a1", "item": "A3", "type": "view", "timestamp": 1_700_000_000}
    assert _post(server, [event], key=None).status_code == 401
    assert _post(server, [event], key="not-the-key-0123456789").status_code == 401
    r = _post(server, [event])
    assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 0,
                                                 "unknown_items": 0}


def test_events_change_the_next_recommendation(server: LiveServer) -> None:
    # a trained group-B user views three group-A items: group A moves up, no retraining
    before = _recs(server, "b5", k=24)["items"]
    assert _first_rank(before, "A") == 6  # after b5's six unseen B items
    views = [{"user": "b5", "item": f"A{i}", "type": "view"} for i in (2, 5, 7)]
    assert _post(server, views).json()["accepted"] == 3
    after = _recs(server, "b5", k=24)["items"]
    assert _first_rank(after, "A") < 3
    assert not {"A2", "A5", "A7"} & {it["item"] for it in after}

    # a new user: the most popular items first, personalised after their first events
    new = _recs(server, "visitor-42", k=5)
    assert "note" in new and all(it["item"].startswith("B") for it in new["items"])
    _post(server, [{"user": "visitor-42", "item": f"A{i}"} for i in (1, 4, 9)])
    new = _recs(server, "visitor-42", k=5)
    assert "note" not in new and all(it["item"].startswith("A") for it in new["items"])


def _rows_mentioning(store_url: str, text: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Every row of every store table with a value containing `text`."""
    found = []
    if store_url.startswith("sqlite:///"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        try:
            for table in TABLES:
                for row in conn.execute(f"SELECT * FROM {table}"):
                    if any(text in str(v) for v in row):
                        found.append((table, row))
        finally:
            conn.close()
        return found
    import psycopg

    with psycopg.connect(store_url) as conn:
        for table in TABLES:
            for row in conn.execute(f"SELECT * FROM {table}"):
                if any(text in str(v) for v in row):
                    found.append((table, tuple(row)))
    return found


def test_forgetting_a_user_leaves_nothing_behind(server: LiveServer) -> None:
    user = "privacy-user-7f3a"
    _post(server, [{"user": user, "item": f"A{i}", "event_id": f"{user}-{i}"}
                   for i in range(4)])
    with open_store(server.store_url) as store:
        store.put_state(user, "profile", b"cached")
    assert _rows_mentioning(server.store_url, user)
    assert "note" not in _recs(server, user, k=5)

    r = httpx.delete(f"{server.url}/v1/users/{user}", headers=auth(), timeout=30)
    assert r.status_code == 200
    doc = r.json()
    assert doc["events_deleted"] == 4 and doc["in_training_data"] is False
    assert _rows_mentioning(server.store_url, user) == []  # no event, state or audit row
    assert user not in httpx.get(f"{server.url}/v1/metrics").text
    mine, stranger = _recs(server, user, k=8), _recs(server, "never-seen-user", k=8)
    assert mine["items"] == stranger["items"] and mine["note"] == stranger["note"]
    assert httpx.delete(f"{server.url}/v1/users/{user}").status_code == 401


@pytest.mark.parametrize("kind", STORES)
def test_acknowledged_events_survive_sigkill(kind: str, bundle: Path, tmp_path: Path) -> None:
    with fresh_store(kind, tmp_path) as url:
        srv = LiveServer(bundle, url, tmp_path).start()
        acked: list[str] = []
        sent: list[list[dict[str, Any]]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(t: int) -> None:
            with httpx.Client(timeout=10) as c:
                for n in range(10_000):
                    if stop.is_set():
                        return
                    batch = [{"user": f"dur{t}", "item": f"A{(n + j) % 12}", "type": "view",
                              "event_id": f"t{t}-{n}-{j}"} for j in range(5)]
                    with lock:
                        sent.append(batch)
                    try:
                        r = c.post(f"{srv.url}/v1/events", json={"events": batch},
                                   headers=auth())
                    except httpx.HTTPError:
                        continue  # the server is gone: this batch was never acknowledged
                    if r.status_code == 200:
                        with lock:
                            acked.extend(e["event_id"] for e in batch)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 30
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        srv.kill()  # mid-traffic: requests are in flight
        stop.set()
        for th in threads:
            th.join(30)
        assert len(acked) >= 200

        srv.start()  # the same store after the crash
        users = [f"dur{t}" for t in range(4)]
        with open_store(url) as store:
            stored = Counter(e.event_id for evs in store.histories(users).values()
                             for e in evs)
        assert set(acked) <= set(stored), "an acknowledged event was lost"
        assert max(stored.values()) == 1, "an event was stored twice"

        # clients retry everything they sent: acknowledged events come back as duplicates
        duplicates = 0
        with httpx.Client(timeout=30) as c:
            for batch in sent:
                r = c.post(f"{srv.url}/v1/events", json={"events": batch}, headers=auth())
                assert r.status_code == 200
                duplicates += r.json()["duplicates"]
        srv.stop()
        assert duplicates >= len(acked)
        with open_store(url) as store:
            final = Counter(e.event_id for evs in store.histories(users).values() for e in evs)
        all_ids = {e["event_id"] for batch in sent for e in batch}
        assert set(final) == all_ids and max(final.values()) == 1


def test_hot_swap_under_load(server: LiveServer, tmp_path: Path) -> None:
    # under the server's bundle root (the served bundle's parent folder)
    other = planted_bundle(server.bundle.parent / f"itemknn-{tmp_path.name}", "itemknn")
    old_version = read_bundle_meta(server.bundle)["model_version"]
    new_version = read_bundle_meta(other)["model_version"]
    failures: list[str] = []
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                user = rng.choice(["a0", "b3", "newbie", "a11"])
                try:
                    r = c.get(f"{server.url}/v1/users/{user}/recommendations?k=5")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                else:
                    versions[r.json()["model_version"]] += 1

    def writer() -> None:
        with httpx.Client(timeout=30) as c:
            for n in range(100_000):
                if stop.is_set():
                    return
                r = c.post(f"{server.url}/v1/events", headers=auth(),
                           json={"events": [{"user": "swap-writer", "item": f"B{n % 12}"}]})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    threads.append(threading.Thread(target=writer))
    for th in threads:
        th.start()
    try:
        for target, expect in ((other, new_version), (server.bundle, old_version),
                               (other, new_version), (server.bundle, old_version)):
            time.sleep(0.4)
            r = httpx.post(f"{server.url}/v1/admin/reload", json={"bundle": str(target)},
                           headers=auth(), timeout=60)
            assert r.status_code == 200 and r.json()["model_version"] == expect
        time.sleep(0.3)
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    assert failures == []
    assert versions[old_version] > 0 and versions[new_version] > 0
    assert sum(versions.values()) >= 50


# --- the README's curl examples ----------------------------------------------------------------
def _readme_curl_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Serving\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    out = []
    for block in blocks:
        commands = [ln for ln in block.splitlines() if ln.strip() and not
                    ln.lstrip().startswith("#")]
        # the blocks that talk to the server (curl, or a variable filled by curl)
        if commands and commands[0].startswith(("curl", "RID=")):
            out.append(block)
    return out


def _readme_shop(folder: Path, model: str) -> Path:
    """A small shop with the README's ids: users c0..c39, items p1..p240 in two categories,
    priced 5 to 1,200."""
    rng = np.random.default_rng(7)
    rows = []
    for u in range(40):
        pool = np.arange(2 if u % 2 else 1, 241, 2)  # even users like odd items, and back
        for it in rng.choice(pool, size=12, replace=False):
            rows.append((f"c{u}", f"p{it}"))
    events = pl.DataFrame(rows, schema=["user", "item"], orient="row")
    items = pl.DataFrame({"item": [f"p{i}" for i in range(1, 241)],
                          "category": ["shoes" if i % 2 == 0 else "bags" for i in range(1, 241)],
                          "title": [f"product {i}" for i in range(1, 241)],
                          "price": [float(5 * i) for i in range(1, 241)]})
    ds = prepare(events, items=items, config=PrepareConfig(
        item_roles={"category": "categorical", "title": "text", "price": "numeric"}),
        name="shop").dataset
    return write_bundle(create_model(model).fit(ds, TrainingOptions(rng=0)), ds, folder)


def test_readme_curl_examples_run(tmp_path: Path) -> None:
    blocks = _readme_curl_blocks()
    assert len(blocks) >= 8, "the README's Serving section lost its curl examples"
    _readme_shop(tmp_path / "models" / "ease", "ease")
    _readme_shop(tmp_path / "models" / "ease-v2", "itemknn")
    with LiveServer(Path("models/ease"), "sqlite:///events.db", tmp_path, cwd=tmp_path) as srv:
        outputs = []
        for block in blocks:
            script = block.replace("localhost:8000", f"127.0.0.1:{srv.port}")
            res = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script],
                                 capture_output=True, text=True, timeout=60,
                                 env={**srv.env, "LMREC_KEY": API_KEY}, check=False)
            assert res.returncode == 0, f"{block}\nstdout: {res.stdout}\nstderr: {res.stderr}"
            outputs.append(res.stdout)
    joined = "\n".join(outputs)
    # the price filter's answer (the last line of its block): items p1..p19 cost under 100
    block = next(i for i, b in enumerate(blocks) if "price<100" in b)
    text, docs, pos = outputs[block], [], 0
    while pos < len(text.rstrip()):  # curl prints the answers back to back, no newline
        doc, end = json.JSONDecoder().raw_decode(text, pos)
        docs.append(doc)
        pos = end + len(text[end:]) - len(text[end:].lstrip())
    cheap = docs[-1]
    assert cheap["items"] and all(int(it["item"][1:]) * 5 < 100 for it in cheap["items"])
    assert '"accepted":2' in joined.replace(" ", "")
    assert outputs[-1].strip() == "401"
    assert "lmrec_events_ingested_total 3.0" in joined  # two events and one feedback
    assert '"model_version":"itemknn-' in joined.replace(" ", "")
    compact = joined.replace(" ", "")
    assert '"item":"p13"' in compact and '"hidden":true' in compact  # the catalogue block
    assert '"accepted":1,"user":"c17"' in compact  # feedback linked by the request id
