"""The statistics of a training set that the models' data-aware defaults read.

Every rule of the form "default = f(data)" (in each model's module docstring) takes its input
from `DataStats.of(dataset)`, so the figures a rule was fitted on and the ones it sees at fit
time are computed the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lmrec import columns as C
from lmrec.data.dataset import Dataset

ValueType = Literal["binary", "counts", "ratings"]


@dataclass(frozen=True)
class DataStats:
    """Sizes and shape of a training set's user x item interactions (distinct pairs)."""

    n_users: int
    n_items: int
    n_interactions: int  # distinct (user, item) pairs
    n_events: int  # rows of the event log (repeats included)
    value_type: ValueType  # "counts" when pairs repeat, "ratings" when events carry values
    # the mean degree of the item behind a random interaction, sum d_i^2 / sum d_i (d_i:
    # distinct users of item i): per_item for a flat catalogue, larger the heavier its head
    head_degree: float = 0.0

    @classmethod
    def of(cls, dataset: Dataset) -> DataStats:
        x = dataset.matrix("count")
        counts = x.data
        values = dataset.events[C.VALUE] if C.VALUE in dataset.events.columns else None
        if values is not None and values.null_count() < dataset.n_events:
            value_type: ValueType = "ratings"
        elif counts.size and float(counts.max()) > 1.0:
            value_type = "counts"
        else:
            value_type = "binary"
        degree = np.diff(x.tocsc().indptr).astype(np.float64)  # (n_items,) distinct users
        head = float((degree**2).sum() / degree.sum()) if degree.sum() else 0.0
        return cls(n_users=dataset.n_users, n_items=dataset.n_items, n_interactions=int(x.nnz),
                   n_events=dataset.n_events, value_type=value_type, head_degree=head)

    @property
    def density(self) -> float:
        return self.n_interactions / max(self.n_users * self.n_items, 1)

    @property
    def per_user(self) -> float:
        """Mean history length (distinct items per user)."""
        return self.n_interactions / max(self.n_users, 1)

    @property
    def per_item(self) -> float:
        """Mean item degree (distinct users per item)."""
        return self.n_interactions / max(self.n_items, 1)

    def describe(self) -> str:
        return (f"{self.n_users} users, {self.n_items} items, {self.n_interactions} "
                f"interactions ({self.value_type}), density {self.density:.4%}, "
                f"{self.per_user:.1f} per user, {self.per_item:.1f} per item (head "
                f"{self.head_degree:.0f})")


def log_interp(x: float, xs: Sequence[float], ys: Sequence[float], *,
               geometric: bool = False) -> float:
    """The rules' usual shape: ys[0] up to xs[0], ys[-1] from xs[-1] on, piecewise linear in
    log x through the anchors (xs, ys) between; `geometric` interpolates log y instead (for
    values spanning orders of magnitude). xs ascending, all positive."""
    lx = np.log(np.maximum(x, 1e-12))
    if geometric:
        return float(np.exp(np.interp(lx, np.log(xs), np.log(ys))))
    return float(np.interp(lx, np.log(xs), ys))
