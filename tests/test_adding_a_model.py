"""A model defined here, with fit state and `_score` and nothing else, works everywhere.

This is the example of docs/adding-a-model.md: "items seen together". It is registered by
name, passes the shared contract, is evaluated under both history policies, is saved in a
bundle and served over HTTP (recommendations, live events, visitors, explanations, similar
items), and a training user is erased from it, without any change to another file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from helpers_serve import API_KEY, auth
from lmrec import testing as T
from lmrec.data.dataset import Dataset, Sequences
from lmrec.evaluate import evaluate, split_random
from lmrec.models import Recommender, load_model, register_model, unregister_model
from lmrec.serve.app import create_app
from lmrec.serve.bundle import write_bundle
from lmrec.serve.security import KeyRing
from lmrec.train import TrainingOptions


class SeenTogether(Recommender):
    """Score item j by how often j was seen together with the history's items."""

    name = "seen-together"

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        x = dataset.matrix("binary").tocsr()  # (n_users, n_items)
        together = (x.T @ x).toarray().astype(np.float32)  # (n_items, n_items) co-counts
        np.fill_diagonal(together, 0)
        self.together_ = together

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        # the training rows, or the rows of the given histories: (B, n_items)
        rows = self.seen_[users] if histories is None else self._history_rows(histories,
                                                                              "binary")
        return np.asarray(rows @ self.together_)  # (B, n_items)


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    register_model(SeenTogether)
    yield
    unregister_model(SeenTogether.name)


def test_it_meets_the_whole_contract(tmp_path: Path) -> None:
    T.check_recommender(SeenTogether, tmp_path)


def test_it_is_evaluated_under_either_history_policy() -> None:
    ds = T.planted_dataset()
    split = split_random(ds, seed=0)
    model = SeenTogether().fit(split.train, TrainingOptions(rng=0, valid=split.valid))
    for history in ("trained", "observed"):
        got = evaluate(model, split, [5], history=history).metrics
        # each user's held-out items are unseen items of their own group, which the model
        # ranks before every other group's items: most of them are in the top 5
        assert got["recall@5"] > 0.5, (history, got)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    ds = T.planted_dataset()
    bundle = write_bundle(SeenTogether().fit(ds, TrainingOptions(rng=0)), ds, tmp_path / "b")
    keys = KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]})
    with TestClient(create_app(bundle, f"sqlite:///{tmp_path / 'events.db'}",
                               keys=keys)) as c:
        yield c


def _items(doc: dict) -> list[str]:
    return [it["item"] for it in doc["items"]]


def test_it_is_served_explained_and_erased_over_http(client: TestClient) -> None:
    # a training user of group A gets group-A items, each explained by a history item
    doc = client.get("/v1/users/a0/recommendations", params={"k": 3, "explain": "true"}).json()
    assert all(i.startswith("A") for i in _items(doc)), doc
    assert all(str(it["because"]).startswith("A") for it in doc["items"]), doc
    # a new user's live event is scored at once, without retraining
    r = client.post("/v1/events", json={"events": [{"user": "new", "item": "B3"}]},
                    headers=auth())
    assert r.status_code == 200
    new = client.get("/v1/users/new/recommendations", params={"k": 4}).json()
    assert all(i.startswith("B") for i in _items(new)) and "B3" not in _items(new), new
    visitor = client.post("/v1/recommendations", json={"history": ["A1"], "k": 3}).json()
    assert all(i.startswith("A") for i in _items(visitor)), visitor
    similar = client.get("/v1/items/A1/similar", params={"k": 3}).json()
    assert all(i.startswith("A") and i != "A1" for i in _items(similar)), similar
    # erasure: the user's events go and the served model forgets them
    r = client.delete("/v1/users/a0", headers=auth())
    assert r.status_code == 200 and r.json()["redacted_from_model"] is True, r.json()
    after = client.get("/v1/users/a0/recommendations", params={"k": 3}).json()
    stranger = client.get("/v1/users/nobody/recommendations", params={"k": 3}).json()
    assert _items(after) == _items(stranger)


def test_a_redacted_bundle_reloads_as_the_new_class(tmp_path: Path) -> None:
    ds = T.planted_dataset()
    model = SeenTogether().fit(ds, TrainingOptions(rng=0))
    model.redact_users([0])
    loaded = load_model(model.save(tmp_path / "m"))
    assert isinstance(loaded, SeenTogether)
    np.testing.assert_array_equal(loaded.score(np.array([0])), model.score(np.array([-1])))
