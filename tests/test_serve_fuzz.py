"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis): no
generated request, valid or not, may get a 5xx answer, and 2xx answers must match the
documented response schemas. Runs in process against the ASGI app, with a write/admin key so
that the protected endpoints are exercised past the key check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from helpers_serve import API_KEY, auth, planted_bundle
from lmrec.serve.app import ServeSettings, create_app
from lmrec.serve.security import KeyRing

MAX_EXAMPLES = 20  # per operation; 18 operations keep the whole run around a minute


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("fuzz")
    bundle = planted_bundle(folder / "ease")
    keys = KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]})
    app = create_app(bundle, f"sqlite:///{folder / 'events.db'}",
                     ServeSettings(max_batch=100), keys=keys)
    yield app
    app.state.service.close()


def _operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_server_errors(app: Any) -> None:
    # the key the fuzzer sends gets past the key checks, so the protected endpoints are
    # exercised for real (a client without a lifespan: the fuzzer's own manages it)
    r = TestClient(app).post("/v1/events", json={"events": [{"user": "f", "item": "A1"}]},
                             headers=auth())
    assert r.status_code == 200
    operations = _operations(app)
    assert len(operations) == 18
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=auth(), checks=[not_a_server_error,
                                                           response_schema_conformance])

        fuzz()
