"""The weight search of `lmrec.models.blend`: held-out pairs, the simplex grid, coordinate
ascent, and NDCG@k of a weight vector over the search users.

NDCG@k is the evaluation's (lmrec.metrics, full ranking, the training items masked), computed
exactly but cheaply: per user, the union of each member's top `_CANDIDATES` unmasked items is
kept (normalised scores, a few hundred columns instead of the catalogue), and the blend's top
k among them is the full ranking's top k whenever its k-th score is above the best any other
item can reach (the weighted sum of the members' `_CANDIDATES`-th scores, weights being
non-negative). The few users where that does not hold are scored over every item again. The
search cost then hardly grows with the catalogue, and the kept columns are small enough to
keep for every pass of coordinate ascent.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from lmrec import columns as C
from lmrec import metrics as M
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError
from lmrec.models.base import Recommender
from lmrec.models.ranking import top_k

MIN_PAIRS = 3  # a user needs this many training pairs to lend one to the internal holdout
_CANDIDATES = 100  # each member's top items kept per search user
_BATCH = 512  # search users scored at once

Weights = tuple[float, ...]
# member scores (one (B, n_items) array per member) and the (B, n_items) known rows ->
# the members' normalised scores, (n_members, B, n_items): the blend's own normalisation
Normalise = Callable[[list[np.ndarray], sp.csr_matrix], np.ndarray]


def combine(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_members, B, n) and (n_members,) -> (B, n) float32 weighted sum (members of weight 0
    left out, so that their -inf entries do not turn into NaN)."""
    out = np.zeros(stack.shape[1:], dtype=np.float32)
    for w, s in zip(weights, stack, strict=True):
        if w:
            out += np.float32(w) * s
    return out


def simplex_grid(n: int, steps: int) -> list[Weights]:
    """Every weight vector of `n` multiples of 1/steps summing to 1, most even first (so the
    first best of a tie is the least extreme)."""
    points = [(*p, steps - sum(p)) for p in itertools.product(range(steps + 1), repeat=n - 1)
              if sum(p) <= steps]
    points.sort(key=lambda p: (sum((v / steps - 1 / n) ** 2 for v in p), p))
    return [tuple(v / steps for v in p) for p in points]


def coordinate_ascent(evaluate: Callable[[list[Weights]], np.ndarray], n: int, steps: int,
                      rounds: int) -> Weights:
    """From equal weights: per member, every grid value for it with the others rescaled in
    proportion; keep a strictly better point; stop after a sweep without one."""
    best = tuple([1.0 / n] * n)
    best_value = float(evaluate([best])[0])
    for _ in range(rounds):
        improved = False
        for j in range(n):
            cands = []
            for v in np.arange(steps + 1) / steps:
                rest = np.delete(np.asarray(best), j)
                rest = (rest / rest.sum() * (1 - v) if rest.sum() > 0
                        else np.full(n - 1, (1 - v) / (n - 1)))
                cands.append(tuple(float(x) for x in np.insert(rest, j, v)))
            values = evaluate(cands)
            i = int(np.argmax(values))
            if values[i] > best_value:
                best, best_value, improved = cands[i], float(values[i]), True
        if not improved:
            break
    return best


class NdcgOfWeights:
    """Mean NDCG@k of weight vectors over `users`, ranking `truth` with the rows of `seen`
    masked; `tried` remembers every value. Callable on a list of weight vectors."""

    def __init__(self, members: Sequence[Recommender], normalise: Normalise,
                 users: np.ndarray, seen: sp.csr_matrix, truth: sp.csr_matrix, k: int) -> None:
        self.members, self.normalise, self.users = list(members), normalise, users
        self.seen, self.truth, self.k = seen, truth, k
        self.tried: dict[Weights, float] = {}
        self.rescored = 0  # users scored over every item again (diagnostics)
        self._batches = [self._candidates(users[s : s + _BATCH])
                         for s in range(0, users.size, _BATCH)]

    def _full(self, users: np.ndarray) -> np.ndarray:
        """(B, n_members, n_items) normalised member scores with the known items at -inf."""
        known = self.seen[users]
        stack = self.normalise([m.score(users) for m in self.members], known)
        coo = known.tocoo()
        stack[:, coo.row, coo.col] = -np.inf
        return stack

    def _candidates(self, users: np.ndarray) -> tuple[np.ndarray, ...]:
        """(users, item indices (B, P) ascending with n_items as padding, their member scores
        (n_members, B, P), each member's bound (n_members, B))."""
        stack = self._full(users)
        n_members, b, n = stack.shape
        tops = [top_k(s, _CANDIDATES) for s in stack]
        idx = np.concatenate([t[0] for t in tops], axis=1)
        idx = np.sort(np.where(idx < 0, n, idx), axis=1)
        idx[:, 1:][idx[:, 1:] == idx[:, :-1]] = n  # duplicates become padding ...
        idx = np.sort(idx, axis=1)  # ... and move behind the real items
        padded = np.concatenate([stack, np.full((n_members, b, 1), -np.inf, np.float32)], 2)
        vals = np.stack([np.take_along_axis(p, idx, axis=1) for p in padded])
        # no item outside a member's kept ones scores above its last kept one
        bounds = np.stack([t[1][:, -1] if n > _CANDIDATES else np.full(b, -np.inf, np.float32)
                           for t in tops])
        return users, idx, vals, bounds

    def __call__(self, cands: list[Weights]) -> np.ndarray:
        todo = [w for w in dict.fromkeys(cands) if w not in self.tried]
        sums = np.zeros(len(todo))
        k = min(self.k, self.seen.shape[1])  # the length of the protocol's lists
        for users, idx, vals, bounds in self._batches if todo else ():
            truth = self.truth[users]
            n_truth = np.diff(truth.indptr)
            for i, w in enumerate(todo):
                weights = np.asarray(w)
                pos, best = top_k(combine(vals, weights), k)
                items = np.full((users.size, k), -1, dtype=np.int64)
                items[:, : pos.shape[1]] = np.where(
                    pos >= 0, np.take_along_axis(idx, np.maximum(pos, 0), 1), -1)
                reach = combine(bounds[:, None, :], weights)[0]  # (B,)
                kth = best[:, -1] if best.shape[1] == k else np.full(users.size, -np.inf)
                unsure = np.flatnonzero(~(kth > reach))
                if unsure.size:
                    self.rescored += unsure.size
                    full = combine(self._full(users[unsure]), weights)
                    items[unsure] = top_k(full, k)[0]
                per = M.accuracy_from_hits(M.hit_matrix(items, truth), n_truth, [self.k])
                sums[i] += float(np.nansum(per[f"ndcg@{self.k}"]))
        for w, total in zip(todo, sums, strict=True):
            self.tried[w] = total / self.users.size
        return np.array([self.tried[w] for w in cands])


def search_users(seen: sp.csr_matrix, truth: sp.csr_matrix, cap: int,
                 rng: np.random.Generator) -> np.ndarray:
    """The users with training and held-out items (a seeded sample of `cap` beyond that)."""
    users = np.flatnonzero((np.diff(truth.indptr) > 0) & (np.diff(seen.indptr) > 0))
    if users.size == 0:
        raise ConfigError("the blend has no user with both training and held-out items to "
                          "learn its weights from: give a validation part or set weights")
    if users.size > cap:
        users = np.sort(rng.choice(users, cap, replace=False))
    return users


def holdout(dataset: Dataset, share: float, rng: np.random.Generator
            ) -> tuple[Dataset, sp.csr_matrix]:
    """(the dataset without the held-out pairs' events, the held-out pairs as binary CSR):
    per user with >= MIN_PAIRS distinct items, max(1, floor(share * pairs)) random pairs."""
    x = dataset.matrix("binary").tocsr()
    counts = np.diff(x.indptr)
    users = np.repeat(np.arange(x.shape[0]), counts)
    order = np.lexsort((rng.random(users.size), users))  # a random order within each user
    rank = np.empty(users.size, dtype=np.int64)
    rank[order] = np.arange(users.size) - np.repeat(x.indptr[:-1], counts)
    n_hold = np.where(counts >= MIN_PAIRS,
                      np.maximum(1, np.floor(counts * share)), 0).astype(np.int64)
    hold = rank < n_hold[users]
    if not hold.any():
        raise ConfigError(f"too little data to hold out training pairs for the blend's weight "
                          f"search (no user has {MIN_PAIRS} items): give a validation part or "
                          "set weights")
    held = sp.csr_matrix((np.ones(int(hold.sum()), np.float32),
                          (users[hold], x.indices[hold])), shape=x.shape)
    n_items = dataset.n_items
    held_keys = users[hold].astype(np.int64) * n_items + x.indices[hold]
    ev = dataset.events
    keys = (ev[C.USER_IDX].to_numpy().astype(np.int64) * n_items
            + ev[C.ITEM_IDX].to_numpy().astype(np.int64))
    return dataset.with_events(ev.filter(~np.isin(keys, held_keys))), held
