"""Train / validation / test splits of a prepared Dataset that never leak.

Every split works on distinct (user, item) pairs: all events of one pair go to the same part
(or, in the global temporal split, the repeats of a pair that began in an earlier part are
dropped from the later part and counted in the split's notes). So a test item can never be in
the user's own training or validation history, which `Split.check_leakage` verifies.

Kinds:
    random    per user, a random ratio holdout with RecBole's rounding (`recbole_split_counts`)
    loo       per user, time-ordered leave-last-one-out (second last to validation)
    temporal  one global time cut: the latest share of events is the test part
    kfold     per user, the user's pairs dealt into k folds; fold j is the test part of split j
    cold-items  a seeded share of the items with events leaves training with all its events;
              the test part is those events (another share of items forms the validation part)
    cold-users  a seeded share of users keeps only its earliest few items in training
              (few-shot); the rest of their items are the test part (another share: valid)
The cold-start kinds are built in `lmrec.evaluate.cold_splits`; `make_splits`
(`lmrec.evaluate.split_kinds`) builds the splits of any kind by name.

The parts are Datasets sharing the vocabularies of the source Dataset, so internal indices are
the same in every part. A user with test events but no training events (a *cold* user) is kept
in the test part and counted in `Split.notes`; evaluation scores such users only in its
"cold users" slice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError, InputError

ROW = "__row"  # the row-index column added while splitting
_PART = "__part"
TRAIN, VALID, TEST, DROPPED = 0, 1, 2, 3


@dataclass(frozen=True)
class Split:
    """One train / (validation) / test split. All parts share the source vocabularies.

    `kind` is one of SPLIT_KINDS (or "" for a split built by hand); `notes` are human-readable
    remarks made while splitting (cold users, dropped repeat events, fallbacks).
    """

    train: Dataset
    valid: Dataset | None
    test: Dataset
    name: str
    kind: str = ""
    notes: tuple[str, ...] = ()

    def parts(self) -> dict[str, Dataset]:
        """The parts that exist, by name ("train", "valid", "test")."""
        out = {"train": self.train}
        if self.valid is not None:
            out["valid"] = self.valid
        out["test"] = self.test
        return out

    def sizes(self) -> dict[str, int]:
        """Users, items and events with at least one event in each part, plus cold counts.

        Keys: "<part>_users", "<part>_items", "<part>_events" for every part that exists, and
        "cold_users" / "cold_items" (test users / items without a training event).
        """
        out: dict[str, int] = {}
        for part, ds in self.parts().items():
            ev = ds.events
            out[f"{part}_users"] = int(ev[C.USER_IDX].n_unique()) if ev.height else 0
            out[f"{part}_items"] = int(ev[C.ITEM_IDX].n_unique()) if ev.height else 0
            out[f"{part}_events"] = ev.height
        out["cold_users"] = int(self.cold_users().size)
        out["cold_items"] = int(self.cold_items().size)
        return out

    def cold_users(self) -> np.ndarray:
        """(n,) int64 internal indices of users with test events and no training event."""
        return _cold(self.test, self.train, C.USER_IDX, self.train.n_users)

    def cold_items(self) -> np.ndarray:
        """(n,) int64 internal indices of items with test events and no training event."""
        return _cold(self.test, self.train, C.ITEM_IDX, self.train.n_items)

    def check_leakage(self) -> None:
        """Raise `InputError` if the test part leaks into the history it is scored against.

        Leaks: a test (user, item) pair that is also in the user's training or validation
        events; a validation pair that is also in training; and, for a temporal split, a test
        (validation) timestamp earlier than the latest training (validation) timestamp.
        """
        train_pairs = _pairs(self.train)
        history = train_pairs
        if self.valid is not None:
            valid_pairs = _pairs(self.valid)
            _raise_overlap(self, valid_pairs, train_pairs, "validation", "training")
            history = pl.concat([train_pairs, valid_pairs]).unique()
        _raise_overlap(self, _pairs(self.test), history, "test",
                       "training or validation" if self.valid is not None else "training")
        if self.kind == "temporal":
            ordered = [("training", self.train)]
            if self.valid is not None:
                ordered.append(("validation", self.valid))
            ordered.append(("test", self.test))
            latest: tuple[str, int] | None = None  # the latest timestamp of earlier parts
            for part_name, ds in ordered:
                t = ds.events[C.TIME].drop_nulls()
                if t.len() == 0:
                    continue
                if latest is not None and int(t.min()) < latest[1]:  # type: ignore[arg-type]
                    raise InputError(
                        f"split {self.name!r} leaks: a {part_name} event at {t.min()} precedes "
                        f"a {latest[0]} event at {latest[1]}",
                        expected=f"every {part_name} timestamp >= every earlier timestamp")
                t_max = int(t.max())  # type: ignore[arg-type]
                if latest is None or t_max > latest[1]:
                    latest = (part_name, t_max)


# --- public split functions -----------------------------------------------------------------
def split_random(
    dataset: Dataset,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    seed: int = 0,
) -> Split:
    """Per-user random holdout with RecBole's rounding ('RS' + 'RO' + group_by user).

    `ratios` is (train, valid, test) or (train, test) (no validation part): non-negative, with
    positive train and test shares, summing to 1 (`check_ratios`). The user's distinct
    (user, item) pairs are shuffled with `numpy.random.default_rng(seed)` and, per user with n
    pairs, the first `recbole_split_counts(n)[0]` go to train, the next to valid, the rest to
    test.
    """
    r = check_ratios(ratios)
    pairs = pair_table(dataset)
    users = pairs[C.USER_IDX].to_numpy().astype(np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(users.size)
    order = perm[np.argsort(users[perm], kind="stable")]  # grouped by user, shuffled inside
    rank = np.empty(users.size, dtype=np.int64)
    rank[order] = rank_in_group(users[order])
    counts = recbole_split_counts(np.bincount(users, minlength=dataset.n_users), r)
    n_train = counts[0][users]
    n_valid = counts[1][users] if len(r) == 3 else np.zeros_like(n_train)
    part = np.where(rank < n_train, TRAIN, np.where(rank < n_train + n_valid, VALID, TEST))
    if len(r) == 2:
        part = np.where(part == VALID, TEST, part)
    ratio_txt = ":".join(f"{x:g}" for x in ratios)
    return build_split(dataset, pairs, part.astype(np.int8), f"random {ratio_txt} seed {seed}",
                       "random", has_valid=len(r) == 3,
                       empty_hint="every user has too few interactions for a test item at these "
                                  "ratios; use larger ratios or a smaller k-core")


def split_loo(dataset: Dataset, *, valid: bool = True) -> Split:
    """Time-ordered leave-last-one-out: each user's last item to test, the one before to valid.

    Pairs are ordered by their latest event (the events' time order, ties in file order). As in
    RecBole's 'LS' split, a user always keeps at least one training item: a user with one pair
    has no test item, a user with two has a test item but no validation item.
    """
    pairs = pair_table(dataset).sort([C.USER_IDX, "last_row"])
    users = pairs[C.USER_IDX].to_numpy().astype(np.int64)
    n = np.bincount(users, minlength=dataset.n_users)[users]
    from_end = n - 1 - rank_in_group(users)  # 0 = the user's last pair
    part = np.full(users.size, TRAIN, dtype=np.int8)
    part[(from_end == 0) & (n >= 2)] = TEST
    if valid:
        part[(from_end == 1) & (n >= 3)] = VALID
    notes = []
    if dataset.events[C.TIME].null_count() == dataset.n_events:
        notes.append("no timestamps: the file order of events was used as time order")
    return build_split(dataset, pairs, part, "leave-one-out" + (" (+valid)" if valid else ""),
                       "loo", has_valid=valid, notes=notes,
                       empty_hint="every user has a single item, so leave-one-out keeps it for "
                                  "training")


def split_temporal(
    dataset: Dataset,
    *,
    test_share: float = 0.2,
    valid_share: float = 0.0,
) -> Split:
    """A global time cut: the latest `test_share` of all events is test, the `valid_share`
    before it validation, the rest training.

    Events are ordered by timestamp (ties in file order) and cut by position, so shares are
    exact and no later part has an event earlier than an earlier part. A later-part event of a
    (user, item) pair that already occurs in an earlier part (a repeat) is dropped, so that
    test items are never in the user's history; the count is in the notes. Users and items
    whose events are all after the cut are cold: they are kept in the test part.
    """
    if not 0.0 < test_share < 1.0:
        raise ConfigError(f"test_share must be in (0, 1), got {test_share}")
    if not 0.0 <= valid_share < 1.0 or test_share + valid_share >= 1.0:
        raise ConfigError(f"valid_share must be in [0, 1) and test_share + valid_share < 1, "
                          f"got {valid_share} + {test_share}")
    n_missing = dataset.events[C.TIME].null_count()
    if n_missing:
        raise InputError(f"a temporal split needs a timestamp on every event; {n_missing} of "
                         f"{dataset.n_events} events have none",
                         expected="timestamps (map a time column), or a random split")
    ev = dataset.events.with_row_index(ROW)
    n = ev.height
    n_test = max(1, round(test_share * n))
    n_valid = round(valid_share * n) if valid_share > 0 else 0
    pos_part = np.full(n, TRAIN, dtype=np.int8)
    pos_part[n - n_test - n_valid : n - n_test] = VALID
    pos_part[n - n_test :] = TEST
    by_time = ev.sort([C.TIME, ROW])[ROW].to_numpy()
    part = np.empty(n, dtype=np.int8)
    part[by_time] = pos_part
    # a repeat of a pair first seen in an earlier part is dropped from the later part
    first_part = (pl.DataFrame({C.USER_IDX: ev[C.USER_IDX], C.ITEM_IDX: ev[C.ITEM_IDX],
                                _PART: part})
                  .with_columns(pl.col(_PART).min().over(C.USER_IDX, C.ITEM_IDX).alias("first")))
    first = first_part["first"].to_numpy()
    repeat = part != first
    part = np.where(repeat, DROPPED, part).astype(np.int8)
    notes = []
    if repeat.any():
        notes.append(f"{int(repeat.sum())} later events of (user, item) pairs already in an "
                     "earlier part were dropped (repeats)")
    cut = int(ev[C.TIME][int(by_time[n - n_test])])
    return _build_events(dataset, ev, part, f"temporal test {test_share:g}"
                         + (f" valid {valid_share:g}" if valid_share else ""), "temporal",
                         has_valid=n_valid > 0,
                         notes=[f"test events from timestamp {cut} on", *notes],
                         empty_hint="every event after the cut repeats an earlier one")


def split_kfold(dataset: Dataset, *, folds: int = 5, seed: int = 0) -> list[Split]:
    """K-fold by user: each user's distinct pairs, shuffled, are dealt into `folds` folds.

    Split j tests on fold j and trains on the others (no validation part). The deal starts at
    a random fold per user, so users with fewer pairs than folds do not crowd fold 0; such a
    user has no test items in some folds, and a user with one pair is cold in its fold.
    """
    if folds < 2:
        raise ConfigError(f"folds must be at least 2, got {folds}")
    pairs = pair_table(dataset)
    users = pairs[C.USER_IDX].to_numpy().astype(np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(users.size)
    order = perm[np.argsort(users[perm], kind="stable")]
    rank = np.empty(users.size, dtype=np.int64)
    rank[order] = rank_in_group(users[order])
    offset = rng.integers(0, folds, size=dataset.n_users)
    fold = (rank + offset[users]) % folds
    out = []
    for j in range(folds):
        part = np.where(fold == j, TEST, TRAIN).astype(np.int8)
        out.append(build_split(dataset, pairs, part, f"kfold {j + 1}/{folds} seed {seed}",
                               "kfold", has_valid=False,
                               empty_hint=f"no user has an item in fold {j + 1}"))
    return out


def recbole_split_counts(n: np.ndarray | int, ratios: Sequence[float] = (0.8, 0.1, 0.1)
                         ) -> np.ndarray:
    """RecBole 1.2.1 `Dataset._calcu_split_ids`, vectorised over users.

    `n` (U,) group sizes -> (len(ratios), U) int64 counts. Every part but the first gets
    floor(ratio * n); the first gets the rest; then, from the last part backwards and while the
    first part keeps more than one, a part whose ratio * n lies in (0, 1) gets one taken from
    the first.
    """
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.int64))
    cnt = [(r * n_arr).astype(np.int64) for r in ratios]  # int() truncation, as RecBole
    cnt[0] = n_arr - sum(cnt[1:], np.zeros_like(n_arr))
    for i in range(1, len(ratios)):
        x = ratios[-i] * n_arr
        step = (cnt[0] > 1) & (x > 0) & (x < 1)  # RecBole breaks once train <= 1: monotone
        cnt[-i] = cnt[-i] + step
        cnt[0] = cnt[0] - step
    return np.stack(cnt)


# --- helpers -------------------------------------------------------------------------------
RATIO_TOLERANCE = 1e-6


def check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """`ratios` as floats summing to exactly 1, or ConfigError: they must be (train, valid,
    test) or (train, test), finite, non-negative, with train and test > 0, and sum to 1 within
    RATIO_TOLERANCE (shares that add up to more or less than the data are a mistake, not
    something to rescale silently)."""
    try:
        r = tuple(float(x) for x in ratios)
    except (TypeError, ValueError):
        raise ConfigError(f"ratios must be numbers; got {ratios!r}") from None
    if (len(r) not in (2, 3) or not all(math.isfinite(x) and x >= 0 for x in r)
            or r[0] <= 0 or r[-1] <= 0):
        raise ConfigError(f"ratios must be (train, valid, test) or (train, test), non-negative, "
                          f"with train and test > 0; got {tuple(ratios)}")
    total = math.fsum(r)
    if abs(total - 1.0) > RATIO_TOLERANCE:
        raise ConfigError(f"ratios must sum to 1; got {', '.join(f'{x:g}' for x in r)} "
                          f"(sum {total:g})")
    return tuple(x / total for x in r)


def rank_in_group(sorted_keys: np.ndarray) -> np.ndarray:
    """(n,) position of each element inside its run of equal keys (keys grouped)."""
    n = sorted_keys.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.arange(n, dtype=np.int64) - run_start


def pair_table(dataset: Dataset) -> pl.DataFrame:
    """Distinct (user, item) pairs in order of first appearance, with first/last event rows."""
    if dataset.n_events == 0:
        raise InputError("cannot split a dataset without events")
    return (dataset.events.select(C.USER_IDX, C.ITEM_IDX).with_row_index(ROW)
            .group_by(C.USER_IDX, C.ITEM_IDX)
            .agg(pl.col(ROW).min().alias("first_row"), pl.col(ROW).max().alias("last_row"))
            .sort("first_row"))


def build_split(dataset: Dataset, pairs: pl.DataFrame, part: np.ndarray, name: str, kind: str,
                *, has_valid: bool, empty_hint: str, notes: Sequence[str] = ()) -> Split:
    """Assign every event the part of its pair, then build the Split."""
    assign = pairs.select(C.USER_IDX, C.ITEM_IDX).with_columns(
        pl.Series(_PART, part, dtype=pl.Int8))
    ev = (dataset.events.with_row_index(ROW)
          .join(assign, on=[C.USER_IDX, C.ITEM_IDX], how="left").sort(ROW))
    return _build_events(dataset, ev.drop(_PART), ev[_PART].to_numpy(), name, kind,
                         has_valid=has_valid, empty_hint=empty_hint, notes=notes)


def _build_events(dataset: Dataset, ev: pl.DataFrame, part: np.ndarray, name: str, kind: str,
                  *, has_valid: bool, empty_hint: str, notes: Sequence[str] = ()) -> Split:
    """Split the events `ev` (in the dataset's order, with a row column) by `part` (n,) int8."""
    cols = dataset.events.columns
    frames = {p: ev.filter(pl.Series(part == p)).select(cols) for p in (TRAIN, VALID, TEST)}
    if frames[TEST].height == 0:
        raise InputError(f"the {name} split of {dataset.name!r} leaves no test events: "
                         f"{empty_hint}")
    if frames[TRAIN].height == 0:
        raise InputError(f"the {name} split of {dataset.name!r} leaves no training events")
    base = dataset.name
    split = Split(
        train=dataset.with_events(frames[TRAIN], f"{base}:train"),
        valid=dataset.with_events(frames[VALID], f"{base}:valid") if has_valid else None,
        test=dataset.with_events(frames[TEST], f"{base}:test"),
        name=name, kind=kind, notes=tuple(notes))
    cold_u, cold_i = split.cold_users().size, split.cold_items().size
    extra = []
    if cold_u:
        extra.append(f"{cold_u} test users have no training events (cold users): they are "
                     "evaluated only in the 'cold users' slice")
    if cold_i:
        extra.append(f"{cold_i} test items have no training events (cold items)")
    if has_valid and frames[VALID].height == 0:
        extra.append("the validation part is empty (users have too few interactions)")
    if extra:
        split = Split(split.train, split.valid, split.test, name, kind, (*split.notes, *extra))
    split.check_leakage()
    return split


def _pairs(ds: Dataset) -> pl.DataFrame:
    return ds.events.select(C.USER_IDX, C.ITEM_IDX).unique()


def _raise_overlap(split: Split, later: pl.DataFrame, earlier: pl.DataFrame, later_name: str,
                   earlier_name: str) -> None:
    leak = later.join(earlier, on=[C.USER_IDX, C.ITEM_IDX], how="semi")
    if leak.height:
        u, i = int(leak[C.USER_IDX][0]), int(leak[C.ITEM_IDX][0])
        ds = split.train
        raise InputError(
            f"split {split.name!r} leaks: {leak.height} {later_name} (user, item) pairs also "
            f"occur in the user's {earlier_name} events, e.g. user "
            f"{ds.users.to_python(u)!r} item {ds.items.to_python(i)!r}",
            expected="each (user, item) pair in one part only")


def _cold(target: Dataset, train: Dataset, col: str, n: int) -> np.ndarray:
    in_target = np.bincount(target.events[col].to_numpy(), minlength=n) > 0
    in_train = np.bincount(train.events[col].to_numpy(), minlength=n) > 0
    return np.flatnonzero(in_target & ~in_train).astype(np.int64)


def split_from_pairs(dataset: Dataset, parts: dict[str, pl.DataFrame], *,
                     name: str = "given") -> Split:
    """A Split from externally given (user, item) pairs, e.g. RecBole's dumped split.

    `parts` maps "train", "valid" (optional) and "test" to frames with external `user` and
    `item` columns. Every event of a listed pair goes to that part; pairs that are not in the
    dataset, or events of unlisted pairs, are an error, so both sides score the same data.
    """
    codes = {"train": TRAIN, "valid": VALID, "test": TEST}
    unknown = set(parts) - set(codes)
    if unknown or "train" not in parts or "test" not in parts:
        raise InputError(f"split parts must be train, test and optionally valid; got "
                         f"{sorted(parts)}")
    frames = []
    for part, frame in parts.items():
        u = dataset.users.index(frame[C.USER])
        i = dataset.items.index(frame[C.ITEM])
        if (u < 0).any() or (i < 0).any():
            bad = int(np.flatnonzero((u < 0) | (i < 0))[0])
            raise InputError(f"the {part} part lists a pair not in the dataset: "
                             f"({frame[C.USER][bad]!r}, {frame[C.ITEM][bad]!r})")
        frames.append(pl.DataFrame({C.USER_IDX: u.astype(np.int32), C.ITEM_IDX: i.astype(np.int32),
                                    _PART: np.full(u.size, codes[part], dtype=np.int8)}))
    assign = pl.concat(frames)
    if assign.select(C.USER_IDX, C.ITEM_IDX).is_duplicated().any():
        raise InputError("a (user, item) pair is listed in more than one part")
    # every listed pair is in the dataset and listed once, so equal counts mean full cover
    missing = _pairs(dataset).height - assign.height
    if missing:
        raise InputError(f"the dataset has {missing} (user, item) pairs that no part lists")
    return build_split(dataset, assign.select(C.USER_IDX, C.ITEM_IDX), assign[_PART].to_numpy(),
                       name, "given", has_valid="valid" in parts,
                       empty_hint="the test part is empty")
