"""A built-in e-commerce data generator with a hidden preference structure.

Users prefer a few categories, some brands and a price band; items have a latent quality. A
user's utility for an item is category affinity + brand affinity + price fit + quality + noise,
and views are drawn from softmax(utility / temperature). Favourites, carts and purchases follow
a view with a probability that rises with the (per-user standardised) utility; a purchase
always follows a cart, which follows a view of the same item. So models that learn preferences
beat popularity on this data, while popularity still carries a real signal (quality).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec.collect.events import ColumnMapping
from lmrec.collect.readers import Table
from lmrec.columns import Role
from lmrec.datasets.movielens import with_defaults
from lmrec.errors import ConfigError
from lmrec.prepare import PrepareConfig, Prepared, prepare

SHOP_START = 1_717_200_000  # 2024-06-01 00:00 UTC: fixed, so output never depends on "now"
VIEW, FAVOURITE, CART, PURCHASE = "view", "favourite", "cart", "purchase"

# category -> (median price, adjectives, product nouns)
CATEGORIES: dict[str, tuple[float, tuple[str, ...], tuple[str, ...]]] = {
    "Electronics": (120.0, ("Wireless", "Compact", "Pro", "Smart", "Ultra"),
                    ("Earbuds", "Bluetooth Speaker", "Smartwatch", "Headphones",
                     "Portable SSD", "Action Camera")),
    "Shoes": (70.0, ("Lightweight", "Leather", "Classic", "Waterproof", "Trail"),
              ("Running Shoes", "Ankle Boots", "Sneakers", "Hiking Boots", "Loafers")),
    "Clothing": (35.0, ("Soft", "Slim-Fit", "Organic", "Relaxed", "Vintage"),
                 ("Cotton T-Shirt", "Denim Jacket", "Wool Sweater", "Rain Jacket", "Chinos",
                  "Hoodie")),
    "Kitchen": (30.0, ("Stainless", "Non-Stick", "Ceramic", "Professional", "Compact"),
                ("Chef's Knife", "Skillet", "French Press", "Cutting Board", "Mixing Bowls",
                 "Kettle")),
    "Home": (45.0, ("Cosy", "Minimalist", "Handmade", "Modern", "Rustic"),
             ("Throw Blanket", "Table Lamp", "Scented Candle", "Wall Clock", "Cushion Cover")),
    "Beauty": (20.0, ("Hydrating", "Natural", "Gentle", "Vitamin C", "Fragrance-Free"),
               ("Face Serum", "Lip Balm", "Shampoo", "Hand Cream", "Night Cream")),
    "Sports": (40.0, ("Non-Slip", "Adjustable", "Insulated", "Lightweight", "Heavy-Duty"),
               ("Yoga Mat", "Dumbbell Set", "Water Bottle", "Resistance Bands",
                "Cycling Helmet")),
    "Toys": (25.0, ("Colourful", "Classic", "Wooden", "Interactive", "Mini"),
             ("Building Blocks", "Jigsaw Puzzle", "Plush Bear", "Board Game", "RC Car")),
    "Books": (15.0, ("Illustrated", "Bestselling", "Pocket", "Collector's", "Complete"),
              ("Cookbook", "Thriller Novel", "Travel Guide", "Poetry Collection", "Atlas")),
    "Garden": (35.0, ("Durable", "Expandable", "Ergonomic", "Weatherproof", "Solar"),
               ("Garden Hose", "Pruning Shears", "Plant Pot", "Bird Feeder", "Garden Lights")),
    "Pet Supplies": (25.0, ("Chew-Proof", "Orthopedic", "Reflective", "Washable", "Cosy"),
                     ("Dog Leash", "Cat Scratcher", "Pet Bed", "Chew Toy", "Food Bowl")),
    "Office": (20.0, ("Ergonomic", "Refillable", "Premium", "Magnetic", "Compact"),
               ("Desk Organizer", "Fountain Pen", "Notebook", "Monitor Stand", "Desk Lamp")),
    "Jewelry": (60.0, ("Sterling Silver", "Gold-Plated", "Minimal", "Handcrafted", "Vintage"),
                ("Necklace", "Stud Earrings", "Bracelet", "Ring", "Pendant")),
    "Outdoors": (80.0, ("Ultralight", "Waterproof", "Four-Season", "Packable", "Rugged"),
                 ("Tent", "Sleeping Bag", "Hiking Backpack", "Camping Stove", "Headlamp")),
    "Baby": (30.0, ("Soft", "Organic", "Foldable", "Safe-Grip", "Gentle"),
             ("Baby Blanket", "Teether", "Bottle Set", "Play Mat", "Baby Carrier")),
    "Automotive": (35.0, ("Universal", "Heavy-Duty", "Magnetic", "Compact", "Premium"),
                   ("Phone Mount", "Seat Cover", "Dash Cam", "Tyre Inflator", "Car Vacuum")),
}
_BRAND_HEADS = ("Nord", "Sol", "Vel", "Kai", "Lum", "Bright", "Oak", "Zen", "Cor", "Mar",
                "Riv", "Ast", "Fern", "Hal", "Tor")
_BRAND_TAILS = ("vik", "ara", "ora", "ex", "ly", "stone", "wood", "line", "io", "en")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_AGE_SHARES = (0.14, 0.28, 0.24, 0.16, 0.11, 0.07)
REGIONS = ("North", "South", "East", "West", "Central")

UTILITY_NOISE = 0.3  # sd of the generator's per-(user, item) taste noise
_MAX_BLOCK_CELLS = 2_000_000  # users x items utilities computed at once (memory bound)


@dataclass(frozen=True)
class ShopData:
    """Generated tables. `events`: user, item, event, timestamp (Unix s), sorted per user."""

    events: pl.DataFrame
    users: pl.DataFrame  # user, age_band, region
    items: pl.DataFrame  # item, title, category, brand, price


@dataclass(frozen=True)
class ShopWorld:
    """The hidden preference structure behind a generated shop (internal indices: user u is
    the table's user u + 1, item i the table's item i + 1; bots have no preferences).

    `utility(users)` is the structural part of what the generator's users feel about items:
    category affinity + brand affinity + price fit + quality. The generator adds a seeded
    Gaussian taste noise (sd `UTILITY_NOISE`) to it before drawing views; that noise is no
    part of the world, so the utility is a deterministic function of (user, item).
    """

    item_category: np.ndarray  # (n_items,) int: category index
    item_brand: np.ndarray  # (n_items,) int: brand index
    log_price_dev: np.ndarray  # (n_items,) log price deviation from the category median
    quality: np.ndarray  # (n_items,) latent quality
    category_affinity: np.ndarray  # (n_users, n_categories) log affinity
    brand_affinity: np.ndarray  # (n_users, n_brands)
    price_shift: np.ndarray  # (n_users,) preferred log-price deviation

    @property
    def n_users(self) -> int:
        return int(self.price_shift.size)

    @property
    def n_items(self) -> int:
        return int(self.quality.size)

    def utility(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """(len(users), len(items)) structural utilities; `items` None means all items."""
        users = np.asarray(users, dtype=np.int64)
        if items is None:
            return _utility(users, self._prefs, self.item_category, self.item_brand,
                            self.log_price_dev, self.quality)
        items = np.asarray(items, dtype=np.int64)
        return _utility(users, self._prefs, self.item_category[items], self.item_brand[items],
                        self.log_price_dev[items], self.quality[items])

    def pair_utility(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Utilities of (user, item) pairs: `users` and `items` broadcast together, e.g.
        users (B, 1) and slates (B, k) give (B, k); equal to the matching cells of `utility`."""
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        price_fit = -0.5 * ((self.log_price_dev[items] - self.price_shift[users]) / 0.5) ** 2
        return (
            self.category_affinity[users, self.item_category[items]]
            + self.brand_affinity[users, self.item_brand[items]]
            + 0.5 * np.maximum(price_fit, -4.0)
            + self.quality[items]
        )

    @property
    def _prefs(self) -> _Preferences:
        return _Preferences(self.category_affinity, self.brand_affinity, self.price_shift)


def generate_shop(
    n_users: int = 1000,
    n_items: int = 1000,
    *,
    seed: int | np.random.Generator = 0,
    n_categories: int = 12,
    n_brands: int = 40,
    days: int = 60,
    sessions_per_user: float = 7.0,
    views_per_session: float = 5.0,
    temperature: float = 0.5,
    bots: int = 0,
    start: int = SHOP_START,
) -> ShopData:
    """Generate a seeded e-commerce log; the same arguments always give the same tables.

    Defaults give about 35k events. `bots` adds that many users with implausibly many fast
    views of random items (for cleaning demos); they are listed in `users` like everyone else.
    """
    return generate_shop_world(
        n_users, n_items, seed=seed, n_categories=n_categories, n_brands=n_brands, days=days,
        sessions_per_user=sessions_per_user, views_per_session=views_per_session,
        temperature=temperature, bots=bots, start=start)[0]


def generate_shop_world(
    n_users: int = 1000,
    n_items: int = 1000,
    *,
    seed: int | np.random.Generator = 0,
    n_categories: int = 12,
    n_brands: int = 40,
    days: int = 60,
    sessions_per_user: float = 7.0,
    views_per_session: float = 5.0,
    temperature: float = 0.5,
    bots: int = 0,
    start: int = SHOP_START,
) -> tuple[ShopData, ShopWorld]:
    """`generate_shop` (the very same tables) and the hidden world that generated them."""
    _check(n_users, n_items, n_categories, n_brands, days, temperature, bots)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    cat_names = list(CATEGORIES)[:n_categories]

    items, item_cat, item_brand, log_price_dev, quality = _items(
        rng, n_items, cat_names, n_brands)
    users, pref = _users(rng, n_users, n_categories, n_brands)

    owner, session, first_in_session = _sessions(rng, n_users, sessions_per_user,
                                                 views_per_session)
    n_views = owner.size
    session_start = start + rng.integers(0, days * 86_400 - 3_600, size=session.max() + 1)
    gaps = np.round(5 + rng.exponential(45.0, size=n_views)).astype(np.int64)
    csum = np.cumsum(gaps)
    view_time = session_start[session] + csum - csum[first_in_session[session]]

    view_item = np.empty(n_views, dtype=np.int64)
    view_z = np.empty(n_views)
    block = max(1, _MAX_BLOCK_CELLS // n_items)
    bounds = np.searchsorted(owner, np.arange(0, n_users + block, block))
    # blocks of users bound the memory of the utility matrix; no loop over users or events
    for b0 in range(0, n_users, block):
        u = np.arange(b0, min(b0 + block, n_users))
        lo, hi = bounds[b0 // block], bounds[b0 // block + 1]
        util = (_utility(u, pref, item_cat, item_brand, log_price_dev, quality)
                + rng.normal(0.0, UTILITY_NOISE, size=(u.size, n_items)))
        local = owner[lo:hi] - b0
        view_item[lo:hi] = _sample_rows(rng, util / temperature, local)
        z = (util - util.mean(axis=1, keepdims=True)) / util.std(axis=1, keepdims=True)
        view_z[lo:hi] = z[local, view_item[lo:hi]]

    events = _follow_ups(rng, owner, view_item, view_time, view_z)
    if bots:
        events, users = _add_bots(rng, events, users, bots, n_users, n_items, start, days)
    ev = pl.DataFrame(
        {C.USER: events[0] + 1, C.ITEM: events[1] + 1, C.EVENT: events[2], C.TIME: events[3]},
        schema={C.USER: pl.Int64, C.ITEM: pl.Int64, C.EVENT: pl.String, C.TIME: pl.Int64},
    )
    # two quick views of one item can both lead to a cart in the same second: keep one
    ev = ev.unique(maintain_order=True).sort([C.USER, C.TIME], maintain_order=True)
    world = ShopWorld(item_cat, item_brand, log_price_dev, quality, pref.category, pref.brand,
                      pref.price_shift)
    return ShopData(events=ev, users=users, items=items), world


def shop_dataset(
    n_users: int = 1000,
    n_items: int = 1000,
    *,
    seed: int | np.random.Generator = 0,
    config: PrepareConfig | None = None,
    **options: Any,
) -> Prepared:
    """`generate_shop` (with `options`) run through preparation, roles set for every column."""
    data = generate_shop(n_users, n_items, seed=seed, **options)
    cfg = with_defaults(
        config,
        user_roles={"age_band": Role.CATEGORICAL, "region": Role.CATEGORICAL},
        item_roles={"title": Role.TEXT, "category": Role.CATEGORICAL,
                    "brand": Role.CATEGORICAL, "price": Role.NUMERIC},
    )
    return prepare(
        Table(frame=data.events, source="<shop events>", kind="frame"),
        Table(frame=data.users, source="<shop users>", kind="frame"),
        Table(frame=data.items, source="<shop items>", kind="frame"),
        mapping=ColumnMapping(event=C.EVENT, time=C.TIME),
        config=cfg,
        name="shop",
    )


# --- parts ----------------------------------------------------------------------------------
def _check(n_users: int, n_items: int, n_categories: int, n_brands: int, days: int,
           temperature: float, bots: int) -> None:
    n_brand_names = len(_BRAND_HEADS) * len(_BRAND_TAILS)
    for name, value, low, high in (
        ("n_users", n_users, 1, None), ("n_items", n_items, 1, None),
        ("n_categories", n_categories, 1, len(CATEGORIES)),
        ("n_brands", n_brands, 1, n_brand_names), ("days", days, 1, None),
        ("bots", bots, 0, None),
    ):
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(f"shop generator: {name} must be {bound}, got {value}")
    if not temperature > 0:
        raise ConfigError(f"shop generator: temperature must be positive, got {temperature}")


def _pick(rng: np.random.Generator, pools: list[tuple[str, ...]], group: np.ndarray) -> np.ndarray:
    """One random string per row from the pool of the row's group (vectorised)."""
    sizes = np.array([len(p) for p in pools])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = np.array([w for p in pools for w in p], dtype=object)
    return flat[offsets[group] + (rng.random(group.size) * sizes[group]).astype(np.int64)]


def _items(
    rng: np.random.Generator, n_items: int, cat_names: list[str], n_brands: int
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_cat = len(cat_names)
    brand_names = np.array([h + t for h in _BRAND_HEADS for t in _BRAND_TAILS], dtype=object)
    brand_names = brand_names[rng.permutation(brand_names.size)[:n_brands]]
    # each brand serves its home category plus up to two others
    serves = rng.random((n_brands, n_cat)) < 1.5 / n_cat
    serves[np.arange(n_brands), np.arange(n_brands) % n_cat] = True
    brand_given_cat = serves.T + 0.01
    brand_given_cat /= brand_given_cat.sum(axis=1, keepdims=True)

    cat_share = rng.dirichlet(np.full(n_cat, 3.0))
    item_cat = rng.choice(n_cat, size=n_items, p=cat_share)
    item_brand = _sample_rows(rng, np.log(brand_given_cat), item_cat)
    median = np.array([CATEGORIES[c][0] for c in cat_names])
    brand_premium = rng.normal(0.0, 0.25, size=n_brands)
    log_price_dev = rng.normal(0.0, 0.45, size=n_items) + brand_premium[item_brand]
    price = median[item_cat] * np.exp(log_price_dev)
    price = np.maximum(np.round(price) - 0.01, 0.99)  # shop prices end in .99
    brand_quality = rng.normal(0.0, 0.3, size=n_brands)
    quality = brand_quality[item_brand] + rng.normal(0.0, 0.5, size=n_items)

    adjective = _pick(rng, [CATEGORIES[c][1] for c in cat_names], item_cat)
    noun = _pick(rng, [CATEGORIES[c][2] for c in cat_names], item_cat)
    titles = pl.Series(brand_names[item_brand]) + " " + pl.Series(adjective) + " " \
        + pl.Series(noun)
    table = pl.DataFrame({
        C.ITEM: np.arange(1, n_items + 1, dtype=np.int64),
        "title": titles,
        "category": np.array(cat_names, dtype=object)[item_cat].astype(str),
        "brand": brand_names[item_brand].astype(str),
        "price": price,
    })
    return table, item_cat, item_brand, log_price_dev, quality


@dataclass(frozen=True)
class _Preferences:
    category: np.ndarray  # (n_users, n_categories) log affinity
    brand: np.ndarray  # (n_users, n_brands)
    price_shift: np.ndarray  # (n_users,) preferred log-price deviation from the category median


def _users(rng: np.random.Generator, n_users: int, n_cat: int,
           n_brands: int) -> tuple[pl.DataFrame, _Preferences]:
    age = rng.choice(len(AGE_BANDS), size=n_users, p=_AGE_SHARES)
    region = rng.integers(0, len(REGIONS), size=n_users)
    # 1-3 preferred categories per user, with Dirichlet weights among them
    k = rng.choice([1, 2, 3], size=n_users, p=[0.35, 0.4, 0.25])
    rank = np.argsort(np.argsort(rng.random((n_users, n_cat)), axis=1), axis=1)
    liked = rank < np.minimum(k, n_cat)[:, None]
    weight = np.where(liked, rng.gamma(2.0, size=(n_users, n_cat)), 0.0)
    weight /= weight.sum(axis=1, keepdims=True)
    category = np.log(weight + 0.02)
    # a mild taste for every brand, and a clear one for two favourites
    brand = rng.normal(0.0, 0.4, size=(n_users, n_brands))
    fav = np.argsort(rng.random((n_users, n_brands)), axis=1)[:, :2]
    brand[np.arange(n_users)[:, None], fav] += 1.0
    # older customers lean to pricier items, everyone with their own spread
    price_shift = 0.08 * (age - 2) + rng.normal(0.0, 0.35, size=n_users)
    table = pl.DataFrame({
        C.USER: np.arange(1, n_users + 1, dtype=np.int64),
        "age_band": np.array(AGE_BANDS)[age],
        "region": np.array(REGIONS)[region],
    })
    return table, _Preferences(category, brand, price_shift)


def _utility(users: np.ndarray, pref: _Preferences, item_cat: np.ndarray,
             item_brand: np.ndarray, log_price_dev: np.ndarray,
             quality: np.ndarray) -> np.ndarray:
    """(users, items) structural utility; the generator adds its taste noise to this sum
    (the same float operations in the same order as before the world was exposed, so the
    generated tables did not change)."""
    price_fit = -0.5 * ((log_price_dev[None, :] - pref.price_shift[users, None]) / 0.5) ** 2
    return (
        pref.category[users][:, item_cat]
        + pref.brand[users][:, item_brand]
        + 0.5 * np.maximum(price_fit, -4.0)
        + quality[None, :]
    )


def _sample_rows(rng: np.random.Generator, logits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One column index per entry of `rows`, drawn from softmax(logits[row]).

    All rows' cumulative distributions are laid end to end (row r shifted by r), so one
    global searchsorted samples every draw at once.
    """
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(p, axis=1)
    cum /= cum[:, -1:]
    n_rows, n_cols = cum.shape
    flat = (cum + np.arange(n_rows)[:, None]).ravel()
    pos = np.searchsorted(flat, rows + rng.random(rows.size), side="right")
    return np.minimum(pos - rows * n_cols, n_cols - 1)


def _sessions(rng: np.random.Generator, n_users: int, sessions_per_user: float,
              views_per_session: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Owner and session of every view (owner-sorted), and each session's first view."""
    sigma = 0.8  # heavy-tailed activity: a few users shop far more than most
    activity = rng.lognormal(np.log(max(sessions_per_user, 1e-9)) - sigma**2 / 2, sigma,
                             size=n_users)
    # capped, so that the busiest real shopper stays far below the bots (>= 800 views)
    activity = np.minimum(activity, 4.0 * sessions_per_user)
    n_sessions = np.maximum(1, rng.poisson(activity))
    session_owner = np.repeat(np.arange(n_users), n_sessions)
    n_views = 1 + rng.poisson(max(views_per_session - 1.0, 0.0), size=session_owner.size)
    session = np.repeat(np.arange(session_owner.size), n_views)
    first = np.concatenate([[0], np.cumsum(n_views)[:-1]])
    return session_owner[session], session, first


def _follow_ups(rng: np.random.Generator, owner: np.ndarray, item: np.ndarray,
                time: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
    """Views plus the favourites, carts and purchases they lead to."""
    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    n = owner.size
    # viewed items already score high (median z about 3), so the bar sits above that; the
    # rates land near real shops: a few percent of views lead to a cart, ~40% of carts to a buy
    fav = rng.random(n) < 0.10 * sigmoid(2.0 * (z - 3.3))
    cart = rng.random(n) < 0.15 * sigmoid(2.0 * (z - 3.3))
    buy = cart & (rng.random(n) < 0.25 + 0.35 * sigmoid(2.0 * (z - 3.5)))
    fav_t = time + 5 + rng.exponential(30.0, n).astype(np.int64)
    cart_t = time + 20 + rng.exponential(60.0, n).astype(np.int64)
    buy_t = cart_t + 60 + rng.exponential(240.0, n).astype(np.int64)  # minutes after the cart
    parts = [(np.ones(n, bool), VIEW, time), (fav, FAVOURITE, fav_t), (cart, CART, cart_t),
             (buy, PURCHASE, buy_t)]
    return (
        np.concatenate([owner[m] for m, _, _ in parts]),
        np.concatenate([item[m] for m, _, _ in parts]),
        np.concatenate([np.full(int(m.sum()), name, dtype=object) for m, name, _ in parts]),
        np.concatenate([t[m] for m, _, t in parts]),
    )


def _add_bots(rng: np.random.Generator, events: tuple[np.ndarray, ...], users: pl.DataFrame,
              bots: int, n_users: int, n_items: int, start: int,
              days: int) -> tuple[tuple[np.ndarray, ...], pl.DataFrame]:
    """Scrapers: hundreds to thousands of views of random items, a second or two apart."""
    n_views = rng.integers(800, 2_000, size=bots)
    owner = np.repeat(np.arange(n_users, n_users + bots), n_views)
    item = rng.integers(0, n_items, size=owner.size)
    first = np.concatenate([[0], np.cumsum(n_views)[:-1]])
    steps = np.cumsum(rng.integers(1, 3, size=owner.size))
    begin = start + rng.integers(0, days * 86_400 - 7_200, size=bots)
    bot_index = owner - n_users
    time = begin[bot_index] + steps - steps[first[bot_index]]
    merged = (
        np.concatenate([events[0], owner]),
        np.concatenate([events[1], item]),
        np.concatenate([events[2], np.full(owner.size, VIEW, dtype=object)]),
        np.concatenate([events[3], time]),
    )
    bot_users = pl.DataFrame({
        C.USER: np.arange(n_users + 1, n_users + bots + 1, dtype=np.int64),
        "age_band": np.array(AGE_BANDS)[rng.integers(0, len(AGE_BANDS), size=bots)],
        "region": np.array(REGIONS)[rng.integers(0, len(REGIONS), size=bots)],
    })
    return merged, pl.concat([users, bot_users])
