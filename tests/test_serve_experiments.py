"""The loop in the service: request ids and logged impressions, feedback linked to them,
experiment arms (sticky A/B split, team-draft interleaving), exploration with propensities,
and GET /v1/experiments (issue 13, points 1-3)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from helpers_serve import API_KEY, LiveServer, auth, planted_bundle
from lmrec.serve.app import ServeSettings, create_app
from lmrec.serve.arms import ArmSpec, Experiment
from lmrec.serve.security import KeyRing
from lmrec.serve.store import open_store


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arms")
    return {"ease": planted_bundle(root / "ease"),
            "pop": planted_bundle(root / "pop", model="popularity")}


def _client(bundle: Path, db: Path, **settings: Any) -> TestClient:
    keys = KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]})
    app = create_app(bundle, f"sqlite:///{db}", ServeSettings(**settings), keys=keys)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def single(bundles: dict[str, Path], tmp_path: Path) -> Iterator[TestClient]:
    with _client(bundles["ease"], tmp_path / "e.db") as c:
        yield c


def _arms(bundles: dict[str, Path], split: tuple[float, float] = (0.5, 0.5)
          ) -> tuple[ArmSpec, ...]:
    return (ArmSpec(name="A", bundle=bundles["ease"], share=split[0]),
            ArmSpec(name="B", bundle=bundles["pop"], share=split[1]))


def test_every_answer_has_a_request_id_and_its_impression_is_stored(
        single: TestClient, tmp_path: Path) -> None:
    doc = single.get("/v1/users/a0/recommendations", params={"k": 4}).json()
    rid = doc["request_id"]
    assert len(rid) == 32 and "arm" not in doc
    visitor = single.post("/v1/recommendations", json={"history": ["A1"], "k": 3}).json()
    assert visitor["request_id"] != rid
    with open_store(f"sqlite:///{tmp_path / 'e.db'}") as store:
        shown = store.get_impression(rid)
        anon = store.get_impression(visitor["request_id"])
    assert shown is not None and anon is not None
    assert shown.user == "a0" and anon.user is None
    assert shown.policy == "top-k" and shown.model_version == doc["model_version"]
    assert [s.item for s in shown.slate] == [it["item"] for it in doc["items"]]
    assert [s.propensity for s in shown.slate] == [1.0] * 4


def test_feedback_is_linked_to_the_response_and_counted(single: TestClient,
                                                        tmp_path: Path) -> None:
    doc = single.get("/v1/users/a0/recommendations", params={"k": 4}).json()
    first = doc["items"][0]["item"]
    body = {"request_id": doc["request_id"], "item": first}
    assert single.post("/v1/feedback", json=body).status_code == 401
    r = single.post("/v1/feedback", json=body, headers=auth())
    assert r.status_code == 200 and r.json() == {"accepted": 1, "user": "a0"}
    unknown = {"request_id": "0" * 32, "item": first}
    r = single.post("/v1/feedback", json=unknown, headers=auth())
    assert r.status_code == 404 and "request_id" in r.json()["detail"]
    assert single.post("/v1/feedback", json={"request_id": "xyz", "item": first},
                       headers=auth()).status_code == 422
    # a purchase sent as an event with the response's id counts as a conversion
    ev = {"events": [{"user": "a0", "item": first, "type": "purchase",
                      "request_id": doc["request_id"]}]}
    assert single.post("/v1/events", json=ev, headers=auth()).status_code == 200
    report = single.get("/v1/experiments").json()
    assert report["mode"] == "single"
    (arm,) = report["arms"]
    assert (arm["impressions"], arm["clicks"], arm["conversions"]) == (1, 1, 1)
    # the click became part of the user's history: it is no longer recommended
    again = single.get("/v1/users/a0/recommendations", params={"k": 4}).json()
    assert first not in [it["item"] for it in again["items"]]


def test_a_visitor_feedback_is_stored_under_the_response(single: TestClient,
                                                        tmp_path: Path) -> None:
    doc = single.post("/v1/recommendations", json={"history": ["A1"], "k": 3}).json()
    body = {"request_id": doc["request_id"], "item": doc["items"][0]["item"],
            "type": "cart"}
    r = single.post("/v1/feedback", json=body, headers=auth())
    assert r.json()["user"] == f"visitor:{doc['request_id']}"


def test_arms_are_sticky_and_split_users_by_their_shares(bundles: dict[str, Path],
                                                         tmp_path: Path) -> None:
    with _client(bundles["ease"], tmp_path / "ab.db", arms=_arms(bundles, (0.7, 0.3))) as c:
        first = {u: c.get(f"/v1/users/{u}/recommendations").json()["arm"]
                 for u in ("a0", "a1", "b0", "b1")}
        again = {u: c.get(f"/v1/users/{u}/recommendations").json()["arm"] for u in first}
        assert first == again
        versions = {c.get(f"/v1/users/{u}/recommendations").json()["model_version"]
                    for u in first}
        report = c.get("/v1/experiments").json()
    assert report["mode"] == "ab" and [a["arm"] for a in report["arms"]] == ["A", "B"]
    assert sum(a["impressions"] for a in report["arms"]) == 12
    assert len(versions) == len(set(first.values()))
    exp = Experiment(("A", "B"), {}, (0.7, 0.3), salt="s")
    counts = Counter(exp.assign(f"user-{n}", np.random.default_rng(0)) for n in range(20_000))
    assert abs(counts["A"] / 20_000 - 0.7) < 0.015  # 4.6 standard deviations
    other = Experiment(("A", "B"), {}, (0.7, 0.3), salt="t")
    moved = sum(exp.assign(f"user-{n}", None) != other.assign(f"user-{n}", None)  # type: ignore[arg-type]
                for n in range(2_000))
    assert 600 < moved < 1_100  # a new salt reshuffles: 2 x .7 x .3 = 42% move


def test_interleaving_merges_both_arms_and_names_each_items_team(bundles: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    with _client(bundles["ease"], tmp_path / "il.db", arms=_arms(bundles),
                 interleave=("A", "B")) as c:
        doc = c.get("/v1/users/a0/recommendations", params={"k": 6}).json()
        items = [it["item"] for it in doc["items"]]
        assert len(items) == 6 == len(set(items))
        with open_store(f"sqlite:///{tmp_path / 'il.db'}") as store:
            shown = store.get_impression(doc["request_id"])
        assert shown is not None and shown.policy == "team-draft:A,B"
        teams = [s.team for s in shown.slate]
        assert set(teams) == {"A", "B"} and all(s.propensity is None for s in shown.slate)
        clicked = [s.item for s in shown.slate if s.team == "A"][:2]
        for item in clicked:
            c.post("/v1/feedback", json={"request_id": doc["request_id"], "item": item},
                   headers=auth())
        inter = c.get("/v1/experiments").json()["interleaving"]
    assert inter["impressions"] == 1 and inter["wins"] == {"A": 1, "B": 0}


def test_exploration_logs_propensities_below_one(bundles: dict[str, Path],
                                                tmp_path: Path) -> None:
    with _client(bundles["ease"], tmp_path / "x.db", explore="plackett-luce:1.0") as c:
        docs = [c.get("/v1/users/a0/recommendations", params={"k": 3}).json()
                for _ in range(30)]
        with open_store(f"sqlite:///{tmp_path / 'x.db'}") as store:
            logged = [store.get_impression(d["request_id"]) for d in docs]
        bad = c.get("/v1/users/a0/recommendations", params={"k": 3, "diversity": 0.5})
    assert bad.status_code == 400 and "diversity" in bad.json()["detail"]
    assert all(x is not None and x.policy.startswith("plackett-luce") for x in logged)
    props = [s.propensity for x in logged if x is not None for s in x.slate]
    assert all(p is not None and 0 < p < 1 for p in props)
    slates = {tuple(it["item"] for it in d["items"]) for d in docs}
    assert len(slates) > 1  # not always the same top-k


def test_an_experiment_refuses_reloads_and_forgets_in_every_arm(bundles: dict[str, Path],
                                                               tmp_path: Path) -> None:
    with _client(bundles["ease"], tmp_path / "f.db", arms=_arms(bundles)) as c:
        r = c.post("/v1/admin/reload", headers=auth())
        assert r.status_code == 400 and "experiment" in r.json()["detail"]
        c.post("/v1/events", json={"events": [{"user": "a0", "item": "A1"}]}, headers=auth())
        r = c.delete("/v1/users/a0", headers=auth())
        assert r.status_code == 200
        assert r.json()["events_deleted"] == 1 and r.json()["in_training_data"]
        # every arm now serves a0 as a stranger
        for u in ("a0",) * 3:
            assert c.get(f"/v1/users/{u}/recommendations").status_code == 200
        service = c.app.state.service  # type: ignore[attr-defined]
        assert all(e.user_key("a0")[2] < 0 for e in service.experiment.engines.values())


def test_a_served_experiment_loses_no_acknowledged_impression_or_feedback(
        bundles: dict[str, Path], tmp_path: Path) -> None:
    """`lmrec serve --arm ... --split` over a real socket, then SIGKILL: every response's
    impression and every acknowledged feedback is in the store afterwards."""
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    server = LiveServer(None, url, tmp_path, "--arm", f"A={bundles['ease']}", "--arm",
                        f"B={bundles['pop']}", "--split", "50/50")
    answered, acked = [], []
    with server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for n in range(40):
                doc = client.get(f"/v1/users/{'ab'[n % 2]}{n % 7}/recommendations",
                                 params={"k": 3}).json()
                answered.append((doc["request_id"], doc["arm"]))
                r = client.post("/v1/feedback", headers=auth(), json={
                    "request_id": doc["request_id"], "item": doc["items"][0]["item"],
                    "event_id": f"fb-{n}"})
                if r.status_code == 200:
                    acked.append(doc["request_id"])
        server.kill()
    assert {arm for _, arm in answered} == {"A", "B"} and len(acked) == 40
    with open_store(url) as store:
        logged = {imp.request_id: imp.arm for imp in store.impressions()}
        linked = {ev.request_id for ev in store.feedback()}
    assert all(logged.get(rid) == arm for rid, arm in answered)
    assert set(acked) <= linked
