"""The catalogue API (PUT/PATCH/DELETE/GET /v1/items/{id}): new items recommended at once by
models that score items from attributes or text, hidden items never again, both kept in the
store across restarts, reloads, erasures and workers; keys and bad input."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from helpers_serve import (
    API_KEY,
    READ_KEY,
    auth,
    planted_bundle,
    postgres_base_url,
    postgres_schema,
)
from lmrec.models import create_model
from lmrec.prepare import PrepareConfig, prepare
from lmrec.serve.app import ServeSettings, create_app
from lmrec.serve.arms import ArmSpec
from lmrec.serve.bundle import write_bundle
from lmrec.serve.catalogue import POLL_INTERVAL_S
from lmrec.serve.catalogue_parts import OverlayIndex
from lmrec.serve.engine import Query
from lmrec.serve.retrieval import ItemIndex
from lmrec.serve.security import KeyRing
from lmrec.serve.service import Service
from lmrec.serve.store import EventStore, open_store
from lmrec.serve.store.catalogue import (
    CatalogueRow,
    Change,
    changes,
    ensure_table,
    get_item,
    latest_version,
    write_item,
)
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions

ALPHA = {"title": "alpha story new", "genres": ["alpha", "film"]}  # like group A's items
BETA = {"title": "beta story new", "genres": ["beta", "film"]}
K_GROUP = 7  # an a-user's unseen A items (6) and one more


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("catalogue")
    return {"content": planted_bundle(root / "content", "content"),
            "als": planted_bundle(root / "als", "als")}


def _app(bundle: Path, store: Path, *, read_keys: bool = False, **settings: Any) -> TestClient:
    keys = {"write": [API_KEY], "admin": [API_KEY]}
    if read_keys:
        keys["read"] = [READ_KEY]
    app = create_app(bundle, f"sqlite:///{store}", ServeSettings(**settings),
                     keys=KeyRing.from_keys(keys))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(bundles: dict[str, Path], tmp_path: Path) -> Iterator[TestClient]:
    with _app(bundles["content"], tmp_path / "events.db") as c:
        yield c


def _recs(c: TestClient, user: str, k: int = 24, **params: Any) -> list[Any]:
    r = c.get(f"/v1/users/{user}/recommendations", params={"k": k, **params})
    assert r.status_code == 200, r.text
    return [x["item"] for x in r.json()["items"]]


def _visitor(c: TestClient, history: list[str], k: int = 24) -> list[Any]:
    r = c.post("/v1/recommendations", json={"history": history, "k": k})
    assert r.status_code == 200, r.text
    return [x["item"] for x in r.json()["items"]]


def _similar(c: TestClient, item: str, k: int = 30) -> list[Any]:
    r = c.get(f"/v1/items/{item}/similar", params={"k": k})
    assert r.status_code == 200, r.text
    return [x["item"] for x in r.json()["items"]]


def _put(c: TestClient, item: str, attributes: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = c.put(f"/v1/items/{item}", json={"attributes": attributes, **body}, headers=auth())
    assert r.status_code == 200, r.text
    return r.json()


# --- new items ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model,params", [
    ("content", {}),
    ("content-text", {"progress": False}),
    ("two-tower", {"text": True, "progress": False, "epochs": 20}),
])
def test_a_new_item_is_recommended_at_once(model: str, params: dict[str, Any],
                                           tmp_path: Path) -> None:
    bundle = planted_bundle(tmp_path / model, model, params)
    with _app(bundle, tmp_path / "events.db") as c:
        assert "NEW-A" not in _recs(c, "a0")
        doc = _put(c, "NEW-A", ALPHA)
        assert doc["recommendable"] and doc["reason"] is None and not doc["in_model"]
        assert doc["attributes"] == ALPHA and doc["version"] == 1
        doc = _put(c, "NEW-B", {}, text="beta story new. Genres: beta, film.")
        # text is for text encoders; the content model reads attribute columns only
        assert doc["recommendable"] is (model != "content")
        assert model != "content" or "none of the attributes" in doc["reason"]
        # scored from its attributes: among group A's items for an a-user, not for a b-user
        assert "NEW-A" in _recs(c, "a0", K_GROUP)
        assert "NEW-A" not in _recs(c, "b0", K_GROUP)
        assert "NEW-A" in _visitor(c, ["A0", "A1", "A2"], 10)  # 9 unseen A items and it
        if model != "content":  # the text given for NEW-B is read by text encoders
            assert "NEW-B" in _recs(c, "b0", K_GROUP)
            assert "NEW-B" not in _recs(c, "a0", K_GROUP)
        # the similar items of a new item, and a new item as a similar item
        assert set(_similar(c, "NEW-A", 5)) <= {f"A{i}" for i in range(12)} | {"NEW-B"}
        assert "NEW-A" in _similar(c, "A1", 13)
        # an event on a new item: seen (left out), and it explains what it is like
        r = c.post("/v1/events", json={"events": [{"user": "a1", "item": "NEW-A"}]},
                   headers=auth())
        assert r.status_code == 200 and r.json()["unknown_items"] == 0  # served: known
        assert "NEW-A" not in _recs(c, "a1")
        items = c.get("/v1/users/a1/recommendations",
                      params={"k": 3, "explain": True, "diversity": 0.5}).json()["items"]
        assert len(items) == 3 and all(x["item"] != "NEW-A" for x in items)


def test_filters_and_explanations_work_for_new_items(client: TestClient) -> None:
    _put(client, "NEW-A", {**ALPHA, "genres": ["alpha", "film", "new"]})
    assert _recs(client, "b0", 3, filter="genres:new") == ["NEW-A"]  # a label of its own
    assert "NEW-A" not in _recs(client, "a0", filter="genres:beta")
    assert "NEW-A" in _recs(client, "a0", filter="genres:alpha|beta")
    assert _recs(client, "a0", 5, candidates=["NEW-A", "B1"]) == ["NEW-A", "B1"]
    items = client.post("/v1/recommendations", json={"history": ["NEW-A"], "k": 3,
                                                     "explain": True}).json()["items"]
    assert items[0]["because"] == "NEW-A"  # a visitor's new item explains A items
    assert "alpha story new" in items[0]["reason"]


# --- hidden items ------------------------------------------------------------------------------
def test_a_hidden_item_is_never_recommended_again(client: TestClient) -> None:
    top = _recs(client, "a0", 1)[0]
    assert top in _similar(client, "A2") and top in _visitor(client, ["A2", "A5"])
    r = client.delete(f"/v1/items/{top}", headers=auth())
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["hidden"] and not doc["recommendable"] and "hidden" in doc["reason"]
    assert doc["in_model"]
    for user in ("a0", "a3", "b0"):
        assert top not in _recs(client, user)
        assert top not in _recs(client, user, exclude_seen="false")
        assert top not in _recs(client, user, diversity=0.7)
    assert top not in _visitor(client, ["A2", "A5"])
    for item in ("A2", "A5", "B0"):
        assert top not in _similar(client, item)
    r = client.get(f"/v1/items/{top}/similar")
    assert r.status_code == 404 and "hidden" in r.json()["detail"]
    r = client.get("/v1/users/a0/recommendations", params={"candidates": [top]})
    assert r.status_code == 200 and r.json()["items"] == []
    assert client.get(f"/v1/items/{top}").json()["hidden"] is True
    # PATCH keeps it hidden; PUT shows it again
    r = client.patch(f"/v1/items/{top}", json={"attributes": {"title": "renamed"}},
                     headers=auth())
    assert r.json()["hidden"] and r.json()["attributes"]["title"] == "renamed"
    assert top not in _recs(client, "a0")
    assert _put(client, top, {})["hidden"] is False
    assert top in _recs(client, "a0", 1)


def test_a_new_item_can_be_hidden(client: TestClient) -> None:
    _put(client, "NEW-A", ALPHA)
    assert client.delete("/v1/items/NEW-A", headers=auth()).json()["hidden"]
    assert "NEW-A" not in _recs(client, "a0")
    assert "NEW-A" not in _similar(client, "A1")
    assert client.get("/v1/items/NEW-A/similar").status_code == 404


# --- persistence and workers ------------------------------------------------------------------
def test_changes_survive_a_restart_a_reload_and_an_erasure(bundles: dict[str, Path],
                                                            tmp_path: Path) -> None:
    bundle = planted_bundle(tmp_path / "content", "content")  # an erasure rewrites it
    store = tmp_path / "events.db"
    with _app(bundle, store) as c:
        hidden = _recs(c, "a0", 1)[0]
        assert c.delete(f"/v1/items/{hidden}", headers=auth()).status_code == 200
        _put(c, "NEW-A", ALPHA)
    with _app(bundle, store) as c:  # a new process on the same store
        recs = _recs(c, "a0")
        assert hidden not in recs and "NEW-A" in recs[:K_GROUP]
        assert c.get(f"/v1/items/{hidden}").json()["hidden"]
        assert c.post("/v1/admin/reload", headers=auth()).status_code == 200
        assert hidden not in _recs(c, "a0") and "NEW-A" in _recs(c, "a0", K_GROUP)
        r = c.delete("/v1/users/a0", headers=auth())  # redacts the bundle: a new engine
        assert r.status_code == 200 and r.json()["redacted_from_model"]
        assert hidden not in _recs(c, "a3") and "NEW-A" in _recs(c, "a3", K_GROUP)
        assert hidden not in _similar(c, "A2")


def test_two_workers_follow_each_others_changes(bundles: dict[str, Path],
                                                tmp_path: Path) -> None:
    store = tmp_path / "events.db"
    with _app(bundles["content"], store) as one, _app(bundles["content"], store) as two:
        top = _recs(two, "a0", 1)[0]
        assert top in _recs(two, "a0")  # `two` has served (and polled) just now
        assert one.delete(f"/v1/items/{top}", headers=auth()).status_code == 200
        _put(one, "NEW-A", ALPHA)
        assert two.get("/v1/items/NEW-A").json()["recommendable"]  # GET reads the store
        time.sleep(POLL_INTERVAL_S + 0.1)
        recs = _recs(two, "a0")
        assert top not in recs and "NEW-A" in recs[:K_GROUP]
        assert two.get(f"/v1/items/{top}/similar").status_code == 404
        assert _put(two, top, {})["hidden"] is False  # and back again
        time.sleep(POLL_INTERVAL_S + 0.1)
        assert top in _recs(one, "a0")


# --- models that cannot score new items -------------------------------------------------------
def test_an_als_bundle_takes_new_items_but_cannot_recommend_them(bundles: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    with _app(bundles["als"], tmp_path / "events.db") as c:
        doc = _put(c, "NEW-A", ALPHA)
        assert doc["recommendable"] is False and "retrain" in doc["reason"]
        assert "als" in doc["reason"] and doc["attributes"] == ALPHA
        assert c.get("/v1/items/NEW-A").json()["reason"] == doc["reason"]
        assert "NEW-A" not in _recs(c, "a0", 30)
        assert "NEW-A" not in _visitor(c, ["A1", "A2"], 30)
        assert _similar(c, "NEW-A") == []
        assert "NEW-A" not in _similar(c, "A1")
        top = _recs(c, "a0", 1)[0]  # hiding works for every model
        c.delete(f"/v1/items/{top}", headers=auth())
        assert top not in _recs(c, "a0")


def test_every_arm_of_an_experiment_serves_the_catalogue(bundles: dict[str, Path],
                                                         tmp_path: Path) -> None:
    arms = (ArmSpec(name="A", bundle=bundles["content"], share=0.5),
            ArmSpec(name="B", bundle=bundles["als"], share=0.5))
    with _app(bundles["content"], tmp_path / "e.db", arms=arms) as c:
        _put(c, "NEW-A", ALPHA)
        assert c.delete("/v1/items/A1", headers=auth()).status_code == 200
        engines = c.app.state.service.experiment.engines  # type: ignore[attr-defined]
        for name, can_score in (("A", True), ("B", False)):
            eng = engines[name]
            new, hidden = (int(i) for i in eng.item_indices(["NEW-A", "A1"]))
            assert eng.is_hidden(hidden) and not eng.is_hidden(new)
            visitor = eng.visitor_history(["A0", "A2"])
            items = [s.item for s in eng.recommend(-1, visitor, 2, Query(k=24))[0]]
            assert "A1" not in items and ("NEW-A" in items) == can_score


# --- changes of known items --------------------------------------------------------------------
def test_patch_merges_and_filters_read_the_new_values(client: TestClient) -> None:
    r = client.patch("/v1/items/A1", json={"attributes": {"genres": ["beta", "film"]}},
                     headers=auth())
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["attributes"] == {"genres": ["beta", "film"], "title": "alpha story 1"}
    assert doc["in_model"] and doc["recommendable"] and doc["text"] is None
    assert "A1" in _recs(client, "b0", filter="genres:beta")
    assert "A1" not in _recs(client, "a0", filter="genres:alpha", exclude_seen="false")
    doc = client.patch("/v1/items/A1", json={"attributes": {"title": None}, "text": "x"},
                       headers=auth()).json()
    assert doc["attributes"]["genres"] == ["beta", "film"] and doc["attributes"]["title"] is None
    assert doc["text"] == "x" and doc["version"] == 2
    doc = client.patch("/v1/items/A1", json={}, headers=auth()).json()
    assert doc["text"] == "x"  # text given: replaced; not given: kept
    doc = _put(client, "A1", {})  # PUT replaces the changes: the bundle's row again
    assert doc["attributes"] == {"genres": ["alpha", "film"], "title": "alpha story 1"}
    assert doc["text"] is None
    assert "A1" in _recs(client, "a0", filter="genres:alpha", exclude_seen="false")


def test_rules_apply_to_new_and_changed_items(bundles: dict[str, Path], tmp_path: Path
                                              ) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('{"exclude": ["genres:banned"], "exclude_items": ["NEW-X"]}')
    banned = {"genres": ["alpha", "banned"]}
    with _app(bundles["content"], tmp_path / "e.db", rules=rules) as c:
        assert _put(c, "NEW-A", {**ALPHA, **banned})["reason"] == \
            "excluded by the business rules"
        assert not _put(c, "NEW-X", ALPHA)["recommendable"]
        c.patch("/v1/items/A1", json={"attributes": banned}, headers=auth())
        recs = _recs(c, "a0", exclude_seen="false")
        assert not {"NEW-A", "NEW-X", "A1"} & set(recs) and "A2" in recs


# --- keys and bad input ------------------------------------------------------------------------
def test_writes_need_the_write_key_and_reads_the_read_key(bundles: dict[str, Path],
                                                          tmp_path: Path) -> None:
    with _app(bundles["content"], tmp_path / "e.db", read_keys=True) as c:
        body = {"attributes": ALPHA}
        for send in (c.put, c.patch):
            assert send("/v1/items/A1", json=body).status_code == 401
            assert send("/v1/items/A1", json=body, headers=auth(READ_KEY)).status_code == 403
        assert c.delete("/v1/items/A1").status_code == 401
        assert c.get("/v1/items/A1").status_code == 401
        doc = c.get("/v1/items/A1", headers=auth(READ_KEY)).json()
        assert doc["version"] is None and not doc["hidden"]  # nothing was written
        assert "A1" in _recs_with(c, "a0", READ_KEY)


def _recs_with(c: TestClient, user: str, key: str) -> list[Any]:
    r = c.get(f"/v1/users/{user}/recommendations", params={"k": 24}, headers=auth(key))
    return [x["item"] for x in r.json()["items"]]


@pytest.mark.parametrize("attributes,status,named", [
    ({"colour": "red"}, 400, "colour"),
    ({"title": 5}, 400, "title"),
    ({"genres": "alpha"}, 400, "genres"),
    ({"genres": ["alpha", 3]}, 400, "genres[1]"),
    ({"item": "X"}, 400, "item"),
    ([1, 2], 422, "attributes"),
])
def test_bad_attributes(client: TestClient, attributes: Any, status: int, named: str) -> None:
    r = client.put("/v1/items/NEW-A", json={"attributes": attributes}, headers=auth())
    assert r.status_code == status, r.text
    assert named in str(r.json()["detail"])
    assert client.get("/v1/items/NEW-A").status_code == 404  # nothing was stored


def test_unknown_items_and_bodies(client: TestClient) -> None:
    for send in (client.patch, client.delete):
        kwargs: dict[str, Any] = {"json": {"attributes": {}}} if send == client.patch else {}
        r = send("/v1/items/NOPE", headers=auth(), **kwargs)
        assert r.status_code == 404 and "unknown item" in r.json()["detail"]
    assert client.get("/v1/items/NOPE").status_code == 404
    r = client.put("/v1/items/NEW-A", json={"attributes": {}, "colour": 1}, headers=auth())
    assert r.status_code == 422
    r = client.put("/v1/items/NEW-A", json={"text": ""}, headers=auth())
    assert r.status_code == 422


def test_integer_item_ids_stay_integers(tmp_path: Path) -> None:
    ds = planted_dataset()
    as_int = {f"{g}{i}": 100 * (g == "B") + i for g in "AB" for i in range(12)}
    events = ds.events.select(
        pl.col("user_idx").map_elements(ds.users.to_python, return_dtype=pl.String)
        .alias("user"),
        pl.col("item_idx").map_elements(lambda i: as_int[ds.items.to_python(i)],
                                        return_dtype=pl.Int64).alias("item"))
    items = ds.item_table.with_columns(pl.col("item").replace_strict(as_int,
                                                                     return_dtype=pl.Int64))
    ints = prepare(events, items=items, config=PrepareConfig(
        item_roles={"genres": "multi", "title": "text"})).dataset
    model = create_model("content", {}).fit(ints, TrainingOptions(rng=0))
    with _app(write_bundle(model, ints, tmp_path / "b"), tmp_path / "e.db") as c:
        for bad in ("X1", "0999"):  # no id of an integer catalogue ("0999" is not 999)
            r = c.put(f"/v1/items/{bad}", json={"attributes": ALPHA}, headers=auth())
            assert r.status_code == 400 and "integers" in r.json()["detail"]
        assert _put(c, "999", ALPHA)["item"] == 999
        assert 999 in _recs(c, "a0", K_GROUP)


# --- the index over bundle and new items -------------------------------------------------------
def test_overlay_index_search_equals_exact_search(rng: np.random.Generator) -> None:
    base, extra = rng.normal(size=(40, 8)), rng.normal(size=(6, 8))
    q = rng.normal(size=(3, 8)).astype(np.float32)
    both = ItemIndex.build(np.vstack([base, extra]), kind="exact")
    overlay = OverlayIndex(ItemIndex.build(base, kind="exact"), extra)
    allowed = rng.random(46) < 0.7
    exclude = [np.array([0, 41]), np.array([], dtype=np.int64), np.array([45, 3, 44])]
    for kwargs in ({}, {"allowed": allowed}, {"exclude": exclude},
                   {"allowed": allowed, "exclude": exclude}):
        want = both.search(q, 10, **kwargs)
        got = overlay.search(q, 10, **kwargs)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    idx, _ = overlay.search(q, 50, allowed=np.zeros(46, dtype=bool))
    assert (idx == -1).all()
    np.testing.assert_array_equal(overlay.item_vectors[[1, 43]],
                                  np.vstack([base[1], extra[3]]).astype(np.float32))


# --- the service and the store -------------------------------------------------------------------
def test_reloads_and_erasures_serve_the_catalogue_before_any_request(tmp_path: Path) -> None:
    """No request in between: the service itself puts the catalogue on a new engine."""
    svc = Service.open(planted_bundle(tmp_path / "b", "content"),
                       open_store(f"sqlite:///{tmp_path / 'e.db'}"))
    try:
        def recs(user: str) -> list[Any]:
            return [s.item for s in svc.recommend_user(user, Query(k=24)).items]

        top = recs("a0")[0]
        svc.catalogue.hide(svc.engine, top)
        svc.catalogue.put(svc.engine, "NEW-A", ALPHA, None)
        svc.refresh_catalogue(wait=True)
        assert top not in recs("a0") and "NEW-A" in recs("a0")
        svc.reload()
        assert top not in recs("a0") and "NEW-A" in recs("a0")
        assert svc.forget("a0").redacted_from_model
        assert top not in recs("a3") and "NEW-A" in recs("a3")
    finally:
        svc.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "sqlite":
        with open_store(f"sqlite:///{tmp_path / 'e.db'}") as s:
            yield s
        return
    with postgres_schema(postgres_base_url()) as url, open_store(url) as s:
        yield s


def test_store_rows_versions_and_rollback(store: EventStore) -> None:
    ensure_table(store)
    assert latest_version(store) == 0 and changes(store) == []
    a = write_item(store, "A", lambda row: Change({"x": 1, "t": ["é"]}, None, False))
    b = write_item(store, "B", lambda row: Change({}, "some text", True))
    assert (a.version, b.version) == (1, 2) and latest_version(store) == 2
    merged = write_item(store, "A", lambda row: Change({**(row.attributes if row else {}),
                                                        "y": 2.5}, "t", row is None))
    assert merged.version == 3 and merged.attributes == {"x": 1, "t": ["é"], "y": 2.5}
    assert get_item(store, "A") == merged and get_item(store, "C") is None
    assert [r.item for r in changes(store, 1)] == ["B", "A"]  # by version
    assert changes(store, 3) == []

    def fail(row: CatalogueRow | None) -> Change:
        raise ValueError("refused")

    with pytest.raises(ValueError):
        write_item(store, "C", fail)
    assert latest_version(store) == 3 and get_item(store, "C") is None
    # concurrent writers: every version once, in the order they committed
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda i: write_item(store, f"I{i % 5}", lambda row: Change(
            {"n": (row.attributes["n"] + 1) if row else 1}, None, False)), range(20)))
    assert sorted(r.version for r in done) == list(range(4, 24))
    assert sum(get_item(store, f"I{i}").attributes["n"] for i in range(5)) == 20  # type: ignore[union-attr]
