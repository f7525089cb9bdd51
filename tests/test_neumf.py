"""NeuMF: CLI-style params, holdout early stopping, scoring paths agree, save/load exact,
histories folded in, a forgotten user scores as an unknown one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmrec import testing as T
from lmrec.data.dataset import Sequences
from lmrec.errors import ConfigError
from lmrec.models import NeuMF, load_model
from lmrec.models.neural import holdout_split
from lmrec.train import TrainConfig
from lmrec.train.options import TrainingOptions

TINY = {"epochs": 30, "batch_size": 64, "lr": 0.02, "factors": 8, "mlp_factors": 8,
        "layers": (16,), "init_std": 0.1, "loss": "bpr", "weight_decay": 0.005, "dropout": 0.1,
        "progress": False}


def test_params_from_cli_strings() -> None:
    cfg = NeuMF.Config.from_params({"epochs": "5", "layers": "32,16", "grad_clip": "1.5",
                                    "lr_schedule": "cosine"})
    assert cfg.epochs == 5 and cfg.layers == (32, 16) and cfg.grad_clip == 1.5
    # batch size left to the data (None) is filled in at fit time, as here
    assert TrainConfig.of(cfg, batch_size=64).lr_schedule == "cosine"
    with pytest.raises(ConfigError, match="unknown parameter 'epoch'"):
        NeuMF.Config.from_params({"epoch": 5})
    assert NeuMF.Config().negatives == 4 and NeuMF.Config().loss == "bce"


def test_learns_planted_groups_and_scores_consistently() -> None:
    ds = T.planted_dataset()
    model = NeuMF(**TINY).fit(ds, TrainingOptions(rng=0))
    T.check_learns_planted_groups(lambda: NeuMF(**TINY), ds)
    x = ds.matrix("binary").tocoo()
    with torch.no_grad():
        pairs = model.module_.pair_scores(torch.from_numpy(x.row.astype(np.int64)),
                                          torch.from_numpy(x.col.astype(np.int64))).numpy()
    full = model.score(np.arange(ds.n_users))
    np.testing.assert_allclose(full[x.row, x.col], pairs, rtol=1e-5, atol=1e-5)


def test_holdout_early_stopping_and_save_load(tmp_path: Path) -> None:
    ds = T.planted_dataset()
    model = NeuMF(**{**TINY, "epochs": 12, "patience": 3, "valid_share": 0.2,
                     "checkpoint_dir": tmp_path / "run"}).fit(ds, TrainingOptions(rng=1))
    metrics = [h["metric"] for h in model.training_log_]
    assert all(m is not None for m in metrics)
    assert model.train_result_.best_metric == max(metrics)
    assert (tmp_path / "run" / "history.json").exists()
    before = model.score(np.arange(ds.n_users))
    loaded = load_model(model.save(tmp_path / "saved"))
    assert np.array_equal(before, loaded.score(np.arange(ds.n_users)))


def test_training_options_reach_the_loop() -> None:
    """The time budget stops the loop after the epoch that crosses it (the refit gets what is
    left: at least one epoch); the device option overrides the config's; validation data in
    the options is not used (the holdout of training pairs is)."""
    ds = T.planted_dataset()
    quick = TrainingOptions(rng=0, time_budget_s=1e-6, device="cpu")
    model = NeuMF(**{**TINY, "epochs": 5}).fit(ds, quick)
    assert len(model.training_log_) == 1 and model.train_result_.stopped_early
    assert model.train_result_.device == "cpu"
    refit = NeuMF(**{**TINY, "epochs": 5, "patience": 2, "refit": True}).fit(ds, quick)
    assert len(refit.training_log_) == 1 and refit.training_log_[0]["metric"] is None
    with_valid = NeuMF(**{**TINY, "epochs": 2}).fit(ds, TrainingOptions(rng=0, valid=ds))
    plain = NeuMF(**{**TINY, "epochs": 2}).fit(ds, TrainingOptions(rng=0))
    assert with_valid.training_log_[-1]["loss"] == plain.training_log_[-1]["loss"]
    np.testing.assert_array_equal(with_valid.score([0, 1]), plain.score([0, 1]))


def test_holdout_split_is_per_user_and_disjoint() -> None:
    x = T.planted_dataset().matrix("weight").tocsr()
    fit, held = holdout_split(x, 0.2, np.random.default_rng(0))
    assert fit.nnz + held.nnz == x.nnz
    assert fit.multiply(held).nnz == 0
    assert (np.diff(held.indptr) == 1).all()  # floor(6 * .2) = 1 per user


def test_histories_fold_in_and_forgotten_users_are_unknown(tmp_path: Path) -> None:
    ds = T.planted_dataset()
    model = NeuMF(**TINY).fit(ds, TrainingOptions(rng=0))
    seqs = ds.sequences()
    users = np.arange(ds.n_users)
    # the users are not used: a history scores the same for anyone, and a batch's rows alone
    folded = model.score(users, seqs)
    np.testing.assert_array_equal(folded, model.score(np.full(ds.n_users, -1), seqs))
    np.testing.assert_allclose(folded[3], model.score([3], seqs.take([3]))[0], rtol=1e-5,
                               atol=1e-6)
    # an unknown user, an empty history and a forgotten user are the zero user
    unknown = model.score(np.array([-1]))
    np.testing.assert_array_equal(unknown, model.score([-1], Sequences.empty(1)))
    with torch.no_grad():
        zero = torch.zeros(1, model.config.factors)
        np.testing.assert_allclose(unknown, model.module_.score_vectors(
            zero, torch.zeros(1, model.config.mlp_factors), ds.n_items).numpy(), atol=1e-6)
    others = np.setdiff1d(users, [1, 5])
    before = model.score(others)
    model.redact_users([1, 5])
    assert float(model.module_.gmf_user.weight.data[[1, 5]].abs().sum()) == 0.0
    np.testing.assert_allclose(model.score([1, 5]), np.vstack([unknown] * 2), atol=1e-6)
    np.testing.assert_array_equal(model.score(others), before)  # their rows are their own
    loaded = load_model(model.save(tmp_path / "redacted"))
    np.testing.assert_allclose(loaded.score([1, 5]), np.vstack([unknown] * 2), atol=1e-6)
