"""RecVAE (Shenbin et al., "RecVAE: a New Variational Autoencoder for Top-N Recommendations
with Implicit Feedback", WSDM 2020), after the authors' code (github.com/ilya-shenbin/RecVAE).

Mult-VAE (`lmrec.models.vae`) with four changes:
  * encoder: `depth` dense layers of `hidden` units, each swish then layer norm (eps 0.1), each
    layer fed the sum of all earlier ones (dense connections); input L2-normalised + dropout;
    decoder: one linear layer latent -> n_items.
  * composite prior: per latent dimension a mixture of N(0, 1) (3/20), the posterior of the
    encoder as it was after the previous epoch's encoder passes, "the old encoder" (3/4), and a
    wide N(0, e^10) (1/10). KL(q || prior) is estimated from the one sample z.
  * beta from the history size: the KL weight of user u is gamma * |x_u|.
  * alternating updates: an epoch is `enc_epochs` passes updating only the encoder (dropout on
    the input), then the old encoder is set to the current one, then `dec_epochs` passes
    updating only the decoder (no dropout); each half has its own Adam.

The loss is the negative ELBO: -log p(x | z) + gamma |x| (log q(z | x) - log prior(z)).
The alternating updates do not fit one optimizer stepping every batch, so RecVAE brings its
own `Trainer` to the shared epoch loop (`run_epochs`), as BPR does: early stopping on
NDCG@10 of `TrainingOptions.valid` (training items masked) with the best epoch restored, the
time budget, the progress bar and the training log. Scoring, saving and erasure are those of
`VAERecommender`: decoder logits of the encoder's mean for the user's binary row.

Differences from the authors' code: the old encoder starts as a copy of the encoder (theirs
starts from an independent random initialisation until the first epoch ends), and validation
ranks NDCG@10 on the split's valid part rather than NDCG@100 on held-out users. The defaults
(300 hidden units, dropout .7, gamma .01, 64 users a batch, lr 1e-3) were chosen on validation
data at MovieLens-100K scale; the authors' are 600, .5, .005, 500 and 5e-4 (RecVAEConfig).
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from lmrec.data.dataset import Dataset
from lmrec.models.hyperparams import Choice, FloatRange, IntRange, ModelConfig, SearchSpace
from lmrec.models.vae import RankingValidation, VAENet, VAERecommender, dense_rows, multinomial_ll
from lmrec.train.checkpoint import clone_state
from lmrec.train.epochs import EpochStats, LoopResult, Trainer, run_epochs
from lmrec.train.loop import resolve_device, seeded_torch, torch_threads
from lmrec.train.options import TrainingOptions

PRIOR_WEIGHTS = (3 / 20, 3 / 4, 1 / 10)  # standard normal, old posterior, wide normal
WIDE_LOGVAR = 10.0  # log-variance of the wide component
_LOG_2PI = math.log(2 * math.pi)


class RecVAEConfig(ModelConfig):
    """RecVAE's hyperparameters."""

    # Defaults chosen on the VALID part only: RecBole's general protocol (ratings >= 3,
    # 10-core, random per-user 8:1:1 split seed 0, early stopping on valid), valid NDCG@10 on
    # ml-100k / ml-latest-small, `benchmarks/vae_models.py --grid recvae` (then recvae-2,
    # recvae-3, recvae-epochs). Start: the authors' run.py (600 hidden, 200 latent, dropout
    # .5, gamma .005, batch 500, lr 5e-4, 3 + 1 passes): .2216/.1851. One change each: gamma
    # .002 .2180/.1743, .01 .2312/.1953, .02 .2375/.1855; batch 128 .2269/.1843, 64
    # .2300/.1901; latent 64 .2071/.1584, 128 .2195/.1740; dropout .3 .2086/.1742, .7
    # .2341/.1953; lr 1e-3 .2242/.1836, 2e-4 .2215/.1814; hidden 300 .2266/.1829 (3x faster).
    # With gamma .01: + hidden 300 .2322/.1928; + batch 64 .2358/.1992; + both .2361/.1947;
    # + dropout .7 .2405/.2061 (154 s); + hidden 300 + dropout .7 .2402/.2001; + hidden 300
    # + batch 64 + dropout .7 .2417/.2051, and with lr 1e-3 .2449/.2055 (chosen: 61 s / 28 s),
    # with latent 400 .2409/.2107 (76 s / 111 s), with gamma .02 .2412/.2058. Without a
    # validation part every epoch runs: 25/50/75/100 epochs .2378/.2011, .2401/.1949,
    # .2201/.1763, .2129/.1650 -> 50, which also lets early stopping find its peaks (41/22).
    hidden: int = Field(300, ge=1, description="units of each encoder layer")
    latent: int = Field(200, ge=1, description="dimension of z")
    depth: int = Field(5, ge=1, description="encoder layers (densely connected)")
    dropout: float = Field(0.7, ge=0, lt=1, description="input dropout in the encoder passes")
    gamma: float = Field(0.01, ge=0, description="KL weight per history item: beta = gamma |x|")
    enc_epochs: int = Field(3, ge=1, description="encoder passes per epoch")
    dec_epochs: int = Field(1, ge=1, description="decoder passes per epoch")
    epochs: int = Field(50, ge=1, description="epochs, each enc_epochs + dec_epochs passes "
                                              "over the users (the most, when early stopping)")
    batch_size: int = Field(64, ge=1, description="users per optimizer step")
    lr: float = Field(1e-3, gt=0, description="learning rate of both Adam optimizers")
    patience: int | None = Field(
        10, ge=1, description="early stopping after this many epochs without a better valid "
                              "NDCG@10 (only when fit gets `valid`)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda if present")
    num_threads: int = Field(0, ge=0, description="torch intra-op threads (0: leave as is)")
    progress: bool = Field(True, description="Rich progress bar (only on a terminal)")

    search_space: ClassVar[SearchSpace] = {
        "latent": Choice((64, 128, 200)), "gamma": FloatRange(1e-3, 2e-2, log=True),
        "dropout": FloatRange(0.2, 0.7), "lr": FloatRange(1e-4, 2e-3, log=True),
        "epochs": IntRange(20, 200)}


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(z; mu, exp(logvar)), broadcasting: (B, d)."""
    return -0.5 * (logvar + _LOG_2PI + (z - mu).pow(2) / torch.exp(logvar))


class RecVAEEncoder(nn.Module):
    """x (B, n_items) -> mu, logvar (B, latent): densely connected swish + layer-norm layers."""

    def __init__(self, n_items: int, hidden: int, latent: int, depth: int) -> None:
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(n_items, hidden)]
                                + [nn.Linear(hidden, hidden) for _ in range(depth - 1)])
        self.ln = nn.ModuleList(nn.LayerNorm(hidden, eps=0.1) for _ in range(depth))
        self.fc_mu = nn.Linear(hidden, latent)
        self.fc_logvar = nn.Linear(hidden, latent)

    def forward(self, x: Tensor, dropout: float) -> tuple[Tensor, Tensor]:
        h = F.dropout(F.normalize(x, dim=1), dropout, self.training)  # (B, n_items)
        h = self.ln[0](swish(self.fc[0](h)))  # (B, hidden)
        dense = h  # sum of every layer's output so far
        for fc, ln in zip(self.fc[1:], self.ln[1:], strict=True):
            h = ln(swish(fc(h) + dense))  # (B, hidden)
            dense = dense + h
        return self.fc_mu(h), self.fc_logvar(h)  # (B, latent) each


class RecVAENet(VAENet):
    def __init__(self, n_items: int, hidden: int, latent: int, depth: int) -> None:
        super().__init__()
        self.encoder = RecVAEEncoder(n_items, hidden, latent, depth)
        self.decoder = nn.Linear(latent, n_items)

    def encode(self, x: Tensor, dropout: float) -> tuple[Tensor, Tensor]:
        return self.encoder(x, dropout)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (B, n_items)


class CompositePrior(nn.Module):
    """log prior(z) per latent dimension, the mixture of the module docstring."""

    def __init__(self, encoder: RecVAEEncoder) -> None:
        super().__init__()
        self.old = copy.deepcopy(encoder).requires_grad_(False)
        self.log_w = [math.log(w) for w in PRIOR_WEIGHTS]

    def update(self, encoder: RecVAEEncoder) -> None:
        """The old encoder becomes (a copy of) `encoder`."""
        self.old.load_state_dict(encoder.state_dict())

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """x (B, n_items), z (B, d) -> (B, d) log prior density of each coordinate of z."""
        with torch.no_grad():
            mu_old, logvar_old = self.old(x, 0.0)  # (B, d) each
        zero = torch.zeros_like(z)
        parts = [log_normal(z, zero, zero) + self.log_w[0],
                 log_normal(z, mu_old, logvar_old) + self.log_w[1],
                 log_normal(z, zero, zero + WIDE_LOGVAR) + self.log_w[2]]
        return torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)  # (B, d)


def recvae_loss(net: RecVAENet, prior: CompositePrior, x: Tensor, dropout: float,
                gamma: float) -> Tensor:
    """Mean negative ELBO of the rows x (B, n_items), KL weighted by gamma * |x_u|."""
    logits, mu, logvar, z = net(x, dropout)  # (B, n_items), (B, d) x 3
    kl = (log_normal(z, mu, logvar) - prior(x, z)).sum(dim=1)  # (B,) one-sample estimate
    return (-multinomial_ll(logits, x) + gamma * x.sum(dim=1) * kl).mean()


class RecVAETrainer(Trainer):
    """RecVAE's training state for `run_epochs`: the network, the composite prior, one Adam for
    the encoder and one for the decoder, and the Generator of the user order."""

    def __init__(self, net: RecVAENet, x: sp.csr_matrix, cfg: RecVAEConfig,
                 validation: RankingValidation, device: torch.device, seed: int) -> None:
        self.cfg, self.x, self.validation, self.device = cfg, x, validation, device
        self.net = net.to(device)
        self.prior = CompositePrior(net.encoder).to(device)
        self.opt_enc = torch.optim.Adam(net.encoder.parameters(), lr=cfg.lr)
        self.opt_dec = torch.optim.Adam(net.decoder.parameters(), lr=cfg.lr)
        self.rng = np.random.default_rng(seed)
        self.users = np.flatnonzero(np.diff(x.indptr) > 0)  # users with training items

    def _pass(self, train_encoder: bool) -> float:
        """One pass over the users in a fresh order, updating the encoder or the decoder only;
        returns the summed loss (mean per batch times the batch's users)."""
        net, cfg = self.net, self.cfg
        net.encoder.requires_grad_(train_encoder)  # no gradients for the half that stays
        net.decoder.requires_grad_(not train_encoder)
        opt = self.opt_enc if train_encoder else self.opt_dec
        dropout = cfg.dropout if train_encoder else 0.0
        order = self.rng.permutation(self.users)
        total = 0.0
        for s in range(0, order.size, cfg.batch_size):
            users = order[s : s + cfg.batch_size]
            x = dense_rows(self.x, users, self.device)  # (B, n_items)
            loss = recvae_loss(net, self.prior, x, dropout, cfg.gamma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * users.size
        return total

    def train_epoch(self, epoch: int) -> EpochStats:
        """`enc_epochs` encoder passes, the prior's update, `dec_epochs` decoder passes; the
        loss is the mean negative ELBO over all of them."""
        self.net.train()
        total = sum(self._pass(train_encoder=True) for _ in range(self.cfg.enc_epochs))
        self.prior.update(self.net.encoder)
        total += sum(self._pass(train_encoder=False) for _ in range(self.cfg.dec_epochs))
        self.net.requires_grad_(True)
        n = self.users.size * (self.cfg.enc_epochs + self.cfg.dec_epochs)
        return EpochStats(loss=total / max(n, 1), examples=n, lr=self.cfg.lr)

    def validate(self) -> float | None:
        self.net.eval()
        with torch.no_grad():
            return self.validation(self.net)

    def snapshot(self) -> dict[str, Tensor]:
        return clone_state(self.net)

    def restore(self, snapshot: dict[str, Tensor]) -> None:
        self.net.load_state_dict(snapshot)


class RecVAE(VAERecommender):
    """RecVAE (see the module docstring). State: the network's weights (the prior's old
    encoder is only needed while training)."""

    name = "recvae"
    Config = RecVAEConfig
    config: RecVAEConfig

    def _new_net(self) -> RecVAENet:
        cfg = self.config
        return RecVAENet(len(self.items_), cfg.hidden, cfg.latent, cfg.depth)

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        seed = int(options.generator.integers(0, 2**62))
        device = resolve_device(options.device or cfg.device)
        validation = RankingValidation(self.seen_, options.check_valid(dataset))
        with torch_threads(cfg.num_threads), seeded_torch(seed, device):
            trainer = RecVAETrainer(self._new_net(), self.seen_, cfg, validation, device, seed)
            result = run_epochs(trainer, epochs=cfg.epochs, patience=cfg.patience,
                                time_budget_s=options.time_budget_s, title=self.name,
                                progress=cfg.progress, device=device, seed=seed)
        self.train_result_: LoopResult = result
        self.training_log_ = result.history
        self._set_net(trainer.net)
