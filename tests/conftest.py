"""Shared fixtures: the licensed public datasets (never copied into the repo), a seeded RNG, and
an empty event store of each kind (SQLite, PostgreSQL; modules may define their own), and
the sequential models' ring walks (`cycles`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers_serve import postgres_base_url, postgres_schema
from lmrec.data.dataset import Dataset
from lmrec.prepare import prepare
from lmrec.serve.store import EventStore, open_store

REPO = Path(__file__).resolve().parents[1]
SHARED_ENV = "LMREC_SHARED_DATASETS"


def shared_datasets_dir() -> Path:
    """`LMREC_SHARED_DATASETS`, else the `shared/datasets` folder beside the repository."""
    env = os.environ.get(SHARED_ENV)
    return Path(env).expanduser() if env else REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The folder of public datasets; the test is skipped (with the reason) when it is absent."""
    path = shared_datasets_dir()
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path} (set ${SHARED_ENV})")
    return path


@pytest.fixture(scope="session", autouse=True)
def _embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Text vectors go to a per-run folder, never into the user's ~/.cache."""
    os.environ.setdefault("LMREC_CACHE_DIR", str(tmp_path_factory.mktemp("embeddings")))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


# --- event stores (test_store.py, test_store_impressions.py) ------------------------------
@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL server, or a skip that says why."""
    return postgres_base_url()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store location of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"  # an absolute path: sqlite:////tmp/...
        return
    with postgres_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture(scope="module")
def cycles() -> Dataset:  # the sequential models' known-answer data
    """Users walk a ring of 8 items (i -> i + 1 mod 8) from random starts, 6 steps each."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        start = int(rng.integers(8))
        rows += [(f"u{u}", f"i{(start + t) % 8}", 1000 * t) for t in range(6)]
    events = pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")
    return prepare(events, name="cycles").dataset
