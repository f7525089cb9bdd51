"""Stochastic rankers with known propensities, so that logged impressions can be reweighted.

    explorer = Explorer.parse("plackett-luce:0.5")     # or "epsilon-greedy:0.1"
    items, propensities = explorer.slate(idx, scores, k=10, rng=rng)

Both draw a slate of `k` items from a candidate pool (`idx`, `scores`: the engine's best
candidates, best first) and return, for each shown item, its *marginal* probability of being at
that position under the policy given the pool: P(item i at position j). Items outside the pool
have probability 0 by construction, which off-policy estimators must keep in mind.

* ``plackett-luce:T`` samples without replacement with P(next = i) proportional to
  exp(score_i / T) among the items left: a Gumbel top-k over scores / T, which is exactly
  Plackett-Luce. Position 0 (so k = 1) is exact: softmax(scores / T). Deeper positions are a
  Monte Carlo estimate from `PL_DRAWS` (512) Gumbel draws seeded from the scores (the same
  pool always gets the same propensities), Rao-Blackwellised: each draw fixes the other
  items' keys and integrates the item's own key analytically, so a draw adds a probability,
  not a 0/1 indicator, and rare placements are estimated as well as common ones. Where the
  draws' own relative standard error exceeds 10% (a strong item pushed down by weak ones),
  the item's marginals are integrated numerically instead (relative error ~1e-10). Error
  against numerical integration (pools of 10, positions 1-4, T = 0.1 to 2): relative RMSE
  2-4% per (item, position), worst 14%. Clipped to >= 1e-12 only against underflow.
* ``epsilon-greedy:E`` fills each position, in order, with the best remaining pool item with
  probability 1 - E and with a uniformly random remaining pool item otherwise. Its propensities
  are exact (`_greedy_table`) and depend only on (pool size, k, E), so they are cached.

Speed of `slate()`, pool 50, k 10, mean CPU time over 1,000 random pools (numpy 2.4, a
shared 2-core machine): plackett-luce 0.51 ms at T = 2 to 0.61 ms at T = 0.1 (the numerical
fallback, ~0.5 ms, runs in 0-15% of slates, most at low T); epsilon-greedy 0.012 ms.
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lmrec.errors import ConfigError

PL_DRAWS = 512  # Gumbel draws behind a Plackett-Luce propensity beyond position 0
MIN_PROPENSITY = 1e-12  # only against underflow: a shown item never has probability 0
FALLBACK_RSE = 0.1  # integrate instead when the draws' relative standard error is above this
_FORMS = "plackett-luce:T (a temperature T > 0) or epsilon-greedy:E (0 < E <= 1)"
_SPEC = re.compile(r"^(plackett-luce|epsilon-greedy):\s*(?:[te]\s*=\s*)?(\S+)$")


class Explorer(ABC):
    """A randomised ranking policy over a candidate pool, with known propensities."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The logged policy, e.g. "plackett-luce:T=0.5"; `Explorer.parse` accepts it."""

    @staticmethod
    def parse(spec: str) -> Explorer:
        """"plackett-luce:T" or "epsilon-greedy:E" (also as written by `name`, "...:T=0.5");
        ConfigError naming --explore otherwise."""
        m = _SPEC.match(str(spec).strip().lower())
        value = _number(m.group(2)) if m else math.nan
        if m and m.group(1) == "plackett-luce" and value > 0:
            return PlackettLuce(value)
        if m and m.group(1) == "epsilon-greedy" and 0 < value <= 1:
            return EpsilonGreedy(value)
        raise ConfigError(f"--explore {spec!r}: expected {_FORMS}")

    @abstractmethod
    def position_probabilities(self, scores: np.ndarray, k: int) -> np.ndarray:
        """(pool, k): P(pool item i at position j) for the pool's `scores` (best first)."""

    @abstractmethod
    def _draw(self, scores: np.ndarray, k: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
        """(pool positions (k,), their propensities (k,)) for 1 <= k <= pool."""

    def slate(self, idx: np.ndarray, scores: np.ndarray, k: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
        """(items (k,) from `idx` in slate order, propensity of each at its position (k,)).

        `idx`, `scores`: (pool,) the candidates, best first; a pool smaller than k gives a
        slate of the whole pool."""
        idx, scores = np.asarray(idx), _scores(scores)
        if idx.shape != scores.shape:
            raise ValueError(f"idx {idx.shape} and scores {scores.shape} differ in shape")
        k = min(int(k), scores.size)
        if k <= 0:
            return idx[:0], np.zeros(0)
        pos, prop = self._draw(scores, k, rng)
        return idx[pos], prop


@dataclass(frozen=True)
class PlackettLuce(Explorer):
    temperature: float

    @property
    def name(self) -> str:
        return f"plackett-luce:T={self.temperature!r}"

    def position_probabilities(self, scores: np.ndarray, k: int) -> np.ndarray:
        mu = _scores(scores) / self.temperature
        n, k = mu.size, max(min(int(k), mu.size), 0)
        if k == 0:
            return np.zeros((n, 0))
        items = np.repeat(np.arange(n), k)  # (n*k,) every (item, position) pair
        return _pl_propensities(mu, items, np.tile(np.arange(k), n)).reshape(n, k)

    def _draw(self, scores: np.ndarray, k: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
        mu = scores / self.temperature
        keys = mu + rng.gumbel(size=mu.size)  # (pool,) the top k of these is a PL sample
        pos = np.argsort(-keys, kind="stable")[:k]
        return pos, _pl_propensities(mu, pos, np.arange(k))


@dataclass(frozen=True)
class EpsilonGreedy(Explorer):
    epsilon: float

    @property
    def name(self) -> str:
        return f"epsilon-greedy:e={self.epsilon!r}"

    def position_probabilities(self, scores: np.ndarray, k: int) -> np.ndarray:
        n = _scores(scores).size
        return _greedy_table(n, max(min(int(k), n), 0), self.epsilon).copy()

    def _draw(self, scores: np.ndarray, k: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
        n = scores.size
        explore = (rng.random(k) < self.epsilon).tolist()
        pick = rng.random(k).tolist()
        left = list(range(n))  # pool positions not shown yet, best first
        pos = [left.pop(int(u * len(left))) if e else left.pop(0)
               for e, u in zip(explore, pick, strict=True)]
        return np.array(pos), _greedy_table(n, k, self.epsilon)[pos, np.arange(k)]


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _scores(scores: np.ndarray) -> np.ndarray:
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not np.isfinite(scores).all():
        raise ValueError("scores must be a 1-d array of finite numbers")
    return scores


def _gumbel_cdf(x: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """P(mu + Gumbel(0, 1) < x), elementwise; x may be +-inf."""
    with np.errstate(over="ignore"):
        return np.exp(-np.exp(mu - x))


def _pl_propensities(mu: np.ndarray, items: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(m,): P(items[c] at position pos[c]) under Plackett-Luce with utilities mu (pool,).

    Position 0 is the softmax. Otherwise item i is at position j exactly when its key falls
    between the j-th and (j+1)-th largest keys of the *other* items, O[j-1] > key_i > O[j];
    given the others' keys that has probability F_i(O[j-1]) - F_i(O[j]) (F_i: the Gumbel
    CDF at mu_i), averaged here over PL_DRAWS draws of all keys. The others' order statistics
    come from the sorted keys of all items: O[m] is K[m] while item i ranks below m (its key
    < K[m]), else K[m + 1]. Where the draws' own standard error exceeds FALLBACK_RSE of the
    estimate (a rare configuration of the others, e.g. a strong item pushed down by weak
    ones), the item's marginals are integrated numerically instead (`_pl_integral`).
    """
    mu = mu - mu.max()  # a shift changes no ranking; keeps exp() finite
    n, k = mu.size, int(pos.max()) + 1
    out = np.empty(items.size)
    first = pos == 0
    soft = np.exp(mu)
    out[first] = soft[items[first]] / soft.sum()
    if first.all():
        return out
    seed = int.from_bytes(hashlib.blake2b(mu.tobytes(), digest_size=8).digest(), "little")
    noise = -np.log(np.random.default_rng(seed).standard_exponential((PL_DRAWS, n)))
    keys = mu + noise  # (D, pool) one Gumbel key per item and draw
    # (D, k + 2): the k + 1 largest keys, descending, behind +inf (K[-1]) and ahead of -inf
    # for pools of exactly k items, whose "others" run out at O[k - 1]
    top = -np.sort(-keys, axis=1)[:, : k + 1]
    pad = np.full((PL_DRAWS, 1), np.inf)
    kk = np.concatenate([pad, top, -pad], axis=1)  # kk[:, m + 1] = K[m]
    it, j = items[~first], pos[~first]
    own = keys[:, it]  # (D, m') each item's own key
    upper = np.where(own < kk[:, j], kk[:, j], kk[:, j + 1])  # O[j-1]
    lower = np.where(own < kk[:, j + 1], kk[:, j + 1], kk[:, j + 2])  # O[j]
    each = _gumbel_cdf(upper, mu[it]) - _gumbel_cdf(lower, mu[it])  # (D, m')
    p = each.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rse = (each / p).std(axis=0) / np.sqrt(PL_DRAWS)  # scaled first: tiny values square to 0
    unsure = ~(rse < FALLBACK_RSE)  # also p == 0 (NaN)
    for item in np.unique(it[unsure]).tolist():  # rare: such placements are rarely drawn
        rows = unsure & (it == item)
        p[rows] = _pl_integral(mu, item, k)[j[rows]]
    out[~first] = np.maximum(p, MIN_PROPENSITY)
    return out


def _pl_integral(mu: np.ndarray, item: int, k: int) -> np.ndarray:
    """(k,) P(item at position j), j < k: the integral over the item's Gumbel key offset z
    of its density times P(exactly j others beat it) (a Poisson-binomial: a DP over the
    others), by the trapezoid rule, which is ~1e-10 accurate at step 0.2 on this smooth
    integrand; past 25 above the strongest other, the item beats them all."""
    others = np.delete(mu, item) - mu[item]  # (pool - 1,) their utility advantage
    z = np.arange(-5.0, max(float(others.max(initial=0.0)), 0.0) + 25.0, 0.2)  # (G,)
    with np.errstate(over="ignore"):
        rate = np.exp(others[None, :] - z[:, None])  # (G, pool - 1)
    beat, stay = -np.expm1(-rate), np.exp(-rate)  # P(other's key > item's), its complement
    count = np.zeros((z.size, k))  # (G, k): P(j others beat it so far), j < k
    count[:, 0] = 1.0
    for q, r in zip(beat.T, stay.T, strict=True):
        count[:, 1:] = count[:, 1:] * r[:, None] + count[:, :-1] * q[:, None]
        count[:, 0] *= r
    density = np.exp(-z - np.exp(-z))  # (G,) the standard Gumbel's
    return 0.2 * (density @ count)


@lru_cache(maxsize=256)
def _greedy_table(n: int, k: int, eps: float) -> np.ndarray:
    """(n, k) exact P(pool item i at position j) under epsilon-greedy, read-only.

    State before position j: p, the best remaining pool item (items 0..p-1 are all shown).
    The other r = j - p shown items lie above p, and by symmetry they are a uniformly random
    r-subset of the N = n - p - 1 items above p (true at the start; picking p, or a uniform
    remaining item above p, keeps it so), so each item above p is still there with
    probability 1 - r / N. At position j (m = n - j items left), item p is taken with
    probability a = 1 - eps + eps / m, each remaining item above it with eps / m. Taking p
    moves the state to p + 1 + t, t the run of shown items right above p: P(t) =
    prod_{s<t} (r - s) / (N - s) * (N - r) / (N - t). O(k^3) once per (n, k, eps).
    """
    table = np.zeros((n, k))
    w = np.ones(1)  # (j + 1,) P(state p) for p = 0..j
    for j in range(k):
        m = n - j
        p = np.arange(j + 1)
        big, r = n - p - 1, j - p  # N and r per state
        a = 1 - eps + eps / m
        still = np.divide(r, big, out=np.zeros(j + 1), where=big > 0)
        c = np.where(big > 0, w * (1 - still) * eps / m, 0.0)  # to each remaining item > p
        col = np.zeros(n)
        col[: j + 1] = w * a
        cum = np.cumsum(c)  # cum[q]: sum over states p <= q
        col[1:] += cum[np.minimum(np.arange(n - 1), j)]
        table[:, j] = col
        if j == k - 1:
            break
        t = np.arange(j + 1)  # (j+1,) runs; t <= r per state
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(t[None, :] < r[:, None],
                             (r[:, None] - t[None, :]) / (big[:, None] - t[None, :]), 0.0)
            run = np.concatenate([np.ones((j + 1, 1)), np.cumprod(ratio, axis=1)[:, :-1]], 1)
            end = np.where(t[None, :] <= r[:, None],
                           (big - r)[:, None] / (big[:, None] - t[None, :]), 0.0)
        moved = np.nan_to_num(run * end) * (w * a)[:, None]  # (j+1 states, j+1 runs)
        target = p[:, None] + 1 + t[None, :]
        stay = np.append(w * eps * (m - 1) / m, 0.0)  # another item taken: p unchanged
        w = stay + np.bincount(target.ravel(), moved.ravel(), minlength=j + 2)[: j + 2]
    table.setflags(write=False)
    return table
