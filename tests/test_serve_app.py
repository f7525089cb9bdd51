"""The HTTP layer in process (starlette's test client): keys, limits, validation, errors,
CORS, metrics. The same app over a real socket is tested in test_serve_http.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers_serve import API_KEY, READ_KEY, auth, planted_bundle
from lmrec.serve.app import ServeSettings, create_app
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
    assert set(doc) == {"user", "items", "model_version"} and doc["user"] == "a0"
    assert len(doc["items"]) == 3 and all(set(it) == {"item", "score"} for it in doc["items"])
    ev = {"events": [{"user": "u1", "item": "A1", "type": "view", "timestamp": 1.7e9}]}
    assert client.post("/v1/events", json=ev).status_code == 401
    r = client.post("/v1/events", json=ev, headers=auth())
    assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 0}


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
        {"events": [{"user": "u", "item": "A1", "type": "a b"}]},
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
        "accepted": 2, "duplicates": 0}
    assert client.post("/v1/events", json=batch, headers=auth()).json() == {
        "accepted": 0, "duplicates": 2}
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


def test_reload_errors_and_success(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/v1/admin/reload", json={"bundle": str(tmp_path / "nothing")},
                    headers=auth())
    assert r.status_code == 400 and "not a model bundle" in r.json()["detail"]
    other = planted_bundle(tmp_path / "knn", "itemknn")
    before = client.get("/v1/health").json()["model_version"]
    r = client.post("/v1/admin/reload", json={"bundle": str(other)}, headers=auth())
    assert r.status_code == 200 and r.json()["previous_version"] == before
    assert r.json()["model_version"].startswith("itemknn-")
    assert client.get("/v1/users/a0/recommendations").json()["model_version"].startswith(
        "itemknn-")
    assert 'lmrec_model_info{model="itemknn"' in client.get("/v1/metrics").text
    r = client.post("/v1/admin/reload", headers=auth())  # no body: the current folder again
    assert r.status_code == 200 and r.json()["model_version"] == r.json()["previous_version"]


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


def test_openapi_documents_the_api(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in ("/v1/users/{user}/recommendations", "/v1/recommendations",
                 "/v1/items/{item}/similar", "/v1/events", "/v1/users/{user}",
                 "/v1/admin/reload", "/v1/health", "/v1/ready", "/v1/metrics"):
        assert path in paths, path
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200
