"""ALS's alpha and reg, chosen on a holdout of the training pairs when both are left to the data.

Implicit ALS's validation optimum in reg is sharp (ML-100K at alpha 3: reg 22.5 / 32.5 / 50 gave
NDCG@10 .2381 / .2470 / .2207) and moves with the data in ways the statistics did not capture:
short histories on Amazon Beauty and Sports wanted alpha 30 and almost no reg, a synthetic set
with equally short histories but a heavy popularity head alpha 3 and reg 60 or more (the
statistics rule lost 59% there), a sparse synthetic set r = 15 where the first rule gave 7 (35%
lost). So when neither is given, `select_alpha_reg` fits `CANDIDATES` on 80% of each user's
training pairs (users with at least five), scores the other 20% (NDCG@10, full ranking, the
fitted pairs masked) and keeps the best; the model is then fitted on every pair with it. The
candidates span both regimes around the statistics rule's ratio r (reg = r x (1 + alpha), module
`lmrec.models.als`): alpha 3 with r / 2, r and 2 r; alpha 10 and 30 with reg about 10 (r = 1
and 1/3: Amazon Sports was best at alpha 30, reg 10, Beauty flat from reg 1 to 10).
The holdout draw comes from the fit's generator, so the choice is reproducible. It costs five
more fits on four fifths of the data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

HOLDOUT_SHARE = 0.2
# (alpha, multiple of the statistics rule's long-history ratio) or (alpha, fixed ratio)
LONG_HISTORY_CANDIDATES = ((3.0, 0.5), (3.0, 1.0), (3.0, 2.0))
SHORT_HISTORY_CANDIDATES = ((10.0, 1.0), (30.0, 1.0 / 3.0))

Fit = Callable[[sp.csr_matrix, float, float], tuple[np.ndarray, np.ndarray]]


def candidates(long_ratio: float) -> list[tuple[float, float]]:
    """(alpha, reg) pairs to try, given the statistics rule's long-history ratio."""
    out = [(alpha, round(m * long_ratio * (1.0 + alpha), 2))
           for alpha, m in LONG_HISTORY_CANDIDATES]
    out += [(alpha, round(r * (1.0 + alpha), 2)) for alpha, r in SHORT_HISTORY_CANDIDATES]
    return out


def select_alpha_reg(x: sp.csr_matrix, long_ratio: float, fit: Fit, rng: np.random.Generator
                     ) -> tuple[float, float, list[list[float]]] | None:
    """The best (alpha, reg) of `candidates(long_ratio)` on a holdout of `x` (n_users,
    n_items), and every candidate's [alpha, reg, holdout NDCG@10]; None when no user has
    enough pairs to hold one out. `fit(x, alpha, reg)` returns user and item factors (U, V)."""
    import torch  # the shared holdout metric scores tensors; only needed here

    from lmrec.models.neural import holdout_split
    from lmrec.train.validation import ranking_ndcg

    fit_x, held = holdout_split(x, HOLDOUT_SHARE, rng)
    users = np.flatnonzero(np.diff(held.indptr))
    if users.size == 0:
        return None
    table: list[list[float]] = []
    for alpha, reg in candidates(long_ratio):
        u, v = fit(fit_x, alpha, reg)
        value = ranking_ndcg(lambda b, u=u, v=v: torch.from_numpy(u[b] @ v.T), users, fit_x,
                             held)
        table.append([alpha, reg, round(float(value), 5)])
    best = max(table, key=lambda row: row[2])  # the first of equals: the lower reg at alpha 3
    return best[0], best[1], table
