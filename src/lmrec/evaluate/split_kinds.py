"""The split kinds by name: `SPLIT_KINDS` and `make_splits` (see `lmrec.evaluate.splits`)."""

from __future__ import annotations

from collections.abc import Sequence

from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError
from lmrec.evaluate.cold_splits import COLD_VALID_SHARE, split_cold_items, split_cold_users
from lmrec.evaluate.splits import (
    Split,
    check_ratios,
    split_kfold,
    split_loo,
    split_random,
    split_temporal,
)

SPLIT_KINDS: tuple[str, ...] = ("random", "loo", "temporal", "kfold", "cold-items",
                                 "cold-users")


def make_splits(
    dataset: Dataset,
    kind: str,
    *,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    test_share: float = 0.2,
    folds: int = 5,
    seed: int = 0,
    valid_share: float | None = None,
    holdout_share: float = 0.2,
    max_train_events: int = 5,
) -> list[Split]:
    """The splits of one kind (see SPLIT_KINDS) as a list.

    random uses `ratios` and `seed`; loo has a validation part when `ratios` has three
    entries; temporal uses `test_share` (and `valid_share`, default 0); kfold gives `folds`
    splits; cold-items uses `holdout_share` of the items (`valid_share` default
    COLD_VALID_SHARE); cold-users uses `holdout_share` of the users and `max_train_events`.
    """
    if kind == "random":
        return [split_random(dataset, ratios, seed=seed)]
    if kind == "loo":
        return [split_loo(dataset, valid=len(check_ratios(ratios)) == 3)]
    if kind == "temporal":
        return [split_temporal(dataset, test_share=test_share, valid_share=valid_share or 0.0)]
    if kind == "kfold":
        return split_kfold(dataset, folds=folds, seed=seed)
    cold_valid = COLD_VALID_SHARE if valid_share is None else valid_share
    if kind == "cold-items":
        return [split_cold_items(dataset, holdout_share, seed=seed, valid_share=cold_valid)]
    if kind == "cold-users":
        return [split_cold_users(dataset, max_train_events, holdout_share=holdout_share,
                                 seed=seed, valid_share=cold_valid)]
    raise ConfigError(f"unknown split kind {kind!r}; choose one of {', '.join(SPLIT_KINDS)}")
