"""Cold-start splits: held-out items (cold-items) and few-shot users (cold-users).

Both draw a seeded share of candidates (items with events, users with enough items) for the
test part and the next share of the same permutation for the validation part; the parts are
built like every other split (`lmrec.evaluate.splits`), so they never leak.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError, InputError
from lmrec.evaluate.splits import (
    ROW,
    TEST,
    TRAIN,
    VALID,
    Split,
    build_split,
    pair_table,
    rank_in_group,
)

COLD_VALID_SHARE = 0.1  # the validation share of the cold splits unless one is given


def split_cold_items(
    dataset: Dataset,
    holdout_share: float = 0.2,
    *,
    seed: int = 0,
    valid_share: float = COLD_VALID_SHARE,
) -> Split:
    """Cold-start items: a seeded share of the items leaves training with ALL its events.

    Among the items with events, `round(holdout_share * n)` drawn with
    `numpy.random.default_rng(seed)` are the test items and the next `round(valid_share * n)`
    of the same permutation the validation items; the test part is every event on a test
    item, the validation part every event on a validation item, training the rest. So no
    test or validation item has a training event: a model can know them only by their
    attributes. Items stay in the vocabularies (the catalogue, with their attributes), so the
    protocol ranks warm and cold items together. The test items do not depend on
    `valid_share`. Users whose items were all held out have no training events (cold users,
    counted in the notes, scored only in the protocol's "cold users" slice).
    """
    _check_shares(holdout_share, valid_share)
    items_col = dataset.events[C.ITEM_IDX].to_numpy()
    active = np.flatnonzero(np.bincount(items_col, minlength=dataset.n_items) > 0)
    role, n_test, n_valid = _holdout_roles(dataset.n_items, active, holdout_share, valid_share,
                                           seed, "items")
    pairs = pair_table(dataset)
    part = role[pairs[C.ITEM_IDX].to_numpy()]
    share_txt = _share_text(holdout_share, valid_share, n_valid)
    notes = [f"{n_test} of {active.size} items with events held out for test"
             + (f" and {n_valid} for validation" if n_valid else "")
             + f", with all their events; ranking covers all {dataset.n_items} items"]
    return build_split(dataset, pairs, part, f"cold-items {share_txt} seed {seed}",
                       "cold-items", has_valid=n_valid > 0, notes=notes,
                       empty_hint="the held-out items have no events")


def split_cold_users(
    dataset: Dataset,
    max_train_events: int = 5,
    *,
    holdout_share: float = 0.2,
    seed: int = 0,
    valid_share: float = COLD_VALID_SHARE,
) -> Split:
    """Few-shot users: test users keep only their earliest `max_train_events` items in training.

    Eligible are users with more than `max_train_events` distinct items. Of them,
    `round(holdout_share * n)` drawn with `numpy.random.default_rng(seed)` are test users and
    the next `round(valid_share * n)` validation users. Such a user's distinct items, ordered
    by their first event (time, ties in file order), go to training up to `max_train_events`
    and the rest to the test (validation) part; every other user is fully in training. With
    `max_train_events=0` the test users are entirely cold (scored in the "cold users" slice).
    """
    if max_train_events < 0:
        raise ConfigError(f"max_train_events must be >= 0, got {max_train_events}")
    _check_shares(holdout_share, valid_share)
    ev = dataset.events.select(C.USER_IDX, C.ITEM_IDX, C.TIME).with_row_index(ROW)
    if ev.height == 0:
        raise InputError("cannot split a dataset without events")
    pairs = (ev.group_by(C.USER_IDX, C.ITEM_IDX)
             .agg(pl.col(C.TIME).min().alias("first_time"), pl.col(ROW).min().alias("first_row"))
             .sort([C.USER_IDX, "first_time", "first_row"], nulls_last=False))
    users = pairs[C.USER_IDX].to_numpy().astype(np.int64)
    n_pairs = np.bincount(users, minlength=dataset.n_users)
    eligible = np.flatnonzero(n_pairs > max_train_events)
    role, n_test, n_valid = _holdout_roles(dataset.n_users, eligible, holdout_share,
                                           valid_share, seed,
                                           f"users with more than {max_train_events} items")
    early = rank_in_group(users) < max_train_events  # pairs sorted by user, then time
    part = np.where(early, TRAIN, role[users]).astype(np.int8)
    notes = [f"{n_test} of {eligible.size} users with more than {max_train_events} items "
             f"keep their first {max_train_events} in training, the rest is test"
             + (f" ({n_valid} more users likewise for validation)" if n_valid else "")]
    if dataset.events[C.TIME].null_count() == dataset.n_events:
        notes.append("no timestamps: the file order of events was used as time order")
    share_txt = _share_text(holdout_share, valid_share, n_valid)
    return build_split(dataset, pairs.select(C.USER_IDX, C.ITEM_IDX), part,
                       f"cold-users {max_train_events} shots {share_txt} seed {seed}",
                       "cold-users", has_valid=n_valid > 0, notes=notes,
                       empty_hint="the test users have no items beyond their training ones")


# --- shared holdout draw -------------------------------------------------------------------
def _check_shares(holdout_share: float, valid_share: float) -> None:
    if not 0.0 < holdout_share < 1.0:
        raise ConfigError(f"holdout_share must be in (0, 1), got {holdout_share}")
    if not 0.0 <= valid_share < 1.0 or holdout_share + valid_share >= 1.0:
        raise ConfigError(f"valid_share must be in [0, 1) and holdout_share + valid_share < 1, "
                          f"got {valid_share} + {holdout_share}")


def _share_counts(n: int, holdout_share: float, valid_share: float, what: str
                  ) -> tuple[int, int]:
    """(test, valid) counts of `n` candidates: rounded shares, at least one test candidate and
    at least one left for training."""
    n_test = max(1, round(holdout_share * n))
    n_valid = round(valid_share * n)
    if n < 2 or n_test + n_valid >= n:
        raise InputError(f"too few {what} ({n}) to hold out {holdout_share:g} (+ {valid_share:g} "
                         "for validation) and keep some for training")
    return n_test, n_valid


def _holdout_roles(n: int, candidates: np.ndarray, holdout_share: float, valid_share: float,
                   seed: int, what: str) -> tuple[np.ndarray, int, int]:
    """(n,) int8 role of every item (or user) -- TEST for the first `n_test` candidates of a
    seeded permutation, VALID for the next `n_valid`, TRAIN otherwise -- and the two counts."""
    n_test, n_valid = _share_counts(candidates.size, holdout_share, valid_share, what)
    order = np.random.default_rng(seed).permutation(candidates)
    role = np.full(n, TRAIN, dtype=np.int8)
    role[order[:n_test]] = TEST
    role[order[n_test : n_test + n_valid]] = VALID
    return role, n_test, n_valid


def _share_text(holdout_share: float, valid_share: float, n_valid: int) -> str:
    return f"{holdout_share:g}" + (f" valid {valid_share:g}" if n_valid else "")
