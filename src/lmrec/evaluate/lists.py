"""The re-ranking stage and the group metrics of `evaluate` (`lmrec.evaluate.protocol`).

Re-ranking (`evaluate(..., rerank=["calibration=0.5", ...])`, `lmrec.rerank`): each evaluated
user's candidates are the best `pipeline.pool(kmax)` items after the usual masks (training
items, validation items when testing) and the pipeline's hard constraints (the user's
`allowed` mask, applied before the top-k, as serving does); `pipeline.rerank` then turns them
into the user's list of kmax, and every metric scores that list. The item similarity of MMR is
the cosine of the diversity metric's item features.

Group metrics (`lmrec.group_metrics`), with or without re-ranking, at every k:

    miscalibration@k   Steck (2018): KL(p || q~) between the category distribution of the
                       user's history (the history the model scored) and that of the list;
                       per user, averaged. The category column is the calibration re-ranker's
                       default: genres, genre, category or categories, else the first
                       categorical or multi-valued item column. Absent without one.
    exposure_gini@k    Gini index of the items' rank-weighted (1/log2(rank+1)) exposure over
                       all lists (LensKit's ExposureGini).
    tail_exposure@k    the long tail's share of that exposure (items outside the most popular
                       20% of training items).
    group_coverage@k   per list, the share of the category column's values present; averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmrec import group_metrics as G
from lmrec.data.dataset import Dataset, Sequences
from lmrec.errors import ConfigError
from lmrec.models.base import Recommender
from lmrec.models.ranking import mask_rows, top_k
from lmrec.rerank import RerankData, RerankPipeline, RerankSpec

GROUP_METRICS = ("miscalibration", "exposure_gini", "tail_exposure", "group_coverage")


def rerank_data(train: Dataset, features: np.ndarray | sp.spmatrix, gram: np.ndarray | None
                ) -> RerankData:
    """The re-rankers' view of a training part, its item similarity the cosine of the
    diversity metric's item `features` (rows of `gram` when given)."""
    return RerankData.from_dataset(train, similarity=_cosine(features, gram))


class GroupMetrics:
    """The group metrics of one evaluation: per-user values batch by batch (`per_user`), the
    catalogue-wide ones from the warm users' lists at the end (`finish`)."""

    def __init__(self, data: RerankData, tail: np.ndarray, ks: Sequence[int]) -> None:
        self.ks = tuple(ks)
        self.n_items = data.n_items
        self.tail = tail.astype(np.int64)  # (n_items,) 1 = long tail, 0 = head
        try:  # the calibration re-ranker's default column
            self.column: str | None = data.category_column()
        except ConfigError:  # no categorical column: no category metrics
            self.column = None
        self.item_dist = self.labels = None
        if self.column is not None:
            dist = data.item_distribution(self.column)[0]
            if dist.shape[1]:
                self.item_dist = dist
                self.labels = (dist > 0).astype(np.float64).tocsr()
        self._lists: list[np.ndarray] = []

    def per_user(self, items: np.ndarray, history: Sequences | sp.csr_matrix
                 ) -> dict[str, np.ndarray]:
        """{"miscalibration@k", "group_coverage@k": (B,)} of the lists `items` (B, kmax), -1
        padded, given the users' histories (one row each); NaN where undefined (no category
        in the history: nothing to calibrate to)."""
        if self.item_dist is None or self.labels is None:
            return {}
        out: dict[str, np.ndarray] = {}
        user_dist = np.asarray(G.user_distributions(history, self.item_dist), dtype=np.float64)
        no_profile = ~(user_dist.sum(axis=1) > 0)
        n_values = self.labels.shape[1]
        for k in self.ks:
            mis = np.asarray(G.miscalibration(items, user_dist, self.item_dist, k),
                             dtype=np.float64)
            mis[no_profile] = np.nan
            out[f"miscalibration@{k}"] = mis
            top = items[:, :k]
            rows, cols = np.nonzero(top >= 0)
            member = sp.csr_matrix((np.ones(rows.size), (rows, top[rows, cols])),
                                   shape=(items.shape[0], self.n_items))
            present = np.asarray(((member @ self.labels) > 0).sum(axis=1)).ravel()
            cov = present / n_values
            cov[~(top >= 0).any(axis=1)] = np.nan  # an empty list covers nothing: undefined
            out[f"group_coverage@{k}"] = cov
        return out

    def add_lists(self, items: np.ndarray) -> None:
        """Keep the warm users' lists for the catalogue-wide metrics."""
        self._lists.append(items.astype(np.int32))  # half the memory of int64 indices

    def finish(self) -> dict[str, float]:
        """{"exposure_gini@k", "tail_exposure@k"} over every list added."""
        kmax = max(self.ks)
        top = (np.concatenate(self._lists) if self._lists
               else np.empty((0, kmax), dtype=np.int32))
        out: dict[str, float] = {}
        for k in self.ks:
            out[f"exposure_gini@{k}"] = float(G.exposure_gini(top, self.n_items, k))
            shares = np.asarray(G.group_exposure(top, self.tail, 2, k), dtype=np.float64)
            out[f"tail_exposure@{k}"] = float(shares[1])
        return out


class ListReranker:
    """The re-ranking stage of `evaluate`: candidates with the hard constraints as a mask,
    then the pipeline per user (module docstring)."""

    def __init__(self, specs: Sequence[str | RerankSpec], data: RerankData) -> None:
        self.data = data
        self.pipeline = RerankPipeline.build(specs, data)

    def describe(self) -> str:
        return self.pipeline.describe()

    def lists(self, model: Recommender, batch: np.ndarray, kmax: int,
              exclude: sp.csr_matrix | None, rows: Sequences | None, history: Sequences
              ) -> np.ndarray:
        """(B, kmax) re-ranked lists (-1 padded) of the users `batch`; `rows` is what the
        model scores (None: its fitted state), `history` each user's history (one row
        each) for the re-rankers."""
        n = min(kmax, model.n_items)
        pool = min(self.pipeline.pool(n), model.n_items)
        contexts = [self.data.user_context(int(u), history.of(b))
                    for b, u in enumerate(batch)]
        s = np.array(model.score(batch, rows), dtype=np.float32)
        mask_rows(s, model.seen_, batch)
        if exclude is not None:
            mask_rows(s, exclude, batch)
        for b, ctx in enumerate(contexts):
            allowed = self.pipeline.allowed(ctx)
            if allowed is not None:
                s[b, ~allowed] = -np.inf
        idx, vals = top_k(s, pool)
        out = np.full((batch.size, n), -1, dtype=np.int64)
        for b, ctx in enumerate(contexts):
            keep = (idx[b] >= 0) & np.isfinite(vals[b])
            chosen, _ = self.pipeline.rerank(idx[b][keep], vals[b][keep], n, ctx)
            out[b, : chosen.size] = chosen[:n]
        return out


def _cosine(features: np.ndarray | sp.spmatrix, gram: np.ndarray | None) -> Any:
    """(n,) -> (n, n) item cosine: rows of the dense gram matrix when there is one, else the
    features' rows, normalised."""
    if gram is not None:
        return lambda idx: np.asarray(gram[np.ix_(idx, idx)], dtype=np.float32)

    def pairwise(idx: np.ndarray) -> np.ndarray:
        f = features[idx]
        f = f.toarray() if sp.issparse(f) else np.asarray(f, dtype=np.float64)
        norms = np.linalg.norm(f, axis=1)
        u = f / np.maximum(norms, 1e-12)[:, None]
        return np.asarray(u @ u.T, dtype=np.float32)

    return pairwise
