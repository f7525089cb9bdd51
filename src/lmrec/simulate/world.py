"""Simulated shoppers whose true click probabilities are known.

The shop generator's hidden world (`lmrec.datasets.shop.ShopWorld`) gives each (user, item)
a structural utility. The click model turns it into a click probability under a position-based
model (PBM): the chance that a user clicks item i shown at position j (0-based) is

    P(click | u, i, j) = theta_j * attraction(u, i)
    theta_j            = (1 + j) ** -eta                 (examination: position bias)
    attraction(u, i)   = sigmoid(offset + slope * z_ui)  (the item's appeal to the user)

where z_ui is the utility standardised per user over the whole catalogue. Clicks at different
positions are independent given the slate, so the PBM assumptions of the off-policy
estimators hold exactly. The defaults give about 0.3 expected clicks per 10-item slate for a
good recommender on the demo shop, 0.07 for popularity and 0.38 for an oracle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec.datasets.shop import ShopData, ShopWorld, generate_shop_world
from lmrec.errors import ConfigError

_BLOCK_CELLS = 2_000_000  # (user, item) utilities held at once (memory bound)
_ITEM_COLUMNS = ("title", "category", "brand", "price")  # what identifies a world's item


@dataclass(frozen=True)
class ClickModel:
    """Parameters of the position-based click model (see the module docstring).

    eta: position bias; 1 halves the examination at the second slot, 0 removes the bias.
    offset, slope: attraction = sigmoid(offset + slope * standardised utility). A user's
        best items sit near z = 3-4, so offset -5 gives them an attraction of about 0.1-0.3
        and an average item (z = 0) 0.007.
    """

    eta: float = 1.0
    offset: float = -5.0
    slope: float = 1.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.eta) and self.eta >= 0):
            raise ConfigError(f"click model: eta must be >= 0, got {self.eta}")
        if not (np.isfinite(self.offset) and np.isfinite(self.slope)):
            raise ConfigError("click model: offset and slope must be finite")

    def examination(self, k: int) -> np.ndarray:
        """theta_j for positions 0..k-1, shape (k,)."""
        return (1.0 + np.arange(k)) ** -self.eta

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class WorldParams:
    """What regenerates a shop world: the generator's sizes and seed (the demo's defaults)."""

    n_users: int = 1000
    n_items: int = 1000
    seed: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class SimWorld:
    """A shop world with a click model: true click probabilities of shown slates.

    Users and items are the world's internal indices (table id - 1). A slate is a row of item
    indices, -1 for an empty slot (a short answer); empty slots are never clicked.
    """

    def __init__(self, world: ShopWorld, items: pl.DataFrame, params: WorldParams,
                 clicks: ClickModel | None = None) -> None:
        self.world = world
        self.items = items  # the generator's item table: item, title, category, brand, price
        self.params = params
        self.clicks = clicks or ClickModel()
        self._mean, self._std = _user_moments(world)

    @classmethod
    def generate(cls, params: WorldParams, clicks: ClickModel | None = None) -> SimWorld:
        """The world of `generate_shop(params.n_users, params.n_items, seed=params.seed)`
        (bots and the other generator options do not change users' preferences or items)."""
        data, world = generate_shop_world(params.n_users, params.n_items, seed=params.seed)
        return cls(world, data.items, params, clicks)

    @classmethod
    def from_shop(cls, data: ShopData, world: ShopWorld, params: WorldParams,
                  clicks: ClickModel | None = None) -> SimWorld:
        return cls(world, data.items, params, clicks)

    @property
    def n_users(self) -> int:
        return self.world.n_users

    @property
    def n_items(self) -> int:
        return self.world.n_items

    def attraction(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """sigmoid(offset + slope * z) of (user, item) pairs; users and items broadcast
        (users (B, 1) with slates (B, k) give (B, k)). Items must be valid indices."""
        users = np.asarray(users, dtype=np.int64)
        z = (self.world.pair_utility(users, items) - self._mean[users]) / self._std[users]
        return 1.0 / (1.0 + np.exp(-(self.clicks.offset + self.clicks.slope * z)))

    def click_probabilities(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """(B, k) P(click) of each slot of each slate (users (B,), slates (B, k))."""
        slates = np.asarray(slates, dtype=np.int64)
        users = np.asarray(users, dtype=np.int64)
        if slates.ndim != 2 or users.shape != slates.shape[:1]:
            raise ValueError("users (B,) and slates (B, k) expected")
        shown = slates >= 0
        attr = self.attraction(users[:, None], np.where(shown, slates, 0))
        return np.where(shown, attr * self.clicks.examination(slates.shape[1]), 0.0)

    def expected_clicks(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """(B,) the true expected number of clicks on each shown slate."""
        return self.click_probabilities(users, slates).sum(axis=1)

    def sample_clicks(self, users: np.ndarray, slates: np.ndarray,
                      uniforms: np.ndarray) -> np.ndarray:
        """(B, k) bool clicks: slot clicked when its uniform draw falls below its P(click).
        The draws are passed in so that a run is reproducible whatever the request order."""
        return np.asarray(uniforms) < self.click_probabilities(users, slates)

    def user_index(self, ids: list[Any]) -> np.ndarray:
        """World indices of external user ids (shop ids 1..n_users; ValueError otherwise)."""
        return _index(ids, self.n_users, "user")

    def item_index(self, ids: list[Any]) -> np.ndarray:
        """World indices of external item ids (shop ids 1..n_items; ValueError otherwise)."""
        return _index(ids, self.n_items, "item")

    def check_items(self, table: pl.DataFrame, source: str) -> None:
        """Refuse an item table (a bundle's) that is not this world's catalogue: every item
        must be a world item with the same title, category, brand and price, so that a bundle
        trained on another seed or size (whose ids would also be 1..n) is caught."""
        where = (f"{source}: its items are not those of the shop world (seed "
                 f"{self.params.seed}, {self.params.n_users} users, {self.params.n_items} "
                 "items); give the --seed, --shop-users and --shop-items it was trained with")
        missing = [c for c in (C.ITEM, *_ITEM_COLUMNS) if c not in table.columns]
        if missing or table.height == 0:
            raise ConfigError(where)
        try:
            ours = table.select(pl.col(C.ITEM).cast(pl.Int64), *_ITEM_COLUMNS)
        except pl.exceptions.PolarsError:
            raise ConfigError(where) from None
        joined = ours.join(self.items.select(C.ITEM, *_ITEM_COLUMNS), on=C.ITEM, how="left",
                           suffix="_world")
        same = pl.all_horizontal(
            [pl.col(c).cast(pl.String).eq_missing(pl.col(f"{c}_world").cast(pl.String))
             for c in _ITEM_COLUMNS])
        if not joined.select(same.all()).item():
            raise ConfigError(where)


def _index(ids: list[Any], n: int, what: str) -> np.ndarray:
    out = np.empty(len(ids), dtype=np.int64)
    for i, v in enumerate(ids):
        idx = int(v) - 1  # shop ids are 1-based integers; int() refuses anything else
        if not 0 <= idx < n:
            raise ValueError(f"{what} id {v!r} is not in the shop world")
        out[i] = idx
    return out


def _user_moments(world: ShopWorld) -> tuple[np.ndarray, np.ndarray]:
    """Each user's mean and standard deviation of utility over the catalogue, (n_users,)."""
    mean = np.empty(world.n_users)
    std = np.empty(world.n_users)
    block = max(1, _BLOCK_CELLS // world.n_items)
    for b0 in range(0, world.n_users, block):
        u = np.arange(b0, min(b0 + block, world.n_users))
        util = world.utility(u)
        mean[u] = util.mean(axis=1)
        std[u] = np.maximum(util.std(axis=1), 1e-12)
    return mean, std
