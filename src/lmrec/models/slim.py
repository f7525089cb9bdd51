"""SLIM ElasticNet: a sparse linear item-item model, one elastic-net regression per item.

For every item j, with X the (n_users, n_items) interaction matrix and n = n_users,

    w_j = argmin_{w >= 0, w_j = 0}  1/(2n) ||x_j - X w||^2 + a r |w|_1 + a (1 - r)/2 ||w||^2
    score(u) = X[u] @ W          (W = [w_1 .. w_m], diag(W) = 0)

Ning & Karypis, "SLIM: Sparse Linear Methods for Top-N Recommender Systems", ICDM 2011. The
objective is scikit-learn's `ElasticNet(alpha=a, l1_ratio=r, positive=True,
fit_intercept=False)`, fitted with the target item's own column hidden, as RecBole's
SLIMElastic does; it is solved here without scikit-learn.

Solver: cyclic coordinate descent on the Gram matrix G = X^T X, vectorised over all m
regressions at once (they share G). Coordinate k of every regression is updated together
from R = G - G W, whose column j holds X^T (x_j - X w_j):

    w_kj <- max(0, R_kj + G_kk w_kj - n a r) / (G_kk + n a (1 - r))

Coordinates are taken in blocks of `_BLOCK`: within a block, R's rows for the block are kept
current with rank-1 updates; once per block every row catches up with one matrix product
(BLAS), so a sweep costs O(m^3) flops, mostly in BLAS. A regression stops (its column is left
out of later sweeps) once its duality gap, computed from G, W and R as scikit-learn computes it,
is below `tol` x ||x_j||^2: scikit-learn's certificate that the objective is within that of its
minimum (scikit-learn also waits for the weights to stop moving, which asks nothing more of the
objective and, on item data, many more sweeps). The strictly convex objective has one
minimiser, so the result does not depend on the coordinate order; the fixed order makes it
deterministic. Each sweep is an epoch of the shared loop (`lmrec.train.epochs.run_epochs`),
which honours the options' time budget; its history is kept as `training_log_`.

Like EASE the model needs dense m x m matrices; `check_dense_fits` refuses a catalogue whose
matrices would not fit in the memory available (shared with the other dense item-item models).
Any item history scores as x_h @ W, its row built as the training rows are.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from lmrec.data.dataset import Dataset, Sequences
from lmrec.data.stats import DataStats
from lmrec.errors import ConfigError
from lmrec.models.artifacts import pack_csr, unpack_csr
from lmrec.models.base import Recommender
from lmrec.models.explanations import Explanation, linear
from lmrec.models.hyperparams import FloatRange, ModelConfig, SearchSpace
from lmrec.models.redaction import UserRows
from lmrec.train.epochs import EpochStats, Trainer, run_epochs
from lmrec.train.options import TrainingOptions

# coordinates per block: large enough for the catch-up product to run at BLAS speed, small
# enough that the in-block rank-1 updates (block x m per coordinate) stay cheap
_BLOCK = 128
_CHUNK = 256  # regressions per step of the convergence test


# --- memory ---------------------------------------------------------------------------------
def available_memory() -> int | None:
    """Bytes this process may still allocate: the smaller of the system's available memory
    and what the cgroup (container) limit leaves; None when neither can be read."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    if not found:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                         "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        with contextlib.suppress(OSError, ValueError):
            cap = Path(limit).read_text().strip()
            if cap != "max" and int(cap) < 2**60:  # v1 reports "no limit" as a huge number
                found.append(max(int(cap) - int(Path(used).read_text()), 0))
    return min(found) if found else None


def check_dense_fits(model: str, n_items: int, bytes_per_entry: float,
                     available: int | None = None) -> None:
    """Refuse, with a one-line ConfigError, a catalogue too large for a dense item-item model.

    `bytes_per_entry` is the model's peak working set per entry of one n_items x n_items
    matrix (e.g. 40 for five float64 matrices alive at once); `available` defaults to
    `available_memory()`. Unknown available memory lets the fit go ahead.
    """
    avail = available_memory() if available is None else available
    need = bytes_per_entry * float(n_items) ** 2
    if avail is not None and need > avail:
        raise ConfigError(
            f"{model} needs dense {n_items} x {n_items} item-item matrices (about "
            f"{need / 2**30:.1f} GiB) but only {avail / 2**30:.1f} GiB of memory is available; "
            f"use als or itemknn for a catalogue of {n_items} items")


# --- the shared linear item-item model ------------------------------------------------------
class LinearItemConfig(ModelConfig):
    weighting: Literal["binary", "weight"] = Field(
        "binary", description="interaction matrix: 1 per (user, item), or summed event weights")


class LinearItemModel(Recommender):
    """Scores a history row x as x @ B, B (n_items, n_items) float32 with a zero diagonal.

    Subclasses set `B_` in `_fit` (through `_set_state`). The weighted user-item matrix is
    kept only when `weighting` is not binary (binary rows are `seen_`, which the base class
    redacts itself).
    """

    config: LinearItemConfig
    B_: np.ndarray
    X_: sp.csr_matrix | None

    def _matrix(self, dataset: Dataset) -> sp.csr_matrix:
        return dataset.matrix(self.config.weighting).tocsr().astype(np.float32)

    def _set_state(self, b: np.ndarray, x: sp.csr_matrix) -> None:
        b = np.ascontiguousarray(b, dtype=np.float32)
        np.fill_diagonal(b, 0.0)  # rounding may leave a trace of the item's own weight
        self.B_ = b
        self.X_ = x if self.config.weighting != "binary" else None

    def user_state(self) -> tuple[UserRows, ...]:
        return () if self.X_ is None else (UserRows(self.X_),)

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        if histories is None:
            rows = (self.seen_ if self.X_ is None else self.X_)[users]
        else:
            rows = self._history_rows(histories, self.config.weighting)
        # (B, n_items) sparse @ (n_items, n_items) dense -> (B, n_items)
        return np.asarray(rows @ self.B_, dtype=np.float32)

    def _explain(self, user: int, seqs: Sequences, items: np.ndarray) -> Explanation:
        # x_h @ B: item j's term x_hj * B[j, i], exactly
        return linear(self, seqs, items, self.B_, self.config.weighting)

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {"B": self.B_}
        if self.X_ is not None:
            out.update(pack_csr(self.X_, "X"))
        return out

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.B_ = arrays["B"]
        self.X_ = unpack_csr(arrays, "X") if "X.data" in arrays else None


def trim_log(history: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """The loop's history up to the epoch where the solver converged (later epochs were
    no-ops that only ran out the loop's epoch count)."""
    return history[:max(epochs, 1)]


# --- SLIM ----------------------------------------------------------------------------------
SLIM_PENALTY = 100.0  # the default alpha x n_users (SLIMConfig)


class SLIMConfig(LinearItemConfig):
    # Defaults chosen on the validation parts of ML100K and ML latest-small (RecBole's protocol:
    # ratings >= 3, 10-core, random per-user 8:1:1, seed 0; fit on train, valid NDCG@10, mean of
    # the two; benchmarks/linear_models.py --grid slim). ML100K, 100 sweeps at most:
    # alpha .05/.1/.2/.5/1 x l1_ratio .005: .2412/.2455/.2456/.2407/.2326, x .02: .2406/.2447/
    # .2412/.2326/.2188, x .1: .2392/.2385/.2283/.1958/.1615; l1_ratio .001: alpha .1 .2452,
    # .2 .2464. Both datasets (ML100K / latest-small): alpha .1 r .005 .2454/.2293, alpha .1
    # r .02 .2448/.2292, alpha .2 r .005 .2460/.2280, RecBole's alpha .2 r .02 .2413/.2278
    # -> alpha .1 with RecBole's l1_ratio .02. The ranking settles long before the solver: the
    # same at 50 sweeps (.2445/.2292); 20 lose .003 on ML100K.
    # Data-aware since: alpha = SLIM_PENALTY / users (None). scikit-learn's objective divides
    # the squared error by the number of users, so a fixed alpha is a penalty that grows with
    # them; the validation optima (alpha .025-.4, l1_ratio .02; benchmarks/data_defaults.py)
    # were a penalty n_users x alpha of 60 on latest-small, 94 on ML-100K, 100 on a dense
    # synthetic set (2,000 users) and 145 on shop-100k (2,891 users); 100 puts all four within
    # .6% of their best.
    alpha: float | None = Field(None, gt=0, description="overall penalty a (scikit-learn's "
                                "alpha); None: from the data, 100 / users")
    l1_ratio: float = Field(
        0.02, gt=0, le=1, description="share r of the penalty that is L1: a r |w|_1 + "
                                      "a (1 - r)/2 ||w||^2 (> 0: the L1 part makes W sparse)")
    positive_only: bool = Field(True, description="constrain the weights to be >= 0")
    iterations: int = Field(100, ge=1, description="coordinate-descent sweeps at most")
    tol: float = Field(1e-4, gt=0, description="a regression stops once its duality gap is "
                                               "below tol x ||x_j||^2 (scikit-learn's tol)")

    search_space: ClassVar[SearchSpace] = {
        "alpha": FloatRange(0.01, 10.0, log=True), "l1_ratio": FloatRange(1e-3, 0.5, log=True)}


class SLIM(LinearItemModel):
    """SLIM ElasticNet. State: W (n_items, n_items) float32 as `B_`, zero diagonal."""

    name = "slim"
    Config = SLIMConfig
    config: SLIMConfig

    def data_settings(self, stats: DataStats) -> dict[str, Any]:
        alpha = self.config.alpha
        if alpha is None:  # a penalty of SLIM_PENALTY on the sum of squares (SLIMConfig)
            alpha = round(float(np.clip(SLIM_PENALTY / max(stats.n_users, 1), 1e-4, 10.0)), 5)
        return {"alpha": alpha}

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        # G, W, R float64; once some regressions have converged, the active columns of W and R
        # gathered and the catch-up product's temporary (float64); the float32 result
        check_dense_fits(self.name, dataset.n_items, 52.0)
        x = self._matrix(dataset)
        gram = (x.T @ x).toarray().astype(np.float64)  # (n_items, n_items)
        self.settings_ = self.data_settings(DataStats.of(dataset))
        trainer = SLIMTrainer(gram, x.shape[0], self.settings_["alpha"], cfg.l1_ratio,
                              cfg.positive_only, cfg.tol)
        del gram
        result = run_epochs(trainer, epochs=cfg.iterations, time_budget_s=options.time_budget_s,
                            title=self.name, progress=False)
        self.training_log_ = trim_log(result.history, trainer.sweeps)
        self._set_state(trainer.W, x)


class SLIMTrainer(Trainer):
    """Coordinate descent for all item regressions at once (module docstring); one sweep over
    the coordinates of the regressions not yet converged is an epoch."""

    def __init__(self, gram: np.ndarray, n_rows: int, alpha: float, l1_ratio: float,
                 positive: bool, tol: float) -> None:
        n = gram.shape[0]
        self.G = gram  # (n, n) X^T X, float64
        # scikit-learn's penalties times n_rows: the coordinate step works on X^T X unscaled
        self.l1 = n_rows * alpha * l1_ratio
        self.l2 = n_rows * alpha * (1.0 - l1_ratio)
        self.n_rows, self.positive, self.tol = n_rows, positive, tol
        self.W = np.zeros((n, n))  # W[k, j]: weight of item k in item j's regression
        self.R = gram.copy()  # R[:, j] = X^T (x_j - X w_j); W = 0 at the start
        self.diag = np.diag(gram).copy()
        self.active = np.arange(n)  # regressions (columns) not yet converged
        self.sweeps = 0  # sweeps run before every regression converged

    def train_epoch(self, epoch: int) -> EpochStats:
        """One sweep; the loss is the mean objective of the m regressions after it."""
        act = self.active
        if act.size:
            self.sweeps += 1
            self._sweep(act)
            self.active = act[self.gaps(act) > self.tol * self.diag[act]]
        return EpochStats(loss=self.objective(), examples=int(act.size))

    def gaps(self, cols: np.ndarray) -> np.ndarray:
        """(len(cols),) duality gaps of regressions `cols`, in the objective scaled by n_rows
        (1/2 ||x_j - X w||^2 + l1 |w|_1 + l2/2 ||w||^2), as scikit-learn's Gram solver computes
        them: the dual point is the residual, shrunk until it is feasible."""
        out = np.empty(cols.size)
        for start in range(0, cols.size, _CHUNK):  # bounded temporaries: (n, _CHUNK) each
            part = cols[start:start + _CHUNK]
            w, r = self.W[:, part], self.R[:, part]
            xta = r - self.l2 * w  # X~^T residual of the problem augmented with sqrt(l2) I
            # the hidden own coordinate is no constraint of the dual
            xta[part, np.arange(part.size)] = -np.inf if self.positive else 0.0
            dual_norm = xta.max(axis=0) if self.positive else np.abs(xta).max(axis=0)
            q_dot_w = np.einsum("kj,kj->j", w, self.G[:, part])  # w . X^T x_j
            y2 = self.diag[part]  # ||x_j||^2
            r_norm2 = y2 - q_dot_w - np.einsum("kj,kj->j", w, r)  # ||x_j - X w||^2
            const = np.where(dual_norm > self.l1, self.l1 / np.maximum(dual_norm, 1e-300), 1.0)
            out[start:start + part.size] = (
                0.5 * r_norm2 * (1.0 + const**2) + self.l1 * np.abs(w).sum(axis=0)
                - const * y2 + const * q_dot_w
                + 0.5 * self.l2 * (1.0 + const**2) * np.einsum("kj,kj->j", w, w))
        return out

    def _sweep(self, act: np.ndarray) -> None:
        g, n = self.G, self.G.shape[0]
        full = act.size == n
        # the active regressions' columns, gathered once per sweep: (n, a) each; a column of R
        # depends on its own regression's weights only, so converged columns stay exact
        w = self.W if full else self.W[:, act]
        r = self.R if full else self.R[:, act]
        # position in `act` of each item's own regression (-1: converged), to keep w_jj = 0
        own = np.full(n, -1, dtype=np.int64)
        own[act] = np.arange(act.size)
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            r_blk = r[start:stop].copy()  # (b, a): kept current within the block
            w_old = w[start:stop].copy()  # (b, a)
            g_blk = g[start:stop, start:stop]  # (b, b)
            for i in range(stop - start):
                k = start + i
                w_k = w[k]  # (a,) a view: updated in place
                z = r_blk[i] + self.diag[k] * w_k
                if self.positive:
                    new = np.maximum(z - self.l1, 0.0)
                else:
                    new = np.sign(z) * np.maximum(np.abs(z) - self.l1, 0.0)
                new /= self.diag[k] + self.l2
                if own[k] >= 0:
                    new[own[k]] = 0.0  # the item is hidden from its own regression
                delta = new - w_k
                moved = np.flatnonzero(delta)
                if moved.size == 0:
                    continue
                w_k[moved] = new[moved]
                # the block's rows of R follow each coordinate; the weights are sparse, so
                # after the first sweeps only a few regressions move per coordinate
                if moved.size * 4 < act.size:
                    r_blk[:, moved] -= np.outer(g_blk[:, i], delta[moved])
                else:
                    r_blk -= np.outer(g_blk[:, i], delta)
            d_blk = w[start:stop] - w_old  # (b, a)
            if not d_blk.any():
                continue
            # every row of R catches up with the block's changes: (n, b) @ (b, a)
            r -= g[:, start:stop] @ d_blk
        if not full:
            self.W[:, act] = w
            self.R[:, act] = r

    def objective(self) -> float:
        """Mean over the regressions of scikit-learn's objective, from G, W and R alone:
        ||x_j - X w_j||^2 = G_jj - w_j . (G_j + R_j), since G w_j = G_j - R_j."""
        w = self.W
        fit = self.diag - np.einsum("kj,kj->j", w, self.G) - np.einsum("kj,kj->j", w, self.R)
        l1 = np.abs(w).sum(axis=0) * self.l1 / self.n_rows
        l2 = 0.5 * np.einsum("kj,kj->j", w, w) * self.l2 / self.n_rows
        return float(np.mean(fit / (2 * self.n_rows) + l1 + l2))


__all__ = ["SLIM", "LinearItemConfig", "LinearItemModel", "SLIMConfig", "SLIMTrainer",
           "available_memory", "check_dense_fits"]
