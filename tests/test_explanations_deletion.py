"""The deletion test of every registered model: its explanation is faithful when removing the
top-attributed history items lowers the explained item's score more than removing as many
random ones (`lmrec.models.explanations.deletion_test`), averaged over users.

Data: a generated shop (200 users, 150 items, views / carts / purchases with categories,
brands, prices and titles), whose histories are long enough (36 events per user on average)
that m = 3 of them are a small part. Models use the tiny settings of the contract tests
(tests/test_models_contract.py); the sequential models get windows of 20 and, for GRU4Rec, a
network large enough to learn anything here (at embedding 4 / hidden 8 it scores every user
alike, and nothing about a history can then be faithful or not).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lmrec.data.dataset import Dataset
from lmrec.datasets.shop import shop_dataset
from lmrec.models import MODELS, create_model
from lmrec.models.explanations import deletion_test
from lmrec.train.options import TrainingOptions
from test_models_contract import TINY_PARAMS

M, DRAWS, USERS = 3, 5, 60
METHODS = {"ease": "linear", "slim": "linear", "admm-slim": "linear", "itemknn": "linear",
           "als": "als-decomposition", "userknn": "neighbours", "sasrec": "gradient x input",
           "gru4rec": "gradient x input", "two-tower": "gradient x input",
           "popularity": "non-personal"}  # any other model: "occlusion"
SEQUENTIAL = {"sasrec": {"batch_size": 32, "max_len": 20},
              "hstu": {"batch_size": 32, "max_len": 20},
              "gru4rec": {"batch_size": 32, "max_len": 20, "embedding": 16, "hidden": 32}}


def deletion_params(name: str) -> dict[str, Any]:
    """The settings each model is fitted with here (and in benchmarks/explain_deletion.py)."""
    return {**TINY_PARAMS.get(name, {}), **SEQUENTIAL.get(name, {})}


@pytest.fixture(scope="module")
def shop() -> Dataset:
    return shop_dataset(200, 150, seed=0).dataset


@pytest.mark.parametrize("name", sorted(MODELS))
def test_removing_the_top_attributed_items_lowers_the_score_most(name: str, shop: Dataset
                                                                ) -> None:
    model = create_model(name, deletion_params(name)).fit(shop, TrainingOptions(rng=0))
    users = np.arange(USERS)
    d = deletion_test(model, users, shop.sequences().take(users), m=M, draws=DRAWS, seed=0)
    assert d.users >= 25, d  # users with at least 2m distinct history items
    assert d.method == METHODS.get(name, "occlusion"), d
    if d.method == "non-personal":  # nothing attributed, and no removal moves the score
        assert d.top == 0.0 and d.random == 0.0, d
        return
    assert d.top > 0 and d.top > 1.5 * d.random, d
    assert d.wins >= 0.75, d  # and per user, mostly
