"""Ranking losses on score tensors. Every loss takes optional per-positive weights.

Notation: B positives (user, item) per batch, K negatives per positive, C candidate columns.
`weight` (B,) are behaviour weights (Dataset events' `weight`); a weighted loss is
sum_b w_b * l_b / sum_b w_b, so all-ones weights give the plain mean.

    bpr_loss(pos, neg)              -log sigmoid(s_pos - s_neg), averaged over the K negatives
    bce_loss(pos, neg)              binary cross-entropy, positives label 1, negatives label 0,
                                    averaged over the 1 + K examples of each positive
    sampled_softmax_loss(logits, log_q, ...)
                                    cross-entropy of the positive (column `target`) against
                                    sampled candidates, logits shifted by -log q (log-Q
                                    correction, Yi et al. 2019) so that sampling popular items
                                    more often does not bias scores against them
    in_batch_softmax_loss(u, v, items, ...)
                                    sampled softmax whose negatives are the other positives of
                                    the batch (plus optional shared extra negatives); repeated
                                    items in a batch are masked so a positive is never its own
                                    negative
    full_softmax_loss(logits, target)
                                    cross-entropy over the whole catalogue (small catalogues)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _weighted_mean(per_row: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return per_row.mean()
    w = weight.to(per_row.dtype)
    return (per_row * w).sum() / w.sum().clamp_min(1e-12)


def bpr_loss(pos: Tensor, neg: Tensor, weight: Tensor | None = None) -> Tensor:
    """pos (B,), neg (B,) or (B, K) -> scalar mean -log sigmoid(pos - neg)."""
    if neg.dim() == 1:
        neg = neg[:, None]
    per_row = F.softplus(neg - pos[:, None]).mean(dim=1)  # -log sigmoid(x) = softplus(-x), (B,)
    return _weighted_mean(per_row, weight)


def bce_loss(pos: Tensor, neg: Tensor, weight: Tensor | None = None) -> Tensor:
    """pos (B,) logits, neg (B, K) logits -> scalar BCE averaged over the 1 + K examples."""
    if neg.dim() == 1:
        neg = neg[:, None]
    # -log sigmoid(pos) - sum_k log(1 - sigmoid(neg_k)), divided by 1 + K: the plain mean BCE
    per_row = (F.softplus(-pos) + F.softplus(neg).sum(dim=1)) / (1 + neg.shape[1])  # (B,)
    return _weighted_mean(per_row, weight)


def sampled_softmax_loss(logits: Tensor, log_q: Tensor | None = None, *, target: Tensor |
                         None = None, mask: Tensor | None = None,
                         weight: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy over sampled candidates.

    logits (B, C); log_q (C,) or (B, C) log sampling probability of each candidate, subtracted
    from the logits (None: no correction); target (B,) column of each positive (default: the
    diagonal, column b for row b, as in-batch negatives have it); mask (B, C) bool, True where
    a candidate must be ignored (an accidental hit); the target column is never masked.
    """
    b = logits.shape[0]
    if target is None:
        target = torch.arange(b, device=logits.device)
    if log_q is not None:
        logits = logits - (log_q if log_q.dim() == 2 else log_q[None, :])
    if mask is not None:
        mask = mask.clone()
        mask[torch.arange(b, device=mask.device), target] = False  # the positive stays
        logits = logits.masked_fill(mask, float("-inf"))
    per_row = F.cross_entropy(logits, target, reduction="none")  # (B,)
    return _weighted_mean(per_row, weight)


def in_batch_softmax_loss(user: Tensor, item: Tensor, item_ids: Tensor, *, scale: Tensor | float
                          = 1.0, log_q: Tensor | None = None, extra: Tensor | None = None,
                          extra_ids: Tensor | None = None, extra_log_q: Tensor | None = None,
                          weight: Tensor | None = None) -> Tensor:
    """Sampled softmax with in-batch (and optional shared extra) negatives.

    user (B, d), item (B, d) the towers' outputs for the B positive pairs; item_ids (B,);
    scale multiplies the similarities (1 / temperature); log_q (B,) log sampling probability
    of each in-batch item (its share of the training positives); extra (M, d) shared extra
    negatives with ids (M,) and log_q (M,) (e.g. uniform: log(M / n_items)).
    """
    logits = scale * (user @ item.T)  # (B, B): row b against every positive of the batch
    mask = item_ids[None, :] == item_ids[:, None]  # (B, B) repeated items are not negatives
    lq = log_q[None, :].expand_as(logits) if log_q is not None else None
    if extra is not None:
        ex = scale * (user @ extra.T)  # (B, M)
        logits = torch.cat([logits, ex], dim=1)  # (B, B + M)
        ex_mask = extra_ids[None, :] == item_ids[:, None] if extra_ids is not None else \
            torch.zeros_like(ex, dtype=torch.bool)
        mask = torch.cat([mask, ex_mask], dim=1)
        if lq is not None:
            eq = (extra_log_q if extra_log_q is not None else torch.zeros(ex.shape[1],
                  device=ex.device))[None, :].expand_as(ex)
            lq = torch.cat([lq, eq], dim=1)
    return sampled_softmax_loss(logits, lq, mask=mask, weight=weight)


def full_softmax_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """logits (B, n_items), target (B,) item index -> scalar cross-entropy."""
    return _weighted_mean(F.cross_entropy(logits, target, reduction="none"), weight)
