"""Erasure of training users (`DELETE /v1/users/{id}` on a user the bundle was trained on).

Three levels: `Recommender.redact_users` empties exactly the forgotten users' rows for every
model in the registry (checked generically on the saved arrays: any array with n_users or
n_users + 1 rows, any row-compressed group over users); `redact_bundle` rewrites the bundle
folder and composes concurrent erasures; the service forgets a training user in memory, on
disk, across workers (BundleSync) and across a restart of a real server process.

Data: the planted dataset (36 users a0..a11 / b0..b23, 24 items A*/B*; group B's items are the
most popular), so n_users matches no other array dimension of the tiny models.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from helpers_serve import LiveServer, auth, planted_bundle
from lmrec.data.dataset import Dataset
from lmrec.errors import InputError
from lmrec.models import create_model, load_model
from lmrec.models.base import Recommender
from lmrec.models.registry import MODELS
from lmrec.prepare import PrepareConfig, prepare
from lmrec.serve import erasure
from lmrec.serve.bundle import HISTORIES_FILE, read_bundle_meta
from lmrec.serve.engine import Query
from lmrec.serve.erasure import redact_bundle
from lmrec.serve.service import Service
from lmrec.serve.store import EventIn, open_store
from lmrec.serve.store.base import TABLES
from lmrec.serve.sync import BundleSync
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions
from test_models_contract import TINY_PARAMS

GONE = np.array([3, 20])  # a11 and b16 (ids sort as strings): one user of each group
# the id vocabulary stays as it is (internal indices must not shift): see lmrec.serve.bundle
VOCABULARIES = {"user_ids", "item_ids"}
# models whose user-user state also has a column per user (a neighbour of other users)
COLUMN_GROUPS = {("userknn", "model.S")}


# --- Recommender.redact_users ---------------------------------------------------------------
def _with_user_attributes() -> Dataset:
    """The planted dataset plus a categorical and a numeric user column (two-tower reads
    them into per-user arrays)."""
    ds = planted_dataset()
    ev = ds.events
    events = pl.DataFrame({"user": ds.users.id_of(ev["user_idx"].to_numpy()).tolist(),
                           "item": ds.items.id_of(ev["item_idx"].to_numpy()).tolist()})
    users = pl.DataFrame({"user": ds.users.ids.to_list(),
                          "segment": [f"s{i % 3}" for i in range(len(ds.users))],
                          "age": [20.0 + i for i in range(len(ds.users))]})
    return prepare(events, users=users, items=ds.item_table, config=PrepareConfig(
        item_roles={"genres": "multi", "title": "text"},
        user_roles={"segment": "categorical", "age": "numeric"})).dataset


VARIANTS: list[tuple[str, dict[str, Any], str]] = [
    *[(name, TINY_PARAMS.get(name, {}), "planted") for name in sorted(MODELS)],
    # weighted input keeps a per-user matrix X
    *[(name, {"weighting": "weight"}, "planted") for name in ("itemknn", "userknn", "ease",
                                                             "content")],
    ("two-tower", TINY_PARAMS["two-tower"], "user-attributes"),
]


def _dataset(kind: str) -> Dataset:
    return planted_dataset() if kind == "planted" else _with_user_attributes()


def _user_groups(arrays: dict[str, np.ndarray], n: int) -> list[str]:
    """Prefixes of the row-compressed groups with one row per user."""
    return [k.removesuffix(".indptr") for k, v in arrays.items()
            if k.endswith(".indptr") and v.shape == (n + 1,)]


def _check_rows(name: str, before: dict[str, np.ndarray], after: dict[str, np.ndarray],
                n: int, gone: np.ndarray) -> None:
    """The forgotten users' rows are empty or zero everywhere, or the unknown user's row where
    an array has one (row 0), so that they score like unknown users; nothing else changed
    (except, for user-user state, the forgotten users' columns)."""
    assert set(after) == set(before)
    rest = np.setdiff1d(np.arange(n), gone)
    covered: set[str] = set()
    for prefix in _user_groups(before, n):
        keys = [k for k in before if k.startswith(prefix + ".")
                and not k.endswith((".indptr", ".shape"))]
        covered |= {k for k in before if k.startswith(prefix + ".")}
        bp, ap = before[f"{prefix}.indptr"], after[f"{prefix}.indptr"]
        assert np.all(ap[gone] == ap[gone + 1]), f"{name}: {prefix} rows of forgotten users"
        for u in rest:
            b = {k: before[k][bp[u]:bp[u + 1]] for k in keys}
            a = {k: after[k][ap[u]:ap[u + 1]] for k in keys}
            if (name, prefix) in COLUMN_GROUPS:
                keep = ~np.isin(b[f"{prefix}.indices"], gone)
                b = {k: v[keep] for k, v in b.items()}
            for k in keys:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}: {k} row {u}")
    for k, b in before.items():
        if k in covered:
            continue
        a = after[k]
        if b.ndim and b.shape[0] in (n, n + 1):  # row u (+ 1 after an "unknown" row 0)
            rows = gone + (b.shape[0] - n)
            if b.shape[0] == n + 1:  # row 0 is the unknown user's: forgotten users get it
                np.testing.assert_array_equal(a[rows], np.broadcast_to(a[0], a[rows].shape),
                                              err_msg=f"{name}: {k} keeps forgotten users")
                np.testing.assert_array_equal(a[0], b[0], err_msg=f"{name}: {k} unknown row")
            else:
                assert not np.any(a[rows]), f"{name}: {k} keeps rows of forgotten users"
            others = np.setdiff1d(np.arange(b.shape[0]), rows)
            np.testing.assert_array_equal(a[others], b[others], err_msg=f"{name}: {k}")
        else:  # item-side and global state stays until retraining
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: {k} changed")


def _saved_arrays(model: Recommender, folder: Path) -> dict[str, np.ndarray]:
    model.save(folder)
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize(("name", "params", "data"), VARIANTS, ids=[
    f"{n}-{d}" + ("-weighted" if p.get("weighting") == "weight" else "") for n, p, d in VARIANTS])
def test_redact_users_empties_exactly_the_users_rows(name: str, params: dict[str, Any],
                                                     data: str, tmp_path: Path) -> None:
    ds = _dataset(data)
    model = create_model(name, params).fit(ds, TrainingOptions(rng=0))
    n = len(model.users_)
    before = _saved_arrays(model, tmp_path / "before")
    model.redact_users(GONE)
    after = _saved_arrays(model, tmp_path / "after")
    # the whole artifact: seen items, popularity, the model's arrays
    skip = VOCABULARIES | {"popularity"}
    _check_rows(name, {k: v for k, v in before.items() if k not in skip},
                {k: v for k, v in after.items() if k not in skip}, n, GONE)
    for k in VOCABULARIES:
        np.testing.assert_array_equal(after[k], before[k])
    seen_before = ds.matrix("binary")
    np.testing.assert_allclose(
        after["popularity"],
        np.asarray(seen_before.sum(axis=0)).ravel() - np.asarray(seen_before[GONE].sum(axis=0)
                                                                  ).ravel())
    # the redaction survives save/load, scoring still works, and a second call changes nothing
    loaded = load_model(tmp_path / "after")
    assert loaded.seen_[GONE].nnz == 0
    rest = np.setdiff1d(np.arange(n), GONE)
    assert np.isfinite(loaded.score(rest[:4])).all()
    loaded.redact_users(GONE)
    again = _saved_arrays(loaded, tmp_path / "again")
    for k, v in after.items():
        np.testing.assert_array_equal(again[k], v, err_msg=f"{name}: {k} on a second redaction")


def test_redact_users_refuses_unknown_indices() -> None:
    model = create_model("ease").fit(planted_dataset(), TrainingOptions(rng=0))
    with pytest.raises(InputError, match="user indices"):
        model.redact_users([36])
    with pytest.raises(InputError, match="user indices"):
        model.redact_users([-1])


# --- the bundle on disk --------------------------------------------------------------------------
def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _assert_bundle_forgot(folder: Path, before: dict[str, dict[str, np.ndarray]],
                          u: int) -> None:
    """Numerically: no history row, seen row or user-factor row of user u in the files; all
    other users' rows as they were."""
    hist, arrays = _npz(folder / HISTORIES_FILE), _npz(folder / "arrays.npz")
    h0, a0 = before["histories"], before["arrays"]
    assert hist["indptr"][u] == hist["indptr"][u + 1] and hist["redacted"][u]
    assert hist["redacted"].sum() == 1
    span = slice(h0["indptr"][u], h0["indptr"][u + 1])
    assert span.stop > span.start  # the user had a training history
    for k in ("items", "events", "timestamps"):  # exactly their events are gone
        np.testing.assert_array_equal(hist[k], np.delete(h0[k], span))
    seen = slice(a0["seen.indptr"][u], a0["seen.indptr"][u + 1])
    assert arrays["seen.indptr"][u] == arrays["seen.indptr"][u + 1]
    np.testing.assert_array_equal(arrays["seen.indices"], np.delete(a0["seen.indices"], seen))
    if "model.U" in arrays:
        assert not arrays["model.U"][u].any()
        others = np.arange(arrays["model.U"].shape[0]) != u
        np.testing.assert_array_equal(arrays["model.U"][others], a0["model.U"][others])
        np.testing.assert_array_equal(arrays["model.V"], a0["model.V"])  # item side stays


def _snapshot(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    return {"histories": _npz(folder / HISTORIES_FILE), "arrays": _npz(folder / "arrays.npz")}


def test_concurrent_redactions_compose(tmp_path: Path) -> None:
    folder = planted_bundle(tmp_path / "b", "als", TINY_PARAMS["als"])
    version = read_bundle_meta(folder)["model_version"]
    users = [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)]
    threads = [threading.Thread(target=redact_bundle, args=(folder, [u])) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    meta = read_bundle_meta(folder)
    hist = _npz(folder / HISTORIES_FILE)
    idx = planted_dataset().users.index(users)
    assert hist["redacted"].sum() == len(users) and hist["redacted"][idx].all()
    assert meta["redactions"] == len(users) and meta["model_version"] != version
    assert not _npz(folder / "arrays.npz")["model.U"][idx].any()
    assert redact_bundle(folder, ["a0", "nobody"]).users == 0  # nothing left to do
    assert not list(folder.glob(".redact-*"))  # no temporary folder left behind


# --- the service ---------------------------------------------------------------------------
def _index(user: str) -> int:
    return int(planted_dataset().users.index([user])[0])


def _ids(svc: Service, user: str, k: int = 8) -> tuple[list[Any], str | None]:
    res = svc.recommend_user(user, Query(k=k))
    return [s.item for s in res.items], res.note


def test_forget_redacts_in_memory_and_other_workers_follow(tmp_path: Path) -> None:
    folder = planted_bundle(tmp_path / "b", "two-tower", TINY_PARAMS["two-tower"])
    before = _snapshot(folder)
    url = f"sqlite:///{tmp_path / 'events.db'}"
    started = time.time()
    s1, s2 = open_store(url), open_store(url)  # two workers, one store
    one = Service.open(folder, s1, sync=BundleSync(s1, started, interval=0.0))
    two = Service.open(folder, s2, sync=BundleSync(s2, started, interval=0.0))
    try:
        old = two.engine.model_version
        assert _ids(one, "a3") != _ids(one, "stranger")  # trained: personalised
        one.ingest([EventIn("a3", "A1", "view", 1e9)])
        done = one.forget("a3")
        assert done.in_training_data and done.redacted_from_model
        assert done.events_deleted == 1 and done.model_version != old
        assert done.model_version == read_bundle_meta(folder)["model_version"]
        _assert_bundle_forgot(folder, before, _index("a3"))
        assert _ids(one, "a3") == _ids(one, "stranger")  # at once, in this worker
        deadline = time.monotonic() + 60
        while two.engine.model_version != done.model_version:  # the other worker follows
            assert time.monotonic() < deadline, "the other worker did not pick up the redaction"
            two.follow()
            time.sleep(0.05)
        assert _ids(two, "a3") == _ids(two, "stranger")
        # a later event from the same id starts a new user from scratch
        for svc, user in ((one, "a3"), (one, "newcomer")):
            svc.ingest([EventIn(user, "B2", "view", 2e9)])
        assert _ids(one, "a3") == _ids(one, "newcomer")
        again = two.forget("a3")  # already redacted: only the new live event goes
        assert (again.events_deleted, again.in_training_data) == (1, False)
        assert again.model_version == done.model_version
    finally:
        one.close()
        two.close()


def test_a_reload_waits_for_an_erasure_and_then_stands(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An erasure holds the reload lock from start to end, so a reload asked for meanwhile
    neither lands in the middle (the erasure redacts the bundle it found the user in) nor is
    reverted by it afterwards."""
    first = planted_bundle(tmp_path / "first", "als", TINY_PARAMS["als"])
    second = planted_bundle(tmp_path / "second", "itemknn")
    svc = Service.open(first, open_store(f"sqlite:///{tmp_path / 'events.db'}"))
    started, go_on = threading.Event(), threading.Event()
    prepare = erasure._prepare

    def slow_prepare(*args: Any) -> Any:
        started.set()
        assert go_on.wait(60)
        return prepare(*args)

    monkeypatch.setattr(erasure, "_prepare", slow_prepare)
    results: dict[str, Any] = {}
    eraser = threading.Thread(target=lambda: results.update(done=svc.forget("a3")))
    reloader = threading.Thread(target=lambda: results.update(swap=svc.reload(second)))
    try:
        eraser.start()
        assert started.wait(60)
        reloader.start()
        reloader.join(0.5)
        assert reloader.is_alive()  # waiting for the erasure
        go_on.set()
        eraser.join(120)
        reloader.join(120)
        done = results["done"]
        assert done.redacted_from_model and done.model_version == read_bundle_meta(first)[
            "model_version"]
        assert _npz(first / HISTORIES_FILE)["redacted"][_index("a3")]
        assert results["swap"][1] == done.model_version  # it replaced the redacted bundle
        assert svc.engine.bundle.path == second and svc.engine.model.name == "itemknn"
    finally:
        go_on.set()
        svc.close()


# --- over HTTP, with a restart -----------------------------------------------------------------
def _recs(srv: LiveServer, user: str) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/v1/users/{user}/recommendations", params={"k": 8}, timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    return {"items": doc["items"], "note": doc.get("note"), "version": doc["model_version"]}


def _cells_equal_to(db: Path, text: str) -> list[tuple[str, tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return [(table, row) for table in TABLES for row in conn.execute(f"SELECT * FROM {table}")
                if any(str(v) == text for v in row)]
    finally:
        conn.close()


@pytest.fixture
def als_server(tmp_path: Path) -> Iterator[LiveServer]:
    folder = planted_bundle(tmp_path / "bundle", "als", TINY_PARAMS["als"])
    with LiveServer(folder, f"sqlite:///{tmp_path / 'events.db'}", tmp_path) as srv:
        yield srv


def test_deleting_a_training_user_over_http_survives_a_restart(als_server: LiveServer,
                                                               tmp_path: Path) -> None:
    srv, user = als_server, "b8"
    u = _index(user)
    db = tmp_path / "events.db"
    before = _snapshot(srv.bundle)
    version = read_bundle_meta(srv.bundle)["model_version"]
    trained = _recs(srv, user)
    assert trained["note"] is None and trained["items"] != _recs(srv, "stranger")["items"]
    r = httpx.post(f"{srv.url}/v1/events", headers=auth(), timeout=30, json={"events": [
        {"user": user, "item": "A2", "event_id": "e-b8-1"}]})
    assert r.status_code == 200
    with open_store(f"sqlite:///{db}") as store:
        store.put_state(user, "profile", b"cached")
    assert _cells_equal_to(db, user)

    r = httpx.delete(f"{srv.url}/v1/users/{user}", headers=auth(), timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["in_training_data"] is True and doc["redacted_from_model"] is True
    assert doc["events_deleted"] == 1 and doc["model_version"] != version
    meta = read_bundle_meta(srv.bundle)
    assert meta["model_version"] == doc["model_version"] and meta["redactions"] == 1
    assert _cells_equal_to(db, user) == []  # no event, state or audit row
    _assert_bundle_forgot(srv.bundle, before, u)
    stranger = _recs(srv, "stranger")
    assert _recs(srv, user) == stranger and stranger["version"] == doc["model_version"]
    assert "model_version=\"" + doc["model_version"] in httpx.get(f"{srv.url}/v1/metrics").text

    srv.stop()
    srv.start()  # the same bundle folder and store
    assert _recs(srv, user) == _recs(srv, "stranger")
    assert json.loads((srv.bundle / "bundle.json").read_text())["redactions"] == 1
    r = httpx.delete(f"{srv.url}/v1/users/{user}", headers=auth(), timeout=60)
    assert r.json()["in_training_data"] is False and r.json()["events_deleted"] == 0
