"""NeuMF: CLI-style params, holdout early stopping, scoring paths agree, save/load exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmrec import testing as T
from lmrec.errors import ConfigError
from lmrec.models import NeuMF, Recommender
from lmrec.models.neural import holdout_split

TINY = {"epochs": 30, "batch_size": 64, "lr": 0.02, "factors": 8, "mlp_factors": 8,
        "layers": (16,), "init_std": 0.1, "loss": "bpr", "weight_decay": 0.005, "dropout": 0.1,
        "progress": False}


def test_params_from_cli_strings() -> None:
    cfg = NeuMF.Config.from_params({"epochs": "5", "layers": "32,16", "grad_clip": "1.5",
                                    "lr_schedule": "cosine"})
    assert cfg.epochs == 5 and cfg.layers == (32, 16) and cfg.grad_clip == 1.5
    assert cfg.train_config().lr_schedule == "cosine"
    with pytest.raises(ConfigError, match="unknown parameter 'epoch'"):
        NeuMF.Config.from_params({"epoch": 5})
    assert NeuMF.Config().negatives == 4 and NeuMF.Config().loss == "bce"


def test_learns_planted_groups_and_scores_consistently() -> None:
    ds = T.planted_dataset()
    model = NeuMF(**TINY).fit(ds, rng=0)
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
                     "checkpoint_dir": tmp_path / "run"}).fit(ds, rng=1)
    metrics = [h["metric"] for h in model.history_]
    assert all(m is not None for m in metrics)
    assert model.train_result_.best_metric == max(metrics)
    assert (tmp_path / "run" / "history.json").exists()
    before = model.score(np.arange(ds.n_users))
    loaded = Recommender.load(model.save(tmp_path / "saved"))
    assert np.array_equal(before, loaded.score(np.arange(ds.n_users)))


def test_holdout_split_is_per_user_and_disjoint() -> None:
    x = T.planted_dataset().matrix("weight").tocsr()
    fit, held = holdout_split(x, 0.2, np.random.default_rng(0))
    assert fit.nnz + held.nnz == x.nnz
    assert fit.multiply(held).nnz == 0
    assert (np.diff(held.indptr) == 1).all()  # floor(6 * .2) = 1 per user
