"""Reloads that fail keep the served bundle: a damaged file, a digest mismatch or an exception
in the middle of loading are answered with a clear 400 while every request in flight and after
is answered by the old bundle, and the next good reload works. Also which folder a reload
names, and how a folder that does not exist is told."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from helpers_serve import API_KEY, auth, planted_bundle
from lmrec.serve import service as service_module
from lmrec.serve import sync as sync_module
from lmrec.serve.app import LOAD_FAILED, ServeSettings, create_app
from lmrec.serve.security import KeyRing
from lmrec.serve.service import Service
from lmrec.serve.store import open_store
from lmrec.serve.sync import BundleSync

MISMATCH = "damaged or replaced: its sha256 does not match the one recorded in bundle.json"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle root: ease (served), knn (a good other bundle)."""
    root = tmp_path_factory.mktemp("reload") / "models"
    planted_bundle(root / "ease")
    planted_bundle(root / "knn", "itemknn")
    return root


def _client(bundle: Path | str, tmp_path: Path) -> TestClient:
    keys = KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]})
    app = create_app(bundle, f"sqlite:///{tmp_path / 'events.db'}", ServeSettings(), keys=keys)
    return TestClient(app, raise_server_exceptions=False)


def _copy(models: Path, name: str, as_name: str) -> Path:
    target = models / as_name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(models / name, target)
    return target


class Load:
    """Requests in a loop from another thread while reloads happen; every answer counted."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.statuses: list[int] = []
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            r = self.client.get("/v1/users/a0/recommendations", params={"k": 3})
            self.statuses.append(r.status_code)
            if r.status_code == 200:
                self.versions.add(r.json()["model_version"])

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def test_failed_reloads_keep_serving_and_a_good_one_works(
        models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truncated = _copy(models, "knn", f"truncated-{tmp_path.name}")
    data = (truncated / "arrays.npz").read_bytes()
    (truncated / "arrays.npz").write_bytes(data[: len(data) // 3])
    replaced = _copy(models, "knn", f"replaced-{tmp_path.name}")  # a valid file, not the one
    items = pl.read_parquet(replaced / "items.parquet")  # written: the digests tell
    items.with_columns(pl.col("title") + " (new)").write_parquet(replaced / "items.parquet")
    engine = service_module.Engine

    class Failing(engine):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise MemoryError("out of memory half way through")

    with _client(models / "ease", tmp_path) as client:
        served = client.get("/v1/health").json()["model_version"]
        with Load(client) as load:
            time.sleep(0.2)
            r = client.post("/v1/admin/reload", json={"bundle": str(truncated)}, headers=auth())
            assert r.status_code == 400
            assert r.json() == {"detail": f"{LOAD_FAILED}: arrays.npz: {MISMATCH}"}
            r = client.post("/v1/admin/reload", json={"bundle": str(replaced)}, headers=auth())
            assert r.status_code == 400
            assert r.json() == {"detail": f"{LOAD_FAILED}: items.parquet: {MISMATCH}"}
            monkeypatch.setattr(service_module, "Engine", Failing)  # fails mid-load
            r = client.post("/v1/admin/reload", json={"bundle": str(models / "knn")},
                            headers=auth())
            assert r.status_code == 400 and r.json() == {"detail": LOAD_FAILED}
            monkeypatch.setattr(service_module, "Engine", engine)
            time.sleep(0.2)
            assert client.get("/v1/health").json()["model_version"] == served
            assert load.versions == {served}
            r = client.post("/v1/admin/reload", json={"bundle": str(models / "knn")},
                            headers=auth())
            assert r.status_code == 200, r.text
            assert r.json()["previous_version"] == served
            new = r.json()["model_version"]
            deadline = time.monotonic() + 30
            while new not in load.versions:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert load.statuses and set(load.statuses) == {200}  # not one request failed
        assert load.versions == {served, new}
        metrics = client.get("/v1/metrics").text
        assert 'lmrec_model_reloads_total{outcome="failed"} 3.0' in metrics
        assert 'lmrec_model_reloads_total{outcome="ok"} 1.0' in metrics


def test_a_worker_does_not_follow_another_to_a_damaged_bundle(
        models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    damaged = _copy(models, "knn", f"damaged-{tmp_path.name}")
    meta = json.loads((damaged / "bundle.json").read_text())
    meta["files"]["histories.npz"] = "0" * 64
    (damaged / "bundle.json").write_text(json.dumps(meta))
    store = open_store(f"sqlite:///{tmp_path / 'events.db'}")
    sync = BundleSync(store, time.time() - 1, interval=0.0)
    svc = Service.open(models / "ease", store, sync=sync)
    loads: list[Path] = []
    load = service_module.load_bundle
    monkeypatch.setattr(service_module, "load_bundle",
                        lambda path: loads.append(Path(path)) or load(path))
    monkeypatch.setattr(sync_module, "FOLLOW_RETRY_S", 1.5)
    try:
        served = svc.engine.model_version
        sync.publish(damaged, meta["model_version"])  # another worker "reloaded" it
        svc.follow()
        deadline = time.monotonic() + 30
        while "could not follow" not in caplog.text:
            assert time.monotonic() < deadline, "the follow did not fail"
            time.sleep(0.05)
        for _ in range(10):
            svc.follow()
            time.sleep(0.05)
        assert svc.engine.model_version == served
        assert loads == [damaged.resolve()]  # tried once, not again at every check
        sync.publish(models / "knn", json.loads((models / "knn" / "bundle.json").read_text())[
            "model_version"])
        deadline = time.monotonic() + 30
        while svc.engine.model.name != "itemknn":
            assert time.monotonic() < deadline, "the good bundle was not followed"
            svc.follow()
            time.sleep(0.05)
    finally:
        svc.close()


# --- which folder a reload names -------------------------------------------------------------
@pytest.fixture
def relative_client(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                    ) -> Iterator[TestClient]:
    """A server started as `lmrec serve models/ease` from the root's parent folder, then
    running from another working directory (the root stays the bundle's parent)."""
    monkeypatch.chdir(models.parent)
    with _client("models/ease", tmp_path) as client:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        yield client


def _reload(client: TestClient, bundle: str) -> Any:
    return client.post("/v1/admin/reload", json={"bundle": bundle}, headers=auth())


def test_a_relative_folder_that_does_not_exist_is_told_so(relative_client: TestClient,
                                                          models: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    r = _reload(relative_client, "ease-v9")  # relative to the bundle root
    assert r.status_code == 400
    assert r.json() == {"detail": "the bundle folder 'ease-v9' does not exist under the "
                                  "server's bundle root"}
    monkeypatch.chdir(models.parent)  # relative to the working directory, as documented
    r = _reload(relative_client, "models/ease-v9")
    assert r.json() == {"detail": "the bundle folder 'models/ease-v9' does not exist under "
                                  "the server's bundle root"}
    r = _reload(relative_client, str(models / "ease-v9"))  # absolute: no path in the answer
    assert r.json() == {"detail": "the bundle folder does not exist under the server's "
                                  "bundle root"}


def test_relative_folders_resolve_under_the_root_and_never_leave_it(
        relative_client: TestClient, models: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    r = _reload(relative_client, "knn")  # from another working directory: under the root
    assert r.status_code == 200 and r.json()["model_version"].startswith("itemknn-")
    monkeypatch.chdir(models.parent)
    r = _reload(relative_client, "models/ease")  # from the working directory (README example)
    assert r.status_code == 200 and r.json()["model_version"].startswith("ease-")
    outside = planted_bundle(tmp_path / "outside", "itemknn")
    answers = {_reload(relative_client, raw).json()["detail"]
               for raw in ("../outside", "../../nothing", str(outside),
                           f"../{outside.relative_to(tmp_path.parent)}")}
    assert answers == {"the bundle must be a folder under the server's bundle root"}
