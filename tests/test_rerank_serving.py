"""The re-ranking stage when serving: the HTTP `rerank` parameter (GET, repeatable) and body
field (POST), `lmrec serve --rerank` defaults, `diversity` as mmr, `lmrec recommend --rerank
--explain` through the same engine, and the bundle's user table (users.parquet: written,
erased with the user, optional in older bundles)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from helpers_cli import one_error_line, run
from helpers_serve import API_KEY, auth
from lmrec.errors import ConfigError
from lmrec.models import create_model
from lmrec.serve.app import ServeSettings, create_app
from lmrec.serve.bundle import USERS_FILE, load_bundle, write_bundle
from lmrec.serve.engine import Query
from lmrec.serve.erasure import redact_bundle
from lmrec.serve.security import KeyRing
from lmrec.serve.service import build_engine
from lmrec.serve.stages import merge_rerank
from lmrec.train.options import TrainingOptions
from test_rerank_wiring import SUITABLE, risk_dataset

RISK = {**{f"A{i}": 1 for i in range(12)}, **{f"B{i}": 2 if i < 6 else 3 for i in range(12)}}


def _bundle(folder: Path, model: str = "popularity") -> Path:
    ds = risk_dataset()
    return write_bundle(create_model(model).fit(ds, TrainingOptions(rng=0)), ds, folder)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("serving") / "popularity")


def _client(bundle: Path, tmp_path: Path, **settings: object) -> TestClient:
    keys = KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]})
    app = create_app(bundle, f"sqlite:///{tmp_path / 'events.db'}",
                     ServeSettings(**settings), keys=keys)  # type: ignore[arg-type]
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    with _client(bundle, tmp_path) as c:
        yield c


def _items(client: TestClient, user: str, **params: object) -> list[str]:
    r = client.get(f"/v1/users/{user}/recommendations", params={"k": 6, **params})
    assert r.status_code == 200, r.text
    return [it["item"] for it in r.json()["items"]]


def test_the_rerank_parameter_applies_hard_constraints(client: TestClient) -> None:
    plain = _items(client, "a1")
    assert any(RISK[i] > 1 for i in plain)  # popularity: the risky B items first
    safe = _items(client, "a1", rerank=SUITABLE)
    assert safe and all(RISK[i] <= 1 for i in safe)
    assert all(RISK[i] <= 3 for i in _items(client, "b3", rerank=SUITABLE))
    # b0's tolerance is unknown: the safe side, the least risky items only
    assert all(RISK[i] == 1 for i in _items(client, "b0", rerank=SUITABLE))
    # a stranger has no attributes either
    assert all(RISK[i] == 1 for i in _items(client, "nobody", rerank=SUITABLE))


def test_rerank_is_repeatable_and_soft_stages_reorder(client: TestClient) -> None:
    plain = _items(client, "a1")
    calibrated = _items(client, "a1", rerank=["calibration=0.9", SUITABLE])
    assert all(RISK[i] <= 1 for i in calibrated)
    assert _items(client, "a1", rerank="calibration=0.9") != plain  # alpha items move up
    r = client.get("/v1/users/a1/recommendations",
                   params={"k": 6, "diversity": 0.5, "rerank": "calibration=0.3"})
    assert r.status_code == 200


def test_the_visitor_body_takes_rerank(client: TestClient) -> None:
    r = client.post("/v1/recommendations", json={"history": ["A1", "A2"], "k": 5,
                                                 "rerank": [SUITABLE, "mmr=0.3"]})
    assert r.status_code == 200, r.text
    assert all(RISK[it["item"]] == 1 for it in r.json()["items"])  # a visitor: no tolerance
    r = client.post("/v1/recommendations", json={"history": [], "rerank": "mmr=0.3"})
    assert r.status_code == 422  # a list, not a string


@pytest.mark.parametrize(("params", "needle"), [
    ({"rerank": "loud=1"}, "unknown re-ranker"),
    ({"rerank": "calibration=0.5:nope"}, "nope"),
    ({"rerank": "suitability=risk<=age"}, "age"),
    ({"rerank": ["mmr=0.7", "calibration=0.7"]}, "sum to"),
    ({"rerank": "mmr=0.3", "diversity": 0.2}, "diversity"),
    ({"rerank": "calibration=\x01"}, "rerank")])
def test_a_bad_rerank_is_a_400_naming_rerank(client: TestClient, params: dict[str, object],
                                             needle: str) -> None:
    r = client.get("/v1/users/a1/recommendations", params=params)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "rerank" in detail and "--rerank" not in detail and needle in detail
    body = {"history": ["A1"], "rerank": [params["rerank"]] if isinstance(
        params["rerank"], str) else params["rerank"]}
    if "diversity" in params:
        body["diversity"] = params["diversity"]
    assert client.post("/v1/recommendations", json=body).status_code == 400


def test_serve_defaults_apply_to_every_request(bundle: Path, tmp_path: Path) -> None:
    assert merge_rerank(("mmr=0.2", SUITABLE), ("mmr=0.5",)) == (SUITABLE, "mmr=0.5")
    assert merge_rerank(("mmr=0.2",), (), diversity=True) == ()
    with _client(bundle, tmp_path, rerank=(SUITABLE, "calibration=0.2")) as c:
        assert all(RISK[i] <= 1 for i in _items(c, "a1"))
        # a request's stage replaces the default of its name; the constraint stays
        assert all(RISK[i] <= 1 for i in _items(c, "a1", rerank="calibration=0.9"))
        assert all(RISK[i] <= 1 for i in _items(c, "a1", diversity=0.5))
        r = c.post("/v1/recommendations", json={"history": ["B1"], "k": 3})
        assert all(RISK[it["item"]] == 1 for it in r.json()["items"])


def test_serve_refuses_a_default_its_bundle_cannot_use(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--rerank 'calibration=0\.5:nope'"):
        _client(bundle, tmp_path, rerank=("calibration=0.5:nope",))
    with pytest.raises(ConfigError, match="--explore"):
        _client(bundle, tmp_path, rerank=("mmr=0.5",), explore="epsilon-greedy:0.1")
    with _client(bundle, tmp_path, rerank=(SUITABLE,), explore="epsilon-greedy:0.5") as c:
        assert all(RISK[i] <= 1 for i in _items(c, "a1"))  # a mask goes with exploring


def test_cli_serve_sets_the_default_of_every_request(
        bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: started.append(app))
    code, _, err = run(["serve", str(bundle), "--store", f"sqlite:///{tmp_path / 'e.db'}",
                        "--rerank", SUITABLE, "--rerank", "diversity=0.2"], capsys)
    assert code == 0, err
    app = started[0]
    assert app.state.settings.rerank == (SUITABLE, "mmr=0.2")  # type: ignore[attr-defined]
    with TestClient(app) as c:  # type: ignore[arg-type]
        assert all(RISK[i] <= 1 for i in _items(c, "a1"))


def test_cli_serve_refuses_a_bad_rerank(bundle: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path / 'e.db'}"
    for spec in ("loud=1", "calibration=0.5:nope"):
        code, out, err = run(["serve", str(bundle), "--store", store, "--rerank", spec],
                             capsys)
        one_error_line(code, err, "--rerank", out)


# --- lmrec recommend ---------------------------------------------------------------------------
def test_cli_recommend_answers_as_the_server_does(bundle: Path, client: TestClient,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = ["recommend", str(bundle), "--user", "a1", "--user", "b3", "--k", "4",
            "--rerank", SUITABLE, "--rerank", "calibration=0.5", "--explain", "--json"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["user"] for r in records] == ["a1", "b3"]
    for r in records:
        assert all(set(it) == {"item", "score", "because", "reason"} for it in r["items"])
        http = client.get(f"/v1/users/{r['user']}/recommendations",
                          params={"k": 4, "rerank": [SUITABLE, "calibration=0.5"],
                                  "explain": True}).json()["items"]
        assert [it["item"] for it in r["items"]] == [it["item"] for it in http]
        assert [it.get("reason") for it in r["items"]] == [it.get("reason") for it in http]
    assert all(RISK[it["item"]] <= 1 for it in records[0]["items"])
    code, out, err = run(args[:-1], capsys)  # a table with because and reason
    assert code == 0 and "because" in out and "reason" in out
    assert "re-ranked by" in " ".join(out.split())


@pytest.mark.parametrize(("args", "needle"), [
    (["--user", "a1", "--rerank", "loud=1"], "--rerank"),
    (["--user", "a1", "--rerank", "calibration=0.4:title"], "--rerank"),
    (["--text", "alpha", "--rerank", "mmr=0.3"], "--rerank"),
    (["--user", "nobody", "--strict", "--explain"], "nobody")])
def test_cli_recommend_refuses_in_one_line(bundle: Path, args: list[str], needle: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["recommend", str(bundle), *args], capsys)
    one_error_line(code, err, needle, out)


# --- the bundle's user table ---------------------------------------------------------------
def test_erasure_blanks_the_users_row(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "b", "ease")
    before = pl.read_parquet(folder / USERS_FILE)
    assert before.filter(pl.col("user") == "a1")["tolerance"].item() == 1
    assert redact_bundle(folder, ["a1"]).users == 1
    after = pl.read_parquet(folder / USERS_FILE)
    assert after.height == before.height and after["user"].to_list() == before["user"].to_list()
    row = after.filter(pl.col("user") == "a1")
    assert row["tolerance"].item() is None
    others = pl.col("user") != "a1"
    assert after.filter(others).equals(before.filter(others))
    bundle = load_bundle(folder)  # the digests cover the new file
    assert bundle.user_table is not None and bundle.user_table.equals(after)
    engine = build_engine(folder)
    idx = engine.user_key("a1")[2]
    assert idx == -1  # served as a stranger: the safe side of the constraint
    items, _ = engine.recommend(idx, engine.history(idx, [])[0], 0,
                                Query(k=5, rerank=(SUITABLE,)))
    assert all(RISK[str(s.item)] == 1 for s in items)


def test_a_bundle_without_a_user_table_still_loads(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "old")
    (folder / USERS_FILE).unlink()  # as written before user tables existed
    meta = json.loads((folder / "bundle.json").read_text())
    del meta["files"][USERS_FILE]
    (folder / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(folder).user_table is None
    with _client(folder, tmp_path) as c:
        assert len(_items(c, "a1", rerank="calibration=0.5")) == 6
        r = c.get("/v1/users/a1/recommendations", params={"rerank": SUITABLE})
        assert r.status_code == 400 and "no user table" in r.json()["detail"]
        assert c.delete("/v1/users/a1", headers=auth()).status_code == 200


def test_rerank_covers_items_added_through_the_catalogue(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "content", "content")
    with _client(folder, tmp_path) as c:
        for item, risk in (("NEW-SAFE", 1), ("NEW-RISKY", 3)):
            r = c.put(f"/v1/items/{item}", headers=auth(), json={"attributes": {
                "genres": ["alpha", "film"], "title": f"alpha story {item}", "risk": risk}})
            assert r.status_code == 200, r.text
        plain = _items(c, "a1", k=24)
        assert {"NEW-SAFE", "NEW-RISKY"} <= set(plain)  # alpha items, like a1's history
        shown = _items(c, "a1", k=24, rerank=[SUITABLE, "calibration=0.5", "fair=0.3"])
        assert "NEW-SAFE" in shown and "NEW-RISKY" not in shown
        assert all(RISK.get(i, 1) <= 1 for i in shown)
