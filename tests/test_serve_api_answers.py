"""What the answers say: explanations that do not invent a reason, notes for filters that
leave nothing, and API docs that load without a CDN."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers_serve import API_KEY, auth, planted_bundle
from lmrec.serve.app import ServeSettings, create_app
from lmrec.serve.bundle import load_bundle
from lmrec.serve.engine import Engine
from lmrec.serve.explain import POPULAR_REASON
from lmrec.serve.security import KeyRing


def _client(bundle: Path, tmp_path: Path) -> TestClient:
    keys = KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]})
    return TestClient(create_app(bundle, f"sqlite:///{tmp_path / 'events.db'}",
                                 ServeSettings(), keys=keys))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("api-answers")
    return {name: planted_bundle(folder / name, name) for name in ("popularity", "ease")}


@pytest.fixture
def ease(bundles: dict[str, Path], tmp_path: Path) -> Iterator[TestClient]:
    with _client(bundles["ease"], tmp_path) as c:
        yield c


def _recs(c: TestClient, user: str, **params: object) -> dict:
    r = c.get(f"/v1/users/{user}/recommendations", params=params)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    return r.json()


def test_a_history_independent_model_names_no_history_item(bundles: dict[str, Path],
                                                            tmp_path: Path) -> None:
    with _client(bundles["popularity"], tmp_path) as c:
        c.post("/v1/events", json={"events": [{"user": "a0", "item": "A5", "type": "rating"}]},
               headers=auth())
        for user in ("a0", "b3"):  # histories of A items and of B items: the same ranking
            doc = _recs(c, user, k=5, explain="true")
            assert all(it["reason"] == POPULAR_REASON and "because" not in it
                       for it in doc["items"]), doc
        visitor = c.post("/v1/recommendations", json={"history": ["A1"], "explain": True})
        assert {it["reason"] for it in visitor.json()["items"]} == {POPULAR_REASON}
        # similar items are not "the most popular ones" either: co-occurrence says which
        similar = [it["item"] for it in c.get("/v1/items/A1/similar?k=4").json()["items"]]
        assert similar and all(i.startswith("A") for i in similar)


def test_the_engine_observes_which_model_ignores_histories(bundles: dict[str, Path]) -> None:
    """Popularity declares nothing: the engine sees that no history moves its scores."""
    assert Engine(load_bundle(bundles["popularity"])).ignores_history
    assert not Engine(load_bundle(bundles["ease"])).ignores_history


def test_a_personal_model_still_names_the_history_item(ease: TestClient) -> None:
    doc = _recs(ease, "a0", k=3, explain="true")
    assert all(it["because"].startswith("A") and it["reason"].startswith("because of")
               for it in doc["items"])
    newcomer = _recs(ease, "nobody", k=3, explain="true")  # no history: popularity, said so
    assert {it["reason"] for it in newcomer["items"]} == {POPULAR_REASON}


def test_a_filter_that_matches_nothing_says_so(ease: TestClient) -> None:
    doc = _recs(ease, "a0", filter="genres:xyz")
    assert doc["items"] == [] and doc["note"] == "no item matches filter genres:xyz"
    doc = _recs(ease, "a0", filter=["genres:alpha", "genres:beta"])
    assert doc["items"] == [] and "genres:alpha, genres:beta together" in doc["note"]
    doc = _recs(ease, "nobody", filter="genres:xyz")  # the notes add up
    assert doc["note"] == ("no history yet: the most popular items; no item matches filter "
                           "genres:xyz")
    r = ease.post("/v1/recommendations", json={"history": ["A1"], "filter": ["genres:xyz"]})
    assert r.json()["note"] == "no item matches filter genres:xyz"
    assert "note" not in _recs(ease, "a0", filter="genres:alpha")  # a filter that matches


def test_docs_load_no_asset_from_elsewhere(ease: TestClient) -> None:
    r = ease.get("/docs")
    assert r.status_code == 200
    page = r.text
    assert "http://" not in page and "https://" not in page
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {a.rsplit(".", 1)[-1] for a in assets} == {"js", "css", "png"}
    kinds = {"js": "javascript", "css": "text/css", "png": "image/png"}
    for url in assets:
        assert url.startswith("/docs/assets/")
        got = ease.get(url)
        assert got.status_code == 200 and kinds[url.rsplit(".", 1)[-1]] in got.headers[
            "content-type"], url
        assert len(got.content) > 1000
    assert "url: '/openapi.json'" in page and ease.get("/openapi.json").status_code == 200


def test_an_allow_list_limits_the_answer_to_its_items(ease: TestClient) -> None:
    full = _recs(ease, "a0", k=5)["items"]
    # the user's own third and fifth choices, and an item of the other group, are allowed
    allowed = [full[2]["item"], full[4]["item"], "B1"]
    doc = _recs(ease, "a0", k=5, candidates=allowed)
    assert [it["item"] for it in doc["items"]][:2] == [full[2]["item"], full[4]["item"]]
    assert {it["item"] for it in doc["items"]} <= set(allowed)
    # the same through the visitor endpoint, with a filter on top
    r = ease.post("/v1/recommendations", json={"history": ["A1", "A2"], "k": 3,
                                               "candidates": ["A3", "B1", "B2"],
                                               "filter": ["genres:beta"]})
    assert r.status_code == 200 and {it["item"] for it in r.json()["items"]} <= {"B1", "B2"}
    # an allow-list of items already seen leaves nothing, and says why
    seen = ease.post("/v1/recommendations", json={"history": ["A1"], "candidates": ["A1"]})
    assert seen.json() == {"items": [], "note": "none of the candidates can be recommended",
                           "model_version": seen.json()["model_version"],
                           "request_id": seen.json()["request_id"]}
    bad = ease.get("/v1/users/a0/recommendations", params={"candidates": ["A1", "nope"]})
    assert bad.status_code == 400 and "candidates: unknown item id 'nope'" in bad.text
