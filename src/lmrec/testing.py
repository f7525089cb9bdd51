"""Contract checks for Recommender implementations, shipped for use in your own tests.

Every check takes a *factory*, a zero-argument callable that returns a fresh, unfitted model
(e.g. `lambda: ItemKNN(k=20)`), and raises AssertionError with a readable message on failure.
Use them one by one, all at once with `check_recommender`, or through the pytest mixin:

    from lmrec.testing import RecommenderContract

    class TestMyModel(RecommenderContract):
        def make_model(self):
            return MyModel(factors=8)

The checks run on tiny planted datasets (`planted_dataset`): two user groups with disjoint
item groups, where the larger group B also makes its items the most popular. A personalised
model must recommend a group-A user the unseen group-A items before any group-B item, which
popularity alone gets wrong.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from lmrec.data.dataset import Dataset, Sequences
from lmrec.errors import InputError, UnknownUserError
from lmrec.models.base import Recommender
from lmrec.models.io import load_model
from lmrec.models.ranking import top_k
from lmrec.prepare import PrepareConfig, prepare
from lmrec.train.options import TrainingOptions

ModelFactory = Callable[[], Recommender]

__all__ = [
    "ModelFactory",
    "RecommenderContract",
    "check_deterministic",
    "check_excludes_seen",
    "check_fit_returns_self",
    "check_histories",
    "check_learns_planted_groups",
    "check_ranks_by_popularity",
    "check_recommend_history",
    "check_recommender",
    "check_redacted_user_is_unknown",
    "check_refit_from_scratch",
    "check_save_load",
    "check_similar_items",
    "check_unknown_user_fallback",
    "planted_dataset",
]

UNKNOWN_USER = "no-such-user"


@functools.lru_cache(maxsize=16)  # Datasets are immutable; the checks reuse a few
def planted_dataset(
    users_a: int = 12,
    users_b: int = 24,
    items_per_group: int = 12,
    seen_per_user: int = 6,
    seed: int = 0,
) -> Dataset:
    """A two-group dataset with a known answer.

    Users "a0".., "b0".. and items "A0".., "B0".. (string ids). Each user interacted with
    `seen_per_user` items of their own group only, along a shuffled circulant pattern, so every
    item is seen and every user has unseen items of their own group. Group B has more users,
    so its items are the most popular overall (with the defaults every A item has 6 users and
    every B item 12). Items carry a multi-valued `genres` column
    ("alpha"/"beta" plus a shared label) and a `title` text column ("alpha story 3").
    """
    if not 0 < seen_per_user < items_per_group:
        raise ValueError("seen_per_user must be between 1 and items_per_group - 1")
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str]] = []
    for group, n_users in (("a", users_a), ("b", users_b)):
        perm = rng.permutation(items_per_group)  # hides the circulant order
        for u in range(n_users):
            for t in range(seen_per_user):
                item = perm[(u + t) % items_per_group]
                rows.append((f"{group}{u}", f"{group.upper()}{item}"))
    events = pl.DataFrame(rows, schema=["user", "item"], orient="row")
    words = {"A": "alpha", "B": "beta"}
    items = pl.DataFrame({
        "item": [f"{g}{i}" for g in "AB" for i in range(items_per_group)],
        "genres": [[words[g], "film"] for g in "AB" for _ in range(items_per_group)],
        "title": [f"{words[g]} story {i}" for g in "AB" for i in range(items_per_group)],
    })
    return prepare(events, items=items, config=PrepareConfig(
        item_roles={"genres": "multi", "title": "text"}), name=f"planted-{seed}").dataset


def _all_scores(model: Recommender) -> np.ndarray:
    return model.score(np.arange(len(model.users_)))


def _assert_same_scores(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise AssertionError(f"{what}: score shapes differ, {a.shape} vs {b.shape}")
    if not np.array_equal(a, b):
        diff = np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)))
        raise AssertionError(f"{what}: scores differ (max abs difference {diff:.3g})")


# --- individual checks -------------------------------------------------------------------
def check_fit_returns_self(factory: ModelFactory, dataset: Dataset | None = None) -> None:
    """fit returns the model itself; scores are finite float32 (n_users, n_items)."""
    ds = dataset or planted_dataset()
    model = factory()
    out = model.fit(ds, TrainingOptions(rng=0))
    assert out is model, f"{type(model).__name__}.fit must return self, got {out!r}"
    s = _all_scores(model)
    assert s.shape == (ds.n_users, ds.n_items), f"score shape {s.shape}"
    assert s.dtype == np.float32, f"score dtype {s.dtype}, expected float32"
    assert np.isfinite(s).all(), "scores must be finite"


def check_refit_from_scratch(factory: ModelFactory, first: Dataset | None = None,
                             second: Dataset | None = None) -> None:
    """Fitting on A and then on B gives exactly what fitting on B alone gives."""
    a = first or planted_dataset(users_a=7, users_b=9, items_per_group=9, seed=11)
    b = second or planted_dataset(seed=12)
    twice = factory().fit(a, TrainingOptions(rng=5)).fit(b, TrainingOptions(rng=6))
    once = factory().fit(b, TrainingOptions(rng=6))
    assert twice.n_items == b.n_items, "the second fit kept the first dataset's items"
    _assert_same_scores(_all_scores(twice), _all_scores(once), "fit(A) then fit(B) vs fit(B)")
    users = b.users.ids.to_list()
    r1, r2 = twice.recommend(users, 5), once.recommend(users, 5)
    assert np.array_equal(r1.item_idx, r2.item_idx), "recommendations differ after a refit"


def check_save_load(factory: ModelFactory, folder: str | Path,
                    dataset: Dataset | None = None) -> None:
    """save then load (through both the class and `load_model`) changes no score."""
    ds = dataset or planted_dataset()
    model = factory().fit(ds, TrainingOptions(rng=0))
    path = model.save(Path(folder) / f"saved-{model.name}")
    before = _all_scores(model)
    for loader in (type(model).load, load_model):
        loaded = loader(path)
        assert type(loaded) is type(model), f"loaded a {type(loaded).__name__}"
        assert loaded.config == model.config, "config changed by save/load"
        _assert_same_scores(before, _all_scores(loaded), f"save/load via {loader.__qualname__}")
        users = [*ds.users.ids.to_list(), UNKNOWN_USER]
        r1, r2 = model.recommend(users, 7), loaded.recommend(users, 7)
        assert np.array_equal(r1.item_idx, r2.item_idx), "recommendations changed by save/load"
        assert np.array_equal(r1.scores, r2.scores), "recommendation scores changed"


def check_excludes_seen(factory: ModelFactory, dataset: Dataset | None = None) -> None:
    """Recommendations never contain seen items; asking for every item returns all unseen."""
    ds = dataset or planted_dataset()
    model = factory().fit(ds, TrainingOptions(rng=0))
    seen = ds.matrix("binary").tocsr()
    recs = model.recommend(ds.users.ids.to_list(), ds.n_items)
    for u in range(ds.n_users):
        got = recs.item_idx[u][recs.item_idx[u] >= 0]
        own = set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())
        assert not own & set(got.tolist()), f"user {u}: seen items recommended"
        assert len(got) == ds.n_items - len(own), (
            f"user {u}: {len(got)} items recommended, {ds.n_items - len(own)} unseen")
        assert len(set(got.tolist())) == len(got), f"user {u}: an item recommended twice"


def check_deterministic(factory: ModelFactory, dataset: Dataset | None = None) -> None:
    """The same seed gives the same scores (int seed and an equal Generator alike)."""
    ds = dataset or planted_dataset()
    s1 = _all_scores(factory().fit(ds, TrainingOptions(rng=42)))
    s2 = _all_scores(factory().fit(ds, TrainingOptions(rng=42)))
    s3 = _all_scores(factory().fit(ds, TrainingOptions(rng=np.random.default_rng(42))))
    _assert_same_scores(s1, s2, "two fits with seed 42")
    _assert_same_scores(s1, s3, "seed 42 vs default_rng(42)")


def check_unknown_user_fallback(factory: ModelFactory, dataset: Dataset | None = None) -> None:
    """Unknown users get the most popular items with a note; strict mode raises."""
    ds = dataset or planted_dataset()
    model = factory().fit(ds, TrainingOptions(rng=0))
    known = ds.users.ids[0]
    recs = model.recommend([UNKNOWN_USER, known], 5)
    pop = np.asarray(ds.matrix("binary").sum(axis=0)).ravel().astype(np.float32)
    expected, _ = top_k(pop[None, :], 5)
    assert np.array_equal(recs.item_idx[0], expected[0]), "unknown user: not the most popular"
    assert UNKNOWN_USER in recs.notes and known not in recs.notes, "fallback note missing"
    alone = model.recommend([known], 5)
    assert np.array_equal(alone.item_idx[0], recs.item_idx[1]), "an unknown user changed others"
    try:
        model.recommend([UNKNOWN_USER], 5, strict=True)
    except UnknownUserError:
        pass
    else:
        raise AssertionError("strict=True must raise UnknownUserError for an unknown user")


def _group_of(vocab_ids: list[str]) -> np.ndarray:
    return np.array([str(i)[0].lower() for i in vocab_ids])


def check_learns_planted_groups(factory: ModelFactory, dataset: Dataset | None = None,
                                min_share: float = 1.0) -> None:
    """Each user's unseen own-group items rank before every other-group item.

    `min_share` is the share of users for whom this must hold exactly (1.0: all of them).
    """
    ds = dataset or planted_dataset()
    model = factory().fit(ds, TrainingOptions(rng=0))
    user_group = _group_of(ds.users.ids.to_list())
    item_group = _group_of(ds.items.ids.to_list())
    seen = ds.matrix("binary").tocsr()
    recs = model.recommend(ds.users.ids.to_list(), ds.n_items)
    ok = 0
    for u in range(ds.n_users):
        n_unseen_own = int((item_group == user_group[u]).sum()) - int(
            seen.indptr[u + 1] - seen.indptr[u])
        head = recs.item_idx[u][:n_unseen_own]
        ok += bool((item_group[head] == user_group[u]).all())
    share = ok / ds.n_users
    assert share >= min_share, (
        f"{type(model).__name__}: own-group items ranked first for {share:.0%} of users "
        f"(needed {min_share:.0%})")


def check_ranks_by_popularity(factory: ModelFactory, dataset: Dataset | None = None) -> None:
    """For a non-personalised model: every user's list is the unseen items by popularity."""
    ds = dataset or planted_dataset()
    model = factory().fit(ds, TrainingOptions(rng=0))
    pop = np.asarray(ds.matrix("binary").sum(axis=0)).ravel()
    recs = model.recommend(ds.users.ids.to_list(), 5)
    for u in range(ds.n_users):
        got = recs.item_idx[u][recs.item_idx[u] >= 0]
        assert (np.diff(pop[got]) <= 0).all(), f"user {u}: not in popularity order"


def check_histories(factory: ModelFactory, dataset: Dataset | None = None) -> None:
    """`score(users, histories)` takes any history: the right shape, finite, one row per
    history whatever the others are, and an unknown user (-1) without a history scores as the
    empty history."""
    ds = dataset or planted_dataset()
    model = factory().fit(ds, TrainingOptions(rng=0))
    seqs = ds.sequences()
    users = np.arange(min(4, ds.n_users))
    hist = seqs.take(users)
    s = model.score(users, hist)
    assert s.shape == (users.size, ds.n_items) and s.dtype == np.float32, f"shape {s.shape}"
    assert np.isfinite(s).all(), "history scores must be finite"
    alone = model.score(users[:1], seqs.take(users[:1]))
    np.testing.assert_allclose(alone[0], s[0], rtol=1e-5, atol=1e-5,
                               err_msg="a history's scores depend on the other rows")
    empty = model.score(np.array([-1]), Sequences.empty(1))
    np.testing.assert_allclose(model.score(np.array([-1])), empty, rtol=1e-6, atol=1e-6,
                               err_msg="an unknown user does not score as an empty history")
    try:
        model.score(users, seqs.take(users[:1]))
    except InputError:
        pass
    else:
        raise AssertionError("score must refuse a number of histories unlike that of users")


def check_redacted_user_is_unknown(factory: ModelFactory, folder: str | Path | None = None,
                                   dataset: Dataset | None = None) -> None:
    """After `redact_users([u])`, user u scores exactly like an unknown user (also after
    save/load), the other users' scores from the fitted state are unchanged where the model's
    per-user state is their own, and u has no seen items left."""
    ds = dataset or planted_dataset()
    model = factory().fit(ds, TrainingOptions(rng=0))
    u = 1
    unknown = model.score(np.array([-1]))
    model.redact_users([u])
    np.testing.assert_allclose(model.score(np.array([u])), unknown, rtol=1e-6, atol=1e-6,
                               err_msg=f"{type(model).__name__}: a redacted user does not "
                                       "score like an unknown user")
    assert model.seen_[u].nnz == 0, "the redacted user's seen items remain"
    if folder is not None:
        loaded = load_model(model.save(Path(folder) / f"redacted-{model.name}"))
        np.testing.assert_allclose(loaded.score(np.array([u])), unknown, rtol=1e-6, atol=1e-6,
                                   err_msg="the redaction did not survive save/load")


def check_recommend_history(factory: ModelFactory, dataset: Dataset | None = None) -> None:
    """`recommend_history(items, k)` ranks for a visitor: k items, none of the history's, and
    an unknown item id is refused with InputError naming it."""
    ds = dataset or planted_dataset()
    model = factory().fit(ds, TrainingOptions(rng=0))
    history = [ds.items.to_python(int(i)) for i in ds.sequences().of(0)]
    got = model.recommend_history(history, 5)
    assert len(got) == 5, f"{len(got)} items for k=5"
    assert not set(history) & {i for i, _ in got}, "history items recommended"
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True), "not in score order"
    try:
        model.recommend_history([*history, "no-such-item"], 5)
    except InputError as exc:
        assert "no-such-item" in str(exc), f"the error does not name the item: {exc}"
    else:
        raise AssertionError("an unknown item id in a history must raise InputError")


def check_similar_items(factory: ModelFactory, dataset: Dataset | None = None) -> None:
    """`similar_items(items, k)`: k neighbours per item, never the item itself, best first."""
    ds = dataset or planted_dataset()
    model = factory().fit(ds, TrainingOptions(rng=0))
    items = np.array([0, ds.n_items - 1])
    idx, sims = model.similar_items(items, 4)
    assert idx.shape == (2, 4) and sims.shape == (2, 4), f"shape {idx.shape}"
    assert not (idx == items[:, None]).any(), "an item is its own neighbour"
    assert (np.diff(sims, axis=1) <= 1e-6).all(), "neighbours not best first"


def check_recommender(factory: ModelFactory, folder: str | Path, *,
                      personalised: bool = True) -> None:
    """Every check above; `folder` is a scratch folder for save/load."""
    check_fit_returns_self(factory)
    check_refit_from_scratch(factory)
    check_save_load(factory, folder)
    check_excludes_seen(factory)
    check_deterministic(factory)
    check_unknown_user_fallback(factory)
    check_histories(factory)
    check_redacted_user_is_unknown(factory, folder)
    check_recommend_history(factory)
    check_similar_items(factory)
    if personalised:
        check_learns_planted_groups(factory)
    else:
        check_ranks_by_popularity(factory)


class RecommenderContract:
    """pytest mixin: subclass as `TestSomething(RecommenderContract)` and define `make_model`."""

    personalised: ClassVar[bool] = True

    def make_model(self) -> Recommender:
        raise NotImplementedError("return a fresh, unfitted model")

    def test_fit_returns_self(self) -> None:
        check_fit_returns_self(self.make_model)

    def test_refit_from_scratch(self) -> None:
        check_refit_from_scratch(self.make_model)

    def test_save_load(self, tmp_path: Path) -> None:
        check_save_load(self.make_model, tmp_path)

    def test_excludes_seen(self) -> None:
        check_excludes_seen(self.make_model)

    def test_deterministic(self) -> None:
        check_deterministic(self.make_model)

    def test_unknown_user_fallback(self) -> None:
        check_unknown_user_fallback(self.make_model)

    def test_histories(self) -> None:
        check_histories(self.make_model)

    def test_redacted_user_is_unknown(self, tmp_path: Path) -> None:
        check_redacted_user_is_unknown(self.make_model, tmp_path)

    def test_recommend_history(self) -> None:
        check_recommend_history(self.make_model)

    def test_similar_items(self) -> None:
        check_similar_items(self.make_model)

    def test_known_answer(self) -> None:
        if self.personalised:
            check_learns_planted_groups(self.make_model)
        else:
            check_ranks_by_popularity(self.make_model)
