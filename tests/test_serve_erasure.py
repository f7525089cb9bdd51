"""Erasure is all or nothing (`DELETE /v1/users/{id}`, `lmrec.serve.erasure`).

A failure injected at each step of an erasure of a training user must leave nothing erased: the
store's events and cached state, the bundle files, the model served (still personalised) and
the version pointer the other workers follow are all as before, the answer is 503, and the
audit table records a rolled-back erasure. Asking again afterwards erases everything. Runs on
SQLite and on PostgreSQL ($LMREC_TEST_POSTGRES_URL, skipped when no server answers).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers_serve import API_KEY, auth, planted_bundle, postgres_base_url, postgres_schema
from lmrec.serve.app import ServeSettings, create_app
from lmrec.serve.engine import Query
from lmrec.serve.security import KeyRing
from lmrec.serve.service import Service
from lmrec.serve.store import EventIn, StoreError, open_store
from lmrec.serve.sync import BundleSync
from test_models_contract import TINY_PARAMS

USER = "b8"  # a training user of the planted dataset


class Injected(RuntimeError):
    """The failure a test injects."""


@pytest.fixture(scope="module")
def als_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_bundle(tmp_path_factory.mktemp("erasure") / "als", "als", TINY_PARAMS["als"])


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"
        return
    with postgres_schema(postgres_base_url()) as url:
        yield url


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _audit(url: str) -> list[tuple[Any, ...]]:
    return sorted(_rows(url, "SELECT events_removed, state_removed, outcome FROM "
                             "lmrec_deletions"), key=str)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and p.name != ".lock"}


def _recs(svc: Service, user: str) -> list[Any]:
    return [s.item for s in svc.recommend_user(user, Query(k=8)).items]


def _snapshot(svc: Service, folder: Path) -> dict[str, Any]:
    assert svc.sync is not None
    return {"events": [(e.item, e.timestamp) for e in svc.store.history(USER)],
            "state": svc.store.get_state(USER, "profile"), "recs": _recs(svc, USER),
            "version": svc.engine.model_version, "files": _files(folder),
            "pointer": svc.sync.wanted(), "temporary": sorted(folder.glob(".redact-*"))}


@contextmanager
def _service(bundle: Path, folder: Path, url: str) -> Iterator[Service]:
    shutil.copytree(bundle, folder)
    store = open_store(url)
    svc = Service.open(folder, store, sync=BundleSync(store, time.time() - 1, interval=0.0))
    try:
        svc.ingest([EventIn(USER, "A2", "view", 1e9), EventIn(USER, "A3", "view", 1e9 + 1)])
        store.put_state(USER, "profile", b"cached")
        yield svc
    finally:
        svc.close()


# --- the failure injected at each step ---------------------------------------------------------
def _raise(exc: BaseException) -> Callable[..., Any]:
    def fail(*_: Any, **__: Any) -> Any:
        raise exc

    return fail


def _fail_replacing(name: str) -> Callable[[pytest.MonkeyPatch, Service], None]:
    """os.replace fails once, when it moves `name` into the bundle folder."""

    def install(mp: pytest.MonkeyPatch, svc: Service) -> None:
        real, fired = os.replace, []

        def replace(src: Any, dst: Any) -> None:
            if Path(dst).name == name and Path(dst).parent == svc.engine.bundle.path \
                    and not fired:
                fired.append(dst)
                raise OSError(28, "No space left on device")
            real(src, dst)

        mp.setattr(os, "replace", replace)

    return install


def _fail_commit(mp: pytest.MonkeyPatch, svc: Service) -> None:
    """The store's transaction fails at its commit (once), after everything in it ran."""
    real, fired = svc.store._write, []  # type: ignore[attr-defined]

    @contextmanager
    def write() -> Iterator[Any]:
        with real() as conn:
            yield conn
            if not fired:
                fired.append(True)
                raise StoreError("the connection was lost at COMMIT")

    mp.setattr(svc.store, "_write", write)


def _steps() -> dict[str, Callable[[pytest.MonkeyPatch, Service], None]]:
    import numpy as np

    from lmrec.serve import erasure
    from lmrec.serve.store.base import StateWriter

    return {
        "load-bundle": lambda mp, svc: mp.setattr(erasure, "load_bundle",
                                                  _raise(Injected("bad file"))),
        "write-files": lambda mp, svc: mp.setattr(np, "savez", _raise(OSError(28, "disk full"))),
        "build-engine": lambda mp, svc: mp.setattr(erasure, "Engine",
                                                   _raise(MemoryError())),
        "store-delete": lambda mp, svc: mp.setattr(svc.store, "delete_user",
                                                   _raise(StoreError("store down"))),
        "publish-pointer": lambda mp, svc: mp.setattr(StateWriter, "put_state",
                                                      _raise(StoreError("store down"))),
        "swap-arrays": _fail_replacing("arrays.npz"),
        "swap-histories": _fail_replacing("histories.npz"),
        "swap-bundle-json": _fail_replacing("bundle.json"),
        "store-commit": _fail_commit,
    }


STEPS = ["load-bundle", "write-files", "build-engine", "store-delete", "publish-pointer",
         "swap-arrays", "swap-histories", "swap-bundle-json", "store-commit"]


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_any_step_erases_nothing(step: str, als_bundle: Path, tmp_path: Path,
                                              store_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from lmrec.serve.erasure import ErasureFailed

    with _service(als_bundle, tmp_path / "bundle", store_url) as svc:
        folder = svc.engine.bundle.path
        before = _snapshot(svc, folder)
        assert before["recs"] != _recs(svc, "stranger")  # personalised from training data
        with monkeypatch.context() as mp:
            _steps()[step](mp, svc)
            with pytest.raises(ErasureFailed, match="nothing was erased"):
                svc.forget(USER)
        assert _snapshot(svc, folder) == before  # store, files, model, pointer: as they were
        assert _audit(store_url) == [(0, 0, "rolled_back")]

        done = svc.forget(USER)  # asking again does the whole job
        assert done.in_training_data and done.redacted_from_model
        assert done.events_deleted == 2 and done.model_version != before["version"]
        after = _snapshot(svc, folder)
        assert after["events"] == [] and after["state"] is None
        assert after["recs"] == _recs(svc, "stranger")
        assert after["pointer"] == (str(folder.resolve()), done.model_version)
        changed = {n for n in before["files"] if after["files"][n] != before["files"][n]}
        assert changed == {"arrays.npz", "histories.npz", "bundle.json"}
        assert after["temporary"] == []
        assert _audit(store_url) == [(0, 0, "rolled_back"), (2, 1, "erased")]


def test_a_failing_clean_up_after_the_commit_still_erases(als_bundle: Path, tmp_path: Path,
                                                          store_url: str,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Once the transaction has committed, the erasure has happened: SQLite's log truncation
    failing afterwards is logged, not reported as a failure."""
    with _service(als_bundle, tmp_path / "bundle", store_url) as svc:
        version = svc.engine.model_version
        monkeypatch.setattr(svc.store, "_after_delete", _raise(StoreError("busy")))
        done = svc.forget(USER)
        assert done.redacted_from_model and done.model_version != version
        assert svc.store.history(USER) == [] and _recs(svc, USER) == _recs(svc, "stranger")
        assert _audit(store_url) == [(2, 1, "erased")]


# --- the issue as reported: a broken bundle file, over HTTP ------------------------------------
def test_a_broken_bundle_file_fails_the_erasure_as_a_whole(als_bundle: Path, tmp_path: Path,
                                                           store_url: str) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(als_bundle, folder)
    keys = KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]})
    app = create_app(folder, store_url, ServeSettings(), keys=keys)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/events", headers=auth(), json={"events": [
            {"user": USER, "item": "A2", "timestamp": 1e9}]})
        assert r.status_code == 200
        url = f"/v1/users/{USER}/recommendations"
        personal = client.get(url).json()["items"]
        assert personal != client.get("/v1/users/stranger/recommendations").json()["items"]
        good = (folder / "arrays.npz").read_bytes()
        (folder / "arrays.npz").write_bytes(good[: len(good) // 2])  # broken on disk
        files = _files(folder)

        r = client.delete(f"/v1/users/{USER}", headers=auth())
        assert r.status_code == 503 and "nothing was erased" in r.json()["detail"]
        assert "/" not in r.json()["detail"]
        assert client.get(url).json()["items"] == personal  # the model was not redacted
        assert [e.item for e in app.state.service.store.history(USER)] == ["A2"]  # nor the store
        assert _files(folder) == files
        assert _audit(store_url) == [(0, 0, "rolled_back")]

        (folder / "arrays.npz").write_bytes(good)  # repaired: the erasure goes through
        r = client.delete(f"/v1/users/{USER}", headers=auth())
        assert r.status_code == 200, r.text
        assert r.json()["events_deleted"] == 1 and r.json()["redacted_from_model"] is True
        stranger = client.get("/v1/users/stranger/recommendations").json()["items"]
        assert client.get(url).json()["items"] == stranger
        assert _audit(store_url) == [(0, 0, "rolled_back"), (1, 0, "erased")]


# --- the audit table's outcome column ----------------------------------------------------------
def test_a_version_1_store_gains_the_outcome_column(store_url: str) -> None:
    ddl = ["CREATE TABLE lmrec_schema (version INTEGER NOT NULL)",
           "INSERT INTO lmrec_schema (version) VALUES (1)",
           "CREATE TABLE lmrec_deletions (audit_id BIGINT PRIMARY KEY, deleted_at "
           "DOUBLE PRECISION NOT NULL, events_removed BIGINT NOT NULL, state_removed BIGINT "
           "NOT NULL)",
           "INSERT INTO lmrec_deletions VALUES (7, 1.0, 3, 1)"]
    if store_url.startswith("sqlite:///"):
        conn = sqlite3.connect(store_url[len("sqlite:///"):])
        with conn:
            for statement in ddl:
                conn.execute(statement)
        conn.close()
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as pg:
            for statement in ddl:
                pg.execute(statement)
    with open_store(store_url) as store:
        store.add_events([EventIn("u", "i", "view", 1.0)])
        store.delete_user("u")
        store.record_failed_erasure()
    assert _audit(store_url) == [(0, 0, "rolled_back"), (1, 0, "erased"), (3, 1, "erased")]
    assert max(_rows(store_url, "SELECT version FROM lmrec_schema"))[0] == 3
