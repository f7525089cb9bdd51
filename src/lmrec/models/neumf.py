"""Neural Matrix Factorisation (He et al., "Neural Collaborative Filtering", WWW 2017).

score(u, i) = w . [p_u * q_i  ||  MLP([p'_u || q'_i])] + b: a GMF tower (element-wise product of
user and item embeddings) and an MLP tower over concatenated embeddings, fused by one linear
layer. Trained with binary cross-entropy on each positive and `negatives` items sampled
uniformly from the user's unseen items (4 per positive, as in the paper), through the shared
loop (`lmrec.train`).

`score(users, histories)` scores any item history by an amortised fold-in (the users are not
used): a ridge regression, fitted on the training users once the network is trained, maps the
mean GMF and MLP item embeddings of a history's items (plus a constant) to the two user
embeddings, which then go through the frozen network. On MovieLens 100K (ratings >= 3,
10-core, random 80:20 split) the folded-in users rank the held-out items as well as the
trained embeddings (NDCG@10 .368 vs .364) and share 76% of their top 10; it costs one small
matrix product, where a per-request optimisation of the embeddings would cost many passes
through the network.

The unknown user is the zero user: an empty history (no evidence for the regression) gets
zero user embeddings, and so does a forgotten user (`redact_users` zeroes their rows of both
user tables, `user_state`), so a forgotten user scores exactly like an unknown one. The
fold-in is refitted on every load (and so after a redaction) without users who have no seen
items, which leaves the zero user untouched.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import Tensor, nn

from lmrec.data.dataset import Dataset, Sequences
from lmrec.models.history import fit_linear_fold_in, history_matrix, mean_item_features
from lmrec.models.neural import IntTuple, NeuralConfig, NeuralRecommender
from lmrec.models.redaction import UserRows
from lmrec.train.loop import torch_threads
from lmrec.train.losses import bce_loss, bpr_loss
from lmrec.train.negatives import NegativeSampler, seen_keys

_SCORE_ROWS = 1 << 18  # (user, item) pairs pushed through the MLP at once when scoring


class NeuMFConfig(NeuralConfig):
    # Defaults chosen once on the ML100K validation part (RecBole protocol: ratings >= 3,
    # 10-core, random per-user 8:1:1, seed 0; fit on train, valid NDCG@10), factors 64/64,
    # layers (128, 64), 4 BCE negatives: batch 2048 lr 1e-3 dropout .1: 10/20 epochs
    # .1901/.2094; lr 3e-3 20 epochs .1932; batch 4096 lr 3e-3 wd 1e-6: 15/20/30 epochs
    # .2201/.2171/.1954 (overfits after 20); + dropout .3: 15/20 epochs .2192/.2254
    # -> batch 4096, lr 3e-3, weight decay 1e-6, dropout .3, 20 epochs (~0.7 M examples/epoch
    # incl. negatives; about 40-60 s on one core).
    factors: int = Field(64, ge=1, description="GMF embedding size")
    mlp_factors: int = Field(64, ge=1, description="MLP tower embedding size (per side)")
    layers: IntTuple = Field((128, 64), min_length=1, description="MLP hidden layers")
    init_std: float = Field(0.01, gt=0, description="std of the embeddings' normal init")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout after each MLP layer")
    negatives: int = Field(4, ge=1, description="sampled negatives per positive")
    loss: str = Field("bce", pattern="^(bce|bpr)$", description="bce or bpr")
    # the loop's knobs, re-defaulted (see TrainConfig for the others). Batch size and epochs
    # from the data (NeuralRecommender, "Schedule from the data"): 16 steps per epoch, 20
    # epochs, the schedule chosen above on ML100K (4096 of its 65k pairs per step). Checked on
    # the validation parts (benchmarks/data_defaults.py, batch_steps 8/16/32 x 20 epochs): 16
    # steps best on ML100K (.2233 vs .2085 / .2130), latest-small (.1789 vs .1674 / .1504) and
    # a dense synthetic set (.2659 vs .2406 / .2454); shop-100k preferred 32 (.1830 vs .1785).
    # 10 epochs lost 8% on ML100K. A fixed batch of 4096 would run 10x the steps per epoch on
    # 10x the data (on MovieLens-1M: .213 against RecBole's .2393).
    epochs: int | None = Field(None, ge=1, description="passes over the training pairs; "
                               "None: 20")
    batch_size: int | None = Field(None, ge=1, description="positives per step; None: the "
                                   "training pairs / 16")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(1e-6, ge=0, description="L2 weight decay")


class NeuMFModule(nn.Module):
    """GMF + MLP towers. Embeddings (n_users, f) / (n_items, f); one output unit."""

    def __init__(self, n_users: int, n_items: int, factors: int, mlp_factors: int,
                 layers: tuple[int, ...], dropout: float, init_std: float = 0.01) -> None:
        super().__init__()
        self.gmf_user = nn.Embedding(n_users, factors)
        self.gmf_item = nn.Embedding(n_items, factors)
        self.mlp_user = nn.Embedding(n_users, mlp_factors)
        self.mlp_item = nn.Embedding(n_items, mlp_factors)
        dims = [2 * mlp_factors, *layers]
        # the first layer is split into user and item halves so that scoring can add a
        # (B, 1, h) user part to an (1, n_items, h) item part instead of concatenating B*n rows
        self.first_user = nn.Linear(mlp_factors, dims[1])
        self.first_item = nn.Linear(mlp_factors, dims[1], bias=False)
        rest: list[nn.Module] = [nn.ReLU(), nn.Dropout(dropout)]
        for a, b in pairwise(dims[1:]):
            rest += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*rest)
        self.out = nn.Linear(factors + dims[-1], 1)
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(emb.weight, std=init_std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def pair_scores(self, user: Tensor, item: Tensor) -> Tensor:
        """user (...), item (...) broadcastable int64 -> logits of the same shape."""
        g = self.gmf_user(user) * self.gmf_item(item)  # (..., f)
        h = self.first_user(self.mlp_user(user)) + self.first_item(self.mlp_item(item))  # (.., h)
        h = self.mlp(h)  # (..., h_last)
        return self.out(torch.cat([g, h], dim=-1)).squeeze(-1)

    def forward(self, user: Tensor, item: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
        """user (B,), item (B,), neg (B, K) -> positive logits (B,), negative logits (B, K)."""
        pos = self.pair_scores(user, item)  # (B,)
        negs = self.pair_scores(user[:, None].expand_as(neg), neg)  # (B, K)
        return pos, negs

    def score_all(self, user: Tensor, n_items: int) -> Tensor:
        """user (B,) -> (B, n_items) logits, in chunks of users to bound memory."""
        return self.score_vectors(self.gmf_user(user), self.mlp_user(user), n_items)

    def score_vectors(self, gmf_user: Tensor, mlp_user: Tensor, n_items: int) -> Tensor:
        """User embeddings gmf_user (B, f), mlp_user (B, f_mlp) -> (B, n_items) logits."""
        items = torch.arange(n_items, device=gmf_user.device)
        gi, mi = self.gmf_item(items), self.first_item(self.mlp_item(items))  # (n, f), (n, h)
        gu, mu = gmf_user, self.first_user(mlp_user)  # (B, f), (B, h)
        w_g, w_h = self.out.weight[0, : gi.shape[1]], self.out.weight[0, gi.shape[1] :]
        out = []
        step = max(1, _SCORE_ROWS // max(n_items, 1))
        for s in range(0, gu.shape[0], step):
            h = self.mlp(mu[s : s + step, None, :] + mi[None, :, :])  # (b, n, h_last)
            # the GMF part of the output layer is linear: (gu * gi) . w_g = gu . (gi * w_g)
            g = gu[s : s + step] @ (gi * w_g).T  # (b, n)
            out.append(g + h @ w_h + self.out.bias)
        return torch.cat(out) if out else torch.zeros(0, n_items)


class NeuMF(NeuralRecommender):
    """NeuMF. State: the module's embeddings and layers."""

    name = "neumf"
    Config = NeuMFConfig
    config: NeuMFConfig
    STEPS_PER_EPOCH, EPOCHS = 16, 20  # the schedule left to the data (NeuMFConfig)

    def user_state(self) -> tuple[UserRows, ...]:
        m = self.module_
        # a forgotten user gets the unknown user's zero embeddings (module docstring)
        return UserRows(m.gmf_user.weight.data), UserRows(m.mlp_user.weight.data)

    def _prepare(self, dataset: Dataset, x: sp.csr_matrix) -> None:
        # negatives avoid every training item of the user (holdout items included: cheap and
        # never wrong to skip)
        self.sampler_ = NegativeSampler(x.shape[1], keys=seen_keys(dataset.matrix("binary")))

    def _build_module(self) -> nn.Module:
        c = self.config
        return NeuMFModule(len(self.users_), len(self.items_), c.factors, c.mlp_factors,
                           tuple(c.layers), c.dropout, c.init_std)

    def _extend_batch(self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator
                      ) -> dict[str, np.ndarray]:
        return {"neg": self.sampler_.sample(users, self.config.negatives, rng)}

    def _loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        pos, neg = model(batch["user"], batch["item"], batch["neg"])  # (B,), (B, K)
        if self.config.loss == "bpr":
            return bpr_loss(pos, neg, batch["weight"])
        return bce_loss(pos, neg, batch["weight"])

    def _score_module(self, module: nn.Module, users: np.ndarray) -> Tensor:
        dev = next(module.parameters()).device
        u = torch.as_tensor(np.asarray(users, dtype=np.int64), device=dev)
        return module.score_all(u, len(self.items_)).float().cpu()

    # --- scoring: the trained users, or any history by the amortised fold-in -------------
    def _after_load(self) -> None:
        self._fit_fold_in()

    def _fit_fold_in(self) -> None:
        # derived from the weights and the seen items, so rebuilt whenever the module is
        # (after fit and load, which redact_users goes through) rather than saved
        m = self.module_
        with torch.no_grad():
            users = torch.cat([m.gmf_user.weight, m.mlp_user.weight], dim=1).numpy()
            # (n_items, f + f_mlp) float64: the GMF and MLP item embeddings side by side,
            # cached for scoring histories (the weights only change through fit and load)
            self.item_side_ = torch.cat([m.gmf_item.weight, m.mlp_item.weight],
                                        dim=1).numpy().astype(np.float64)
        self.fold_in_ = fit_linear_fold_in(self.seen_, self.item_side_, users)

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        if histories is None:
            return self._module_scores(users)
        x = history_matrix(histories, self.n_items)
        u = (mean_item_features(x, self.item_side_) @ self.fold_in_).astype(np.float32)
        u[np.diff(x.indptr) == 0] = 0.0  # an empty history: the unknown (zero) user
        f = self.config.factors
        with torch.no_grad(), torch_threads(self.config.num_threads):
            out = self.module_.score_vectors(torch.from_numpy(np.ascontiguousarray(u[:, :f])),
                                             torch.from_numpy(np.ascontiguousarray(u[:, f:])),
                                             self.n_items)
        return out.numpy()
