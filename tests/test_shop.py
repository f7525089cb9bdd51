"""The built-in e-commerce generator: determinism, sizes, realism and a learnable structure."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from lmrec.datasets import generate_shop, load_dataset, shop_dataset
from lmrec.datasets.shop import CATEGORIES
from lmrec.errors import ConfigError
from lmrec.prepare import PrepareConfig


@pytest.fixture(scope="module")
def shop():
    return generate_shop()


def test_same_seed_same_output() -> None:
    a, b = generate_shop(300, 200, seed=7), generate_shop(300, 200, seed=7)
    assert a.events.equals(b.events) and a.items.equals(b.items) and a.users.equals(b.users)
    assert not generate_shop(300, 200, seed=8).events.equals(a.events)
    # a Generator may be passed instead of a seed
    g = generate_shop(300, 200, seed=np.random.default_rng(7))
    assert g.events.equals(a.events)


def test_default_size_and_schema(shop) -> None:
    assert 30_000 <= shop.events.height <= 60_000
    assert shop.events.columns == ["user", "item", "event", "timestamp"]
    assert shop.events.schema["timestamp"] == pl.Int64
    assert shop.users.columns[:3] == ["user", "age_band", "region"]
    assert shop.items.columns == ["item", "title", "category", "brand", "price"]
    assert (shop.users.height, shop.items.height) == (1_000, 1_000)
    assert shop.items["category"].n_unique() == 12
    assert shop.items["brand"].n_unique() <= 40
    counts = dict(shop.events["event"].value_counts().iter_rows())
    # a shop funnel: many views, a few carts, fewer purchases
    assert counts["view"] > 10 * counts["cart"] > 0 and counts["cart"] > counts["purchase"] > 0


def test_sizes_scale_with_options() -> None:
    small = generate_shop(200, 100, seed=1, n_categories=4, n_brands=10, days=7)
    assert small.users.height == 200 and small.items.height == 100
    assert small.items["category"].n_unique() <= 4
    span = small.events["timestamp"].max() - small.events["timestamp"].min()
    assert span <= 7 * 86_400
    more = generate_shop(200, 100, seed=1, sessions_per_user=14.0)
    assert more.events.height > 1.5 * small.events.height


def test_titles_and_prices_are_plausible(shop) -> None:
    items = shop.items
    first = items.row(0, named=True)
    brand, _, rest = first["title"].partition(" ")
    assert brand == first["brand"]
    assert any(rest.endswith(noun) for noun in CATEGORIES[first["category"]][2])
    assert (items["price"] > 0).all()
    assert np.allclose(np.round(items["price"].to_numpy() % 1, 2), 0.99)
    medians = items.group_by("category").agg(pl.col("price").median()).sort("price")
    # per-category price levels: books are cheaper than electronics
    order = medians["category"].to_list()
    assert order.index("Books") < order.index("Electronics")


def test_purchases_follow_a_cart_and_a_view_of_the_same_item(shop) -> None:
    ev = shop.events
    first = ev.group_by("user", "item", "event").agg(pl.col("timestamp").min())
    wide = first.pivot(on="event", index=["user", "item"], values="timestamp")
    bought = wide.filter(pl.col("purchase").is_not_null())
    assert bought.height > 0
    assert bought["view"].null_count() == 0 and bought["cart"].null_count() == 0
    assert (bought["purchase"] > bought["view"]).all()
    gap = (bought["purchase"] - bought["cart"]).to_numpy()
    assert gap.min() >= 60 and np.median(gap) < 1_800  # a few minutes later


def test_bots_are_implausibly_busy() -> None:
    data = generate_shop(300, 200, seed=3, bots=2)
    assert data.users.height == 302
    per_user = data.events.group_by("user").len()
    bots = per_user.filter(pl.col("user") > 300)["len"]
    humans = per_user.filter(pl.col("user") <= 300)["len"]
    assert bots.len() == 2 and bots.min() > 5 * humans.max()
    prepared = shop_dataset(300, 200, seed=3, bots=2)
    assert any("Possible bots" in f for f in prepared.report.flags)
    cleaned = shop_dataset(300, 200, seed=3, bots=2, config=PrepareConfig(max_user_events=500))
    assert cleaned.dataset.n_events == humans.sum()
    # bots leave the user table too: they must not come back as users without events
    assert cleaned.report.summary["users_without_events"] == 0
    assert cleaned.dataset.n_users == 300
    users_rec = next(t for t in cleaned.report.tables if t.kind == "user")
    assert users_rec.dropped["user removed as a bot"] == 2


def test_shop_dataset_roles_and_registry() -> None:
    prepared = load_dataset("shop", n_users=200, n_items=150, seed=2)
    ds = prepared.dataset
    assert (ds.n_users, ds.n_items) == (200, 150)
    roles = {k: str(v.role) for k, v in ds.item_schema.items()}
    assert roles == {"title": "text", "category": "categorical", "brand": "categorical",
                     "price": "numeric"}
    assert set(ds.behaviour_weights) == {"view", "favourite", "cart", "purchase"}
    assert prepared.report.rows_dropped == 0  # no duplicates or other noise without bots
    with pytest.raises(ConfigError, match="n_categories"):
        generate_shop(n_categories=len(CATEGORIES) + 1)


def _hit_rates(seed: int) -> tuple[float, float]:
    """Leave-last-out hit rate@10 of popularity and of item-item cosine CF."""
    data = generate_shop(seed=seed)
    ev = data.events.with_row_index("pos")
    last = ev.group_by("user").agg(
        pl.col("item").sort_by(["timestamp", "pos"]).last().alias("target"))
    # every event of a user on the held-out item leaves training, else the view before the
    # purchase would give the answer away
    train = ev.join(last, on="user").filter(pl.col("item") != pl.col("target"))
    n_users, n_items = data.users.height, data.items.height
    u = train["user"].to_numpy() - 1
    i = train["item"].to_numpy() - 1
    x = sp.csr_matrix((np.ones(u.size), (u, i)), shape=(n_users, n_items))
    x.data[:] = 1.0
    popularity = np.asarray(x.sum(axis=0)).ravel()
    xn = x @ sp.diags(1.0 / np.sqrt(np.maximum(popularity, 1.0)))
    sim = (xn.T @ xn).toarray()
    np.fill_diagonal(sim, 0.0)
    seen = x.toarray() > 0
    users = last["user"].to_numpy() - 1
    targets = last["target"].to_numpy() - 1

    def hit_rate(scores: np.ndarray) -> float:
        scores = np.where(seen, -np.inf, scores)
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        return float((top[users] == targets[:, None]).any(axis=1).mean())

    pop_scores = np.broadcast_to(popularity, (n_users, n_items)).astype(float)
    return hit_rate(pop_scores), hit_rate(np.asarray(x @ sim))


@pytest.mark.parametrize("seed", [0, 1])
def test_preferences_are_learnable(seed: int) -> None:
    popularity, item_cf = _hit_rates(seed)
    assert popularity > 0.02  # popularity is a real, weaker signal (item quality)
    assert item_cf > 2.5 * popularity and item_cf > 0.3
