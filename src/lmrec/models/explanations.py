"""Faithful explanations: how much each history item contributed to an item's score.

`Recommender.explain(user, history, items)` explains the scores `score([user], [history])[0,
items]` by the items of that history. Every method reports, for each explained item, one
contribution per distinct history item (`Explanation.history`, ordered by each item's last
event, oldest first; all the events of an item count as that item):

    "linear"             EASE, SLIM, ADMM-SLIM, ItemKNN: the score is x_h @ B, so item j's
                         term x_hj * B[j, i] is its contribution, exactly; they sum to the score.
    "als-decomposition"  ALS: implicit's `explain` (Hu, Koren & Volinsky 2008, section 5): with
                         W_u = (V^T C_u V + reg I)^-1 the regularised Gram of the fold-in, the
                         score v_i . u = sum_j c_j (v_i^T W_u v_j); the terms sum to the score.
    "neighbours"         UserKNN: the neighbour users who voted for the item, with their votes
                         (`neighbours`), and the history items through which each was found
                         (sim(h, v) = sum_j x_hj x_vj / norm): the terms sum to the score.
    "gradient x input"   SASRec, GRU4Rec, two-tower: d score / d e_t . e_t over each history
                         position's input vector e_t (`lmrec.models.explanations_neural`);
                         the two-tower also reports its user features (`features`).
    "occlusion"          any other model (the default): the exact score drop when all the
                         events of one history item are removed, every removal scored in one
                         batch (L + 2 score rows for L distinct items).
    "non-personal"       the score does not depend on the history (popularity): no history
                         item (`history` is empty), the reason is popularity.

Faithfulness is tested, not assumed: for every registered model, removing the top-attributed
history items lowers the explained item's score more than removing as many random ones
(tests/test_explanations_deletion.py; figures by `benchmarks/explain_deletion.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from lmrec.data.dataset import Sequences
from lmrec.errors import InputError

if TYPE_CHECKING:  # annotations only: the base class imports this module
    from lmrec.models.base import Recommender

# history rows scored at once by the occlusion default: at most 256, and at most 16M scores
# (64 MB of float32) however large the catalogue
OCCLUSION_BATCH, OCCLUSION_SCORES = 256, 1 << 24


@dataclass(frozen=True)
class Explanation:
    """Why some items got their scores from one history (module docstring).

    method: "linear", "als-decomposition", "neighbours", "gradient x input", "occlusion" or
        "non-personal".
    history: (L,) int64 distinct history items, by their last event, oldest first (empty for
        "non-personal").
    contributions: (n_explained, L) float32: each history item's share of each explained
        item's score (its score drop for "occlusion").
    features: name -> (n_explained,) contribution of a user feature (the two-tower's id,
        attributes and numerics).
    neighbours: per explained item, ((index, weight), ...) best first: the neighbour users who
        voted for it and their votes (UserKNN).
    """

    method: str
    history: np.ndarray
    contributions: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    neighbours: tuple[tuple[tuple[int, float], ...], ...] = ()

    def ranked(self, j: int = 0) -> np.ndarray:
        """History items ordered by their contribution to explained item `j`, largest first."""
        order = np.argsort(-self.contributions[j], kind="stable")
        return self.history[order]

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_explained,) the top-attributed history item per explained item (-1 where no item
        raised its score) and (n_explained,) its contribution (0 there)."""
        n = self.contributions.shape[0]
        if self.history.size == 0:
            return np.full(n, -1, np.int64), np.zeros(n, np.float32)
        best = np.argmax(self.contributions, axis=1)
        value = self.contributions[np.arange(n), best]
        ok = np.isfinite(value) & (value > 0)
        return np.where(ok, self.history[best], -1), np.where(ok, value, 0.0).astype(np.float32)


# --- the query ------------------------------------------------------------------------------
def checked_query(model: Recommender, user: int, history: Sequences | np.ndarray | Any,
                  items: np.ndarray | Any) -> tuple[int, Sequences, np.ndarray]:
    """`explain`'s arguments checked (InputError): the user in [-1, n_users), one history (a
    one-row Sequences or item indices, oldest first) and the items to explain (n,)."""
    if isinstance(history, Sequences):
        if history.n_rows != 1:
            raise InputError(f"explain takes one history, got {history.n_rows}")
        rows: Sequences | list[np.ndarray] = history
    else:
        rows = [np.asarray(history, dtype=np.int64).ravel()]
    users, seqs = model._checked_query(np.array([int(user)]), rows)
    assert seqs is not None
    items = np.asarray(items, dtype=np.int64).ravel()
    if items.size and (items.min() < 0 or items.max() >= model.n_items):
        raise InputError(f"items to explain must be internal indices in [0, {model.n_items})")
    return int(users[0]), seqs, items


def history_items(seqs: Sequences) -> np.ndarray:
    """(L,) int64 distinct items of a one-row history, by their last event, oldest first."""
    items = np.asarray(seqs.items, dtype=np.int64)
    rev = items[::-1]
    uniq, first = np.unique(rev, return_index=True)  # first occurrence from the end
    return uniq[np.argsort(-first, kind="stable")]


def without(seqs: Sequences, drops: list[np.ndarray]) -> Sequences:
    """One row per entry of `drops`: the one-row history `seqs` without any event of those
    items (types, times and order of the other events kept)."""
    items = np.asarray(seqs.items, dtype=np.int64)
    keep = [~np.isin(items, d) for d in drops]
    lengths = np.array([int(k.sum()) for k in keep], dtype=np.int64)
    indptr = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    src = np.concatenate([np.flatnonzero(k) for k in keep]) if keep else np.zeros(0, np.int64)
    return Sequences(indptr, seqs.items[src], seqs.events[src], seqs.timestamps[src],
                     seqs.event_types)


def history_row_values(model: Recommender, seqs: Sequences, hist: np.ndarray, weighting: str
                       ) -> np.ndarray:
    """(L,) float64 value of each history item in the model's input row (binary 1, summed
    behaviour weights, or counts), as `score` builds it."""
    row = model._history_rows(seqs, weighting)
    return np.asarray(row[:, hist].toarray(), dtype=np.float64).ravel()


# --- methods --------------------------------------------------------------------------------
def non_personal(n_explained: int) -> Explanation:
    """The explanation of a score that ignores the history: no history item."""
    return Explanation("non-personal", np.zeros(0, np.int64),
                       np.zeros((n_explained, 0), np.float32))


def occlusion(model: Recommender, user: int, seqs: Sequences, items: np.ndarray
              ) -> Explanation:
    """Exact score drops: score(history) - score(history without item j), for every distinct
    item j, in batches; "non-personal" when neither any removal nor the empty history changes
    a single score of the whole row."""
    hist = history_items(seqs)
    rows = without(seqs, [np.zeros(0, np.int64), *[hist[j:j + 1] for j in range(hist.size)],
                          hist])  # full, each item removed, empty
    cols, full, same = [], None, True
    step = max(1, min(OCCLUSION_BATCH, OCCLUSION_SCORES // max(model.n_items, 1)))
    for start in range(0, rows.n_rows, step):
        part = rows.take(np.arange(start, min(start + step, rows.n_rows)))
        s = model.score(np.full(part.n_rows, user), part)  # (b, n_items)
        full = s[0].copy() if full is None else full
        same = same and bool((s == full[None, :]).all())  # only the explained columns stay
        cols.append(s[:, items].astype(np.float64))
    if hist.size and same:
        return non_personal(items.size)
    scores = np.concatenate(cols)  # (L + 2, n): full, each item removed, empty
    drops = scores[0][None, :] - scores[1:-1]  # (L, n)
    return Explanation("occlusion", hist, drops.T.astype(np.float32))


def linear(model: Recommender, seqs: Sequences, items: np.ndarray, weights: Any,
           weighting: str) -> Explanation:
    """score = x_h @ W (W dense or sparse (n_items, n_items)): term x_hj * W[j, i] per item."""
    hist_items = history_items(seqs)
    x = history_row_values(model, seqs, hist_items, weighting)
    block = weights[hist_items][:, items]  # (L, n)
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    terms = x[:, None] * block.astype(np.float64)
    return Explanation("linear", hist_items, terms.T.astype(np.float32))


def als(v: np.ndarray, reg: float, alpha: float, hist: np.ndarray, x: np.ndarray,
        items: np.ndarray) -> Explanation:
    """implicit's ALS explanation (benfred/implicit, `AlternatingLeastSquares.explain`): with
    c_j = 1 + alpha x_j and W = (V^T V + reg I + sum_j (c_j - 1) v_j v_j^T)^-1, the fold-in
    score of item i is sum_j c_j (v_i^T W v_j), one term per history item."""
    vd = v.astype(np.float64)
    f = vd.shape[1]
    c = 1.0 + alpha * x  # (L,)
    vh = vd[hist]  # (L, f)
    a = vd.T @ vd + reg * np.eye(f) + (vh.T * (c - 1.0)) @ vh
    weighted = np.linalg.solve(a, vd[items].T)  # (f, n): W v_i
    terms = (vh @ weighted).T * c[None, :]  # (n, L)
    return Explanation("als-decomposition", hist, terms.astype(np.float32))


def user_neighbours(h_values: np.ndarray, hist: np.ndarray, votes: sp.csr_matrix,
                    inputs: sp.csr_matrix, items: np.ndarray) -> Explanation:
    """UserKNN's score sum_v w_v x_v,i over the kept neighbours v (weights `votes`, one row),
    decomposed: w_v = sim(h, v) (optionally normalised) is linear in the history row, so item
    j's share of it is w_v * x_hj x_vj / <x_h, x_v>; per explained item, the voters best first."""
    votes = sp.csr_matrix(votes)
    nbrs, w = votes.indices.astype(np.int64), votes.data.astype(np.float64)
    xn = inputs[nbrs]  # (K, n_items)
    xh = np.asarray(xn[:, hist].toarray(), np.float64) * h_values[None, :]  # (K, L)
    dots = xh.sum(axis=1)  # <x_h, x_v>
    per_dot = np.divide(w, dots, out=np.zeros_like(w), where=dots > 0)
    xi = np.asarray(xn[:, items].toarray(), np.float64)  # (K, n)
    terms = (xi * per_dot[:, None]).T @ xh  # (n, L)
    voted = xi * w[:, None]  # (K, n): each neighbour's vote for each item
    neighbours = []
    for j in range(items.size):
        order = np.argsort(-voted[:, j], kind="stable")
        neighbours.append(tuple((int(nbrs[k]), float(voted[k, j])) for k in order
                                if voted[k, j] != 0))
    return Explanation("neighbours", hist, terms.astype(np.float32),
                       neighbours=tuple(neighbours))


# --- faithfulness ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Deletion:
    """Mean score drops of the deletion test over `users` explained users (`deletion_test`)."""

    method: str
    users: int
    top: float  # mean drop when the top-m attributed history items are removed
    random: float  # mean drop when m random history items are removed (mean of the draws)
    wins: float  # share of users whose top-m drop exceeds their mean random drop


def deletion_test(model: Recommender, users: np.ndarray, histories: Sequences, m: int = 2,
                  draws: int = 5, seed: int = 0) -> Deletion:
    """For each user and history: explain the best-scored item outside the history, then
    score it again without the m top-attributed history items and without m random ones
    (`draws` random sets): a faithful explanation's removals lower the score more.
    Histories with fewer than 2m distinct items are skipped."""
    rng = np.random.default_rng(seed)
    tops, rands, method, n = [], [], "", 0
    for b, user in enumerate(np.asarray(users, dtype=np.int64)):
        seqs = histories.take(np.array([b]))
        hist = history_items(seqs)
        if hist.size < 2 * m:
            continue
        s = model.score(np.array([user]), seqs)[0]
        s[hist] = -np.inf
        item = int(np.argmax(s))
        e = model.explain(int(user), seqs, np.array([item]))
        method = e.method
        # non-personal: no attributed item; any m removed must not move the score either
        top = hist[:m] if e.method == "non-personal" else e.ranked(0)[:m]
        drops = [top] + [rng.choice(hist, m, replace=False) for _ in range(draws)]
        rows = without(seqs, [np.zeros(0, np.int64), *drops])
        sc = np.asarray(model.score(np.full(rows.n_rows, user), rows)[:, item], np.float64)
        tops.append(sc[0] - sc[1])
        rands.append(float(np.mean(sc[0] - sc[2:])))
        n += 1
    t, r = np.asarray(tops), np.asarray(rands)
    return Deletion(method, n, float(t.mean()) if n else 0.0, float(r.mean()) if n else 0.0,
                    float(np.mean(t > r)) if n else 0.0)
