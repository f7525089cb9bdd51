"""The Recommender contract (lmrec.testing) applied to every registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lmrec import testing as T
from lmrec.errors import ConfigError
from lmrec.models import MODELS, ItemKNN, ModelConfig, Recommender, create_model, model_class

# Hyperparameters for the tiny planted datasets (24 items, about 6 events per user). The
# defaults are tuned for MovieLens-sized data: ALS's reg 30 would shrink every factor to the
# popularity direction on 6-event users, and BPR's batch of 2048 would make one step per
# epoch on 216 events. These passed the planted check for 8 of 8 seeds.
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "als": {"reg": 5.0, "factors": 8},
    "bpr": {"epochs": 20, "factors": 8, "batch_size": 64, "lr": 0.02, "reg": 0.05},
    # NeuMF memorises 216 events under BCE: a pairwise loss with weight decay generalises
    "neumf": {"epochs": 30, "batch_size": 64, "lr": 0.02, "factors": 8, "mlp_factors": 8,
              "layers": (16,), "init_std": 0.1, "loss": "bpr", "weight_decay": 0.005,
              "dropout": 0.1, "progress": False},
    "two-tower": {"epochs": 20, "batch_size": 32, "lr": 0.01, "dim": 16, "id_dim": 16,
                  "feature_dim": 4, "layers": (32,), "temperature": 0.5, "progress": False},
    # next-item models (tiny nets, gBCE with 8 negatives of 24 items)
    "gru4rec": {"embedding": 4, "hidden": 8, "epochs": 20, "batch_size": 8, "lr": 0.01,
                "dropout": 0.0, "loss": "gbce", "negatives": 8, "max_len": 8,
                "progress": False},
    "content-text": {"progress": False},
    # one step per epoch at the default batch on 36 users: small batches, few epochs
    "multvae": {"hidden": (16,), "latent": 8, "epochs": 40, "batch_size": 8, "lr": 1e-2,
                "total_anneal_steps": 100, "progress": False},
    "recvae": {"hidden": 16, "latent": 8, "depth": 2, "epochs": 12, "batch_size": 8, "lr": 1e-2,
               "progress": False},
    # weights searched on a holdout of the training pairs (no validation part in the checks)
    "blend": {"members": ("itemknn", "popularity")},
    "sasrec": {"hidden": 8, "heads": 1, "inner": 8, "layers": 1, "epochs": 20, "batch_size": 8,
               "lr": 0.01, "dropout": 0.0, "loss": "gbce", "negatives": 8, "max_len": 8,
               "progress": False},
    "hstu": {"hidden": 8, "heads": 1, "layers": 1, "epochs": 20, "batch_size": 8, "lr": 0.01,
             "dropout": 0.0, "loss": "gbce", "negatives": 8, "max_len": 8, "progress": False},
}
# Next-item models learn the planted data's circulant order (each user's exact next item),
# not its two groups: they rank the group-A users' unseen A items below the more popular B
# items. tests/test_sequential.py checks their known answer (planted cycles) instead.
PLANTED_MIN_SHARE = {"gru4rec": 0.5, "sasrec": 0.5, "hstu": 0.5}
NON_PERSONALISED = {"popularity"}
NAMES = sorted(MODELS)


def factory(name: str) -> T.ModelFactory:
    return lambda: create_model(name, TINY_PARAMS.get(name))


def test_registry_lists_every_model() -> None:
    assert set(MODELS) == {"popularity", "content", "itemknn", "userknn", "als", "bpr", "ease",
                           "slim", "admm-slim", "neumf", "two-tower", "gru4rec", "sasrec",
                           "hstu", "content-text", "blend", "multvae", "recvae"}
    for name, klass in MODELS.items():
        assert klass.name == name
        assert issubclass(klass, Recommender)
        assert issubclass(klass.Config, ModelConfig)
        assert model_class(name) is klass
        assert isinstance(create_model(name), klass)


def test_unknown_model_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        model_class("nope")


@pytest.mark.parametrize("name", NAMES)
def test_default_config_round_trips(name: str) -> None:
    klass = MODELS[name]
    cfg = klass.Config()
    assert klass.Config.from_params(cfg.model_dump(mode="json")) == cfg
    with pytest.raises(ConfigError, match="unknown parameter 'no_such_param'"):
        klass.Config.from_params({"no_such_param": 1})


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self(name: str) -> None:
    T.check_fit_returns_self(factory(name))


@pytest.mark.parametrize("name", NAMES)
def test_refit_from_scratch(name: str) -> None:
    T.check_refit_from_scratch(factory(name))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_changes_no_score(name: str, tmp_path: Path) -> None:
    T.check_save_load(factory(name), tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_recommend_excludes_seen(name: str) -> None:
    T.check_excludes_seen(factory(name))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_with_seed(name: str) -> None:
    T.check_deterministic(factory(name))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_user_gets_popularity(name: str) -> None:
    T.check_unknown_user_fallback(factory(name))


@pytest.mark.parametrize("name", NAMES)
def test_scores_any_history(name: str) -> None:
    T.check_histories(factory(name))


@pytest.mark.parametrize("name", NAMES)
def test_redacted_user_scores_like_an_unknown_one(name: str, tmp_path: Path) -> None:
    T.check_redacted_user_is_unknown(factory(name), tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_recommend_history(name: str) -> None:
    T.check_recommend_history(factory(name))


@pytest.mark.parametrize("name", NAMES)
def test_similar_items(name: str) -> None:
    T.check_similar_items(factory(name))


@pytest.mark.parametrize("name", NAMES)
def test_learns_known_answer(name: str) -> None:
    if name in NON_PERSONALISED:
        T.check_ranks_by_popularity(factory(name))
    else:
        T.check_learns_planted_groups(factory(name),
                                      min_share=PLANTED_MIN_SHARE.get(name, 1.0))


def test_planted_dataset_is_what_it_says() -> None:
    ds = T.planted_dataset()
    assert (ds.n_users, ds.n_items, ds.n_events) == (36, 24, 36 * 6)
    pop = ds.item_popularity()
    # group B (24 users) makes every B item more popular than every A item (12 users)
    b_items = [i for i, v in enumerate(ds.items.ids.to_list()) if v.startswith("B")]
    a_items = [i for i in range(ds.n_items) if i not in b_items]
    assert pop[b_items].min() > pop[a_items].max()
    assert set(ds.item_schema) == {"genres", "title"}


def test_the_checks_catch_a_broken_model() -> None:
    """A model whose refit keeps old state, and one that ignores its seed, are caught."""

    class Sticky(ItemKNN):
        def _fit(self, dataset: Any, options: Any) -> None:
            if not hasattr(self, "S_"):
                super()._fit(dataset, options)

    with pytest.raises((AssertionError, ValueError)):  # stale shapes may not even multiply
        T.check_refit_from_scratch(Sticky)

    class Noisy(ItemKNN):
        def _score(self, users: Any, histories: Any) -> Any:
            import numpy as np

            return super()._score(users, histories) + np.random.default_rng().random(
                (users.size, self.n_items), dtype=np.float32)

    with pytest.raises(AssertionError):
        T.check_deterministic(Noisy)

    class Forgetful(ItemKNN):  # keeps a per-user copy that erasure does not know about
        def _fit(self, dataset: Any, options: Any) -> None:
            super()._fit(dataset, options)
            self.copy_ = self.seen_.copy()

        def _score(self, users: Any, histories: Any) -> Any:
            if histories is None:
                return (self.copy_[users] @ self.S_).toarray()
            return super()._score(users, histories)

    with pytest.raises(AssertionError, match="redacted user"):
        T.check_redacted_user_is_unknown(Forgetful)


class TestContractMixin(T.RecommenderContract):
    """The pytest mixin, as a user of lmrec.testing would write it."""

    def make_model(self) -> Recommender:
        return ItemKNN(k=20, shrink=1.0)


def test_register_model_guards_names() -> None:
    from lmrec.models import register_model, unregister_model

    class Other(ItemKNN):
        name = "ease"  # taken by a shipped model

    with pytest.raises(ConfigError, match="taken"):
        register_model(Other)
    for shipped in ("ease", "blend"):
        with pytest.raises(ConfigError, match="shipped"):
            unregister_model(shipped)
    assert register_model(MODELS["ease"]) is MODELS["ease"]  # the same class again: no-op
