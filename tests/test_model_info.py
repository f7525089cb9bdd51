"""The dashboard's JSON endpoints (GET /v1/model, /v1/users/{u}/history, /v1/model/items) and
the dashboard's page and assets, in process (starlette's test client). The page in a real
browser: test_dashboard.py."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers_serve import API_KEY, READ_KEY, auth, planted_bundle
from lmrec.serve.app import ServeSettings, create_app
from lmrec.serve.arms import ArmSpec
from lmrec.serve.bundle import load_bundle
from lmrec.serve.dashboard import ASSETS, CSP
from lmrec.serve.model_info import HIDDEN_PATH, _public
from lmrec.serve.security import KeyRing
from lmrec.train.checkpoint import write_history

WRITE_KEYS = KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_bundle(tmp_path_factory.mktemp("info") / "ease")


@pytest.fixture
def client(bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(bundle, f"sqlite:///{tmp_path / 'events.db'}", keys=WRITE_KEYS)
    with TestClient(app) as c:
        yield c


def test_model_summary(client: TestClient, bundle: Path) -> None:
    doc = client.get("/v1/model").json()
    meta = json.loads((bundle / "bundle.json").read_text())
    assert doc["model"] == "ease" and doc["model_version"] == meta["model_version"]
    assert (doc["n_users"], doc["n_items"], doc["n_events"]) == (36, 24, 216)
    assert doc["event_types"] == ["interaction"] and doc["item_roles"]["title"] == "text"
    assert set(doc["config"]) >= {"l2", "weighting"}
    assert isinstance(doc["settings"]["l2"], int | float)  # EASE picks l2 from the data
    # a closed-form model without side files: nothing to show, said as null
    assert doc["training"] is None and doc["auto"] is None and doc["offline_metrics"] is None
    assert doc["redacted_users"] == 0 and doc["arms"] is None  # no experiment


def test_model_of_an_experiment(bundle: Path, tmp_path: Path) -> None:
    pop = planted_bundle(tmp_path / "pop", "popularity")
    arms = (ArmSpec(name="A", bundle=bundle, share=0.7), ArmSpec(name="B", bundle=pop,
                                                                 share=0.3))
    app = create_app(bundle, f"sqlite:///{tmp_path / 'e.db'}", ServeSettings(arms=arms),
                     keys=WRITE_KEYS)
    with TestClient(app) as c:
        doc = c.get("/v1/model").json()
    pop_version = json.loads((pop / "bundle.json").read_text())["model_version"]
    assert doc["model"] == "ease"  # the first arm stands for the service
    assert doc["arms"] == [
        {"arm": "A", "model": "ease", "model_version": doc["model_version"], "share": 0.7},
        {"arm": "B", "model": "popularity", "model_version": pop_version, "share": 0.3}]


def test_side_files_of_the_bundle(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    shutil.copytree(bundle, folder)
    history = [{"epoch": e, "loss": 1.0 / e, "metric": 0.1 * e} for e in (1, 2, 3)]
    write_history(folder / "run", history, {"best_epoch": 3, "best_metric": 0.3})
    auto = {"winner": {"family": "ease", "params": {"l2": 10.0}, "valid ndcg@10": 0.25},
            "metric": "ndcg@10", "curve": [{"at_s": 1.5, "best": 0.25}], "trials": []}
    (folder / "auto.json").write_text(json.dumps(auto))
    (folder / "metrics.json").write_text(json.dumps({"ndcg@10": 0.31,
                                                     "recall@10": float("nan")}))
    app = create_app(folder, f"sqlite:///{tmp_path / 'e.db'}", keys=WRITE_KEYS)
    with TestClient(app) as c:
        doc = c.get("/v1/model").json()
    assert [r["epoch"] for r in doc["training"]["history"]] == [1, 2, 3]
    assert doc["training"]["best_epoch"] == 3
    assert doc["auto"]["winner"]["family"] == "ease"
    # NaN is not JSON: it comes back as null instead of breaking the answer
    assert doc["offline_metrics"] == {"ndcg@10": 0.31, "recall@10": None}


def test_side_files_outside_the_bundle_are_not_read(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    shutil.copytree(bundle, folder)
    outside = tmp_path / "elsewhere"
    write_history(outside, [{"epoch": 1, "loss": 0.5}])
    (folder / "run").symlink_to(outside, target_is_directory=True)
    (folder / "auto.json").write_text("{ not json")  # a damaged side file: null, not a 500
    app = create_app(folder, f"sqlite:///{tmp_path / 'e.db'}", keys=WRITE_KEYS)
    with TestClient(app) as c:
        r = c.get("/v1/model")
    assert r.status_code == 200
    assert r.json()["training"] is None and r.json()["auto"] is None


def test_config_paths_are_never_shown(tmp_path: Path) -> None:
    inside = tmp_path / "bundle" / "run"
    inside.mkdir(parents=True)
    cfg = {"checkpoint_dir": str(inside), "cache": "/var/secret/cache", "ratio": "80/20",
           "nested": {"p": "../x/y"}, "spec": "plackett-luce:T=0.5", "n": 3}
    shown = _public(cfg, tmp_path / "bundle")
    assert shown["checkpoint_dir"] == "run"
    assert shown["cache"] == HIDDEN_PATH and shown["nested"]["p"] == HIDDEN_PATH
    assert shown["ratio"] == "80/20" and shown["spec"] == cfg["spec"] and shown["n"] == 3


def test_user_history_training_and_live(client: TestClient, bundle: Path) -> None:
    b = load_bundle(bundle)
    u = int(b.users.index(["a1"])[0])
    lo, hi = b.histories.indptr[u], b.histories.indptr[u + 1]
    trained = [b.item_ids.to_python(int(i)) for i in b.histories.items[lo:hi]]
    events = [{"user": "a1", "item": "A5", "type": "click", "timestamp": 1.7e9},
              {"user": "a1", "item": "B2", "type": "purchase", "timestamp": 1.7e9 + 1},
              {"user": "a1", "item": "ZZ-new", "type": "view", "timestamp": 1.7e9 + 2}]
    assert client.post("/v1/events", json={"events": events}, headers=auth()).status_code == 200
    doc = client.get("/v1/users/a1/history").json()
    assert doc["user"] == "a1" and doc["known"] is True
    tr = doc["training"]
    assert [e["item"] for e in tr["events"]] == trained and tr["total"] == len(trained)
    assert tr["more"] is False
    assert all(e["title"] == f"alpha story {e['item'][1:]}" for e in tr["events"])
    assert {e["type"] for e in tr["events"]} == {"interaction"}
    live = doc["live"]["events"]
    assert [(e["item"], e["type"], e["title"], e["known_item"]) for e in live] == [
        ("A5", "click", "alpha story 5", True), ("B2", "purchase", "beta story 2", True),
        ("ZZ-new", "view", None, False)]
    assert live[0]["timestamp"] == 1.7e9 and live[0]["seq"] < live[1]["seq"] < live[2]["seq"]
    short = client.get("/v1/users/a1/history", params={"limit": 2}).json()
    assert [e["item"] for e in short["live"]["events"]] == ["B2", "ZZ-new"]  # the latest
    assert short["live"]["more"] is True
    assert [e["item"] for e in short["training"]["events"]] == trained[-2:]
    assert short["training"]["more"] is True and short["training"]["total"] == len(trained)


def test_history_of_a_stranger(client: TestClient) -> None:
    doc = client.get("/v1/users/nobody/history").json()
    assert doc["known"] is False and doc["training"]["events"] == []
    assert doc["live"] == {"more": False, "events": []}
    client.post("/v1/events", json={"events": [{"user": "nobody", "item": "A1"}]},
                headers=auth())
    doc = client.get("/v1/users/nobody/history").json()
    assert [e["item"] for e in doc["live"]["events"]] == ["A1"] and doc["known"] is False


def test_history_bad_input(client: TestClient) -> None:
    for limit in (0, 1001, "x"):
        r = client.get("/v1/users/a1/history", params={"limit": limit})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]


def test_item_lookup(client: TestClient) -> None:
    doc = client.get("/v1/model/items", params=[("id", "A3"), ("id", "nope")]).json()
    a3, nope = doc["items"]
    assert a3 == {"item": "A3", "known": True, "title": "alpha story 3",
                  "attributes": {"genres": ["alpha", "film"], "title": "alpha story 3"}}
    assert nope == {"item": "nope", "known": False}
    r = client.get("/v1/model/items")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "id"]
    # an item added through the catalogue API has no row in the bundle (it was a 500)
    put = client.put("/v1/items/NEW1", json={"attributes": {"title": "new"}}, headers=auth())
    assert put.status_code == 200
    doc = client.get("/v1/model/items", params=[("id", "NEW1")])
    assert doc.status_code == 200 and doc.json()["items"] == [{"item": "NEW1", "known": False}]
    r = client.get("/v1/model/items", params=[("id", f"A{i}") for i in range(201)])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "id"]


def test_reads_need_the_read_key(bundle: Path, tmp_path: Path) -> None:
    keys = KeyRing.from_keys({"write": [API_KEY], "read": [READ_KEY]})
    app = create_app(bundle, f"sqlite:///{tmp_path / 'e.db'}", keys=keys)
    with TestClient(app) as c:
        for url in ("/v1/model", "/v1/users/a1/history", "/v1/model/items?id=A1"):
            assert c.get(url).status_code == 401, url
            assert c.get(url, headers=auth("wrong-key-0123456789abcdef")).status_code == 401
            assert c.get(url, headers=auth(READ_KEY)).status_code == 200, url
        # the page and its assets hold no data: they load without a key
        assert c.get("/dashboard").status_code == 200
        for name in ASSETS:
            assert c.get(f"/dashboard/static/{name}").status_code == 200, name


def test_dashboard_page_and_assets(client: TestClient) -> None:
    r = client.get("/dashboard")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    page = r.text
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(ref.startswith("/dashboard/static/") for ref in refs), refs
    for name, media in ASSETS.items():
        got = client.get(f"/dashboard/static/{name}")
        assert got.status_code == 200 and got.headers["content-type"] == media
        assert got.headers["x-content-type-options"] == "nosniff"
    for bad in ("index.html.bak", "..%2F__init__.py", "%2e%2e%2fmodel_info.py", "app.JS"):
        assert client.get(f"/dashboard/static/{bad}").status_code == 404, bad


def test_assets_are_local_and_build_no_html() -> None:
    static = files("lmrec.serve.dashboard") / "static"
    js = (static / "app.js").read_text()
    # nothing from elsewhere: the only absolute URL is the SVG namespace name
    assert re.findall(r"https?://[^\s\"']+", js) == ["http://www.w3.org/2000/svg"]
    for name in ("index.html", "style.css"):
        text = (static / name).read_text()
        assert not re.search(r"https?://|@import|url\(", text), name
    # user data reaches the DOM as text only; handlers are attached in code, not inline
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", js)
    assert not re.search(r"\son[a-z]+=", (static / "index.html").read_text())


def test_page_under_a_root_path(bundle: Path, tmp_path: Path) -> None:
    app = create_app(bundle, f"sqlite:///{tmp_path / 'e.db'}", keys=WRITE_KEYS)
    with TestClient(app, root_path="/rec") as c:
        page = c.get("/dashboard").text
    assert 'content="/rec"' in page and 'src="/rec/dashboard/static/app.js"' in page
