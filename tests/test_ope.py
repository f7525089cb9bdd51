"""Off-policy estimators (`lmrec.evaluate.ope`) against a synthetic world with a known answer.

The world: a few contexts, a pool of 6 items, slates of 3. The logging policy is Plackett-Luce
on per-context scores (slates drawn by Gumbel top-k); its per-(item, position) marginals are
computed exactly by enumerating all 120 ordered slates. Clicks follow a position-based model,
so the target's true value is sum_j theta_j * attraction(context, target item j), averaged over
the context distribution.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_ope import pl_marginals
from lmrec.errors import InputError
from lmrec.evaluate.ope import (
    RewardModel,
    doubly_robust,
    evaluate_target,
    ips,
    snips,
)

POOL, K, CONTEXTS = 6, 3, 4
THETA = np.array([0.9, 0.55, 0.3])  # examination probability per position


def exact_marginals(scores: np.ndarray, k: int) -> np.ndarray:
    """(pool, k): P(item i at position j) under Plackett-Luce on exp(scores)."""
    return pl_marginals(np.exp(scores - scores.max()), k)


class World:
    """Contexts with their probabilities, logging scores, click attractions and a target."""

    def __init__(self, seed: int = 123) -> None:
        rng = np.random.default_rng(seed)
        self.q = np.array([0.4, 0.3, 0.2, 0.1])
        base = np.array([0.7, 0.55, 0.45, 0.3, 0.2, 0.1])  # attraction mostly by item
        self.attraction = np.clip(base * rng.uniform(0.8, 1.2, (CONTEXTS, POOL)), 0, 1)
        self.log_scores = rng.normal(0, 0.7, (CONTEXTS, POOL))
        self.marginals = np.stack([exact_marginals(s, K) for s in self.log_scores])
        # the target: the true best items, but the 2nd and 3rd swapped in every context
        order = np.argsort(-self.attraction, axis=1)[:, :K]
        self.target = order[:, [0, 2, 1]]
        self.true_value = float(sum(
            self.q[x] * (THETA * self.attraction[x, self.target[x]]).sum()
            for x in range(CONTEXTS)))

    def log(self, n: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(items, propensities, clicks, target items), each (n, K)."""
        x = rng.choice(CONTEXTS, size=n, p=self.q)
        gumbel = rng.gumbel(size=(n, POOL))
        items = np.argsort(-(self.log_scores[x] + gumbel), axis=1)[:, :K]  # Gumbel top-k = PL
        props = self.marginals[x[:, None], items, np.arange(K)]
        p_click = THETA * self.attraction[x[:, None], items]
        clicks = (rng.random((n, K)) < p_click).astype(np.int8)
        return items, props, clicks, self.target[x]


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def test_exact_marginals_are_distributions(world: World) -> None:
    for m in world.marginals:
        assert np.allclose(m.sum(axis=0), 1.0)  # one item per position
        assert (m.sum(axis=1) <= 1.0 + 1e-12).all()  # an item at most once per slate


def test_gumbel_top_k_draws_the_enumerated_marginals(world: World) -> None:
    """The log's sampler and the propensities it records agree (else the coverage test below
    would test nothing)."""
    rng = np.random.default_rng(1)
    n = 40_000
    gumbel = rng.gumbel(size=(n, POOL))
    items = np.argsort(-(world.log_scores[0] + gumbel), axis=1)[:, :K]
    freq = np.stack([np.bincount(items[:, j], minlength=POOL) / n for j in range(K)], axis=1)
    assert np.abs(freq - world.marginals[0]).max() < 0.015


def test_confidence_intervals_cover_the_true_value(world: World) -> None:
    """Over 40 independent logs, each estimator's 95% CI holds the true value in at least 85%
    of them, DR's intervals are narrower than IPS's, and all three are centred on the truth."""
    seeds, n = 40, 3000
    found: dict[str, list[tuple[float, float, float]]] = {"ips": [], "snips": [], "dr": []}
    for seed in range(seeds):
        items, props, clicks, target = world.log(n, np.random.default_rng(1000 + seed))
        report = evaluate_target(items, props, clicks, target)
        for e in report.estimates:
            found[e.estimator].append((e.value, *e.ci))
    truth = world.true_value
    cover = {name: np.mean([lo <= truth <= hi for _, lo, hi in rows])
             for name, rows in found.items()}
    width = {name: np.mean([hi - lo for _, lo, hi in rows]) for name, rows in found.items()}
    bias = {name: np.mean([v for v, _, _ in rows]) - truth for name, rows in found.items()}
    for name in found:
        assert cover[name] >= 0.85, (name, cover, truth)
        # the mean of 40 estimates lies well within a fraction of one interval's width
        assert abs(bias[name]) < width[name] / 4, (name, bias, width)
    assert width["dr"] < 0.8 * width["ips"], width


def test_ips_by_hand() -> None:
    items = np.array([[0, 1], [2, 0]])
    props = np.array([[0.5, 0.25], [0.2, 0.4]])
    clicks = np.array([[1, 1], [0, 1]])
    target = np.array([[0, 1], [0, 2]])  # matches both slots, then none
    e = ips(items, props, clicks, target_items=target)
    per = np.array([1 / 0.5 + 1 / 0.25, 0.0])
    assert e.value == pytest.approx(per.mean())
    assert e.se == pytest.approx(per.std(ddof=1) / np.sqrt(2))
    assert e.ci[0] == pytest.approx(e.value - 1.959964 * e.se, rel=1e-6)
    assert e.n == 2 and e.unusable == 0
    # Kish per position: position 0 has weights (2, 0) -> 1; position 1 (4, 0) -> 1
    assert e.ess == pytest.approx(1.0)


def test_target_probs_equal_target_items_for_a_deterministic_target() -> None:
    rng = np.random.default_rng(0)
    items = rng.integers(0, 5, (50, 3))
    props = rng.uniform(0.1, 0.9, (50, 3))
    clicks = rng.integers(0, 2, (50, 3))
    target = np.where(rng.random((50, 3)) < 0.5, items, 9)
    by_items = ips(items, props, clicks, target_items=target)
    by_probs = ips(items, props, clicks, target_probs=(target == items).astype(float))
    assert by_items.value == pytest.approx(by_probs.value)
    assert snips(items, props, clicks, target_items=target).value == pytest.approx(
        snips(items, props, clicks, target_probs=(target == items) * 1.0).value)


def test_snips_is_the_per_position_ratio_and_ignores_a_common_scale() -> None:
    items = np.array([[0, 1], [0, 2], [3, 1]])
    props = np.array([[0.5, 0.5], [0.25, 0.5], [0.5, 0.5]])
    clicks = np.array([[1, 0], [0, 1], [1, 1]])
    target = np.array([[0, 1], [0, 1], [0, 1]])
    e = snips(items, props, clicks, target_items=target)
    pos0 = (2 * 1 + 4 * 0) / (2 + 4)  # rows 0 and 1 match at position 0
    pos1 = (2 * 0 + 2 * 1) / (2 + 2)  # rows 0 and 2 match at position 1
    assert e.value == pytest.approx(pos0 + pos1)
    halved = snips(items, props * 0.5, clicks, target_items=target)
    assert halved.value == pytest.approx(e.value)  # IPS would double
    assert halved.se == pytest.approx(e.se)  # and so would its standard error
    assert ips(items, props * 0.5, clicks, target_items=target).value == pytest.approx(
        2 * ips(items, props, clicks, target_items=target).value)


def test_snips_delta_method_matches_the_spread_over_resamples(world: World) -> None:
    """The delta-method standard error is the spread of SNIPS over independent logs."""
    values, ses = [], []
    for seed in range(30):
        items, props, clicks, target = world.log(1500, np.random.default_rng(seed))
        e = snips(items, props, clicks, target_items=target)
        values.append(e.value)
        ses.append(e.se)
    assert np.std(values, ddof=1) == pytest.approx(np.mean(ses), rel=0.35)


def test_zero_or_unknown_propensity_makes_the_impression_unusable() -> None:
    items = np.array([[0, 1], [0, 1], [2, 3], [0, -1]])
    props = np.array([[0.5, 0.5], [0.0, 0.5], [None, 0.5], [0.5, None]], dtype=object)
    clicks = np.array([[1, 0], [1, 0], [1, 1], [1, 0]])
    target = np.array([[0, 1], [0, 1], [0, 1], [0, 1]])
    for estimator in (ips, snips):
        e = estimator(items, props, clicks, target_items=target)
        # row 1 (p = 0) and row 2 (None) are out; row 3's None is on an empty slot
        assert e.unusable == 2 and e.n == 2
        assert np.isfinite(e.value)
    assert ips(items, props, clicks, target_items=target).value == pytest.approx(2.0)
    dr = doubly_robust(items, props, clicks, target)
    assert dr.unusable == 2 and dr.n == 2 and np.isfinite(dr.value)


def test_no_usable_impression_gives_nan_and_says_so() -> None:
    items = np.array([[0, 1]])
    e = ips(items, np.array([[np.nan, np.nan]]), np.array([[1, 0]]), target_items=items)
    assert e.n == 0 and e.unusable == 1 and np.isnan(e.value) and e.note


def test_padding_never_matches() -> None:
    items = np.array([[0, -1]])
    e = ips(items, np.array([[0.5, np.nan]]), np.array([[1, 1]]),
            target_items=np.array([[0, -1]]))
    assert e.value == pytest.approx(2.0)  # the padded slot's "click" counts for nothing


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"propensities": np.full((2, 2), 1.5)}, "propensities"),
    ({"clicks": np.full((2, 2), -1)}, "clicks"),
    ({"propensities": np.full((2, 3), 0.5)}, "propensities"),
    ({"target_items": np.zeros((2, 3), int)}, "target_items"),
    ({"target_items": np.zeros((2, 2))}, "target_items"),
    ({"target_probs": np.ones((2, 2))}, "not both"),
    ({"items": np.zeros(4, int)}, "items"),
])
def test_bad_input_names_the_argument(kwargs: dict, needle: str) -> None:
    args = {"items": np.zeros((2, 2), int), "propensities": np.full((2, 2), 0.5),
            "clicks": np.zeros((2, 2), int), "target_items": np.zeros((2, 2), int)}
    args.update(kwargs)
    with pytest.raises(InputError, match=needle):
        ips(**args)


def test_reward_model_recovers_a_position_based_model() -> None:
    rng = np.random.default_rng(5)
    n, items_n = 20_000, 8
    attraction = np.linspace(0.2, 1.0, items_n)
    theta = np.array([0.8, 0.5, 0.25])
    items = np.stack([rng.permutation(items_n)[:3] for _ in range(n)])
    clicks = rng.random((n, 3)) < theta * attraction[items]
    model = RewardModel.fit(items, clicks)
    # identified up to a scale between positions and items: compare the products
    truth = theta * attraction[items[:200]]
    assert np.abs(model.predict(items[:200]) - truth).max() < 0.05
    unseen = model.predict(np.array([[99, -1, 3]]))
    assert unseen[0, 1] == 0.0 and unseen[0, 0] == pytest.approx(model.position_ctr[0])


def test_dr_with_a_zero_reward_model_is_ips(world: World) -> None:
    items, props, clicks, target = world.log(500, np.random.default_rng(9))
    zero = RewardModel(np.zeros(K), np.arange(POOL), np.ones(POOL))
    dr = doubly_robust(items, props, clicks, target, reward=zero)
    assert dr.value == pytest.approx(ips(items, props, clicks, target_items=target).value)
    assert dr.se == pytest.approx(ips(items, props, clicks, target_items=target).se)


def test_dr_stays_unbiased_with_a_wrong_reward_model(world: World) -> None:
    """A reward model that ranks items backwards biases the direct term, not DR: the
    correction removes it (correct propensities suffice)."""
    wrong = RewardModel(np.full(K, 0.5), np.arange(POOL), np.linspace(0.1, 1.0, POOL))
    values, widths = [], []
    for seed in range(30):
        items, props, clicks, target = world.log(2000, np.random.default_rng(300 + seed))
        e = doubly_robust(items, props, clicks, target, reward=wrong)
        values.append(e.value)
        widths.append(e.ci[1] - e.ci[0])
        direct = wrong.predict(target).sum(axis=1).mean()
    assert abs(direct - world.true_value) > 0.2  # the model alone is far off
    assert abs(np.mean(values) - world.true_value) < np.mean(widths) / 4


def test_dr_cross_fitting_uses_the_other_fold_only(world: World) -> None:
    """Impression i's reward model is fitted on the impressions of the other fold (i mod 2),
    never on its own clicks (which would shrink its correction towards 0)."""
    items, props, clicks, target = world.log(400, np.random.default_rng(11))
    fold = np.arange(400) % 2
    per = np.zeros(400)
    for f in (0, 1):
        model = RewardModel.fit(items[fold != f], clicks[fold != f])
        rows = fold == f
        w = (target[rows] == items[rows]) / props[rows]
        per[rows] = (model.predict(target[rows]).sum(axis=1)
                     + (w * (clicks[rows] - model.predict(items[rows]))).sum(axis=1))
    assert doubly_robust(items, props, clicks, target).value == pytest.approx(per.mean())
    in_sample = doubly_robust(items, props, clicks, target,
                              reward=RewardModel.fit(items, clicks)).value
    assert in_sample != pytest.approx(per.mean())
    with pytest.raises(InputError, match="folds"):
        doubly_robust(items, props, clicks, target, folds=1)


def test_report_counts_unsupported_impressions() -> None:
    """Deterministic logging (propensity 1) cannot evaluate a target that differs from it."""
    items = np.array([[0, 1], [0, 1], [2, 3]])
    props = np.ones((3, 2))
    clicks = np.array([[1, 0], [0, 1], [1, 1]])
    target = np.array([[0, 1], [1, 0], [2, 3]])
    report = evaluate_target(items, props, clicks, target)
    assert report.unsupported == 1
    assert report.matched == pytest.approx(4 / 6)
    assert report.by_name("ips").value == pytest.approx((1 + 0 + 2) / 3)
    d = report.to_dict()
    assert [e["estimator"] for e in d["estimates"]] == ["ips", "snips", "dr"]


# --- logs written by the server's explorers (`lmrec.serve.explore`) ------------------------
def test_plackett_luce_explorer_propensities_are_the_enumerated_marginals() -> None:
    """What the server logs for Plackett-Luce is the per-position marginal these estimators
    divide by: exact at position 0, a Monte Carlo estimate beyond it (here up to 8% off)."""
    from lmrec.serve.explore import Explorer

    scores = np.array([2.0, 1.6, 1.1, 0.7, 0.2, -0.5])  # best first, as the engine's pool
    explorer = Explorer.parse("plackett-luce:0.5")
    got = explorer.position_probabilities(scores, K)
    exact = exact_marginals(scores / 0.5, K)
    np.testing.assert_allclose(got[:, 0], exact[:, 0], rtol=1e-9)
    assert np.abs(got - exact).max() < 0.03
    items, props = explorer.slate(np.arange(10, 16), scores, K, np.random.default_rng(0))
    np.testing.assert_allclose(props, got[items - 10, np.arange(K)])


def test_epsilon_greedy_explorer_logs_give_covering_intervals() -> None:
    """A log drawn by the server's epsilon-greedy explorer (exact propensities) over 30 seeds:
    the IPS and DR intervals hold the true value of another ranking at least 85% of the time."""
    from lmrec.serve.explore import Explorer

    explorer = Explorer.parse("epsilon-greedy:0.5")
    pool = 6
    scores = np.linspace(1.0, 0.0, pool)  # the logging model's ranking: item 0 first
    attraction = np.array([0.2, 0.3, 0.6, 0.5, 0.1, 0.4])
    target = np.array([2, 3, 5])  # the best items by attraction
    truth = float((THETA * attraction[target]).sum())
    cover = {"ips": 0, "dr": 0}
    n, seeds = 2500, 30
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        drawn = [explorer.slate(np.arange(pool), scores, K, rng) for _ in range(n)]
        items = np.stack([d[0] for d in drawn])
        props = np.stack([d[1] for d in drawn])
        clicks = rng.random((n, K)) < THETA * attraction[items]
        report = evaluate_target(items, props, clicks, np.tile(target, (n, 1)))
        for name in cover:
            lo, hi = report.by_name(name).ci
            cover[name] += lo <= truth <= hi
    assert min(cover.values()) >= 0.85 * seeds, cover
