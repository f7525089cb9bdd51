"""Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018)
and the base that it and RecVAE (`lmrec.models.recvae`) share.

A user is their row x of the binary user-item matrix (n_items,). The encoder reads the
L2-normalised row through dropout and gives a diagonal Gaussian q(z | x) = N(mu, diag(var));
the decoder maps z to logits over the catalogue, and the likelihood is multinomial:

    log p(x | z) = sum_i x_i log softmax(decoder(z))_i
    loss         = -log p(x | z) + beta * KL(q(z | x) || N(0, I))     (z ~ q, one sample)

beta is annealed linearly from 0 by 1 / total_anneal_steps per optimizer step and capped at
beta_max. Encoder: tanh MLP n_items -> 600 -> 2 x latent (mean and log-variance); decoder:
tanh MLP latent -> 600 -> n_items (the paper's architecture, with latent 64 instead of 200 as
chosen on validation data; see MultVAEConfig).

Fold-in by nature: the scores of a user are the decoder logits of the encoder's mean for their
row, `score(users)` from the training rows (`seen_`) and `score(users, histories)` from the
histories' binary rows. An empty row (an unknown or forgotten user) scores as the decoder's
prior mean. No per-user state is kept beyond `seen_`, which erasure empties.

Training: Mult-VAE is a `TrainTask` of the shared loop (`lmrec.train.train`) whose batches
are users; with `TrainingOptions(valid=...)` it early-stops on NDCG@10 of the validation items
ranked from the training rows (training items masked, `lmrec.train.validation.ranking_ndcg`)
and restores the best epoch, otherwise it trains `epochs` epochs.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping
from itertools import pairwise
from typing import ClassVar, cast

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from lmrec.data.dataset import Dataset, Sequences
from lmrec.models.base import Recommender
from lmrec.models.hyperparams import Choice, FloatRange, IntRange, ModelConfig, SearchSpace
from lmrec.models.neural import IntTuple
from lmrec.train.config import TrainConfig
from lmrec.train.loop import seeded_torch, torch_threads, train
from lmrec.train.options import TrainingOptions
from lmrec.train.validation import ranking_ndcg

_STATE = "state."  # key prefix of the network's weights in the saved arrays
_SCORE_BATCH = 1024  # user rows per forward pass when scoring


# --- shared by Mult-VAE and RecVAE -----------------------------------------------------------
class VAENet(nn.Module):
    """A VAE over user rows: `encode` gives q(z | x), `decode` the logits over items."""

    def encode(self, x: Tensor, dropout: float) -> tuple[Tensor, Tensor]:
        """(B, n_items) rows -> mu, logvar (B, d)."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """(B, d) -> (B, n_items) logits."""
        raise NotImplementedError

    def forward(self, x: Tensor, dropout: float = 0.0
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(B, n_items) rows -> logits (B, n_items), mu, logvar, z (B, d).

        Training: z is one reparameterised sample of q(z | x); eval: z = mu (no dropout)."""
        mu, logvar = self.encode(x, dropout)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar, z


def multinomial_ll(logits: Tensor, x: Tensor) -> Tensor:
    """(B, n_items) logits and rows -> (B,) log p(x | z) = sum_i x_i log softmax(logits)_i."""
    return (F.log_softmax(logits, dim=1) * x).sum(dim=1)


def dense_rows(x: sp.csr_matrix, users: np.ndarray, device: torch.device) -> Tensor:
    """Rows `users` of the CSR matrix `x` as a dense (B, n_items) float32 tensor on `device`."""
    return torch.from_numpy(x[users].toarray().astype(np.float32, copy=False)).to(device)


class RankingValidation:
    """NDCG@10 of a validation Dataset's items ranked from the training rows (training items
    masked); None when there is nothing to validate on."""

    def __init__(self, seen: sp.csr_matrix, valid: Dataset | None) -> None:
        self.seen = seen
        self.truth = valid.matrix("binary").tocsr() if valid is not None else None
        self.users = (np.zeros(0, np.int64) if self.truth is None
                      else np.flatnonzero(np.diff(self.truth.indptr) > 0))

    def __call__(self, net: VAENet) -> float | None:
        if self.truth is None or self.users.size == 0:
            return None
        device = next(net.parameters()).device

        def score_rows(users: np.ndarray) -> Tensor:  # (B,) -> (B, n_items) logits
            return net(dense_rows(self.seen, users, device))[0]

        return ranking_ndcg(score_rows, self.users, self.seen, self.truth, k=10,
                            batch=_SCORE_BATCH)


class VAERecommender(Recommender):
    """Base of the VAE models: fold-in scoring of binary rows through `net_` (see the module
    docstring), its weights saved as arrays (exact save/load, no pickle)."""

    net_: VAENet

    @abstractmethod
    def _new_net(self) -> VAENet:
        """A fresh network for `len(self.items_)` items and the config."""

    def _set_net(self, net: VAENet) -> None:
        """Keep the trained network as a loaded model has it (CPU, eval mode)."""
        self.net_ = net.cpu()
        self._load_arrays(self._arrays())

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        rows = self.seen_[users] if histories is None else self._history_rows(histories,
                                                                              "binary")
        out = np.empty(rows.shape, dtype=np.float32)  # (B, n_items)
        cpu = torch.device("cpu")
        with torch.no_grad(), torch_threads(getattr(self.config, "num_threads", 0)):
            for s in range(0, rows.shape[0], _SCORE_BATCH):
                idx = np.arange(s, min(s + _SCORE_BATCH, rows.shape[0]))
                out[idx] = self.net_(dense_rows(rows, idx, cpu))[0].numpy()
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {_STATE + k: v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        with seeded_torch(0, torch.device("cpu")):  # the initial values are overwritten
            net = self._new_net()
        net.load_state_dict({k.removeprefix(_STATE): torch.from_numpy(np.array(v))
                             for k, v in arrays.items() if k.startswith(_STATE)})
        self.net_ = net.eval()


# --- Mult-VAE --------------------------------------------------------------------------------
class MultVAEConfig(TrainConfig, ModelConfig):
    """Mult-VAE's hyperparameters plus the shared loop's (TrainConfig, flat)."""

    # Defaults chosen on the VALID part only: RecBole's general protocol (ratings >= 3,
    # 10-core, random per-user 8:1:1 split seed 0, early stopping on valid), valid NDCG@10 on
    # ml-100k / ml-latest-small, `benchmarks/vae_models.py --grid multvae` (then multvae-2,
    # multvae-3, multvae-epochs). Start: the paper's 600-200, beta_max .2, dropout .5, lr
    # 1e-3, batch 128, 2000 anneal steps: .2344/.1957. One change each: anneal 0 .2335/.2008,
    # 200000 .2267/.1868; beta_max .1 .2324/.1945 (.5 and 1 unchanged: the cap was not
    # reached); batch 64 .2336/.1907, 500 .2344/.1937; latent 64 .2371/.1972, 128 .2338/.1944;
    # dropout .3 .2327/.1924, .7 .2323/.1977; lr 3e-4 .2353/.1912, 3e-3 .2263/.1909.
    # Combined: anneal 200 .2340/.2013, + latent 64 .2397/.2019, + beta_max .5 .2385/.2016,
    # + latent 64 + beta_max .5 .2428/.2094 (chosen), + latent 64 + beta_max 1 .2380/.2122,
    # + latent 64 + hidden 300 .2285/.1960; anneal 0 + latent 64 .2398/.2024. Without a
    # validation part every epoch runs: 50/75/100/150/200 epochs .2325/.2051, .2373/.2028,
    # .2371/.1934, .2335/.1824, .2270/.1840 -> 75 (early-stopped runs peaked at 54/63).
    hidden: IntTuple = Field((600,), description="hidden layers of the encoder (the decoder "
                                                 "mirrors them); tanh")
    latent: int = Field(64, ge=1, description="dimension of z")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout on the normalised input row")
    beta_max: float = Field(0.5, ge=0, description="cap of the annealed KL weight beta")
    total_anneal_steps: int = Field(
        200, ge=0, description="optimizer steps for beta to grow from 0 to 1 (capped at "
                                "beta_max); 0: beta = beta_max throughout")
    # the loop's knobs, re-defaulted (see TrainConfig for the others)
    epochs: int = Field(75, ge=1, description="passes over the users (the most, when early "
                                              "stopping)")
    batch_size: int = Field(128, ge=1, description="users per optimizer step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    patience: int | None = Field(
        20, ge=1, description="early stopping after this many validations without a better "
                              "NDCG@10 (only when fit gets `valid`)")

    search_space: ClassVar[SearchSpace] = {
        "latent": Choice((64, 128, 200)), "dropout": FloatRange(0.2, 0.7),
        "beta_max": FloatRange(0.05, 1.0, log=True), "lr": FloatRange(3e-4, 3e-3, log=True),
        "epochs": IntRange(25, 200)}


class MultVAENet(VAENet):
    """Encoder n_items -> hidden... -> 2 x latent, decoder latent -> ...hidden -> n_items."""

    def __init__(self, n_items: int, hidden: tuple[int, ...], latent: int) -> None:
        super().__init__()
        dims = [n_items, *hidden]
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        self.enc_out = nn.Linear(dims[-1], 2 * latent)  # mean and log-variance
        back = [latent, *reversed(hidden)]
        self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(back))
        self.dec_out = nn.Linear(back[-1], n_items)
        for m in self.modules():  # as the paper's code: Glorot weights, small normal biases
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=0.001)

    def encode(self, x: Tensor, dropout: float) -> tuple[Tensor, Tensor]:
        h = F.dropout(F.normalize(x, dim=1), dropout, self.training)  # (B, n_items)
        for layer in self.enc:
            h = torch.tanh(layer(h))  # (B, hidden)
        mu, logvar = self.enc_out(h).chunk(2, dim=1)  # (B, latent) each
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        h = z  # (B, latent)
        for layer in self.dec:
            h = torch.tanh(layer(h))  # (B, hidden)
        return self.dec_out(h)  # (B, n_items)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """(B, d) -> (B,) KL(N(mu, exp(logvar)) || N(0, I))."""
    return 0.5 * (torch.exp(logvar) + mu.pow(2) - 1.0 - logvar).sum(dim=1)


def annealed_beta(step: int, beta_max: float, total_anneal_steps: int) -> float:
    """The KL weight after `step` optimizer steps: min(beta_max, step / total_anneal_steps)."""
    if total_anneal_steps <= 0:
        return beta_max
    return min(beta_max, step / total_anneal_steps)


class _MultVAETask:
    """Mult-VAE as a TrainTask: batches of users (those with training items), shuffled every
    epoch; the loss reads their rows of the training matrix."""

    def __init__(self, model: MultVAE, x: sp.csr_matrix, valid: RankingValidation) -> None:
        self.model, self.x, self.valid = model, x, valid
        self.cfg = model.config
        self.users = np.flatnonzero(np.diff(x.indptr) > 0)
        self.n_batches = -(-self.users.size // self.cfg.batch_size)
        self.step = 0  # optimizer steps taken: what beta is annealed over

    def build_module(self) -> nn.Module:
        return self.model._new_net()

    def batches(self, epoch: int, rng: np.random.Generator) -> Iterator[dict[str, Tensor]]:
        self.step = epoch * self.n_batches  # from the epoch, so that a resumed run agrees
        order = rng.permutation(self.users)
        for s in range(0, order.size, self.cfg.batch_size):
            yield {"user": torch.from_numpy(order[s : s + self.cfg.batch_size])}

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        beta = annealed_beta(self.step, self.cfg.beta_max, self.cfg.total_anneal_steps)
        self.step += 1
        users = batch["user"].cpu().numpy()
        x = dense_rows(self.x, users, batch["user"].device)  # (B, n_items)
        logits, mu, logvar, _ = model(x, self.cfg.dropout)
        return (-multinomial_ll(logits, x) + beta * gaussian_kl(mu, logvar)).mean()

    def validate(self, module: nn.Module) -> float | None:
        return self.valid(cast(VAENet, module))


class MultVAE(VAERecommender):
    """Mult-VAE^PR (see the module docstring). State: the network's weights."""

    name = "multvae"
    Config = MultVAEConfig
    config: MultVAEConfig

    def _new_net(self) -> VAENet:
        cfg = self.config
        return MultVAENet(len(self.items_), tuple(cfg.hidden), cfg.latent)

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        task = _MultVAETask(self, self.seen_, RankingValidation(self.seen_,
                                                                options.check_valid(dataset)))
        result = train(task, TrainConfig.of(self.config), options.generator, title=self.name,
                       time_budget_s=options.time_budget_s, device=options.device)
        self.train_result_ = result
        self.training_log_ = result.history
        self._set_net(cast(VAENet, result.module))
