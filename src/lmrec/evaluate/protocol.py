"""Full-ranking evaluation of a fitted model on a Split (RecBole's general protocol).

For every user with test items the model ranks all items; the user's training items are
removed (`exclude_seen`), and when testing also the validation items, as RecBole does. The
history policy, an argument of `evaluate`, says what each user is scored from:

    "observed"  `model.score(users, histories)` with each user's time-ordered events as of the
                evaluated part: the training part, plus the validation part when testing (what
                a served model sees; RecBole's leave-one-out protocol for sequential models).
                Each model decides how to use them. The default.
    "trained"   `model.score(users)`: the model's fitted state (RecBole's general protocol).

The model is fitted on the training part either way. The top max(ks) items are compared with
the test items; with re-rankers (`rerank=`, `lmrec.rerank`), the re-ranked lists are
(`lmrec.evaluate.lists`: a pool of candidates, the hard constraints as a mask, re-ranked per
user). Besides accuracy and the beyond-accuracy metrics, every evaluation reports the group
metrics of `lmrec.evaluate.lists` (miscalibration, exposure Gini, long-tail exposure share,
group coverage). Users with test items but no training events (cold users) are scored
separately, in the "cold users" slice, and are not part of the main averages. Scoring, masking
and top-k happen in batches of `batch_size` users; every metric is vectorised over the batch.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec import columns as C
from lmrec import metrics as M
from lmrec.data.dataset import Dataset, Sequences
from lmrec.errors import ConfigError, InputError
from lmrec.evaluate.lists import GroupMetrics, ListReranker, rerank_data
from lmrec.evaluate.splits import Split
from lmrec.models.base import Recommender
from lmrec.rerank import RerankSpec
from lmrec.train.options import TrainingOptions

# What each evaluated user is scored from (see the module docstring).
HistoryPolicy = Literal["trained", "observed"]
HISTORY_POLICIES: tuple[str, ...] = get_args(HistoryPolicy)

HISTORY_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("history 1-5", 1, 5), ("history 6-20", 6, 20), ("history 21-100", 21, 100),
    ("history >100", 101, math.inf))
LONG_TAIL_HEAD_SHARE = 0.2  # the most popular 20% of items are the head; the rest the long tail
POPULARITY_BINS = 10  # item-popularity deciles for the exposure profile
# co-occurrence cosine of a training part, reused while that Dataset lives (models compared
# on one split share it)
_GRAM_CACHE: weakref.WeakKeyDictionary[Dataset, np.ndarray | None] = weakref.WeakKeyDictionary()


@dataclass
class EvalResult:
    """Metrics of one model on one split part.

    metrics: {"ndcg@10": mean, ...} over the evaluated warm users (accuracy) and their lists
        (beyond accuracy).
    per_user: {"ndcg@10": (n,) float64, ...} per evaluated user, warm users first and then
        cold users, in the order of `users`; `cold` (n,) bool marks the cold ones.
    slices: {"history 1-5": {"users": n, "ndcg@10": ...}, "cold users": {...},
        "long-tail items": {...}, ...}.
    history: the history policy the users were scored with ("observed" or "trained").
    rerank: the re-rankers the lists went through (`RerankPipeline.describe`; "" for none).
    seconds: "fit" (when fitted here), "score" (ranking + top-k), "metrics", "evaluate" (total).
    exposure: (n_items,) times each item was recommended in the warm users' top max(ks).
    item_popularity: (n_items,) distinct training users per item.
    """

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    users: np.ndarray
    cold: np.ndarray
    slices: dict[str, dict[str, float]]
    n_users: int
    n_cold_users: int
    ks: tuple[int, ...]
    part: str = "test"
    model: str = ""
    split: str = ""
    history: str = "observed"
    rerank: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    exposure: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    item_popularity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def fit_seconds(self) -> float | None:
        return self.seconds.get("fit")

    @property
    def eval_seconds(self) -> float:
        return self.seconds.get("evaluate", 0.0)

    def popularity_profile(self, bins: int = POPULARITY_BINS) -> np.ndarray:
        """(bins,) share of recommendations per item-popularity bin, most popular bin first.

        Items are ranked by training popularity (ties by index) and cut into `bins` equal-sized
        groups.
        """
        if self.exposure.size == 0 or self.exposure.sum() == 0:
            return np.zeros(bins)
        order = np.lexsort((np.arange(self.item_popularity.size), -self.item_popularity))
        groups = np.array_split(self.exposure[order], bins)
        totals = np.array([g.sum() for g in groups], dtype=np.float64)
        return totals / totals.sum()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-user arrays; NaN becomes None)."""
        return {
            "model": self.model,
            "split": self.split,
            "part": self.part,
            "history": self.history,
            "rerank": self.rerank,
            "ks": list(self.ks),
            "n_users": self.n_users,
            "n_cold_users": self.n_cold_users,
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "slices": {name: {k: _json_float(v) for k, v in s.items()}
                       for name, s in self.slices.items()},
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "popularity_profile": [round(float(x), 6) for x in self.popularity_profile()],
        }


def evaluate(
    model: Recommender,
    split: Split,
    ks: Iterable[int] = (10,),
    *,
    part: str = "test",
    history: HistoryPolicy = "observed",
    batch_size: int = 1024,
    item_features: np.ndarray | sp.spmatrix | None = None,
    rerank: Sequence[str | RerankSpec] = (),
) -> EvalResult:
    """Rank all items for every user with `part` ("test" or "valid") items; score the lists.

    `model` must be fitted on `split.train`. `history` is the policy of the module docstring:
    "observed" scores each user's events as of `part`, "trained" the fitted state. Masked per
    user: the training items (through the model's seen items) and, when testing, the
    validation items. `item_features` (n_items, d), dense or sparse, defines the item
    similarity of the diversity metric; by default the item-item co-occurrence cosine of the
    training matrix. `rerank`: re-rankers (`NAME=WEIGHT[:ARG]` specs, `lmrec.rerank`) the
    lists go through before they are scored (ConfigError for a bad one).
    """
    ks = M.check_ks(ks)
    kmax = ks[-1]
    if part not in ("test", "valid"):
        raise ConfigError(f"part must be 'test' or 'valid', got {part!r}")
    check_history(history)
    target = split.test if part == "test" else split.valid
    if target is None:
        raise ConfigError(f"split {split.name!r} has no validation part")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    train = split.train
    n_users, n_items = train.n_users, train.n_items
    if model.n_items != n_items or len(model.users_) != n_users:
        raise InputError(
            f"the model knows {len(model.users_)} users and {model.n_items} items, the split "
            f"{n_users} and {n_items}: fit the model on this split's training part")
    if item_features is not None and item_features.shape[0] != n_items:
        raise InputError(f"item_features has {item_features.shape[0]} rows, expected one per "
                         f"item ({n_items})")
    t_start = time.perf_counter()

    truth = target.matrix("binary").tocsr()
    n_truth = np.diff(truth.indptr)
    train_bin = train.matrix("binary").tocsr()
    n_train = np.bincount(train.events[C.USER_IDX].to_numpy(), minlength=n_users)
    item_pop = np.bincount(train_bin.indices, minlength=n_items).astype(np.int64)
    n_train_users = int((n_train > 0).sum())
    asked = n_truth > 0
    warm_users = np.flatnonzero(asked & (n_train > 0))
    cold_users = np.flatnonzero(asked & (n_train == 0))
    users = np.concatenate([warm_users, cold_users]).astype(np.int64)
    cold = np.zeros(users.size, dtype=bool)
    cold[warm_users.size :] = True
    if users.size == 0:
        raise InputError(f"the {part} part of split {split.name!r} has no events to evaluate")
    exclude = None
    if part == "test" and split.valid is not None and split.valid.n_events:
        exclude = split.valid.matrix("binary").tocsr()
    histories = None if history == "trained" else _observed(split, part)
    if item_features is not None:
        features = item_features
        gram = M.cosine_gram(features)  # None for catalogues too large for a dense matrix
    else:
        features = M.cooccurrence_features(train_bin)
        if train not in _GRAM_CACHE:
            _GRAM_CACHE[train] = M.cosine_gram(features)
        gram = _GRAM_CACHE[train]
    n_head = math.ceil(LONG_TAIL_HEAD_SHARE * n_items)
    head = np.zeros(n_items, dtype=bool)
    head[np.lexsort((np.arange(n_items), -item_pop))[:n_head]] = True
    tail_f = (~head).astype(np.float64)
    cold_item_f = (item_pop == 0).astype(np.float64)
    data = rerank_data(train, features, gram)
    groups = GroupMetrics(data, ~head, ks)
    stage = ListReranker(rerank, data) if rerank else None
    # what the re-rankers and the calibration metric see of each user: the history scored
    profiles = histories if histories is not None else train.sequences()

    per_user: dict[str, np.ndarray] = {}
    slice_vals: dict[str, np.ndarray] = {}
    exposures = {k: np.zeros(n_items, dtype=np.int64) for k in ks}
    t_score = t_metrics = 0.0
    for s in range(0, users.size, batch_size):
        batch = users[s : s + batch_size]
        t0 = time.perf_counter()
        rows_in = None if histories is None else histories.take(batch)
        profile = profiles.take(batch)
        if stage is None:
            items, _ = model.recommend_idx(batch, kmax, exclude_seen=True, exclude=exclude,
                                           batch_size=batch_size, histories=rows_in)
        else:
            items = stage.lists(model, batch, kmax, exclude, rows_in, profile)
        t1 = time.perf_counter()
        t_score += t1 - t0
        rows = truth[batch]
        hits = M.hit_matrix(items, rows)
        vals = M.accuracy_from_hits(hits, n_truth[batch], ks)
        diversity = M.intra_list_diversity_at(items, features, ks, gram=gram)
        for k in ks:
            vals[f"novelty@{k}"] = M.novelty(items, item_pop, n_train_users, k)
            vals[f"popularity@{k}"] = M.mean_popularity(items, item_pop, k)
            vals[f"diversity@{k}"] = diversity[k]
        vals.update(groups.per_user(items, profile))
        batch_warm = ~cold[s : s + batch.size]
        groups.add_lists(items[batch_warm])
        for k in ks:
            exposures[k] += M.exposure(items[batch_warm], n_items, k)
        # restricted recall: long-tail test items, test items unseen in training
        for name, flag in (("tail", tail_f), ("coldi", cold_item_f)):
            n_sub = np.asarray(rows @ flag).ravel()
            sub_hits = hits & (flag[np.maximum(items, 0)] > 0)
            sub = M.accuracy_from_hits(sub_hits, np.rint(n_sub).astype(np.int64), ks)
            for k in ks:
                vals[f"{name}:recall@{k}"] = sub[f"recall@{k}"]
        for key, v in vals.items():
            target_dict = slice_vals if ":" in key else per_user
            if key not in target_dict:
                target_dict[key] = np.full(users.size, np.nan)
            target_dict[key][s : s + batch.size] = v
        t_metrics += time.perf_counter() - t1

    t2 = time.perf_counter()
    warm = ~cold
    main = M.mean_metrics({k: v[warm] for k, v in per_user.items()})
    metrics: dict[str, float] = {}
    for k in ks:
        for name in M.ACCURACY_METRICS:
            metrics[f"{name}@{k}"] = main[f"{name}@{k}"]
        metrics[f"coverage@{k}"] = float((exposures[k] > 0).sum() / max(n_items, 1))
        metrics[f"novelty@{k}"] = main[f"novelty@{k}"]
        metrics[f"diversity@{k}"] = main[f"diversity@{k}"]
        metrics[f"popularity@{k}"] = main[f"popularity@{k}"]
        metrics[f"gini@{k}"] = M.gini(exposures[k])
        for name in ("miscalibration", "group_coverage"):
            if f"{name}@{k}" in main:
                metrics[f"{name}@{k}"] = main[f"{name}@{k}"]
    for key, v in groups.finish().items():
        metrics[key] = v
    acc_keys = [f"{n}@{k}" for k in ks for n in M.ACCURACY_METRICS]
    slices: dict[str, dict[str, float]] = {}
    hist_of = n_train[users]
    for label, lo, hi in HISTORY_BUCKETS:
        sel = warm & (hist_of >= lo) & (hist_of <= hi)
        if sel.any():
            slices[label] = _slice(per_user, sel, acc_keys)
    slices["cold users"] = _slice(per_user, cold, acc_keys)
    for label, name in (("long-tail items", "tail"), ("cold items", "coldi")):
        key0 = f"{name}:recall@{ks[0]}"
        sel = warm & ~np.isnan(slice_vals[key0])
        if label == "cold items" and not sel.any():
            continue
        entry: dict[str, float] = {"users": int(sel.sum())}
        for k in ks:
            v = slice_vals[f"{name}:recall@{k}"][sel]
            entry[f"recall@{k}"] = float(v.mean()) if v.size else float("nan")
        slices[label] = entry
    t_metrics += time.perf_counter() - t2
    total = time.perf_counter() - t_start
    return EvalResult(
        metrics=metrics, per_user=per_user, users=users, cold=cold, slices=slices,
        n_users=int(warm_users.size), n_cold_users=int(cold_users.size), ks=ks, part=part,
        model=getattr(model, "name", type(model).__name__), split=split.name, history=history,
        rerank=stage.describe() if stage is not None else "",
        seconds={"score": t_score, "metrics": t_metrics, "evaluate": total},
        exposure=exposures[kmax], item_popularity=item_pop)


def fit_and_evaluate(
    model: Recommender,
    split: Split,
    ks: Iterable[int] = (10,),
    *,
    rng: np.random.Generator | int | None = 0,
    part: str = "test",
    history: HistoryPolicy = "observed",
    batch_size: int = 1024,
    item_features: np.ndarray | sp.spmatrix | None = None,
    rerank: Sequence[str | RerankSpec] = (),
) -> EvalResult:
    """Fit `model` on `split.train` (timed as seconds["fit"]) and `evaluate` it with the
    `history` policy (and the `rerank` re-rankers).

    When testing, the model's `TrainingOptions` carry `split.valid` (when it has events), for
    models that early-stop on validation data; the others ignore it. When validating, they
    carry none: the validation part is then what is being measured.
    """
    check_history(history)
    valid = split.valid if part == "test" and split.valid is not None else None
    if valid is not None and valid.n_events == 0:
        valid = None
    t0 = time.perf_counter()
    model.fit(split.train, TrainingOptions(rng=rng, valid=valid))
    fit_s = time.perf_counter() - t0
    result = evaluate(model, split, ks, part=part, history=history, batch_size=batch_size,
                      item_features=item_features, rerank=rerank)
    result.seconds = {"fit": fit_s, **result.seconds}
    return result


def cross_validate(
    model_factory: Callable[[], Recommender],
    splits: Sequence[Split],
    ks: Iterable[int] = (10,),
    *,
    rng: int = 0,
    history: HistoryPolicy = "observed",
    rerank: Sequence[str | RerankSpec] = (),
) -> dict[str, dict[str, float]]:
    """Fit a fresh model per split and evaluate it on the split's test part (with the
    `history` policy and the `rerank` re-rankers).

    Returns {metric: {"mean": ..., "std": ..., "n": folds}}; std is the sample standard
    deviation over folds (ddof=1; 0 for a single split). Metrics also include "fit_seconds"
    and "eval_seconds".
    """
    if not splits:
        raise ConfigError("cross_validate needs at least one split")
    check_history(history)
    results = [fit_and_evaluate(model_factory(), s, ks, rng=rng, history=history,
                                rerank=rerank) for s in splits]
    keys: dict[str, list[float]] = {}
    for r in results:
        for name, v in r.metrics.items():
            keys.setdefault(name, []).append(v)
        keys.setdefault("fit_seconds", []).append(r.seconds.get("fit", 0.0))
        keys.setdefault("eval_seconds", []).append(r.eval_seconds)
    out = {}
    for name, vals in keys.items():
        a = np.asarray(vals, dtype=np.float64)
        defined = a[~np.isnan(a)]  # a metric undefined in a fold (NaN) is left out
        std = (0.0 if a.size <= 1 else
               float(defined.std(ddof=1)) if defined.size > 1 else float("nan"))
        out[name] = {"mean": float(defined.mean()) if defined.size else float("nan"),
                     "std": std, "n": float(a.size)}
    return out


def check_history(history: object) -> None:
    """Refuse a history policy that is not one of `HISTORY_POLICIES`."""
    if not isinstance(history, str) or history not in HISTORY_POLICIES:
        raise ConfigError(f"history must be one of {', '.join(map(repr, HISTORY_POLICIES))}, "
                          f"got {history!r}")


def _observed(split: Split, part: str) -> Sequences:
    """Every user's time-ordered events as of `part`: the training part, plus the validation
    part when testing (the model was fitted on the training part only)."""
    train = split.train
    if part == "test" and split.valid is not None and split.valid.n_events:
        return train.with_events(pl.concat([train.events, split.valid.events])).sequences()
    return train.sequences()


def _slice(per_user: Mapping[str, np.ndarray], sel: np.ndarray, keys: Sequence[str]
           ) -> dict[str, float]:
    out: dict[str, float] = {"users": int(sel.sum())}
    if sel.any():
        for key in keys:
            v = per_user[key][sel]
            v = v[~np.isnan(v)]
            out[key] = float(v.mean()) if v.size else float("nan")
    return out


def _json_float(v: float) -> float | int | None:
    if isinstance(v, int | np.integer):
        return int(v)
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else round(v, 6)
