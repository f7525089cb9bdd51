"""Finance: product recommendations under a risk-suitability constraint, with explanations a
compliance officer can read.

A generated bank sells 40 products (savings, deposits, bond, balanced and equity funds, ETFs,
pension plans, a crypto note), each with a risk level from 1 (lowest) to 5. Every client has a
risk tolerance from 1 to 5 set by a suitability questionnaire. Clients open holdings (events
"open"; "top-up" adds to one) mostly within their tolerance, but some hold products above it
(bought before their profile was reassessed, or execution-only): a model trained on this data
learns to recommend unsuitable products too. The re-ranking stage
`suitability=risk_level<=risk_tolerance` makes that impossible: a product whose risk level
exceeds the client's tolerance is removed before ranking, for every client.

Each recommendation comes with an explanation built from `Recommender.explain`: the held
products that contributed most to its score (EASE's exact linear terms), and the suitability
check in words.

    python examples/finance.py            # 2,000 clients
    python examples/finance.py --small    # 400 clients, seconds
    python examples/finance.py --out bank # also writes bank/data and the bundle bank/model
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lmrec import Dataset, PrepareConfig, prepare
from lmrec.collect import ColumnMapping
from lmrec.columns import Role
from lmrec.models import create_model
from lmrec.rerank import RerankData, RerankPipeline
from lmrec.serve.bundle import write_bundle
from lmrec.train import TrainingOptions

START = 1_704_067_200  # 2024-01-01 00:00 UTC: fixed, so the output never depends on "now"
SUITABILITY = "suitability=risk_level<=risk_tolerance"

# family -> (risk levels of its products, product names)
FAMILIES: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "savings": ((1, 1, 1), ("Instant Access Savings", "Notice Savings 90", "Junior Saver")),
    "deposit": ((1, 1, 1), ("Fixed Deposit 1Y", "Fixed Deposit 3Y", "Green Deposit 2Y")),
    "bond fund": ((2, 2, 2, 3, 3), ("Government Bond Fund", "Euro Short-Term Bond Fund",
                                    "Inflation-Linked Bond Fund", "Corporate Bond Fund",
                                    "Global Aggregate Bond Fund")),
    "pension": ((2, 3, 3, 4), ("Cautious Pension Plan", "Balanced Pension Plan",
                               "Lifecycle Pension 2045", "Growth Pension Plan")),
    "balanced fund": ((3, 3, 3, 3), ("Balanced Income Fund", "Multi-Asset Fund",
                                     "Sustainable Balanced Fund", "Dividend Income Fund")),
    "equity ETF": ((4, 4, 4, 4, 4), ("World Equity ETF", "S&P 500 ETF", "Europe Equity ETF",
                                     "ESG Leaders ETF", "Small Cap ETF")),
    "equity fund": ((4, 4, 5, 5, 5), ("Global Equity Fund", "Quality Growth Fund",
                                      "Technology Fund", "Emerging Markets Fund",
                                      "Clean Energy Fund")),
    "alternative": ((5, 5, 5, 4, 4, 3, 2, 2, 3, 5, 5),
                    ("Crypto Tracker Note", "Leveraged Index Certificate", "Frontier Markets Fund",
                     "Gold ETC", "Commodities ETF", "Real Estate Fund", "Capital Protected Note",
                     "Money Market Fund", "Infrastructure Fund", "Private Equity Feeder",
                     "Options Income Fund")),
}
GOALS = ("preserve", "income", "growth")
# how much a goal likes each family (log scale)
LIKES = {
    "preserve": {"savings": 2.0, "deposit": 2.0, "bond fund": 1.0, "pension": 0.5,
                 "balanced fund": 0.0, "equity ETF": -1.0, "equity fund": -1.5,
                 "alternative": -1.0},
    "income": {"savings": 0.5, "deposit": 1.0, "bond fund": 2.0, "pension": 1.0,
               "balanced fund": 1.5, "equity ETF": 0.0, "equity fund": -0.5, "alternative": 0.0},
    "growth": {"savings": 0.0, "deposit": -1.0, "bond fund": 0.0, "pension": 1.0,
               "balanced fund": 0.5, "equity ETF": 2.0, "equity fund": 2.0, "alternative": 1.0},
}


def products() -> pl.DataFrame:
    rows = []
    for family, (risks, names) in FAMILIES.items():
        for risk, name in zip(risks, names, strict=True):
            rows.append((f"P{len(rows) + 1:03d}", name, family, risk))
    return pl.DataFrame(rows, schema=["product", "name", "family", "risk_level"], orient="row")


def generate(n_clients: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Seeded holdings events (client, product, event open|top-up, timestamp), clients
    (client, risk_tolerance, goal, age_band) and products (product, name, family,
    risk_level). A client opens 2-6 products drawn from softmax(goal affinity + product appeal
    - 2.5 * (risk above tolerance)); 15% of clients ignore their tolerance (older holdings)."""
    rng = np.random.default_rng(seed)
    prod = products()
    n = prod.height
    family = prod["family"].to_list()
    risk = prod["risk_level"].to_numpy()
    appeal = rng.normal(0.0, 0.6, size=n)
    goal = rng.integers(0, len(GOALS), size=n_clients)
    # tolerance follows the goal: preservers are cautious, growth seekers bolder
    tolerance = np.clip(np.round(rng.normal(1.8 + 1.0 * goal, 0.9)), 1, 5).astype(np.int64)
    legacy = rng.random(n_clients) < 0.15
    like = np.array([[LIKES[g][f] for f in family] for g in GOALS])  # (goals, products)
    util = like[goal] + appeal[None, :] + rng.normal(0.0, 0.5, size=(n_clients, n))
    over = np.maximum(risk[None, :] - tolerance[:, None], 0)
    util -= np.where(legacy[:, None], 0.0, 2.5) * over
    rows = []
    for c in range(n_clients):
        k = int(rng.integers(2, 7))
        p = np.exp(util[c] - util[c].max())
        picks = rng.choice(n, size=k, replace=False, p=p / p.sum())
        t = START + int(rng.integers(0, 200 * 86_400))
        for j in picks:
            rows.append((f"C{c + 1:05d}", prod["product"][int(j)], "open", t))
            if rng.random() < 0.3:
                rows.append((f"C{c + 1:05d}", prod["product"][int(j)], "top-up",
                             t + int(rng.integers(30, 120)) * 86_400))
            t += int(rng.exponential(40 * 86_400))
    events = pl.DataFrame(rows, schema=["client", "product", "event", "timestamp"],
                          orient="row")
    clients = pl.DataFrame({
        "client": [f"C{c + 1:05d}" for c in range(n_clients)],
        "risk_tolerance": tolerance,
        "goal": np.array(GOALS)[goal],
        "age_band": rng.choice(["18-34", "35-54", "55+"], size=n_clients).astype(str),
    })
    return events, clients, prod


def prepared(n_clients: int, seed: int) -> Dataset:
    events, clients, prod = generate(n_clients, seed)
    return prepare(
        events, clients, prod,
        mapping=ColumnMapping(user="client", item="product", event="event", time="timestamp"),
        config=PrepareConfig(
            behaviour_weights={"open": 2.0, "top-up": 1.0},
            user_roles={"risk_tolerance": Role.NUMERIC, "goal": Role.CATEGORICAL,
                        "age_band": Role.CATEGORICAL},
            item_roles={"name": Role.TEXT, "family": Role.CATEGORICAL,
                        "risk_level": Role.NUMERIC}),
        name="bank").dataset


@dataclass(frozen=True)
class Advice:
    """One recommended product and its explanation."""

    client: str
    product: str
    risk_level: int
    tolerance: int
    because: tuple[str, ...]  # the held products the explanation names, largest first
    text: str  # the explanation as printed


@dataclass
class Result:
    n_clients: int
    unsuitable_unconstrained: float  # share of top-k slots above tolerance without the stage
    unsuitable_shown: int  # products shown above the client's tolerance (must be 0)
    advice: list[Advice]
    holdings: dict[str, set[str]]  # client -> held products


def explain_text(names: dict[str, str], product: str, risk: int, tolerance: int,
                 contributions: list[tuple[str, float]], method: str, score: float) -> tuple[
                     str, tuple[str, ...]]:
    """The explanation as a compliance officer reads it, and the held products it names:
    those whose contribution raised the score (at most two), else the largest one."""
    raised = [(p, c) for p, c in contributions if c > 0][:2]
    if raised:
        held = " and ".join(f"{p} {names[p]} ({c:+.3f})" for p, c in raised)
        because = f"because the client holds {held}"
    else:
        raised = contributions[:1]
        p, c = raised[0]
        because = (f"no holding raised its score; the client's largest contribution is "
                   f"{p} {names[p]} ({c:+.3f})")
    text = (f"{product} {names[product]} (risk level {risk} of 5)\n"
            f"     suitability: risk level {risk} <= client tolerance {tolerance}: passed\n"
            f"     {because}\n"
            f"     method: {method} (each held product's exact share of the score {score:.3f})")
    return text, tuple(p for p, _ in raised)


def run(n_clients: int = 2000, *, seed: int = 0, k: int = 3, show: int = 3,
        out: Path | None = None) -> Result:
    ds = prepared(n_clients, seed)
    items = ds.item_table
    risk = items["risk_level"].to_numpy().astype(np.int64)
    tolerance = ds.user_table["risk_tolerance"].to_numpy().astype(np.int64)
    names = dict(zip(items["item"].to_list(), items["name"].to_list(), strict=True))
    ids = items["item"].to_list()
    seqs = ds.sequences()
    held_over = float((risk[seqs.items] > np.repeat(tolerance, seqs.lengths())).mean())
    print(f"Bank: {ds.n_users} clients, {ds.n_items} products (risk levels 1-5), "
          f"{ds.n_events} events; {held_over:.1%} of holdings are above the client's "
          "current risk tolerance")

    model = create_model("ease").fit(ds, TrainingOptions(rng=seed))
    if out is not None:  # the prepared data and a bundle, for the CLI and the HTTP server
        ds.save(out / "data")
        write_bundle(model, ds, out / "model")
    data = RerankData.from_dataset(ds)
    pipe = RerankPipeline.build([SUITABILITY], data)
    print(f"Model: ease; re-ranking: {pipe.describe()}")

    everyone = np.arange(ds.n_users)
    raw, _ = model.recommend_idx(everyone, k)
    raw_over = (risk[np.maximum(raw, 0)] > tolerance[:, None]) & (raw >= 0)
    advice: list[Advice] = []
    shown_over = 0
    holdings: dict[str, set[str]] = {}
    for u in everyone:
        hist = seqs.of(int(u)).astype(np.int64)
        ctx = data.user_context(int(u), hist)
        allowed = pipe.allowed(ctx)
        cand = None if allowed is None else np.flatnonzero(allowed)
        idx, scores = model.recommend_idx(np.array([u]), pipe.pool(k), candidates=cand)
        keep = idx[0] >= 0
        top, top_scores = pipe.rerank(idx[0][keep], scores[0][keep], k, ctx)
        shown_over += int((risk[top] > tolerance[u]).sum())
        client = str(ds.users.to_python(int(u)))
        holdings[client] = {ids[i] for i in hist}
        if top.size == 0:
            continue
        exp = model.explain(int(u), seqs.take(np.array([u])), top)
        for j, (item, score) in enumerate(zip(top, top_scores, strict=True)):
            order = np.argsort(-exp.contributions[j], kind="stable")
            contributions = [(ids[int(exp.history[o])], float(exp.contributions[j, o]))
                             for o in order]
            text, named = explain_text(names, ids[int(item)], int(risk[item]),
                                       int(tolerance[u]), contributions, exp.method,
                                       float(score))
            advice.append(Advice(client, ids[int(item)], int(risk[item]), int(tolerance[u]),
                                 named, text))
    share = float(raw_over.mean())
    print(f"\nWithout the suitability stage {share:.1%} of the top-{k} recommendations "
          f"({int(raw_over.any(axis=1).sum())} clients) would be above the client's risk "
          f"tolerance; with it: {shown_over}.")
    for client in list(holdings)[:show]:
        u = int(ds.users.index([client])[0])
        held = ", ".join(f"{p} {names[p]} (risk {int(risk[ids.index(p)])}"
                         + (", above tolerance" if risk[ids.index(p)] > tolerance[u] else "")
                         + ")" for p in sorted(holdings[client]))
        print(f"\nClient {client}: risk tolerance {int(tolerance[u])}; holds {held}")
        for rank, a in enumerate((a for a in advice if a.client == client), start=1):
            print(f"  {rank}. {a.text}")
    return Result(ds.n_users, share, shown_over, advice, holdings)


def main(argv: Sequence[str] | None = None) -> Result:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="400 clients (seconds)")
    ap.add_argument("--clients", type=int, default=None, help="number of clients")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=3, help="recommendations per client")
    ap.add_argument("--out", type=Path, default=None,
                    help="write the prepared data (OUT/data) and a model bundle (OUT/model)")
    args = ap.parse_args(argv)
    return run(args.clients or (400 if args.small else 2000), seed=args.seed, k=args.k,
               out=args.out)


if __name__ == "__main__":
    main()
