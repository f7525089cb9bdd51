"""Serving `hstu` a fresh history (issue 15, point 5; benchmarks/serve_load.py --scenario hstu):
a visitor's history in the body and a trained user's history extended by a live event are
scored over HTTP as the bundle's model scores them in process, whatever their length against
`max_len` (shorter, longer, repeated items, ids past the few-id lookup)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from helpers_serve import API_KEY, planted_bundle
from lmrec.data.dataset import Sequences
from lmrec.serve.app import ServeSettings, create_app
from lmrec.serve.bundle import Bundle, load_bundle
from lmrec.serve.security import KeyRing

MAX_LEN = 8
PARAMS: dict[str, Any] = {"hidden": 16, "heads": 2, "layers": 2, "epochs": 3, "batch_size": 16,
                          "max_len": MAX_LEN, "progress": False}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_bundle(tmp_path_factory.mktemp("hstu") / "hstu", "hstu", PARAMS)


@pytest.fixture(scope="module")
def loaded(bundle: Path) -> Bundle:
    return load_bundle(bundle)


@pytest.fixture
def client(bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    keys = KeyRing.from_keys({"write": [API_KEY]})
    app = create_app(bundle, f"sqlite:///{tmp_path / 'events.db'}", ServeSettings(), keys=keys)
    with TestClient(app) as c:
        yield c


def expected(loaded: Bundle, user: int, items: list[int], k: int,
             times: list[int] | None = None) -> list[str]:
    """The top k of the model's own scores of `items` (internal, oldest first; `times` their
    timestamps, unknown when None) for `user`, the history's items left out, ties to the
    smaller index (the engine's order)."""
    n = len(items)
    hist = Sequences(np.array([0, n]), np.array(items, dtype=np.int32), np.zeros(n, np.int32),
                     np.array(times or [-1] * n, dtype=np.int64), ())
    scores = loaded.model.score(np.array([user]), hist)[0].astype(np.float64)
    scores[np.array(items)] = -np.inf
    order = np.lexsort((np.arange(scores.size), -scores))[:k]
    return [loaded.item_ids.to_python(int(i)) for i in order]


@pytest.mark.parametrize("length", [1, 5, MAX_LEN, 30])
def test_a_visitor_history_is_scored_as_the_model_scores_it(
        client: TestClient, loaded: Bundle, length: int) -> None:
    rng = np.random.default_rng(length)
    n_items = len(loaded.item_ids)
    items = rng.integers(0, n_items // 2, length).tolist()  # repeats when long
    body = {"history": [loaded.item_ids.to_python(i) for i in items], "k": 5}
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 200, r.text
    got = [it["item"] for it in r.json()["items"]]
    assert got == expected(loaded, -1, items, 5)


def test_a_live_event_rescores_the_users_whole_history(client: TestClient,
                                                        loaded: Bundle) -> None:
    user = 3
    uid = loaded.users.to_python(user)
    h = loaded.histories
    rows = slice(h.indptr[user], h.indptr[user + 1])
    trained, times = h.items[rows].astype(int).tolist(), h.timestamps[rows].tolist()
    before = client.get(f"/v1/users/{uid}/recommendations?k=5").json()["items"]
    new = next(i for i in range(len(loaded.item_ids)) if i not in trained)
    event = {"user": uid, "item": loaded.item_ids.to_python(new), "type": "view",
             "timestamp": 2_000_000_000}
    r = client.post("/v1/events", json={"events": [event]},
                    headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    after = [it["item"] for it in
             client.get(f"/v1/users/{uid}/recommendations?k=5").json()["items"]]
    # the live event's time is known: the time-gap bias reads it as the engine passes it
    assert after == expected(loaded, user, [*trained, new], 5, [*times, 2_000_000_000])
    assert after != [it["item"] for it in before]  # the fresh event was read
