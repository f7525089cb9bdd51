"""FA*IR's mtable (Zehlike et al. 2017, "FA*IR: A Fair Top-k Ranking Algorithm").

A ranking is fair when every prefix of length i holds at least m(i) protected items, m(i) being
the alpha-quantile of Binomial(i, p): the fewest protected items a ranking drawn with share p
shows at i with probability above alpha. Testing all k prefixes at level alpha fails a fair
ranking more often than alpha, so the paper adjusts alpha down until the probability that a
ranking drawn with share p fails some prefix is alpha (its Algorithm 2, found by bisection).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats

ALPHA = 0.1  # the paper's significance level
_EPS = 1e-16


def mtable(k: int, p: float, alpha: float) -> np.ndarray:
    """(k,) int64: m(i) for prefixes i = 1..k at significance `alpha` (not adjusted)."""
    if p <= 0.0 or k < 1:
        return np.zeros(max(k, 0), dtype=np.int64)
    m = stats.binom.ppf(alpha, np.arange(1, k + 1), p)
    return np.maximum(np.nan_to_num(m, nan=0.0), 0.0).astype(np.int64)


def fail_probability(table: np.ndarray, p: float) -> float:
    """Probability that a ranking whose items are protected independently with probability p
    falls below `table` at some prefix (an exact dynamic programme over protected counts)."""
    k = table.size
    dist = np.zeros(k + 1)
    dist[0] = 1.0
    for i in range(k):  # dist[c]: P(c protected among the first i items and no prefix failed)
        dist[1:] = dist[1:] * (1.0 - p) + dist[:-1] * p
        dist[0] *= 1.0 - p
        dist[: table[i]] = 0.0
    return float(1.0 - dist.sum())


@lru_cache(maxsize=256)
def adjusted_mtable(k: int, p: float, alpha: float = ALPHA) -> tuple[int, ...]:
    """m(1..k) with alpha adjusted for testing k prefixes (bisection on the adjusted alpha;
    the mtable only changes at finitely many alphas, so it stops when the candidates' mtables
    are one protected item apart and keeps the one whose failure probability is closest to
    alpha, as the paper's reference implementation does)."""
    if p <= 0.0 or k < 1:
        return tuple([0] * max(k, 0))

    def boundary(a: float) -> tuple[float, np.ndarray, float]:
        t = mtable(k, p, a)
        return a, t, fail_probability(t, p)

    lo, hi = boundary(0.0), boundary(alpha)
    mid = boundary(alpha / 2)
    for _ in range(200):  # bisection on a float: ends long before this
        if lo[1].sum() >= hi[1].sum() or mid[2] == alpha:
            break
        if mid[2] < alpha:
            lo = mid
        else:
            hi = mid
        mid = boundary((lo[0] + hi[0]) / 2)
        if hi[1].sum() - lo[1].sum() == 1 or hi[0] - lo[0] <= _EPS:
            return _closest((lo, hi), alpha)
        if hi[1].sum() - mid[1].sum() == 1 and mid[1].sum() - lo[1].sum() == 1:
            return _closest((mid, lo, hi), alpha)
    return tuple(int(x) for x in mid[1])


def _closest(pairs: tuple[tuple[float, np.ndarray, float], ...], alpha: float
             ) -> tuple[int, ...]:
    best = min(pairs, key=lambda b: abs(b[2] - alpha))  # first wins ties (mid, then lo)
    return tuple(int(x) for x in best[1])
