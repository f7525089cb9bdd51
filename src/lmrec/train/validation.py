"""The validation metric of early stopping: full-ranking NDCG@k, computed by `lmrec.metrics`.

Every model that early-stops (a neural model on its holdout of training pairs, a sequential
model on the split's validation part) ranks the whole catalogue with the user's known items
masked and scores the top k with the same metric code as `lmrec.evaluate`, so a validation
figure during training and one from `evaluate(part="valid")` mean the same thing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from lmrec import metrics as M


def ranking_ndcg(score_rows: Callable[[np.ndarray], Tensor], users: np.ndarray,
                 seen: sp.csr_matrix, truth: sp.csr_matrix, k: int = 10,
                 batch: int = 512) -> float:
    """Mean NDCG@k over `users` (those without truth items are left out).

    `score_rows(batch_users) -> (B, n_items)` scores any tensor; `seen` and `truth` are
    (n_users, n_items) CSR rows indexed by user: the items masked before ranking and the
    relevant ones. NaN when no user has truth items.
    """
    users = np.asarray(users, dtype=np.int64)
    users = users[np.diff(truth.indptr)[users] > 0]
    if users.size == 0:
        return float("nan")
    vals = []
    for s in range(0, users.size, batch):
        ub = users[s : s + batch]
        scores = score_rows(ub).float().cpu()  # (B, n_items)
        known = seen[ub].tocoo()
        scores[torch.from_numpy(known.row.astype(np.int64)),
               torch.from_numpy(known.col.astype(np.int64))] = float("-inf")
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.numpy()  # (B, k)
        t = truth[ub]
        per = M.accuracy_from_hits(M.hit_matrix(top, t), np.diff(t.indptr), [k])
        vals.append(per[f"ndcg@{k}"])
    return float(np.nanmean(np.concatenate(vals)))
