"""Shared fixtures: the licensed public datasets (never copied into the repo) and a seeded RNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

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
