"""One greedy pass that picks a list from best-first candidates.

At each position the candidate with the largest

    (1 - sum_i w_i) * relevance + sum_i w_i * gain_i

is picked, relevance being the model score min-max scaled over the candidates and gain_i each
soft objective's marginal gain from adding the candidate at this position, on a [0, 1] scale.
FA*IR is a constraint inside the same loop: when the prefix holds fewer protected items than
the mtable asks, only protected candidates may be picked (while any are left). Ties go to the
earlier candidate, so weight 0 keeps the model's order.

Objectives (Steck 2018 for calibration; Carbonell & Goldstein 1998 for MMR):
- mmr: 1 - the candidate's largest similarity to the items already picked (computed as
  minus that similarity: the same choice, and the serving API's earlier results bit for bit);
- calibration: the drop in KL(p || (1 - alpha) q + alpha p) that adding the candidate brings,
  min-max scaled over the free candidates at each step (KL drops have no natural scale);
- exposure: the drop in the squared distance between the list's rank-weighted group exposure
  shares and the target shares, min-max scaled like calibration;
- freshness: 0.5 ** (age_days / half_life), already in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

_FLAT = 1e-12  # a gain spread below this carries no preference


class Objective(Protocol):
    """A soft objective for one user's candidates (n,)."""

    def gains(self, free: np.ndarray, position: int) -> np.ndarray:
        """(n,) marginal gain of each candidate at 0-based `position` (free ones matter)."""
        ...

    def add(self, j: int, position: int) -> None:
        """Candidate j was picked at `position`."""
        ...


def relevance(scores: np.ndarray) -> np.ndarray:
    """Scores min-max scaled to [0, 1] (all ones when they are all equal)."""
    s = np.asarray(scores, dtype=np.float64)
    span = float(s.max() - s.min()) if s.size else 0.0
    return (s - s.min()) / span if span > 0 else np.ones(s.size)


def scaled(gain: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Gains min-max scaled to [0, 1] over the free candidates (zeros when flat)."""
    g = gain[free]
    if g.size == 0:
        return np.zeros_like(gain)
    lo, span = float(g.min()), float(g.max() - g.min())
    if span <= _FLAT:
        return np.zeros_like(gain)
    return (gain - lo) / span


def greedy(scores: np.ndarray, k: int, objectives: Sequence[tuple[float, Objective]], *,
           relevance_weight: float | None = None, protected: np.ndarray | None = None,
           table: Sequence[int] | None = None) -> np.ndarray:
    """Positions (min(k, n),) into the candidates in picked order.

    scores: (n,) model scores of the candidates, best first. objectives: (weight, objective)
    pairs; relevance_weight defaults to 1 - sum of their weights (pass it when a stage was
    left out for this user but keeps its share). protected: (n,) bool and table: m(1..k),
    FA*IR's minimum protected count per prefix length."""
    n = int(np.asarray(scores).size)
    m = min(int(k), n)
    rel = relevance(scores)
    w_rel = 1.0 - sum(w for w, _ in objectives) if relevance_weight is None else relevance_weight
    free = np.ones(n, dtype=bool)
    picked = np.empty(m, dtype=np.int64)
    n_protected = 0
    for t in range(m):
        value = w_rel * rel
        for w, obj in objectives:
            value = value + w * obj.gains(free, t)
        value[~free] = -np.inf
        if protected is not None and table is not None and n_protected < table[t]:
            must = free & protected
            if must.any():  # else the pool has no protected item left: the best one goes
                value[~must] = -np.inf
        j = int(np.argmax(value))
        picked[t] = j
        free[j] = False
        if protected is not None:
            n_protected += int(protected[j])
        for _, obj in objectives:
            obj.add(j, t)
    return picked


# --- objectives --------------------------------------------------------------------------------
class MMRObjective:
    """Diversity: minus the largest similarity to the picked items (nothing before the first)."""

    def __init__(self, sim: np.ndarray) -> None:
        self.sim = sim  # (n, n)
        self.max_sim: np.ndarray | None = None

    def gains(self, free: np.ndarray, position: int) -> np.ndarray:
        if self.max_sim is None:
            return np.zeros(self.sim.shape[0])
        return -self.max_sim

    def add(self, j: int, position: int) -> None:
        row = np.asarray(self.sim[j], dtype=np.float64)
        self.max_sim = row.copy() if self.max_sim is None else np.maximum(self.max_sim, row)


class CalibrationObjective:
    """Steck's calibration: the KL drop from adding a candidate to the list.

    p: (G,) the user's category distribution; rows: (n, G) p(g|i) of the candidates (only the
    columns where p > 0 matter to KL; each row sums to 1 over all labels, or 0)."""

    def __init__(self, p: np.ndarray, rows: np.ndarray, categorised: np.ndarray,
                 alpha: float) -> None:
        support = p > 0
        self.p = p[support]
        self.rows = rows[:, support]
        self.cat = categorised.astype(np.float64)  # (n,) 1 when the candidate has a label
        self.alpha = alpha
        self.q_sum = np.zeros(self.p.size)
        self.n_cat = 0.0

    def _kl(self, q_sum: np.ndarray, n_cat: np.ndarray | float) -> np.ndarray:
        # q_sum is all zero where n_cat is 0 (only categorised rows add to it): q = 0 there
        n = np.maximum(np.asarray(n_cat, dtype=np.float64), 1.0)
        qt = (1.0 - self.alpha) * q_sum / n[..., None] + self.alpha * self.p
        return (self.p * np.log(self.p / qt)).sum(axis=-1)

    def gains(self, free: np.ndarray, position: int) -> np.ndarray:
        now = self._kl(self.q_sum, self.n_cat)
        drop = np.zeros(free.size)
        drop[free] = now - self._kl(self.q_sum[None, :] + self.rows[free],
                                    self.n_cat + self.cat[free])
        return scaled(drop, free)

    def add(self, j: int, position: int) -> None:
        self.q_sum = self.q_sum + self.rows[j]
        self.n_cat += self.cat[j]


class ExposureObjective:
    """Group exposure targeting: the drop in sum_g (share_g - target_g)^2 of the list's
    rank-weighted (1 / log2(rank + 1)) exposure from adding a candidate at this position."""

    def __init__(self, codes: np.ndarray, target: np.ndarray) -> None:
        self.codes = codes  # (n,) group of each candidate
        self.target = target  # (G,) target shares
        self.exposure = np.zeros(target.size)

    def gains(self, free: np.ndarray, position: int) -> np.ndarray:
        e = 1.0 / np.log2(position + 2.0)
        total = self.exposure.sum()
        now = 0.0 if total == 0 else float(((self.exposure / total - self.target) ** 2).sum())
        base = self.exposure / (total + e) - self.target  # (G,) shares after, group untouched
        # adding to group h changes only its term: sum(base^2) - base_h^2 + (base_h + e/Z)^2
        after = (base**2).sum() - base**2 + (base + e / (total + e)) ** 2  # (G,)
        return scaled(now - after[self.codes], free)

    def add(self, j: int, position: int) -> None:
        self.exposure[self.codes[j]] += 1.0 / np.log2(position + 2.0)


class StaticObjective:
    """A gain that does not depend on the list (freshness)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def gains(self, free: np.ndarray, position: int) -> np.ndarray:
        return self.values

    def add(self, j: int, position: int) -> None:
        pass
