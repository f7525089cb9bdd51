"""Off-policy evaluation of a ranking policy from a log of slates shown by another policy.

The value of a policy is its expected number of clicks per slate. Under a position-based
model (a click on the item at position j depends only on that item, j and the context; Li et
al. 2018, "Offline Evaluation of Ranking Policies with Click Models") it is
V = sum_j E[click at j], so per-(item, position) marginal propensities suffice, and each
logged slot is weighted by

    w_ij = P_target(item a_ij at position j | x_i) / P_log(a_ij at j | x_i)

(for a deterministic target slate t_i: 1{t_ij == a_ij} / p_ij). The estimators, over the n
usable impressions:

    ips       mean_i sum_j w_ij c_ij                              unbiased, high variance
    snips     sum_j (sum_i w_ij c_ij) / (sum_i w_ij)              per position self-normalised
    dr        mean_i sum_j [r(t_ij, j) + w_ij (c_ij - r(a_ij, j))]
              with a reward model r(item, position) = position CTR x item attraction
              (`RewardModel`), fitted on the other fold of a 2-fold split of the log (cross-
              fitting: a model fitted on an impression's own clicks would shrink its
              correction towards zero and bias DR towards the model)

Each `Estimate` carries a 95% normal CI from the per-impression contributions (the delta
method for SNIPS), the number of impressions used and an effective sample size.

Arrays (n impressions, k positions): `items` (n, k) int item indices (any id space shared
with the target; -1 = no item in that slot), `propensities` (n, k) float (NaN or None where
unknown), `clicks` (n, k) 0/1; the target as `target_items` (n, k) int (its deterministic
slate for each logged context, -1 padded) or `target_probs` (n, k) float (its marginal
probability of each logged item at the logged position; IPS and SNIPS only).

An impression with a logged item whose propensity is 0 or unknown (NaN, None) cannot be
reweighted: its logging policy is unknown there (an interleaved slate) or its
record is broken, so it is left out whole and counted as `unusable` (leaving out only its
matching slots would bias the estimate downwards). The estimate is then about the contexts of
the usable impressions.

Support. Nothing in a log can show that the logging policy could have put the target's item
at a position; when it logged another item there with propensity 1 it certainly could not
(deterministic logging), and the estimators then miss that slot's clicks. `OPEReport` counts
such impressions (`unsupported`); a log with many of them cannot evaluate this target.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from lmrec.errors import InputError

ESTIMATORS = ("ips", "snips", "dr")
LEVEL = 0.95
TOLERANCE = 1e-6  # propensities and target probabilities may exceed 1 by rounding only
CERTAIN = 1.0 - 1e-9  # a propensity this close to 1: the logging policy was deterministic


@dataclass(frozen=True)
class Estimate:
    """One estimator's answer. `value`: expected clicks per slate; `ci`: its confidence
    interval at `level` (NaN bounds with fewer than 2 usable impressions); `n`: impressions
    used; `ess`: effective sample size, the mean over positions of Kish's
    (sum_i w_ij)^2 / sum_i w_ij^2 (for a deterministic target with equal propensities, the
    number of impressions whose slot matches the target's); `unusable`: impressions left out
    (unknown or zero propensity of a logged item)."""

    estimator: str
    value: float
    ci: tuple[float, float]
    se: float
    n: int
    ess: float
    unusable: int = 0
    level: float = LEVEL
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"estimator": self.estimator, "value": self.value, "ci": list(self.ci),
                "se": self.se, "n": self.n, "ess": self.ess, "unusable": self.unusable,
                "level": self.level, "note": self.note}


@dataclass(frozen=True)
class OPEReport:
    """IPS, SNIPS and DR of one deterministic target over one log, with the log's
    diagnostics: `impressions` (all), `unusable` (left out), `matched` (share of usable
    logged slots holding the target's item at the same position), `unsupported` (usable
    impressions where the target's item differs from a logged item of propensity 1)."""

    estimates: tuple[Estimate, ...]
    impressions: int
    unusable: int
    matched: float
    unsupported: int

    def by_name(self, name: str) -> Estimate:
        return next(e for e in self.estimates if e.estimator == name)

    def to_dict(self) -> dict[str, Any]:
        return {"estimates": [e.to_dict() for e in self.estimates],
                "impressions": self.impressions, "unusable": self.unusable,
                "matched": self.matched, "unsupported": self.unsupported}


# --- the estimators ------------------------------------------------------------------------
def ips(items: Any, propensities: Any, clicks: Any, *, target_items: Any = None,
        target_probs: Any = None, level: float = LEVEL) -> Estimate:
    """Inverse propensity scoring: mean_i sum_j w_ij c_ij (module docstring)."""
    lg = _Log.of(items, propensities, clicks, target_items, target_probs)
    w, c = lg.weights[lg.usable], lg.clicks[lg.usable]
    return _mean_estimate("ips", (w * c).sum(axis=1), w, lg.unusable, level)


def snips(items: Any, propensities: Any, clicks: Any, *, target_items: Any = None,
          target_probs: Any = None, level: float = LEVEL) -> Estimate:
    """Self-normalised IPS, per position: sum_j (sum_i w_ij c_ij) / (sum_i w_ij); its
    variance by the delta method on the per-impression influence
    sum_j (w_ij c_ij - R_j w_ij) / mean_i w_ij. A position where no usable slot has weight
    adds 0 (and a note)."""
    lg = _Log.of(items, propensities, clicks, target_items, target_probs)
    w, c = lg.weights[lg.usable], lg.clicks[lg.usable]
    n = w.shape[0]
    if n == 0:
        return _empty("snips", lg.unusable, level)
    mean_w = w.mean(axis=0)  # (k,)
    has = mean_w > 0
    ratio = np.zeros_like(mean_w)
    ratio[has] = (w * c).mean(axis=0)[has] / mean_w[has]
    influence = np.zeros(n)
    if has.any():
        influence = ((w[:, has] * c[:, has] - ratio[has] * w[:, has]) / mean_w[has]).sum(axis=1)
    value = float(ratio.sum())
    se = float(influence.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    note = None if has.all() else (f"{int((~has).sum())} of {has.size} positions have no "
                                   "weighted slot; they add 0")
    return Estimate("snips", value, _ci(value, se, level), se, n, _ess(w), lg.unusable,
                    level, note)


def doubly_robust(items: Any, propensities: Any, clicks: Any, target_items: Any, *,
                  reward: RewardModel | None = None, folds: int = 2,
                  level: float = LEVEL) -> Estimate:
    """Doubly robust: the reward model's value of the target slate plus the IPS correction
    mean_i sum_j w_ij (c_ij - r(a_ij, j)). Unbiased when either the propensities or the
    reward model are right. Without `reward`, a `RewardModel` is cross-fitted: impression
    i's model is fitted on the folds (i mod `folds`) that do not hold it."""
    lg = _Log.of(items, propensities, clicks, target_items, None)
    u = lg.usable
    a, c, w, t = lg.items[u], lg.clicks[u], lg.weights[u], lg.target[u]
    n = a.shape[0]
    if n == 0:
        return _empty("dr", lg.unusable, level)
    if reward is not None:
        r_logged, r_target = reward.predict(a), reward.predict(t)
    else:
        if folds < 2:
            raise InputError(f"folds must be at least 2, got {folds}")
        r_logged, r_target = np.zeros_like(c), np.zeros_like(c)
        fold = np.arange(n) % folds
        for f in range(folds):
            inside = fold == f
            model = RewardModel.fit(a[~inside], c[~inside]) if (~inside).any() else \
                RewardModel.fit(a, c)
            r_logged[inside], r_target[inside] = model.predict(a[inside]), model.predict(t[inside])
    per = r_target.sum(axis=1) + (w * (c - r_logged)).sum(axis=1)
    return _mean_estimate("dr", per, w, lg.unusable, level)


def evaluate_target(items: Any, propensities: Any, clicks: Any, target_items: Any, *,
                    level: float = LEVEL) -> OPEReport:
    """IPS, SNIPS and DR of a deterministic target, with the log's diagnostics."""
    lg = _Log.of(items, propensities, clicks, target_items, None)
    u = lg.usable
    estimates = (ips(lg.items, lg.propensities, lg.clicks, target_items=lg.target, level=level),
                 snips(lg.items, lg.propensities, lg.clicks, target_items=lg.target,
                       level=level),
                 doubly_robust(lg.items, lg.propensities, lg.clicks, lg.target, level=level))
    a, t, p = lg.items[u], lg.target[u], lg.propensities[u]
    shown = a >= 0
    matched = float((shown & (a == t)).sum() / shown.sum()) if shown.any() else 0.0
    blocked = shown & (t >= 0) & (t != a) & (p >= CERTAIN)
    return OPEReport(estimates, lg.items.shape[0], lg.unusable, matched,
                     int(blocked.any(axis=1).sum()))


# --- the reward model ----------------------------------------------------------------------
@dataclass(frozen=True)
class RewardModel:
    """r(item, position) = position_ctr[j] * attraction(item), a position-based click model.

    `position_ctr` (k,): clicks per shown slot at each position for an item of average
    attraction; `items` (m,) sorted item indices and `attraction` (m,) their relative
    attraction (mean 1 over the shown slots), shrunk towards 1 by `prior_views` pseudo-
    impressions; an item the log never showed has attraction 1."""

    position_ctr: np.ndarray
    items: np.ndarray
    attraction: np.ndarray

    @classmethod
    def fit(cls, items: np.ndarray, clicks: np.ndarray, *, steps: int = 5,
            prior_views: float = 20.0) -> RewardModel:
        """Alternating fit over the shown slots of `items` (n, k) / `clicks` (n, k): item
        attraction given the position CTRs, then position CTRs given the attractions."""
        k = items.shape[1]
        shown = items >= 0
        pos = np.broadcast_to(np.arange(k), items.shape)[shown]
        ids, inv = np.unique(items[shown], return_inverse=True)
        c = clicks[shown].astype(np.float64)
        views = np.bincount(pos, minlength=k).astype(np.float64)
        theta = np.bincount(pos, weights=c, minlength=k) / np.maximum(views, 1.0)
        alpha = np.ones(ids.size)
        clicks_of = np.bincount(inv, weights=c, minlength=ids.size)
        for _ in range(steps):
            mean_theta = float(theta[pos].mean()) if pos.size else 0.0
            expected = np.bincount(inv, weights=theta[pos], minlength=ids.size)
            prior = prior_views * mean_theta
            alpha = (clicks_of + prior) / np.maximum(expected + prior, 1e-12)
            alpha /= max(float(alpha[inv].mean()), 1e-12) if inv.size else 1.0
            exposure = np.bincount(pos, weights=alpha[inv], minlength=k)
            theta = np.bincount(pos, weights=c, minlength=k) / np.maximum(exposure, 1e-12)
        return cls(theta, ids, alpha)

    def predict(self, items: np.ndarray) -> np.ndarray:
        """(n, k) predicted click probability of each slot of `items` (n, k) (0 where -1)."""
        k = min(items.shape[1], self.position_ctr.size)
        alpha = np.ones(items.shape, dtype=np.float64)
        if self.items.size:
            at = np.clip(np.searchsorted(self.items, items), 0, self.items.size - 1)
            known = self.items[at] == items
            alpha[known] = self.attraction[at[known]]
        theta = np.zeros(items.shape[1])
        theta[:k] = self.position_ctr[:k]
        return np.where(items >= 0, np.clip(theta * alpha, 0.0, 1.0), 0.0)


# --- shared --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Log:
    """Validated arrays and the importance weights of every slot; `usable` (n,) bool."""

    items: np.ndarray  # (n, k) int64
    propensities: np.ndarray  # (n, k) float64, NaN unknown
    clicks: np.ndarray  # (n, k) float64
    target: np.ndarray  # (n, k) int64, all -1 when the target came as probabilities
    weights: np.ndarray  # (n, k) float64, 0 in unusable impressions
    usable: np.ndarray  # (n,) bool
    unusable: int

    @classmethod
    def of(cls, items: Any, propensities: Any, clicks: Any, target_items: Any,
           target_probs: Any) -> _Log:
        a = _int_matrix(items, "items")
        shape = a.shape
        p = _float_matrix(propensities, "propensities", shape)
        c = _float_matrix(clicks, "clicks", shape)
        if np.isnan(c).any() or (c < 0).any():
            raise InputError("clicks must be non-negative numbers (0/1 per slot)")
        shown = a >= 0
        if ((p < -TOLERANCE) | (p > 1 + TOLERANCE))[shown].any():
            raise InputError("propensities must be probabilities in [0, 1] (NaN or None "
                             "where unknown)")
        if (target_items is None) == (target_probs is None):
            raise InputError("give the target as target_items or as target_probs, not both")
        if target_items is not None:
            t = _int_matrix(target_items, "target_items", shape)
            pi = (shown & (t == a)).astype(np.float64)
        else:
            t = np.full(shape, -1, dtype=np.int64)
            pi = _float_matrix(target_probs, "target_probs", shape)
            given = pi[shown]
            if not ((given >= -TOLERANCE) & (given <= 1 + TOLERANCE)).all():  # NaN fails too
                raise InputError("target_probs must be probabilities in [0, 1]")
            pi = np.where(shown, np.clip(pi, 0.0, 1.0), 0.0)
        broken = shown & ~(p > 0)  # NaN compares False: unknown counts as broken
        usable = ~broken.any(axis=1)
        w = np.zeros(shape)
        ok = shown & usable[:, None]
        w[ok] = pi[ok] / np.minimum(p[ok], 1.0)
        return cls(a, p, np.where(shown, c, 0.0), t, w, usable, int((~usable).sum()))


def _int_matrix(x: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        raise InputError(f"{name} must be an (n, k) array"
                         + (f" shaped like items {shape}" if shape else "")
                         + f", got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name} must hold integer item indices (-1 for an empty slot), "
                         f"got {arr.dtype}")
    return arr.astype(np.int64)


def _float_matrix(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)  # None becomes NaN
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers (None where unknown)") from None
    if arr.shape != shape:
        raise InputError(f"{name} must be shaped like items {shape}, got shape {arr.shape}")
    return arr


def _mean_estimate(name: str, per: np.ndarray, w: np.ndarray, unusable: int,
                   level: float) -> Estimate:
    """The mean of per-impression contributions `per` (n,) with its normal CI."""
    n = per.size
    if n == 0:
        return _empty(name, unusable, level)
    value = float(per.mean())
    se = float(per.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return Estimate(name, value, _ci(value, se, level), se, n, _ess(w), unusable, level)


def _empty(name: str, unusable: int, level: float) -> Estimate:
    nan = float("nan")
    return Estimate(name, nan, (nan, nan), nan, 0, 0.0, unusable, level,
                    "no usable impressions")


def _ci(value: float, se: float, level: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return value - z * se, value + z * se


def _ess(w: np.ndarray) -> float:
    """Kish's effective sample size per position, averaged over positions (0 for none)."""
    if w.size == 0:
        return 0.0
    total, square = w.sum(axis=0), (w * w).sum(axis=0)
    per = np.divide(total * total, square, out=np.zeros_like(total), where=square > 0)
    return float(per.mean())
