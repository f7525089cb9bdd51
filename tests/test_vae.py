"""Mult-VAE and RecVAE: the shared contract, known answers for their losses, early stopping on
the validation part, RecVAE's alternating updates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from lmrec import testing as T
from lmrec.evaluate import evaluate, split_random
from lmrec.models.recvae import (
    PRIOR_WEIGHTS,
    WIDE_LOGVAR,
    CompositePrior,
    RecVAE,
    RecVAENet,
    RecVAETrainer,
    log_normal,
    recvae_loss,
)
from lmrec.models.vae import (
    MultVAE,
    MultVAENet,
    RankingValidation,
    annealed_beta,
    gaussian_kl,
    multinomial_ll,
)
from lmrec.train import TrainingOptions

TINY_MULT = {"hidden": (16,), "latent": 8, "epochs": 40, "batch_size": 8, "lr": 1e-2,
             "total_anneal_steps": 100, "progress": False}
TINY_REC = {"hidden": 16, "latent": 8, "depth": 2, "epochs": 12, "batch_size": 8, "lr": 1e-2,
            "progress": False}


def test_multvae_meets_the_contract(tmp_path: Path) -> None:
    T.check_recommender(lambda: MultVAE(**TINY_MULT), tmp_path)


def test_recvae_meets_the_contract(tmp_path: Path) -> None:
    T.check_recommender(lambda: RecVAE(**TINY_REC), tmp_path)


# --- known answers -------------------------------------------------------------------------
def test_multinomial_likelihood_and_gaussian_kl_known_answers() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])
    x = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    # softmax rows: (1/4, 3/4) and (1/2, 1/2)
    expected = torch.tensor([math.log(1 / 4) + math.log(3 / 4), 2 * math.log(1 / 2)])
    torch.testing.assert_close(multinomial_ll(logits, x), expected)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), ref)
    torch.testing.assert_close(log_normal(mu, torch.zeros(3), logvar),
                               Normal(0.0, torch.exp(0.5 * logvar)).log_prob(mu))


def test_beta_anneals_linearly_to_its_cap() -> None:
    assert [annealed_beta(s, 0.2, 100) for s in (0, 10, 20, 50)] == [0.0, 0.1, 0.2, 0.2]
    assert annealed_beta(7, 0.3, 0) == 0.3


def test_recvae_loss_known_answer() -> None:
    """In eval mode z = mu, so the loss is exact: -log p(x | mu) + gamma |x| (log q(mu | x) -
    log prior(mu)), with the prior's three components written out."""
    torch.manual_seed(0)
    net = RecVAENet(n_items=6, hidden=5, latent=3, depth=3).eval()
    prior = CompositePrior(net.encoder)
    x = torch.tensor([[1.0, 0, 1, 0, 0, 1], [0, 1, 0, 0, 0, 0]])
    gamma = 0.05
    with torch.no_grad():
        got = recvae_loss(net, prior, x, 0.0, gamma)
        mu, logvar = net.encoder(x, 0.0)

        def density(m: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
            return torch.exp(Normal(m, torch.exp(0.5 * lv)).log_prob(mu))

        zero = torch.zeros_like(mu)
        mixture = (PRIOR_WEIGHTS[0] * density(zero, zero)
                   + PRIOR_WEIGHTS[1] * density(mu, logvar)  # the old encoder is a copy
                   + PRIOR_WEIGHTS[2] * density(zero, zero + WIDE_LOGVAR))
        log_q = Normal(mu, torch.exp(0.5 * logvar)).log_prob(mu)
        kl = (log_q - torch.log(mixture)).sum(1)
        ll = torch.log_softmax(net.decoder(mu), 1).mul(x).sum(1)
        expected = (-ll + gamma * torch.tensor([3.0, 1.0]) * kl).mean()
    torch.testing.assert_close(got, expected)


def test_scores_are_decoder_logits_of_the_row() -> None:
    """score(u) is the decoder's logits at the encoder mean of u's binary training row, and a
    history equal to that row scores the same (fold-in)."""
    ds = T.planted_dataset()
    for model in (MultVAE(**TINY_MULT), RecVAE(**TINY_REC)):
        model.fit(ds, TrainingOptions(rng=3))
        x = torch.from_numpy(ds.matrix("binary").toarray().astype(np.float32))
        with torch.no_grad():
            mu, _ = model.net_.encode(x, 0.5)  # eval mode: no dropout
            expected = model.net_.decode(mu).numpy()
        users = np.arange(ds.n_users)
        np.testing.assert_allclose(model.score(users), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model.score(users, ds.sequences()), expected, rtol=1e-5,
                                   atol=1e-5)


# --- training ------------------------------------------------------------------------------
@pytest.mark.parametrize(("klass", "params"), [(MultVAE, TINY_MULT), (RecVAE, TINY_REC)])
def test_early_stopping_on_the_validation_part(klass: type, params: dict) -> None:
    """With `valid` every epoch is validated, the best epoch is restored (its metric is what
    `evaluate(part="valid")` measures) and patience stops the run; without it every epoch
    runs."""
    split = split_random(T.planted_dataset(users_a=30, users_b=40, items_per_group=16,
                                           seen_per_user=8), seed=0)
    model = klass(**{**params, "epochs": 60, "patience": 3})
    model.fit(split.train, TrainingOptions(rng=0, valid=split.valid))
    metrics = [h["metric"] for h in model.training_log_]
    assert all(m is not None for m in metrics)
    best = model.train_result_
    assert best.best_metric == max(metrics) and metrics[best.best_epoch - 1] == max(metrics)
    assert len(metrics) == 60 or len(metrics) - best.best_epoch == 3
    measured = evaluate(model, split, [10], part="valid", history="trained")
    assert measured.metrics["ndcg@10"] == pytest.approx(best.best_metric, abs=1e-6)
    plain = klass(**{**params, "epochs": 4}).fit(split.train, TrainingOptions(rng=0))
    assert [h["metric"] for h in plain.training_log_] == [None] * 4


def test_time_budget_stops_after_one_epoch() -> None:
    ds = T.planted_dataset()
    for klass, params in ((MultVAE, TINY_MULT), (RecVAE, TINY_REC)):
        model = klass(**params).fit(ds, TrainingOptions(rng=0, time_budget_s=1e-6))
        assert len(model.training_log_) == 1


def test_recvae_alternates_encoder_and_decoder_updates() -> None:
    """An encoder pass leaves the decoder as it was and the reverse; the prior's old encoder
    follows the encoder once per epoch, after the encoder passes."""
    ds = T.planted_dataset()
    x = ds.matrix("binary").tocsr().astype(np.float32)
    cfg = RecVAE.Config(**TINY_REC)
    torch.manual_seed(0)
    trainer = RecVAETrainer(RecVAENet(ds.n_items, 16, 8, 2), x, cfg,
                            RankingValidation(x, None), torch.device("cpu"), seed=0)
    net = trainer.net

    def copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in module.state_dict().items()}

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    enc, dec = copy(net.encoder), copy(net.decoder)
    trainer._pass(train_encoder=True)
    assert same(dec, copy(net.decoder)) and not same(enc, copy(net.encoder))
    assert same(enc, copy(trainer.prior.old))  # not updated within the encoder passes
    enc, dec = copy(net.encoder), copy(net.decoder)
    trainer._pass(train_encoder=False)
    assert same(enc, copy(net.encoder)) and not same(dec, copy(net.decoder))
    trainer.train_epoch(1)
    assert same(copy(net.encoder), copy(trainer.prior.old))  # the last pass was the decoder's
    assert trainer.validate() is None


def test_multvae_net_shapes_and_paper_architecture() -> None:
    net = MultVAENet(n_items=50, hidden=(600,), latent=200)
    assert [m.weight.shape for m in (*net.enc, net.enc_out, *net.dec, net.dec_out)] == [
        (600, 50), (400, 600), (600, 200), (50, 600)]
    logits, mu, logvar, z = net.train()(torch.rand(4, 50), 0.5)
    assert logits.shape == (4, 50) and mu.shape == logvar.shape == z.shape == (4, 200)
    assert MultVAE.Config(hidden="300,100").hidden == (300, 100)
