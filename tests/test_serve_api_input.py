"""What the HTTP API accepts matches what `data prepare` accepts (lmrec.ids): behaviour types,
id text, integer ids; and events of unknown items are stored and counted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from helpers_serve import API_KEY, auth, planted_bundle, postgres_base_url, postgres_schema
from lmrec.collect import ColumnMapping
from lmrec.models import create_model
from lmrec.prepare import PrepareConfig, prepare
from lmrec.serve.app import ServeSettings, create_app
from lmrec.serve.bundle import write_bundle
from lmrec.serve.security import KeyRing
from lmrec.serve.store import EventIn, EventStore, open_store
from lmrec.train.options import TrainingOptions


@contextmanager
def _client(bundle: Path, store_url: str) -> Iterator[TestClient]:
    keys = KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]})
    with TestClient(create_app(bundle, store_url, ServeSettings(), keys=keys)) as c:
        yield c


def _store(c: TestClient) -> EventStore:
    return c.app.state.service.store  # type: ignore[attr-defined,no-any-return]


def _post(c: TestClient, *events: dict[str, object]) -> tuple[int, dict]:
    r = c.post("/v1/events", json={"events": list(events)}, headers=auth())
    return r.status_code, r.json()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_bundle(tmp_path_factory.mktemp("api-input") / "ease")


def test_a_type_prepare_trains_on_is_accepted_and_used(tmp_path: Path) -> None:
    rows = [(f"u{u}", f"i{(u + t) % 8}", "浏览" if t % 2 else "购买")
            for u in range(12) for t in range(4)]
    frame = pl.DataFrame(rows, schema=["user", "item", "event"], orient="row")
    ds = prepare(frame, mapping=ColumnMapping(event="event"), config=PrepareConfig(
        behaviour_weights={"浏览": 1.0, "购买": 4.0})).dataset
    model = create_model("ease", {"l2": 10.0, "weighting": "weight"}).fit(
        ds, TrainingOptions(rng=0))
    bundle = write_bundle(model, ds, tmp_path / "b")
    with _client(bundle, f"sqlite:///{tmp_path / 'e.db'}") as c:
        status, doc = _post(c, {"user": "new", "item": "i3", "type": "浏览"},
                            {"user": "new", "item": "i4", "type": "add to cart"})
        assert status == 200 and doc["accepted"] == 2
        eng = c.app.state.service.engine  # type: ignore[attr-defined]
        hist, n_live = eng.history(-1, _store(c).history("new"))
        assert n_live == 2
        # the trained type keeps its code; the untrained one is the neutral unknown type
        assert [hist.event_types[e] for e in hist.events] == ["浏览", "\x1funknown"]
        for bad in ("浏\x01览", " view", "a\u202eb", "x" * 65):
            status, doc = _post(c, {"user": "new", "item": "i3", "type": bad})
            assert status == 422 and doc["detail"][0]["loc"] == ["body", "events", 0, "type"]


def test_ids_with_control_or_bidi_characters_or_only_whitespace_are_refused(
        planted: Path, tmp_path: Path) -> None:
    with _client(planted, f"sqlite:///{tmp_path / 'e.db'}") as c:
        for field in ("user", "item"):
            for bad in (" ", "\t\t", "a\u202eb", "a\u2067b", "a\u200fb", "a\x85b", "a\x1bb",
                        " a0", "a0 "):
                status, doc = _post(c, {"user": "u", "item": "A1", field: bad})
                assert status == 422, (field, bad)
                [error] = doc["detail"]
                assert error["loc"] == ["body", "events", 0, field]
                assert error["msg"].startswith(f"Value error, {field}: an id may not")
        r = c.post("/v1/recommendations", json={"history": ["A1", "A\u202e2"]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "history", 1]
        for path in ("/v1/users/%E2%80%AEa0/recommendations", "/v1/users/%20/recommendations",
                     "/v1/users/a%C2%9B0/recommendations", "/v1/items/A%E2%81%A61/similar"):
            r = c.get(path)
            assert r.status_code == 422, path
            assert r.json()["detail"][0]["loc"][:2] in (["path", "user"], ["path", "item"])
        assert _store(c).count_events() == 0
        assert _post(c, {"user": "用户 7", "item": "A1"})[0] == 200  # inner spaces are fine


def test_integer_ids_are_matched_as_prepare_types_them(tmp_path: Path) -> None:
    events = pl.DataFrame({"user": [1, 1, 1, 2, 2, 3, 3], "item": [10, 11, 12, 10, 12, 11, 12]})
    ds = prepare(events).dataset
    assert ds.users.dtype == pl.Int64
    bundle = write_bundle(create_model("ease").fit(ds, TrainingOptions(rng=0)), ds, tmp_path / "b")
    with _client(bundle, f"sqlite:///{tmp_path / 'e.db'}") as c:
        known = c.get("/v1/users/1/recommendations").json()
        assert known["user"] == 1 and "note" not in known
        for odd in ("01", "%2B1", "1.0"):  # prepare keeps these apart from 1: unknown users
            doc = c.get(f"/v1/users/{odd}/recommendations").json()
            assert doc["note"].startswith("no history yet"), odd
            assert doc["user"] == odd.replace("%2B", "+")
        assert c.get("/v1/users/%201/recommendations").status_code == 422  # " 1"
        assert c.get("/v1/items/010/similar").status_code == 404
        assert c.get("/v1/items/10/similar").json()["item"] == 10
        # an event from "01" is not one of user 1's
        assert _post(c, {"user": "01", "item": 11}, {"user": 1, "item": "010"})[1] == {
            "accepted": 2, "duplicates": 0, "unknown_items": 1}
        assert [e.user for e in _store(c).history("01")] == ["01"]
        assert [e.item for e in _store(c).history("1")] == ["010"]


@contextmanager
def _store_url(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'events.db'}"
        return
    with postgres_schema(postgres_base_url()) as url:
        yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_events_of_unknown_items_are_stored_and_counted(kind: str, planted: Path,
                                                        tmp_path: Path) -> None:
    with _store_url(kind, tmp_path) as url, _client(planted, url) as c:
        batch = [{"user": "u", "item": "A1", "event_id": "1"},
                 {"user": "u", "item": "new-1", "event_id": "2"},
                 {"user": "u", "item": "new-2", "event_id": "3"},
                 {"user": "u", "item": "new-1"},
                 {"user": "u", "item": "B2", "event_id": "4"}]
        assert _post(c, *batch) == (200, {"accepted": 5, "duplicates": 0, "unknown_items": 3})
        # a retry: the events with an event_id are duplicates, and no longer counted
        assert _post(c, *batch) == (200, {"accepted": 1, "duplicates": 4, "unknown_items": 1})
        assert _post(c, {"user": "u", "item": "A2"}) == (
            200, {"accepted": 1, "duplicates": 0, "unknown_items": 0})
        items = [e.item for e in _store(c).history("u")]
        assert items.count("new-1") == 3 and "new-2" in items  # kept for retraining


def test_the_store_counts_only_accepted_events(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'e.db'}")
    try:
        events = [EventIn("u", "x", "view", 1.0, "e1"), EventIn("u", "x", "view", 2.0, "e1"),
                  EventIn("u", "y", "view", 3.0, None)]
        res = store.add_events(events, count_items={"x"})
        assert (res.accepted, res.duplicates, res.counted) == (2, 1, 1)
        assert store.add_events(events).counted == 0  # nothing asked, nothing counted
    finally:
        store.close()
