"""Splits: sizes follow the ratios and RecBole's rounding, no leakage, determinism, errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from lmrec import columns as C
from lmrec.collect import ColumnMapping
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError, InputError
from lmrec.evaluate import (
    Split,
    make_splits,
    recbole_split_counts,
    split_from_pairs,
    split_kfold,
    split_loo,
    split_random,
    split_temporal,
)
from lmrec.prepare import PrepareConfig, prepare

MAPPING = ColumnMapping(time="t")


def make_dataset(rows: list[tuple[int, int, int]]) -> Dataset:
    """(user, item, time) rows -> a prepared Dataset (no filters)."""
    frame = pl.DataFrame(rows, schema={"user": pl.Int64, "item": pl.Int64, "t": pl.Int64},
                         orient="row")
    return prepare(frame, mapping=MAPPING, config=PrepareConfig()).dataset


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    """40 users with 1..24 distinct items each over 60 items, unique timestamps, and some
    repeated (user, item) events at a later time."""
    rng = np.random.default_rng(11)
    rows = []
    t = 1_000_000
    for u in range(40):
        n = 1 + (u * 7) % 24
        for i in rng.choice(60, size=n, replace=False):
            t += int(rng.integers(1, 100))
            rows.append((u, int(i), t))
    for u, i, _ in rows[::9]:  # repeats of some pairs, later
        t += 5
        rows.append((u, i, t))
    return make_dataset(rows)


def pair_set(ds: Dataset | None) -> set[tuple[int, int]]:
    if ds is None:
        return set()
    return set(ds.events.select(C.USER_IDX, C.ITEM_IDX).iter_rows())


def pairs_per_user(ds: Dataset) -> np.ndarray:
    pairs = ds.events.select(C.USER_IDX, C.ITEM_IDX).unique()
    return np.bincount(pairs[C.USER_IDX].to_numpy(), minlength=ds.n_users)


def assert_partition(split: Split, source: Dataset) -> None:
    """Parts are disjoint in (user, item) pairs and together hold every event."""
    parts = [split.train, split.valid, split.test]
    sets = [pair_set(p) for p in parts]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not sets[a] & sets[b]
    assert sum(p.n_events for p in parts if p is not None) == source.n_events
    for p in parts:
        if p is not None:
            assert p.users == source.users and p.items == source.items


def test_recbole_rounding_known_cases() -> None:
    n = np.array([1, 2, 5, 9, 10, 19, 20, 25])
    counts = recbole_split_counts(n)
    # (train, valid, test): floor(0.1 n) for valid and test; a part whose 0.1 n is in (0, 1)
    # gets one item from train while train keeps more than one
    assert counts.T.tolist() == [[1, 0, 0], [1, 0, 1], [3, 1, 1], [7, 1, 1], [8, 1, 1],
                                 [17, 1, 1], [16, 2, 2], [21, 2, 2]]
    assert recbole_split_counts(np.array([3, 10]), (0.8, 0.2)).T.tolist() == [[2, 1], [8, 2]]


def test_random_split_sizes_follow_recbole(synthetic: Dataset) -> None:
    split = split_random(synthetic, (0.8, 0.1, 0.1), seed=0)
    assert_partition(split, synthetic)
    split.check_leakage()
    n = pairs_per_user(synthetic)
    expected = recbole_split_counts(n)
    for part, row in ((split.train, 0), (split.valid, 1), (split.test, 2)):
        assert part is not None
        np.testing.assert_array_equal(pairs_per_user(part), expected[row])
    sizes = split.sizes()
    assert sizes["test_users"] == int((expected[2] > 0).sum())
    assert sizes["train_events"] + sizes["valid_events"] + sizes["test_events"] == \
        synthetic.n_events
    assert sizes["cold_users"] == 0  # RecBole's rounding always keeps a training item


def test_random_split_two_ratios_has_no_valid(synthetic: Dataset) -> None:
    split = split_random(synthetic, (0.7, 0.3), seed=1)
    assert split.valid is None
    assert_partition(split, synthetic)
    np.testing.assert_array_equal(pairs_per_user(split.test),
                                  recbole_split_counts(pairs_per_user(synthetic), (0.7, 0.3))[1])


def test_random_split_is_deterministic(synthetic: Dataset) -> None:
    a, b = split_random(synthetic, seed=5), split_random(synthetic, seed=5)
    assert a.test.events.equals(b.test.events) and a.train.events.equals(b.train.events)
    c = split_random(synthetic, seed=6)
    assert not a.test.events.equals(c.test.events)


def test_loo_takes_the_latest_items(synthetic: Dataset) -> None:
    split = split_loo(synthetic)
    assert_partition(split, synthetic)
    ev = synthetic.events
    last_t = ev.group_by(C.USER_IDX, C.ITEM_IDX).agg(pl.col(C.TIME).max())
    n = pairs_per_user(synthetic)
    test_per_user = pairs_per_user(split.test)
    assert split.valid is not None
    valid_per_user = pairs_per_user(split.valid)
    np.testing.assert_array_equal(test_per_user, (n >= 2).astype(int))
    np.testing.assert_array_equal(valid_per_user, (n >= 3).astype(int))
    for u, i in pair_set(split.test):
        mine = last_t.filter(pl.col(C.USER_IDX) == u)
        assert mine.filter(pl.col(C.ITEM_IDX) == i)[C.TIME][0] == mine[C.TIME].max()
    assert split.sizes()["cold_users"] == 0
    assert split_loo(synthetic, valid=False).valid is None


def test_temporal_split_cuts_time_and_keeps_cold_users() -> None:
    rows = [(u, i, 100 * u + i) for u in range(6) for i in range(8)]
    rows += [(50, 1, 10_000), (50, 2, 10_001), (51, 3, 10_002)]  # users only seen late
    rows += [(0, 99, 20_000)]  # an item only seen late
    rows += [(1, 2, 30_000)]  # a repeat of a training pair after the cut
    ds = make_dataset(rows)
    split = split_temporal(ds, test_share=0.2)
    split.check_leakage()
    train_t, test_t = split.train.events[C.TIME], split.test.events[C.TIME]
    assert test_t.min() >= train_t.max()
    n_test = round(0.2 * ds.n_events)
    assert split.test.n_events == n_test - 1  # the repeat is dropped
    assert any("repeat" in note for note in split.notes)
    cold = ds.users.id_of(split.cold_users()).tolist()
    assert sorted(cold) == [50, 51]
    assert ds.items.id_of(split.cold_items()).tolist() == [99]
    assert any("cold users" in note for note in split.notes)
    sizes = split.sizes()
    assert sizes["cold_users"] == 2 and sizes["cold_items"] == 1
    with_valid = split_temporal(ds, test_share=0.2, valid_share=0.2)
    assert with_valid.valid is not None
    assert with_valid.valid.events[C.TIME].max() <= with_valid.test.events[C.TIME].min()
    assert with_valid.valid.events[C.TIME].min() >= with_valid.train.events[C.TIME].max()


def test_temporal_split_needs_timestamps() -> None:
    frame = pl.DataFrame({"user": [1, 1, 2, 2], "item": [1, 2, 1, 2]})
    ds = prepare(frame, config=PrepareConfig()).dataset
    with pytest.raises(InputError, match="timestamp"):
        split_temporal(ds)


def test_kfold_covers_every_pair_once(synthetic: Dataset) -> None:
    splits = split_kfold(synthetic, folds=4, seed=2)
    assert len(splits) == 4
    seen: set[tuple[int, int]] = set()
    for s in splits:
        s.check_leakage()
        assert s.valid is None
        assert_partition(s, synthetic)
        test = pair_set(s.test)
        assert not test & seen
        seen |= test
    assert seen == pair_set(synthetic)
    sizes = np.array([s.test.n_events for s in splits])
    assert sizes.max() - sizes.min() < 0.5 * sizes.mean()  # folds are balanced


def test_make_splits_dispatch(synthetic: Dataset) -> None:
    assert make_splits(synthetic, "random")[0].kind == "random"
    assert make_splits(synthetic, "loo")[0].kind == "loo"
    assert make_splits(synthetic, "temporal", test_share=0.3)[0].kind == "temporal"
    assert len(make_splits(synthetic, "kfold", folds=3)) == 3
    with pytest.raises(ConfigError, match="unknown split kind"):
        make_splits(synthetic, "bogus")


def test_empty_test_set_is_an_error() -> None:
    ds = make_dataset([(u, u, u) for u in range(10)])  # one item per user
    with pytest.raises(InputError, match="no test events"):
        split_random(ds)
    with pytest.raises(InputError, match="no test events"):
        split_loo(ds)


def test_bad_ratios(synthetic: Dataset) -> None:
    with pytest.raises(ConfigError):
        split_random(synthetic, (0.8, 0.1, 0.0))
    with pytest.raises(ConfigError):
        split_random(synthetic, (1.0,))
    with pytest.raises(ConfigError):
        split_temporal(synthetic, test_share=1.5)


@pytest.mark.parametrize("ratios", [(0.9, 0.9, 0.9), (8, 1, 1), (0.5, 0.2), (0.8, 0.1, 0.09),
                                    (1.2, -0.1, -0.1), (0.0, 0.5, 0.5), (float("nan"), 0.5, 0.5),
                                    (0.5, 0.5, float("inf"))])
def test_ratios_must_be_shares_that_sum_to_one(synthetic: Dataset,
                                               ratios: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="ratios must"):
        split_random(synthetic, ratios)
    with pytest.raises(ConfigError, match="ratios must"):
        make_splits(synthetic, "loo", ratios=ratios)


def test_ratios_summing_to_one_within_rounding(synthetic: Dataset) -> None:
    a = split_random(synthetic, (0.8, 0.1, 0.1 + 1e-9), seed=0)
    b = split_random(synthetic, (0.8, 0.1, 0.1), seed=0)
    assert a.test.events.equals(b.test.events)
    assert split_random(synthetic, (0.7, 0.0, 0.3), seed=0).valid.n_events == 0  # type: ignore[union-attr]


def test_check_leakage_refuses_overlaps(synthetic: Dataset) -> None:
    good = split_random(synthetic, seed=0)
    leaky = Split(train=good.train, valid=good.valid,
                  test=synthetic.with_events(pl.concat([good.test.events,
                                                        good.train.events.head(3)])),
                  name="leaky")
    with pytest.raises(InputError, match="leaks"):
        leaky.check_leakage()
    # temporal order: a test event before a training event
    temporal = Split(train=good.train, valid=None, test=good.test, name="t", kind="temporal")
    with pytest.raises(InputError, match="precedes"):
        temporal.check_leakage()


def _external_pairs(ds: Dataset) -> pl.DataFrame:
    pairs = ds.events.select(C.USER_IDX, C.ITEM_IDX).unique(maintain_order=True)
    return pl.DataFrame({C.USER: ds.users.id_of(pairs[C.USER_IDX].to_numpy()),
                         C.ITEM: ds.items.id_of(pairs[C.ITEM_IDX].to_numpy())})


def test_split_from_pairs_reproduces_a_given_split(synthetic: Dataset) -> None:
    """A split handed in as external (user, item) pairs (e.g. RecBole's dump) is rebuilt."""
    original = split_random(synthetic, seed=3)
    assert original.valid is not None
    given = split_from_pairs(synthetic, {"train": _external_pairs(original.train),
                                         "valid": _external_pairs(original.valid),
                                         "test": _external_pairs(original.test)})
    assert given.valid is not None
    for a, b in ((given.train, original.train), (given.valid, original.valid),
                 (given.test, original.test)):
        assert pair_set(a) == pair_set(b)
    assert_partition(given, synthetic)


def test_split_from_pairs_refuses_bad_parts(synthetic: Dataset) -> None:
    original = split_random(synthetic, (0.8, 0.2), seed=0)
    train, test = _external_pairs(original.train), _external_pairs(original.test)
    with pytest.raises(InputError, match="no part lists"):
        split_from_pairs(synthetic, {"train": train.slice(1), "test": test})
    with pytest.raises(InputError, match="more than one part"):
        split_from_pairs(synthetic, {"train": train, "test": pl.concat([test, train.head(1)])})
    stranger = pl.DataFrame({C.USER: [10_000], C.ITEM: [train[C.ITEM][0]]},
                            schema={C.USER: train[C.USER].dtype, C.ITEM: train[C.ITEM].dtype})
    with pytest.raises(InputError, match="not in the dataset"):
        split_from_pairs(synthetic, {"train": pl.concat([train, stranger]), "test": test})
