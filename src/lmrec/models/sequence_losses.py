"""The next-item losses of the sequential models: full softmax cross-entropy, gSASRec's gBCE
and sampled softmax (`next_item_loss`), on a batch's hidden states and the tied item
embeddings. Shapes: B windows, L positions, d hidden, K sampled negatives, N positions with a
target.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's positive-term exponent beta = alpha (t (1 - 1/alpha) + 1/alpha).

    alpha = n_negatives / (n_items - 1) is the negative sampling rate; t in [0, 1] the
    calibration (t = 0: plain BCE, beta = 1; t = 1: beta = alpha, fully calibrated).
    """
    alpha = min(n_negatives / max(n_items - 1, 1), 1.0)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def next_item_loss(hidden: Tensor, batch: Mapping[str, Tensor], item_emb: Tensor, *,
                   loss: str, gbce_t: float = 0.75, logq: bool = True) -> Tensor:
    """Mean next-item loss over the target positions.

    hidden (B, L, d) network outputs; batch["targets"] (B, L) item tokens, 0 = no target;
    item_emb (n_items + 1, d) the (tied) output embeddings, row 0 = padding.
    loss "ce": softmax cross-entropy over the whole catalogue (RecBole's CE).
    loss "gbce": gSASRec's generalised BCE (Petrov & Macdonald, RecSys 2023) against
        the K sampled items of batch["negatives"] per position: -beta log sigma(s+) -
        sum_k log(1 - sigma(s-_k)); beta < 1 undoes the overconfidence that sampling
        negatives teaches, so sampled training approaches full-softmax quality at a cost
        independent of the catalogue size.
    loss "sampled": sampled softmax, cross-entropy of the positive against K uniformly drawn
        items: batch["negatives"] (B, K), shared by the positions of a window (as gbce), or,
        when the batch has it, batch["shared_negatives"] (K,), shared by every position of
        the batch (one (N, d) x (d, K) matmul). Draws equal to a position's target are masked
        (accidental hits), and with `logq` the negatives' logits get the logQ correction of
        uniform sampling, + log((n_items - 1) / K_valid): each valid draw stands for
        (n_items - 1) / K_valid non-target items, so the denominator estimates the full
        softmax's; with every item drawn once it is exactly "ce".
    """
    targets = batch["targets"]
    keep = targets > 0  # (B, L)
    n_items = item_emb.shape[0] - 1
    if loss == "ce":
        logits = hidden[keep] @ item_emb[1:].T  # (N, n_items), N positions with a target
        return F.cross_entropy(logits, targets[keep] - 1)
    if loss == "sampled" and "shared_negatives" in batch:
        return sampled_softmax_loss(hidden[keep], targets[keep], item_emb,
                                    batch["shared_negatives"], logq=logq)
    neg = batch["negatives"]  # (B, K) item tokens
    if loss == "sampled":  # per-window negatives
        pos = (hidden * item_emb[targets]).sum(-1)[keep]  # (N,)
        neg_logit = torch.einsum("bld,bkd->blk", hidden, item_emb[neg])[keep]  # (N, K)
        hit = (targets[:, :, None] == neg[:, None, :])[keep]  # (N, K)
        return _sampled_ce(pos, neg_logit, hit, n_items, logq)
    pos_logit = (hidden * item_emb[targets]).sum(-1)[keep]  # (N,)
    neg_logit = torch.einsum("bld,bkd->blk", hidden, item_emb[neg])[keep]  # (N, K)
    beta = gbce_beta(neg.shape[1], n_items, gbce_t)
    # -log sigma(x) = softplus(-x); -log(1 - sigma(x)) = softplus(x)
    per_pos = beta * F.softplus(-pos_logit) + F.softplus(neg_logit).sum(-1)
    return per_pos.mean()


def sampled_softmax_loss(hidden: Tensor, targets: Tensor, item_emb: Tensor, negatives: Tensor,
                         *, logq: bool = True) -> Tensor:
    """Mean sampled-softmax loss of N positions (see `next_item_loss`, loss "sampled").

    hidden (N, d), targets (N,) item tokens, item_emb (n_items + 1, d), negatives (K,) item
    tokens drawn uniformly with replacement, shared by the N positions.
    """
    pos = (hidden * item_emb[targets]).sum(-1)  # (N,)
    neg = hidden @ item_emb[negatives].T  # (N, K)
    hit = targets[:, None] == negatives[None, :]  # (N, K) accidental hits
    return _sampled_ce(pos, neg, hit, item_emb.shape[0] - 1, logq)


def _sampled_ce(pos: Tensor, neg: Tensor, hit: Tensor, n_items: int, logq: bool) -> Tensor:
    """Mean CE of the positive logits pos (N,) against neg (N, K), hits (N, K) masked."""
    pos, neg = pos.float()[:, None], neg.float()
    if logq:
        k_valid = (~hit).sum(1, keepdim=True).clamp(min=1).float()  # (N, 1)
        neg = neg + torch.log((n_items - 1) / k_valid)
    neg = neg.masked_fill(hit, float("-inf"))
    logits = torch.cat([pos, neg], dim=1)  # (N, 1 + K), the positive in column 0
    return F.cross_entropy(logits, torch.zeros(pos.shape[0], dtype=torch.long,
                                               device=pos.device))
