"""SLIM ElasticNet and ADMM-SLIM: the shared contract, and known answers on tiny data."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.optimize

from lmrec import testing as T
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError
from lmrec.models import slim as slim_module
from lmrec.models.admm_slim import ADMMSLIM
from lmrec.models.slim import SLIM, SLIMTrainer, check_dense_fits
from lmrec.prepare import prepare
from lmrec.train.options import TrainingOptions


def random_dataset(rng: np.random.Generator, n_users: int, n_items: int, density: float
                   ) -> tuple[Dataset, np.ndarray]:
    """A Dataset of random pairs (every user and item seen) and its dense binary matrix in the
    Dataset's own (internal) order."""
    m = rng.random((n_users, n_items)) < density
    m[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    m[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(m)
    ds = prepare(pl.DataFrame({"user": u.astype(np.int64), "item": i.astype(np.int64)})).dataset
    return ds, ds.matrix("binary").toarray().astype(np.float64)


def direct_columns(x: np.ndarray, penalty: np.ndarray, l1: float, scale: float,
                   positive: bool) -> np.ndarray:
    """Solve, column by column with L-BFGS-B, min_w scale ||x_j - X w||^2 + sum_i penalty_i
    w_i^2 + l1 |w|_1 with w_j = 0 (and w >= 0). Without the sign constraint w = u - v,
    u, v >= 0, so the L1 term is linear and every problem smooth."""
    n = x.shape[1]
    out = np.zeros((n, n))
    for j in range(n):
        y = x[:, j]
        if positive:
            def f(w: np.ndarray, y: np.ndarray = y) -> tuple[float, np.ndarray]:
                r = y - x @ w
                val = scale * r @ r + penalty @ (w * w) + l1 * w.sum()
                return val, -2 * scale * x.T @ r + 2 * penalty * w + l1
            bounds = [(0.0, 0.0) if i == j else (0.0, None) for i in range(n)]
            res = scipy.optimize.minimize(f, np.zeros(n), jac=True, method="L-BFGS-B",
                                          bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-12,
                                                                  "maxiter": 10_000})
            out[:, j] = res.x
        else:
            def g(uv: np.ndarray, y: np.ndarray = y) -> tuple[float, np.ndarray]:
                w = uv[:n] - uv[n:]
                r = y - x @ w
                val = scale * r @ r + penalty @ (w * w) + l1 * uv.sum()
                grad = -2 * scale * x.T @ r + 2 * penalty * w
                return val, np.concatenate([grad + l1, -grad + l1])
            bounds = [(0.0, 0.0) if i % n == j else (0.0, None) for i in range(2 * n)]
            res = scipy.optimize.minimize(g, np.zeros(2 * n), jac=True, method="L-BFGS-B",
                                          bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-12,
                                                                  "maxiter": 10_000})
            out[:, j] = res.x[:n] - res.x[n:]
    return out


# --- the contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("factory", [
    SLIM, lambda: SLIM(weighting="weight"),
    ADMMSLIM, lambda: ADMMSLIM(weighting="weight", alpha=0.0, iterations=20)],
    ids=["slim", "slim-weighted", "admm-slim", "admm-slim-weighted"])
def test_contract(factory: T.ModelFactory, tmp_path: Path) -> None:
    T.check_recommender(factory, tmp_path)


# --- SLIM -----------------------------------------------------------------------------------
@pytest.mark.parametrize("positive", [True, False])
def test_slim_matches_a_direct_solve(rng: np.random.Generator, positive: bool) -> None:
    ds, x = random_dataset(rng, 10, 8, 0.4)
    alpha, l1_ratio = 0.05, 0.3
    model = SLIM(alpha=alpha, l1_ratio=l1_ratio, positive_only=positive, tol=1e-10,
                 iterations=5000).fit(ds)
    # scikit-learn's ElasticNet objective, item j's own column hidden
    n_users = x.shape[0]
    want = direct_columns(x, np.full(x.shape[1], 0.5 * alpha * (1 - l1_ratio)),
                          alpha * l1_ratio, 1 / (2 * n_users), positive)
    np.testing.assert_allclose(model.B_, want, atol=2e-5)
    assert np.all(np.diag(model.B_) == 0)
    if positive:
        assert model.B_.min() >= 0
    else:
        assert model.B_.min() < 0  # the constraint was binding, so this tests something
    assert (model.B_ == 0).any()  # the L1 term makes it sparse
    np.testing.assert_allclose(model.score(np.arange(ds.n_users)), x @ model.B_, rtol=1e-5,
                               atol=1e-6)


def test_slim_blocks_agree_with_one_block(rng: np.random.Generator,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # more items than a block: the catch-up products between blocks are exercised
    ds, _ = random_dataset(rng, 60, 150, 0.08)
    monkeypatch.setattr(slim_module, "_BLOCK", 16)
    many = SLIM(alpha=0.05, tol=1e-9, iterations=2000).fit(ds).B_
    monkeypatch.setattr(slim_module, "_BLOCK", 1000)
    one = SLIM(alpha=0.05, tol=1e-9, iterations=2000).fit(ds).B_
    np.testing.assert_allclose(many, one, atol=1e-5)


def test_slim_stops_when_converged(rng: np.random.Generator) -> None:
    ds, _ = random_dataset(rng, 30, 12, 0.3)
    model = SLIM(iterations=500).fit(ds)
    log = model.training_log_
    assert 1 <= len(log) < 500  # every regression met the tolerance before the iteration cap
    losses = [row["loss"] for row in log]
    # coordinate descent never increases the objective
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(losses))


def test_slim_duality_gap_bounds_the_suboptimality(rng: np.random.Generator) -> None:
    _, x = random_dataset(rng, 12, 9, 0.4)
    n_users, alpha, l1_ratio = x.shape[0], 0.05, 0.3
    l1, l2 = n_users * alpha * l1_ratio, n_users * alpha * (1 - l1_ratio)
    best = direct_columns(x, np.full(x.shape[1], 0.5 * l2), l1, 0.5, True)

    def objective(w: np.ndarray) -> np.ndarray:  # (n_items,) in the n_users-scaled units
        r = x - x @ w
        return 0.5 * (r * r).sum(0) + l1 * np.abs(w).sum(0) + 0.5 * l2 * (w * w).sum(0)

    trainer = SLIMTrainer(x.T @ x, n_users, alpha, l1_ratio, True, 1e-4)
    cols = np.arange(x.shape[1])
    for epoch in range(3):  # an unconverged point, then a closer one
        trainer.train_epoch(epoch)
        gaps = trainer.gaps(cols)
        excess = objective(trainer.W) - objective(best)
        assert np.all(excess >= -1e-9) and np.all(excess <= gaps + 1e-9)


def test_slim_and_admm_slim_solve_the_same_problem(rng: np.random.Generator) -> None:
    # scikit-learn's objective times n_users is ADMM-SLIM's with l1 = n a r, l2 = n a (1 - r)
    ds, x = random_dataset(rng, 30, 12, 0.3)
    n_users, alpha, l1_ratio = x.shape[0], 0.1, 0.1
    cd = SLIM(alpha=alpha, l1_ratio=l1_ratio, tol=1e-10, iterations=5000).fit(ds)
    admm = ADMMSLIM(l1=n_users * alpha * l1_ratio, l2=n_users * alpha * (1 - l1_ratio),
                    alpha=0.0, rho=20.0, iterations=5000, tol=1e-6).fit(ds)
    np.testing.assert_allclose(cd.B_, admm.B_, atol=1e-4)


# --- ADMM-SLIM ------------------------------------------------------------------------------
def test_admm_slim_without_l1_is_the_closed_form(rng: np.random.Generator) -> None:
    # l1 = 0, no sign constraint: the ridge solution with diag(B) = 0, EASE's closed form with
    # the per-item penalty l2 * mean(x_i)^alpha on the weights from item i
    ds, x = random_dataset(rng, 40, 15, 0.3)
    l2, alpha = 5.0, 0.5
    model = ADMMSLIM(l1=0.0, l2=l2, alpha=alpha, rho=20.0, positive_only=False,
                     iterations=3000, tol=1e-7).fit(ds)
    p = np.linalg.inv(x.T @ x + np.diag(l2 * x.mean(axis=0) ** alpha))
    want = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(want, 0.0)
    np.testing.assert_allclose(model.B_, want, atol=1e-4)


def test_admm_slim_matches_a_direct_solve(rng: np.random.Generator) -> None:
    ds, x = random_dataset(rng, 10, 8, 0.4)
    l1, l2, alpha = 0.5, 1.0, 0.5
    model = ADMMSLIM(l1=l1, l2=l2, alpha=alpha, rho=10.0, iterations=5000, tol=1e-5).fit(ds)
    assert len(model.training_log_) < 5000  # stopped on the residuals (float32: tol 1e-5)
    # 1/2 ||x_j - X b||^2 + 1/2 sum_i l2_i b_i^2 + l1 |b|_1, the module docstring's scaling
    want = direct_columns(x, 0.5 * l2 * x.mean(axis=0) ** alpha, l1, 0.5, True)
    np.testing.assert_allclose(model.B_, want, atol=1e-4)
    assert model.B_.min() >= 0 and np.all(np.diag(model.B_) == 0)
    assert (model.B_ == 0).any()


def test_admm_slim_is_deterministic_and_budgeted(rng: np.random.Generator) -> None:
    ds, _ = random_dataset(rng, 40, 20, 0.2)
    a = ADMMSLIM(iterations=30, tol=0.0).fit(ds)
    b = ADMMSLIM(iterations=30, tol=0.0).fit(ds, TrainingOptions(rng=123))
    np.testing.assert_array_equal(a.B_, b.B_)
    assert len(a.training_log_) == 30
    # the loop stops after the epoch that crosses the budget
    c = ADMMSLIM(iterations=10_000, tol=0.0).fit(ds, TrainingOptions(time_budget_s=1e-9))
    assert len(c.training_log_) == 1


# --- dense memory -------------------------------------------------------------------------
def test_dense_check_refuses_in_one_line() -> None:
    check_dense_fits("slim", 1000, 36.0, available=36 * 1000**2)  # exactly fits
    with pytest.raises(ConfigError) as err:
        check_dense_fits("slim", 100_000, 36.0, available=8 * 2**30)
    msg = str(err.value)
    assert "\n" not in msg and "als" in msg and "itemknn" in msg and "100000" in msg


@pytest.mark.parametrize("klass", [SLIM, ADMMSLIM])
def test_models_refuse_a_catalogue_too_large(klass: type[SLIM | ADMMSLIM],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slim_module, "available_memory", lambda: 1000)
    with pytest.raises(ConfigError, match="use als or itemknn"):
        klass().fit(T.planted_dataset())


def test_available_memory_is_positive() -> None:
    avail = slim_module.available_memory()
    assert avail is None or avail > 0


def test_ease_refuses_a_catalogue_that_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """EASE checks its dense working set against the memory available before allocating it,
    and names the models that scale instead."""
    import lmrec.models.slim as slim_module
    from lmrec.errors import ConfigError
    from lmrec.models import EASE

    ds = T.planted_dataset()  # 24 items: 6 float64 copies need 27,648 bytes
    monkeypatch.setattr(slim_module, "available_memory", lambda: 20_000)
    with pytest.raises(ConfigError, match=r"ease needs dense 24 x 24 .* use als or itemknn"):
        EASE().fit(ds)
    # float32 halves the working set (13,824 bytes): it fits in the same 20,000
    assert EASE(dtype="float32").fit(ds).B_.shape == (24, 24)
    monkeypatch.setattr(slim_module, "available_memory", lambda: None)  # unknown: go ahead
    assert EASE().fit(ds).B_.shape == (24, 24)
