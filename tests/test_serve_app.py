"""The HTTP layer in process (starlette's test client): keys, limits, validation, errors,
CORS, metrics. The same app over a real socket is tested in test_serve_http.py."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers_cli import run
from helpers_serve import API_KEY, READ_KEY, auth, planted_bundle
from lmrec.serve.app import (
    APP_ENV,
    LOAD_FAILED,
    STORE_ENV,
    ServeSettings,
    app_from_env,
    create_app,
)
from lmrec.serve.security import KeyRing


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_bundle(tmp_path_factory.mktemp("app") / "ease")


def _client(bundle: Path, tmp_path: Path, **settings: object) -> TestClient:
    keys = KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]})
    app = create_app(bundle, f"sqlite:///{tmp_path / 'events.db'}",
                     ServeSettings(**settings), keys=keys)  # type: ignore[arg-type]
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    with _client(bundle, tmp_path, max_batch=50, max_body_bytes=4096) as c:
        yield c


def test_the_fixed_interface(client: TestClient) -> None:
    r = client.get("/v1/users/a0/recommendations", params={"k": 3})
    assert r.status_code == 200
    doc = r.json()
    assert set(doc) == {"user", "items", "model_version", "request_id"} and doc["user"] == "a0"
    assert len(doc["items"]) == 3 and all(set(it) == {"item", "score"} for it in doc["items"])
    ev = {"events": [{"user": "u1", "item": "A1", "type": "view", "timestamp": 1.7e9}]}
    assert client.post("/v1/events", json=ev).status_code == 401
    r = client.post("/v1/events", json=ev, headers=auth())
    assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 0,
                                                 "unknown_items": 0}


def test_writes_need_a_valid_key(client: TestClient) -> None:
    ev = {"events": [{"user": "u1", "item": "A1"}]}
    for headers in ({}, auth("wrong-key-0123456789abcdef"), {"Authorization": API_KEY},
                    {"Authorization": f"Basic {API_KEY}"}):
        r = client.post("/v1/events", json=ev, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.delete("/v1/users/u1").status_code == 401
    assert client.post("/v1/admin/reload").status_code == 401


def test_read_keys_when_configured(bundle: Path, tmp_path: Path) -> None:
    keys = KeyRing.from_keys({"write": [API_KEY], "read": [READ_KEY]})
    app = create_app(bundle, f"sqlite:///{tmp_path / 'e.db'}", keys=keys)
    with TestClient(app) as c:
        url = "/v1/users/a0/recommendations"
        assert c.get(url).status_code == 401
        assert c.get(url, headers=auth(READ_KEY)).status_code == 200
        assert c.get(url, headers=auth(API_KEY)).status_code == 200
        r = c.post("/v1/events", json={"events": [{"user": "u", "item": "A1"}]},
                   headers=auth(READ_KEY))
        assert r.status_code == 403  # a known key without the write role
        assert c.get("/v1/health").status_code == 200  # probes stay open


def test_validation_is_strict(client: TestClient) -> None:
    bad_bodies = [
        {"events": [{"user": "u", "item": "A1", "colour": "red"}]},  # unknown field
        {"events": [{"user": "u", "item": "A1"}], "extra": 1},
        {"events": []},
        {"events": [{"user": "", "item": "A1"}]},
        {"events": [{"user": "u\x00", "item": "A1"}]},  # NUL: PostgreSQL TEXT cannot hold it
        {"events": [{"user": "u", "item": "A1", "type": "a\tb"}]},  # not printable
        {"events": [{"user": "u", "item": "A1", "timestamp": "yesterday"}]},
        {"events": [{"user": "u", "item": "A1", "timestamp": -5}]},
        {"events": [{"user": True, "item": "A1"}]},  # strict: no bool as an id
        {"events": [{"user": "u" * 300, "item": "A1"}]},
    ]
    for body in bad_bodies:
        r = client.post("/v1/events", json=body, headers=auth())
        assert r.status_code == 422, body
        # location, message and type only: the input is not echoed back
        assert all(set(e) == {"loc", "msg", "type"} for e in r.json()["detail"])
    r = client.post("/v1/events", content=b'{"events": [{"user": "u", "item": "A1", '
                    b'"timestamp": NaN}]}', headers={**auth(), "content-type":
                                                    "application/json"})
    assert r.status_code == 422
    for params in ({"k": 0}, {"k": 100_000}, {"diversity": 2}, {"k": "ten"}):
        assert client.get("/v1/users/a0/recommendations", params=params).status_code == 422
    r = client.get("/v1/users/a0/recommendations", params={"filter": "colour:red"})
    assert r.status_code == 400 and "colour" in r.json()["detail"]
    assert client.get("/v1/items/nope/similar").status_code == 404


def test_body_and_batch_limits(client: TestClient) -> None:
    big = {"events": [{"user": "u", "item": "A1", "event_id": f"{n:0200d}"} for n in range(40)]}
    r = client.post("/v1/events", json=big, headers=auth())
    assert r.status_code == 413  # over max_body_bytes (4096)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"events": ['
        for _ in range(400):
            yield b'{"user": "u", "item": "A1"},'
        yield b'{"user": "u", "item": "A1"}]}'

    r = client.post("/v1/events", content=chunks(), headers={**auth(), "content-type":
                                                             "application/json"})
    assert r.status_code == 413
    many = {"events": [{"user": "u", "item": "A1"}] * 51}  # over max_batch (50), small body
    r = client.post("/v1/events", json=many, headers=auth())
    assert r.status_code == 413 and "50" in r.json()["detail"]
    assert client.post("/v1/events", json={"events": many["events"][:50]},
                       headers=auth()).status_code == 200


def test_idempotent_events(client: TestClient) -> None:
    batch = {"events": [{"user": "u7", "item": "A1", "event_id": "e-1"},
                        {"user": "u7", "item": "A2", "event_id": "e-2"}]}
    assert client.post("/v1/events", json=batch, headers=auth()).json() == {
        "accepted": 2, "duplicates": 0, "unknown_items": 0}
    assert client.post("/v1/events", json=batch, headers=auth()).json() == {
        "accepted": 0, "duplicates": 2, "unknown_items": 0}
    assert len(client.app.state.service.store.history("u7")) == 2  # type: ignore[attr-defined]


def test_internal_errors_say_nothing_about_the_internals(client: TestClient) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail in /srv/lmrec/internal.py")

    service.recommend_user = broken
    r = client.get("/v1/users/a0/recommendations")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}
    metrics = client.get("/v1/metrics").text
    assert ('lmrec_http_requests_total{method="GET",route="/v1/users/{user}/recommendations",'
            'status="500"} 1.0') in metrics


def test_reload_errors_and_success(client: TestClient, bundle: Path, tmp_path: Path) -> None:
    root = bundle.parent  # the default bundle root: the served bundle's parent folder
    missing = client.post("/v1/admin/reload", json={"bundle": str(root / "nothing")},
                          headers=auth())
    assert missing.status_code == 400 and missing.json() == {
        "detail": "the bundle folder does not exist under the server's bundle root"}
    other = planted_bundle(root / f"knn-{tmp_path.name}", "itemknn")
    before = client.get("/v1/health").json()["model_version"]
    r = client.post("/v1/admin/reload", json={"bundle": str(other)}, headers=auth())
    assert r.status_code == 200 and r.json()["previous_version"] == before
    assert r.json()["model_version"].startswith("itemknn-")
    assert client.get("/v1/users/a0/recommendations").json()["model_version"].startswith(
        "itemknn-")
    assert 'lmrec_model_info{model="itemknn"' in client.get("/v1/metrics").text
    r = client.post("/v1/admin/reload", headers=auth())  # no body: the current folder again
    assert r.status_code == 200 and r.json()["model_version"] == r.json()["previous_version"]


def test_reload_stays_under_the_bundle_root(client: TestClient, bundle: Path,
                                            tmp_path: Path) -> None:
    outside = planted_bundle(tmp_path / "elsewhere", "itemknn")
    answers = []
    for path in (str(outside), str(tmp_path / "nothing"), "/etc", "/etc/passwd",
                 str(bundle.parent / ".." / bundle.parent.name / ".." / "x")):
        r = client.post("/v1/admin/reload", json={"bundle": path}, headers=auth())
        assert r.status_code == 400
        assert "/" not in r.json()["detail"]  # no path echoed
        answers.append(r.json())
    assert all(a == answers[0] for a in answers)  # whether the path exists does not show
    (bundle.parent / f"link-{tmp_path.name}").symlink_to(outside)  # resolved: still outside
    r = client.post("/v1/admin/reload", json={"bundle": str(bundle.parent /
                                                            f"link-{tmp_path.name}")},
                    headers=auth())
    assert r.status_code == 400
    assert client.get("/v1/health").json()["model_version"].startswith("ease-")
    with _client(bundle, tmp_path, bundle_root=tmp_path) as c:  # a configured root
        r = c.post("/v1/admin/reload", json={"bundle": str(outside)}, headers=auth())
        assert r.status_code == 200 and r.json()["model_version"].startswith("itemknn-")


def test_a_broken_bundle_is_a_generic_400(client: TestClient, bundle: Path,
                                          tmp_path: Path) -> None:
    broken = planted_bundle(bundle.parent / f"broken-{tmp_path.name}", "itemknn")
    data = (broken / "histories.npz").read_bytes()
    (broken / "histories.npz").write_bytes(data[: len(data) // 2])  # half written
    r = client.post("/v1/admin/reload", json={"bundle": str(broken)}, headers=auth())
    assert r.status_code == 400 and r.json() == {"detail": f"{LOAD_FAILED}: histories.npz: "
                                                 "damaged or replaced: its sha256 does not "
                                                 "match the one recorded in bundle.json"}
    assert 'lmrec_model_reloads_total{outcome="failed"} 1.0' in client.get("/v1/metrics").text
    assert client.get("/v1/users/a0/recommendations").status_code == 200  # still serving


def test_ids_with_a_slash_are_refused(client: TestClient) -> None:
    for field in ("user", "item"):
        event = {"user": "u", "item": "A1", field: "x/y"}
        r = client.post("/v1/events", json={"events": [event]}, headers=auth())
        assert r.status_code == 422
        [error] = r.json()["detail"]
        assert error["loc"] == ["body", "events", 0, field]
        assert error["msg"].startswith(f"Value error, {field}: ") and "'/'" in error["msg"]
    r = client.post("/v1/recommendations", json={"history": ["A1", "A/2"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "history", 1]
    # the same ids without a slash go through
    assert client.post("/v1/events", json={"events": [{"user": "x.y", "item": "A1"}]},
                       headers=auth()).status_code == 200


def test_cors_is_off_unless_configured(client: TestClient, bundle: Path, tmp_path: Path
                                       ) -> None:
    origin = {"Origin": "https://shop.example"}
    r = client.get("/v1/health", headers=origin)
    assert "access-control-allow-origin" not in r.headers
    with _client(bundle, tmp_path, cors_origins=("https://shop.example",)) as c:
        r = c.get("/v1/health", headers=origin)
        assert r.headers["access-control-allow-origin"] == "https://shop.example"
        r = c.get("/v1/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_metrics_count_requests_and_events(client: TestClient) -> None:
    client.post("/v1/events", json={"events": [{"user": "m", "item": "A1"}] * 3},
                headers=auth())
    client.get("/v1/users/nobody/recommendations")
    client.get("/v1/users/somebody/recommendations")
    text = client.get("/v1/metrics").text
    assert "lmrec_events_ingested_total 3.0" in text
    assert ('lmrec_http_requests_total{method="GET",route="/v1/users/{user}/recommendations",'
            'status="200"} 2.0') in text
    assert "nobody" not in text and "somebody" not in text  # route templates, never raw ids
    assert 'lmrec_http_request_duration_seconds_bucket{le="0.001",method="GET"' in text
    version = client.get("/v1/health").json()["model_version"]
    assert f'lmrec_model_info{{model="ease",model_version="{version}"}} 1.0' in text


def test_metric_labels_stay_bounded(client: TestClient) -> None:
    for n in range(5):
        client.request(f"BREW{n}", "/v1/health")  # servers accept any token as a method
        client.get(f"/v1/no-such-{n}")
        client.get(f"/nothing/{n}")
    text = client.get("/v1/metrics").text
    assert "BREW" not in text and "no-such" not in text and "/nothing" not in text
    assert ('lmrec_http_requests_total{method="OTHER",route="/v1/health",status="405"} 5.0'
            in text)
    assert ('lmrec_http_requests_total{method="GET",route="unmatched",status="404"} 10.0'
            in text)


def test_model_info_follows_a_background_swap(client: TestClient, bundle: Path,
                                              tmp_path: Path) -> None:
    other = planted_bundle(tmp_path / "knn", "itemknn")
    service = client.app.state.service  # type: ignore[attr-defined]
    service.reload(other, publish=False)  # what following another worker does, off any route
    text = client.get("/v1/metrics").text
    version = service.engine.model_version
    assert f'lmrec_model_info{{model="itemknn",model_version="{version}"}} 1.0' in text
    assert 'model="ease"' not in text  # one series: the bundle served now


def test_openapi_documents_the_api(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in ("/v1/users/{user}/recommendations", "/v1/recommendations",
                 "/v1/items/{item}/similar", "/v1/events", "/v1/users/{user}",
                 "/v1/admin/reload", "/v1/health", "/v1/ready", "/v1/metrics"):
        assert path in paths, path
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


# --- `lmrec serve`: the settings the CLI hands to uvicorn ---------------------------------------
@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, dict[str, Any]]]]:
    """What `lmrec serve` passes to uvicorn.run (nothing listens)."""
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setenv(APP_ENV, "")  # restored afterwards: `serve` sets it for its workers
    monkeypatch.delenv(STORE_ENV, raising=False)
    yield calls
    for app, _ in calls:
        if not isinstance(app, str):
            app.state.service.close()


def test_serve_syncs_bundles_whenever_the_store_is_shared(
        served: list[tuple[Any, dict[str, Any]]], bundle: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # separate single-worker servers on one store must follow each other's reloads
    db = f"sqlite:///{tmp_path / 'events.db'}"
    for store, synced in ((db, True), ("sqlite:///:memory:", False)):
        assert run(["serve", str(bundle), "--store", store], capsys)[0] == 0
        app = served[-1][0]
        assert app.state.settings.sync_workers is synced
        assert (app.state.service.sync is not None) is synced
        assert app.state.settings.bundle_root is None


def test_serve_reads_the_store_url_from_the_environment(
        served: list[tuple[Any, dict[str, Any]]], bundle: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["serve", "--help"], capsys)
    assert code == 0 and STORE_ENV in out
    monkeypatch.setenv(STORE_ENV, f"sqlite:///{tmp_path / 'from-env.db'}")
    assert run(["serve", str(bundle), "--bundle-root", str(tmp_path)], capsys)[0] == 0
    app = served[-1][0]
    assert (tmp_path / "from-env.db").exists()
    assert app.state.settings.bundle_root == tmp_path.resolve()
    # with workers, the URL is not copied into the settings the workers read
    assert run(["serve", str(bundle), "--workers", "2"], capsys)[0] == 0
    assert served[-1][0] == "lmrec.serve.app:app_from_env"
    assert json.loads(os.environ[APP_ENV])["store"] is None
    assert "from-env.db" not in os.environ[APP_ENV]
    worker = app_from_env()  # what each worker builds: the store from $LMREC_STORE_URL
    try:
        assert worker.state.service.sync is not None
    finally:
        worker.state.service.close()
