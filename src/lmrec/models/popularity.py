"""Most popular items, optionally recency-weighted: the baseline every model must beat.

Every user, known or unknown, and every history gets the same popularity row: it ignores who
asks and what they did. It has no per-user state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import Field

from lmrec import columns as C
from lmrec.data.dataset import Dataset, Sequences
from lmrec.models.base import Recommender
from lmrec.models.explanations import Explanation, non_personal
from lmrec.models.hyperparams import Choice, ModelConfig, SearchSpace
from lmrec.train.options import TrainingOptions


class PopularityConfig(ModelConfig):
    count: Literal["users", "events", "weight"] = Field(
        "users", description="what makes an item popular: distinct users, events or weights")
    half_life_days: float | None = Field(
        None, gt=0, description="exponential recency decay of each event; None: no decay")

    search_space: ClassVar[SearchSpace] = {
        "count": Choice(("users", "events", "weight"))}


class Popularity(Recommender):
    """Scores every item by its (recency-weighted) popularity, the same for all users."""

    name = "popularity"
    Config = PopularityConfig
    config: PopularityConfig

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        ev = dataset.events
        cfg = self.config
        # a literal would be summed once per group, not once per row
        one = pl.col(C.WEIGHT).cast(pl.Float64) * 0.0 + 1.0
        if cfg.count == "users":
            ev = ev.unique([C.USER_IDX, C.ITEM_IDX], keep="last")
            w = one
        elif cfg.count == "events":
            w = one
        else:
            w = pl.col(C.WEIGHT).cast(pl.Float64)
        if cfg.half_life_days is not None and ev[C.TIME].null_count() < ev.height:
            t_max = ev[C.TIME].max()
            age_days = (t_max - pl.col(C.TIME).fill_null(t_max)) / 86_400
            w = w * (0.5 ** (age_days / cfg.half_life_days))
        agg = ev.group_by(C.ITEM_IDX).agg(w.sum().alias("s"))
        scores = np.zeros(dataset.n_items, dtype=np.float32)
        scores[agg[C.ITEM_IDX].to_numpy()] = agg["s"].to_numpy()
        self.item_scores_ = scores

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        # the same row for every user and history, as a writable (B, n_items) copy: callers
        # mask seen items in place
        return np.repeat(self.item_scores_[None, :], users.size, axis=0)

    def _explain(self, user: int, seqs: Sequences, items: np.ndarray) -> Explanation:
        return non_personal(items.size)  # the same scores whatever the history

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_scores": self.item_scores_}

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.item_scores_ = arrays["item_scores"]
