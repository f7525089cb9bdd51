"""Media and social feed: freshness (time decay) and creator-exposure fairness.

A generated platform has creators who publish posts over 30 days: a few established creators
with large audiences and many emerging ones. Users view and like posts on the topics they care
about; what they see leans towards fresh posts and towards established creators (their
reach feeds itself). A collaborative model (EASE) trained on the first 80% of the log learns
that popularity and recommends old, established posts. Two re-ranking stages change that:

    freshness=W:published:HALFLIFE   boosts recent posts (W * 0.5 ** (age_days / half-life))
    exposure=W:creator_tier          pulls the rank-weighted exposure of established and
                                     emerging creators towards their share of the catalogue
    fair=P:creator_tier=emerging     FA*IR: every prefix of the feed holds at least the
                                     binomial minimum of emerging creators' posts

The script prints the trade-off at a few weights: recall@10 on the last 20% of the log
against the mean age of the recommended posts, the emerging creators' share of exposure and
the Gini index of exposure across creators.

    python examples/media_feed.py            # 2,000 users, 300 creators
    python examples/media_feed.py --small    # 400 users, 80 creators, seconds
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec import Dataset, PrepareConfig, prepare
from lmrec import group_metrics as G
from lmrec.collect import ColumnMapping
from lmrec.columns import Role
from lmrec.evaluate import split_temporal
from lmrec.metrics import gini
from lmrec.models import create_model
from lmrec.rerank import RerankData, RerankPipeline
from lmrec.train import TrainingOptions

START = 1_717_200_000  # 2024-06-01 00:00 UTC: fixed, so the output never depends on "now"
DAY = 86_400
DAYS = 30
TOPICS = ("news", "sports", "music", "cooking", "travel", "tech", "gaming", "fashion",
          "science", "comedy")
HALF_LIFE = 2  # days, for the freshness stage
POOL = 200  # candidates fetched for re-ranking (the library's default pool is max(50, 4k))
SETTINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model only", ()),
    ("freshness=0.3", (f"freshness=0.3:published:{HALF_LIFE}",)),
    ("freshness=0.6", (f"freshness=0.6:published:{HALF_LIFE}",)),
    ("exposure=0.3", ("exposure=0.3:creator_tier",)),
    ("exposure=0.6", ("exposure=0.6:creator_tier",)),
    ("fair=0.5", ("fair=0.5:creator_tier=emerging",)),
    ("freshness=0.3 + exposure=0.3", (f"freshness=0.3:published:{HALF_LIFE}",
                                      "exposure=0.3:creator_tier")),
)


def generate(n_users: int, n_creators: int, seed: int = 0
             ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Seeded events (user, post, event view|like, timestamp) and posts (post, creator,
    creator_tier, topic, published).

    10% of creators are established: they post more and a reach boost (log 2.0) lifts every
    post of theirs. Each day every user views a few posts published before that day, drawn
    by topic affinity + reach + post quality, discounted by age (half-life 1.5 days); a view
    turns into a like with a probability that rises with the user's affinity.
    """
    rng = np.random.default_rng(seed)
    established = rng.random(n_creators) < 0.1
    established[0] = True
    creator_topic = rng.integers(0, len(TOPICS), size=n_creators)
    posts_per_day = np.where(established, 0.8, 0.25)
    n_posts = rng.poisson(posts_per_day * DAYS)
    creator = np.repeat(np.arange(n_creators), n_posts)
    published = START + rng.integers(-3 * DAY, DAYS * DAY, size=creator.size)
    order = np.argsort(published, kind="stable")
    creator, published = creator[order], published[order]
    topic = np.where(rng.random(creator.size) < 0.85, creator_topic[creator],
                     rng.integers(0, len(TOPICS), size=creator.size))
    quality = rng.normal(0.0, 0.5, size=creator.size)
    reach = np.where(established[creator], 2.0, 0.0)
    affinity = np.log(rng.dirichlet(np.full(len(TOPICS), 0.3), size=n_users) + 0.01)

    users, items, times = [], [], []
    for d in range(DAYS):
        day = START + d * DAY
        live = np.flatnonzero(published < day)
        age = (day - published[live]) / DAY
        logits = (affinity[:, topic[live]] + reach[live] + quality[live]
                  - np.log(2.0) * age / 1.5)
        n_views = rng.poisson(2.0, size=n_users)
        m = int(n_views.max())
        if m == 0 or live.size == 0:
            continue
        keys = logits + rng.gumbel(size=logits.shape)  # Gumbel top-k: draws w/o replacement
        top = np.argsort(-keys, axis=1)[:, :m]
        take = np.arange(m)[None, :] < n_views[:, None]
        u = np.broadcast_to(np.arange(n_users)[:, None], top.shape)[take]
        users.append(u)
        items.append(live[top[take]])
        times.append(day + rng.integers(0, DAY, size=u.size))
    u, i, t = np.concatenate(users), np.concatenate(items), np.concatenate(times)
    z = affinity[u, topic[i]]
    like = rng.random(u.size) < 0.5 / (1 + np.exp(-(z + 1.0)))
    events = pl.DataFrame({
        "user": np.concatenate([u, u[like]]) + 1,
        "post": np.concatenate([i, i[like]]) + 1,
        "event": ["view"] * u.size + ["like"] * int(like.sum()),
        "timestamp": np.concatenate([t, t[like] + 5]),
    }).sort("timestamp")
    posts = pl.DataFrame({
        "post": np.arange(1, creator.size + 1),
        "creator": [f"creator{c + 1:03d}" for c in creator],
        "creator_tier": np.where(established[creator], "established", "emerging").astype(str),
        "topic": np.array(TOPICS)[topic].astype(str),
        "published": published,
    })
    return events, posts


def prepared(n_users: int, n_creators: int, seed: int) -> Dataset:
    events, posts = generate(n_users, n_creators, seed)
    return prepare(
        events, items=posts,
        mapping=ColumnMapping(user="user", item="post", event="event", time="timestamp"),
        config=PrepareConfig(behaviour_weights={"view": 1.0, "like": 3.0},
                             item_roles={"creator": Role.CATEGORICAL,
                                         "creator_tier": Role.CATEGORICAL,
                                         "topic": Role.CATEGORICAL,
                                         "published": Role.TIME}),
        name="feed").dataset


@dataclass(frozen=True)
class Row:
    """One setting's figures over the test users' top-k feeds."""

    setting: str
    recall: float  # recall@k: posts engaged with after the cut that existed at the cut
    mean_age_days: float  # mean age of the recommended posts at the cut
    emerging_share: float  # emerging creators' share of rank-weighted exposure
    creator_gini: float  # Gini index of rank-weighted exposure across creators


@dataclass
class Result:
    rows: dict[str, Row]
    catalogue_emerging_share: float  # emerging creators' share of the posts on offer


def run(n_users: int = 2000, n_creators: int = 300, *, seed: int = 0, k: int = 10
        ) -> Result:
    ds = prepared(n_users, n_creators, seed)
    split = split_temporal(ds, test_share=0.2)
    train = split.train
    data = RerankData.from_dataset(train)
    now = data.now  # the cut: the feed is built at the time of the last training event
    assert now is not None
    posts = ds.item_table
    published = posts["published"].to_numpy()
    if published.dtype.kind == "M":  # a TIME column may come back as datetimes
        published = published.astype("datetime64[s]").astype(np.int64)
    on_offer = np.flatnonzero(published <= now)  # posts that exist at the cut
    tier = (posts["creator_tier"] == "emerging").to_numpy()
    creator_codes = posts["creator"].cast(pl.Categorical).to_physical().to_numpy()
    # what users engaged with after the cut, among the posts that existed at the cut (posts
    # published later cannot be recommended at the cut by any setting)
    offered = np.zeros(ds.n_items, dtype=bool)
    offered[on_offer] = True
    truth = split.test.matrix("binary").tocsr()
    truth = (truth @ sp.diags(offered.astype(np.float64))).tocsr()
    truth.eliminate_zeros()
    users = np.flatnonzero((np.diff(truth.indptr) > 0)
                           & (np.diff(train.matrix("binary").tocsr().indptr) > 0))
    print(f"Feed: {ds.n_users} users, {ds.n_items} posts by {posts['creator'].n_unique()} "
          f"creators ({tier.mean():.0%} of posts by emerging creators), {ds.n_events} events "
          f"over {DAYS} days; trained on the first 80%, feeds built at the cut for "
          f"{users.size} users; {on_offer.size} posts on offer")

    model = create_model("ease").fit(train, TrainingOptions(rng=seed))
    seqs = train.sequences()
    rows: dict[str, Row] = {}
    for label, specs in SETTINGS:
        pipe = RerankPipeline.build(list(specs), data)
        # a re-ranker can only promote what the candidates hold: fetch a deep pool
        pool = pipe.pool(k) if not pipe else max(pipe.pool(k), POOL)
        idx, scores = model.recommend_idx(users, pool, candidates=on_offer,
                                          histories=seqs.take(users))
        top = np.full((users.size, k), -1, dtype=np.int64)
        for r, u in enumerate(users):
            ok = idx[r] >= 0
            if not pipe:
                chosen = idx[r][ok][:k]
            else:
                ctx = data.user_context(int(u), seqs.of(int(u)), now=now)
                chosen, _ = pipe.rerank(idx[r][ok], scores[r][ok], k, ctx)
            top[r, : chosen.size] = chosen
        rows[label] = _figures(label, top, truth[users], published, now, tier, creator_codes,
                               ds.n_items, k)
    share = float(tier[on_offer].mean())
    print(f"\nTrade-off at k={k} (exposure = 1/log2(rank+1) summed over all feeds; emerging "
          f"creators have {share:.0%} of the posts on offer):")
    print(f"  {'setting':<30}{'recall@' + str(k):>10}{'mean age (days)':>17}"
          f"{'emerging share':>16}{'creator gini':>14}")
    for row in rows.values():
        print(f"  {row.setting:<30}{row.recall:>10.4f}{row.mean_age_days:>17.2f}"
              f"{row.emerging_share:>16.1%}{row.creator_gini:>14.3f}")
    return Result(rows, share)


def _figures(label: str, top: np.ndarray, truth, published: np.ndarray, now: int,
             tier: np.ndarray, creator_codes: np.ndarray, n_items: int, k: int) -> Row:
    ok = top >= 0
    safe = np.maximum(top, 0)
    hits = truth[np.arange(top.shape[0])[:, None], safe].toarray().astype(bool) & ok
    recall = float((hits.sum(axis=1) / np.maximum(np.diff(truth.indptr), 1)).mean())
    age = float(((now - published[safe]) / DAY)[ok].mean())
    groups = tier.astype(np.int64)
    emerging = float(G.group_exposure(top, groups, 2, k)[1])
    per_item = G.rank_exposure(top, n_items, k)
    per_creator = np.bincount(creator_codes, weights=per_item)
    return Row(label, recall, age, emerging, gini(per_creator))


def main(argv: Sequence[str] | None = None) -> Result:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="400 users, 80 creators (seconds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10, help="feed length")
    args = ap.parse_args(argv)
    users, creators = (400, 80) if args.small else (2000, 300)
    return run(users, creators, seed=args.seed, k=args.k)


if __name__ == "__main__":
    main()
