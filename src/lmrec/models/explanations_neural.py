"""Gradient x input explanations of the networks (SASRec, GRU4Rec, the two-tower).

Why gradient x input and not attention rollout: rollout (Abnar & Zuidema 2020) follows the
attention weights only, so it gives every candidate item the same attribution (it cannot say
why this item and not that one), ignores the MLPs, residual norms and the tied output layer,
and does not exist for GRU4Rec. Gradient x input, d s_i / d e_t . e_t for the input vector e_t
of history position t, is specific to the explained item i, works for every network and costs
one forward and one backward pass over the explained items (the history replicated once per
item, so each row's gradient is its own item's). It is the first-order Taylor estimate of what
removing the position's input takes from the score; the deletion test checks that it ranks the
history items by their real effect (tests/test_explanations_deletion.py).

The input vector of a sequential network is what its first layer reads at the position: the
item representation plus position / behaviour / time-gap embeddings, i.e. the output of the
network's input dropout (`net.drop`, the identity in eval mode), captured by a forward hook.
Positions of the same item add up; items outside the `max_len` window contribute 0 (the network
never reads them). The two-tower's history encoder reads item id embeddings (pooled by mean,
GRU or transformer); its other inputs (user id embedding, attribute embeddings, numerics) are
reported as `features`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from lmrec.data.dataset import Sequences
from lmrec.models.explanations import Explanation, history_items

if TYPE_CHECKING:
    from lmrec.models.two_tower import TwoTower


def _by_item(tokens: np.ndarray, per_position: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """(n, L_window) per-position contributions -> (n, len(hist)) per distinct history item;
    tokens (L_window,) are item + 1 (0 = padding)."""
    out = np.zeros((per_position.shape[0], hist.size), dtype=np.float64)
    where = {int(item): j for j, item in enumerate(hist)}
    for t, tok in enumerate(tokens):
        if tok > 0:
            out[:, where[int(tok) - 1]] += per_position[:, t]
    return out


def sequential(net: nn.Module, window: dict[str, Tensor], hist: np.ndarray, items: np.ndarray
               ) -> Explanation:
    """Gradient x input over the input vectors of a sequential network `net` (SASRec,
    GRU4Rec) at the positions of one history's window (`SeqData.last_windows`, (1, L) tensors)
    whose distinct items are `hist` (`history_items`)."""
    if hist.size == 0 or items.size == 0:
        return Explanation("gradient x input", hist, np.zeros((items.size, hist.size),
                                                              np.float32))
    device = next(net.parameters()).device
    batch = {k: v.to(device).expand(items.size, -1) for k, v in window.items()}
    with torch.no_grad():
        targets = net.item_table()[torch.as_tensor(items + 1, device=device)]  # (n, d)
    captured: list[Tensor] = []

    def hook(_m: nn.Module, _i: object, out: Tensor) -> Tensor:
        leaf = out.detach().requires_grad_(True)  # a leaf whatever the weights require
        captured.append(leaf)
        return leaf

    was_training = net.training
    net.eval()  # no dropout: the explained scores are the served ones
    handle = _input_module(net).register_forward_hook(hook)
    try:
        with torch.enable_grad():
            h = net(batch)[:, -1]  # (n, d)
            scores = (h * targets).sum()  # row k's score of item k; rows are independent
            (grad,) = torch.autograd.grad(scores, captured[0])
    finally:
        handle.remove()
        net.train(was_training)
    per_pos = (grad * captured[0]).sum(-1).detach().cpu().numpy()  # (n, L_window)
    contrib = _by_item(window["items"][0].numpy(), per_pos, hist)
    return Explanation("gradient x input", hist, contrib.astype(np.float32))


def _input_module(net: nn.Module) -> nn.Module:
    """The module whose output is the per-position input of the network: its input dropout
    (item + position + side embeddings), else the item embedding table."""
    drop = getattr(net, "drop", None)
    return drop if isinstance(drop, nn.Dropout) else net.item_emb


def two_tower(model: TwoTower, user: int, seqs: Sequences, items: np.ndarray
              ) -> Explanation:
    """Gradient x input over the two-tower's user inputs: the history items' id embeddings
    (before pooling) and the user's id embedding, attribute embeddings and numerics."""
    hist = history_items(seqs)
    m = model.module_
    n = items.size
    codes = model._history_codes(seqs)  # (1, L) item + 1, cold items left out
    known = user >= 0
    row = max(user, 0)
    cat = model.arrays_["user_cat_codes"][[row]] * known  # (1, Cu): code 0 when unknown
    num = model.arrays_["user_num"][[row]] * known  # (1, Pu)
    uid = np.array([user + 1 if known else 0])
    rep = [n, 1]
    with torch.no_grad():
        targets = torch.from_numpy(model.item_vecs_[items])  # (n, d)
        id_e = m.user_id(torch.from_numpy(uid)).repeat(*rep)  # (n, id_dim)
        cat_e = [emb(torch.from_numpy(cat[:, j])).repeat(*rep)
                 for j, emb in enumerate(m.user_cat)]
        hist_t = torch.from_numpy(codes).repeat(*rep)  # (n, L)
        hist_e = m.history.emb(hist_t)  # (n, L, id_dim)
    inputs = [id_e, *cat_e, torch.from_numpy(num.astype(np.float32)).repeat(*rep), hist_e]
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    was_training = m.training
    m.eval()
    try:
        with torch.enable_grad():
            pooled = m.history.pool(leaves[-1], hist_t)  # (n, id_dim)
            u = m._norm(m.user_mlp(torch.cat([*leaves[:-1], pooled], dim=1)))  # (n, d)
            scores = model.scale_ * (u * targets).sum()
            grads = torch.autograd.grad(scores, leaves)
    finally:
        m.train(was_training)
    gx = [(g * x).detach() for g, x in zip(grads, leaves, strict=True)]
    per_pos = gx[-1].sum(-1).numpy()  # (n, L)
    contrib = _by_item(codes[0], per_pos, hist)
    features = {"user id": gx[0].sum(-1).numpy().astype(np.float32)}
    meta = model.user_meta_
    for j, (col, _vocab) in enumerate(meta["cat"]):
        features[str(col)] = gx[1 + j].sum(-1).numpy().astype(np.float32)
    num_gx = gx[1 + len(meta["cat"])].numpy()  # (n, Pu)
    named = set()
    for col, _mean, _std, at in meta["num"]:
        features[str(col)] = num_gx[:, at].astype(np.float32)
        named.add(at)
    rest = [c for c in range(num_gx.shape[1]) if c not in named]
    if rest:  # vector columns: one contribution for all of them
        features["vectors"] = num_gx[:, rest].sum(axis=1).astype(np.float32)
    return Explanation("gradient x input", hist, contrib.astype(np.float32), features)
