"""The re-ranking stage: specs, the greedy pass's objectives and the hard constraints, each on
tiny data with a known answer (FA*IR: tests/test_rerank_fair.py)."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmrec.columns import Role
from lmrec.errors import ConfigError
from lmrec.group_metrics import group_exposure, miscalibration, user_distributions
from lmrec.prepare import prepare
from lmrec.rerank import RerankData, RerankPipeline, RerankSpec, UserContext, mmr, parse_rerank
from lmrec.serve.rerank import mmr as serve_mmr
from lmrec.testing import planted_dataset

DAY = 86_400
NOW = 1_700_000_000


def catalogue(n: int = 20, users: pl.DataFrame | None = None) -> RerankData:
    """n items: genre "A" for the first half, "B" after; risk 1..5 cycling (item 2: none);
    published i days before NOW; popularity falling with the index (items 0..3 are the head)."""
    items = pl.DataFrame({
        "item": [f"i{i}" for i in range(n)],
        "genre": ["A" if i < n // 2 else "B" for i in range(n)],
        "tags": [["x", "y"] if i % 2 else ["x"] for i in range(n)],
        "risk": [None if i == 2 else i % 5 + 1 for i in range(n)],
        "published": [NOW - i * DAY for i in range(n)],
        "brand": [f"b{i % 3}" for i in range(n)],
    })
    roles = {"genre": Role.CATEGORICAL, "tags": Role.MULTI, "risk": Role.NUMERIC,
             "published": Role.TIME, "brand": Role.CATEGORICAL}
    if users is None:
        users = pl.DataFrame({"user": ["u0", "u1", "u2"], "tolerance": [3, None, 5],
                              "name": ["ann", "bo", "cy"]})
    return RerankData(items, roles, np.arange(n, 0, -1, dtype=np.float64), users=users,
                      now=NOW)


def best_first(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n), np.linspace(1.0, 0.0, n)


# --- specs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "spec"), [
    ("mmr=0.3", RerankSpec("mmr", 0.3, None)),
    ("diversity=0.2", RerankSpec("mmr", 0.2, None)),
    (" Calibration = 0.5 : genres ", RerankSpec("calibration", 0.5, "genres")),
    ("fair=0.3:genre=A", RerankSpec("fair", 0.3, "genre=A")),
    ("exposure=0:long-tail", RerankSpec("exposure", 0.0, "long-tail")),
    ("freshness=0.1:published:14", RerankSpec("freshness", 0.1, "published:14")),
    ("suitability=risk <= tolerance", RerankSpec("suitability", 1.0, "risk<=tolerance")),
])
def test_parse_reads_each_form(text: str, spec: RerankSpec) -> None:
    assert parse_rerank(text) == spec
    assert parse_rerank(str(spec)) == spec  # the text round-trips


@pytest.mark.parametrize("text", [
    "", "mmr", "=0.3", "mmr=abc", "mmr=1.5", "mmr=-0.1", "mmr=nan", "mmr=inf", "novelty=0.3",
    "fair=1", "calibration=0.5:", "mmr=0.3:genre", "suitability=risk", "suitability=risk<=",
    "suitability=<=tolerance", "suitability=risk=<tolerance",
])
def test_parse_refuses_with_one_line_naming_the_option_and_spec(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_rerank(text)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"--rerank {text!r}: ")


def test_the_option_name_is_the_callers() -> None:
    with pytest.raises(ConfigError, match=r"^rerank 'mmr=2': weight must be in \[0, 1\]"):
        parse_rerank("mmr=2", option="rerank")


@pytest.mark.parametrize(("specs", "needle"), [
    (["calibration=0.5:nope"], "no item column 'nope'"),
    (["calibration=0.5:risk"], "not categorical"),
    (["mmr=0.6", "calibration=0.6"], "sum to 1.2"),
    (["mmr=0.2", "mmr=0.3"], "mmr given twice"),
    (["fair=0.3:genre"], "COLUMN=VALUE"),
    (["fair=0.3:nope=1"], "no item column 'nope'"),
    (["exposure=0.3:tags"], "multi-valued"),
    (["freshness=0.3:genre"], "not numeric"),
    (["freshness=0.3:published:soon"], "half-life 'soon'"),
    (["freshness=0.3:published:0"], "positive number of days"),
    (["suitability=risk<=age"], "no user column 'age'"),
    (["suitability=nope<=tolerance"], "no item column 'nope'"),
    (["suitability=genre<=tolerance"], "not numeric"),
    (["suitability=risk<=name"], "user column 'name' is String, not numeric"),
])
def test_build_refuses_specs_the_data_cannot_serve(specs: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        RerankPipeline.build(specs, catalogue())
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("--rerank '") and needle in msg


def test_build_errors_quote_the_spec_as_given() -> None:
    with pytest.raises(ConfigError, match=r"^--rerank 'Calibration = 0.5:nope': no item col"):
        RerankPipeline.build([" Calibration = 0.5:nope"], catalogue())


def test_build_refuses_what_a_catalogue_lacks() -> None:
    bare = RerankData(pl.DataFrame({"item": ["a", "b"], "year": [1, 2]}), {}, np.ones(2))
    for spec, needle in [("mmr=0.3", "no item similarity"),
                         ("calibration=0.3", "no categorical or multi-valued column"),
                         ("freshness=0.3", "no time column"),
                         ("suitability=year<=age", "no user table")]:
        with pytest.raises(ConfigError, match=f"^--rerank '{spec}': .*{needle}"):
            RerankPipeline.build([spec], bare)


def test_describe_fills_in_the_defaults() -> None:
    p = RerankPipeline.build(["calibration=0.5", "fair=0.3", "exposure=0.2", "freshness=0.1",
                              "suitability=risk<=tolerance", "mmr=0.1"], catalogue())
    assert p.describe() == ("calibration=0.5:genre, fair=0.3:long-tail, exposure=0.2:long-tail, "
                            "freshness=0.1:published:7, suitability=risk<=tolerance, mmr=0.1")


def test_the_default_category_column_prefers_genres_names() -> None:
    data = RerankData.from_dataset(planted_dataset())
    assert RerankPipeline.build(["calibration=0.4"], data).describe() == "calibration=0.4:genres"


def test_an_empty_or_zero_weight_pipeline_changes_nothing() -> None:
    data = catalogue()
    idx, scores = best_first(20)
    user = data.user_context(0, np.array([12, 13]))
    for specs in ([], ["mmr=0", "calibration=0", "fair=0"]):
        p = RerankPipeline.build(specs, data)
        assert not p
        assert p.pool(5) == 5
        assert p.allowed(user) is None
        out, s = p.rerank(idx, scores, 5, user)
        np.testing.assert_array_equal(out, idx[:5])
        np.testing.assert_array_equal(s, scores[:5])


def test_similarity_falls_back_to_co_occurrence_without_attributes() -> None:
    # items 0 and 1 always seen together, item 2 by other users
    events = pl.DataFrame({"user": ["a", "a", "b", "b", "c", "d"],
                           "item": ["x", "y", "x", "y", "z", "z"]})
    ds = prepare(events, name="plain").dataset
    data = RerankData.from_dataset(ds)
    idx = ds.items.index(["x", "y", "z"])
    assert data.similarity is not None
    np.testing.assert_allclose(data.similarity(idx), [[1, 1, 0], [1, 1, 0], [0, 0, 1]],
                               atol=1e-6)
    assert RerankPipeline.build(["mmr=0.5"], data)


def test_pool_over_fetches_for_reordering_stages() -> None:
    p = RerankPipeline.build(["mmr=0.3"], catalogue(400))
    assert p and p.pool(5) == 50 and p.pool(30) == 120
    assert RerankPipeline.build(["mmr=0.3"], catalogue(20)).pool(10) == 20  # the catalogue


# --- MMR -------------------------------------------------------------------------------------
def old_mmr(idx: np.ndarray, scores: np.ndarray, k: int, lam: float, sim: np.ndarray
            ) -> np.ndarray:
    """The serving API's MMR before it moved into lmrec.rerank (a transcription)."""
    n = idx.size
    if n <= 1:
        return idx
    span = float(scores.max() - scores.min())
    rel = (scores - scores.min()) / span if span > 0 else np.ones(n, dtype=np.float32)
    picked, free = [0], np.ones(n, dtype=bool)
    free[0] = False
    max_sim = sim[0].copy()
    for _ in range(min(k, n) - 1):
        gain = (1.0 - lam) * rel - lam * max_sim
        gain[~free] = -np.inf
        j = int(np.argmax(gain))
        picked.append(j)
        free[j] = False
        np.maximum(max_sim, sim[j], out=max_sim)
    return idx[np.asarray(picked)]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(1, 30), k=st.integers(1, 12), lam=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
       seed=st.integers(0, 10_000), signed=st.booleans())
def test_mmr_picks_what_the_serving_api_picked_before(n: int, k: int, lam: float, seed: int,
                                                       signed: bool) -> None:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 4)) if signed else rng.random((n, 4))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sim = (v @ v.T).astype(np.float32)
    idx = rng.permutation(100)[:n]
    scores = np.sort(rng.random(n).astype(np.float32))[::-1]
    want = old_mmr(idx, scores, k, lam, sim)
    local = {int(i): p for p, i in enumerate(idx)}
    pairwise = lambda ids: sim[np.ix_([local[int(i)] for i in ids], [local[int(i)] for i in ids])]  # noqa: E731
    got, got_scores = mmr(idx, scores, k, lam, pairwise)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_scores, scores[[local[int(i)] for i in got]])
    np.testing.assert_array_equal(serve_mmr(idx, scores, k, lam, pairwise)[0], want)


def test_mmr_stage_alternates_genres_at_full_weight() -> None:
    data = catalogue()
    idx, scores = best_first(20)  # every A item scores above every B item
    p = RerankPipeline.build(["mmr=1"], data)
    out, _ = p.rerank(idx, scores, 4, data.user_context(0, np.array([], dtype=np.int64)))
    genres = data.items["genre"].to_numpy()[out]
    assert sorted(genres[:2]) == ["A", "B"]  # the second pick is the other genre
    assert out[0] == 0


# --- calibration -----------------------------------------------------------------------------
def test_calibration_brings_the_list_to_the_history_distribution() -> None:
    data = catalogue()
    dist, _ = data.item_distribution("genre")
    idx, scores = best_first(20)  # relevance: all of genre A first
    history = np.array([0, 1, 10, 11])  # half A, half B
    p_user = user_distributions(_history_matrix(history, 20), dist)
    kls = []
    for w in (0.0, 0.25, 0.5, 0.75, 1.0):
        p = RerankPipeline.build([f"calibration={w}"], data)
        out, _ = p.rerank(idx, scores, 10, data.user_context(0, history))
        kls.append(float(miscalibration(out[None, :], p_user, dist, 10)[0]))
    # all A: KL(p || 0.99 q + 0.01 p) = 0.5 ln(0.5 / 0.995) + 0.5 ln(0.5 / 0.005)
    assert kls[0] == pytest.approx(0.5 * np.log(0.5 / 0.995) + 0.5 * np.log(100))
    assert kls[-1] == pytest.approx(0.0, abs=1e-12)  # five and five
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(kls))


def _history_matrix(history: np.ndarray, n_items: int) -> np.ndarray:
    m = np.zeros((1, n_items))
    m[0, history] = 1.0
    return m


def test_calibration_follows_a_skewed_history_in_order() -> None:
    data = catalogue()
    idx, scores = best_first(20)
    history = np.array([10, 11, 12, 0])  # three B, one A
    out, _ = RerankPipeline.build(["calibration=1"], data).rerank(
        idx, scores, 8, data.user_context(0, history))
    genres = data.items["genre"].to_numpy()[out]
    assert (genres == "B").sum() == 6 and (genres == "A").sum() == 2


def test_calibration_leaves_a_user_without_history_to_relevance() -> None:
    data = catalogue()
    idx, scores = best_first(20)
    for specs in (["calibration=0.6"], ["calibration=1"]):
        out, _ = RerankPipeline.build(specs, data).rerank(
            idx, scores, 5, data.user_context(-1, np.array([], dtype=np.int64)))
        np.testing.assert_array_equal(out, idx[:5])


# --- exposure --------------------------------------------------------------------------------
def test_exposure_targeting_moves_group_exposure_toward_the_catalogue_share() -> None:
    n = 40
    data = catalogue(n)
    codes, names = data.groups("long-tail")
    assert names == ("head", "long-tail") and codes[:8].tolist() == [0] * 8 and codes[8:].all()
    idx, scores = best_first(n)  # the head (most popular) items score highest
    tail = []
    for w in (0.0, 0.3, 0.6, 1.0):
        p = RerankPipeline.build([f"exposure={w}"], data)
        out, _ = p.rerank(idx, scores, 10, data.user_context(0, np.array([], dtype=np.int64)))
        tail.append(group_exposure(out[None, :], codes, 2, 10)[1])
    assert tail[0] < 0.3  # eight head items on top
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(tail))
    assert abs(tail[-1] - 0.8) < 0.1 < abs(tail[0] - 0.8)


def test_exposure_by_column_targets_each_value_s_share() -> None:
    data = catalogue(30)
    codes, names = data.groups("brand")
    assert names == ("b0", "b1", "b2")
    idx = np.flatnonzero(codes == 0).tolist() + np.flatnonzero(codes != 0).tolist()
    scores = np.linspace(1, 0, 30)  # all b0 first
    out, _ = RerankPipeline.build(["exposure=1:brand"], data).rerank(
        np.array(idx), scores, 9, data.user_context(0, np.array([], dtype=np.int64)))
    share = group_exposure(out[None, :], codes, 3, 9)
    assert np.abs(share - 1 / 3).max() < 0.1


# --- freshness -------------------------------------------------------------------------------
def test_freshness_at_full_weight_orders_by_age() -> None:
    data = catalogue()
    idx = np.arange(20)[::-1].copy()  # the oldest first by score
    scores = np.linspace(1, 0, 20)
    out, s = RerankPipeline.build(["freshness=1"], data).rerank(
        idx, scores, 5, data.user_context(0, np.array([], dtype=np.int64)))
    np.testing.assert_array_equal(out, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(s, scores[::-1][:5])  # the model's scores are kept


def test_freshness_boost_halves_each_half_life() -> None:
    data = catalogue()
    # two candidates: item 0 (new) just below item 14 (14 days old); the boost decides
    idx, scores = np.array([14, 0]), np.array([1.0, 0.0])
    user = data.user_context(0, np.array([], dtype=np.int64))
    # value = (1 - w) * rel + w * 0.5 ** (age / half-life): 14 wins iff 1 - w + w/4 > w (hl 7)
    assert RerankPipeline.build(["freshness=0.5:published:7"], data).rerank(
        idx, scores, 1, user)[0].tolist() == [14]   # 0.5 + 0.125 > 0.5
    assert RerankPipeline.build(["freshness=0.6:published:7"], data).rerank(
        idx, scores, 1, user)[0].tolist() == [0]   # 0.4 + 0.15 < 0.6
    later = UserContext(0, user.history, {}, NOW + 70 * DAY)  # both are old by then
    assert RerankPipeline.build(["freshness=0.6:published:7"], data).rerank(
        idx, scores, 1, later)[0].tolist() == [14]


# --- suitability -----------------------------------------------------------------------------
def risk(data: RerankData, items: np.ndarray) -> np.ndarray:
    return data.items["risk"].to_numpy()[items]


def test_suitability_never_shows_an_item_above_the_user_s_tolerance() -> None:
    data = catalogue(40)
    p = RerankPipeline.build(["suitability=risk<=tolerance", "mmr=0.3"], data)
    idx, scores = best_first(40)
    out, _ = p.rerank(idx, scores, 10, data.user_context(0, np.array([1])))  # tolerance 3
    assert out.size == 10 and (risk(data, out) <= 3).all()
    allowed = p.allowed(data.user_context(0, np.array([1])))
    assert allowed is not None and allowed.sum() == 23  # risk 1..3 of 40 items, minus item 2
    assert not allowed[2]  # an item without a risk level is never shown
    assert not allowed.flags.writeable  # cached for every user with this tolerance
    out, _ = p.rerank(idx, scores, 40, data.user_context(2, np.array([1])))  # tolerance 5
    assert out.size == 39 and 2 not in out


@pytest.mark.parametrize("user", [1, -1, 7])  # an empty cell, an unknown user, beyond the table
def test_suitability_without_the_attribute_only_shows_the_column_minimum(user: int) -> None:
    data = catalogue(40)
    p = RerankPipeline.build(["suitability=risk<=tolerance"], data)
    out, _ = p.rerank(*best_first(40), 10, data.user_context(user, np.array([], np.int64)))
    assert out.size == 8 and (risk(data, out) == 1).all()


@pytest.mark.parametrize(("op", "keep"), [("<", {1, 2}), (">=", {3, 4, 5}), (">", {4, 5}),
                                          ("==", {3})])
def test_suitability_operators(op: str, keep: set[int]) -> None:
    data = catalogue(40)
    p = RerankPipeline.build([f"suitability=risk{op}tolerance"], data)
    out, _ = p.rerank(*best_first(40), 40, data.user_context(0, np.array([], np.int64)))
    assert set(risk(data, out).tolist()) == keep
    unknown, _ = p.rerank(*best_first(40), 40, data.user_context(-1, np.array([], np.int64)))
    # the most cautious user: the minimum for < (as for <=), the maximum for > and >=
    assert set(risk(data, unknown).tolist()) == {"<": {1}, ">=": {5}, ">": {5}, "==": set()}[op]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(tolerance=st.one_of(st.none(), st.integers(0, 6)), seed=st.integers(0, 1000),
       specs=st.sampled_from([[], ["mmr=0.5"], ["calibration=0.5", "fair=0.4"],
                              ["exposure=0.4", "freshness=0.3", "fair=0.6"]]))
def test_suitability_holds_whatever_else_runs(tolerance: int | None, seed: int,
                                              specs: list[str]) -> None:
    users = pl.DataFrame({"user": ["u"], "tolerance": [tolerance]})
    data = catalogue(30, users=users)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(30)
    scores = np.sort(rng.random(30))[::-1]
    p = RerankPipeline.build(["suitability=risk<=tolerance", *specs], data)
    out, _ = p.rerank(idx, scores, 8, data.user_context(0, rng.choice(30, 3)))
    r = risk(data, out)
    assert not np.isnan(r.astype(float)).any()
    assert (r <= (1 if tolerance is None else tolerance)).all()
    assert len(set(out.tolist())) == out.size


def test_rerank_drops_padding_and_minus_infinity() -> None:
    data = catalogue()
    p = RerankPipeline.build(["mmr=0.5"], data)
    out, s = p.rerank(np.array([4, 2, -1, 7]), np.array([3.0, 2.0, 1.0, -np.inf]), 5,
                      data.user_context(0, np.array([1])))
    assert sorted(out.tolist()) == [2, 4] and np.isfinite(s).all()


def test_user_context_reads_the_user_table() -> None:
    data = catalogue()
    u = data.user_context(0, [3, 4])
    assert u.attributes == {"tolerance": 3, "name": "ann"} and u.now == NOW
    assert "tolerance" not in data.user_context(1, []).attributes  # an empty cell is unknown
    assert data.user_context(-1, [], now=5).now == 5


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(0, 40), k=st.integers(1, 15), seed=st.integers(0, 10_000),
       specs=st.lists(st.sampled_from(["mmr=0.2", "calibration=0.3", "exposure=0.2:brand",
                                       "freshness=0.2", "fair=0.5", "fair=0.3:genre=B"]),
                      max_size=3, unique_by=lambda s: s.split("=")[0]))
def test_any_pipeline_returns_distinct_candidates_with_their_scores(
        n: int, k: int, seed: int, specs: list[str]) -> None:
    data = catalogue(40)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(40)[:n]
    scores = np.sort(rng.normal(size=n))[::-1]
    out, s = RerankPipeline.build(specs, data).rerank(idx, scores, k,
                                                      data.user_context(0, rng.choice(40, 4)))
    assert out.size == min(k, n) and len(set(out.tolist())) == out.size
    assert set(out.tolist()) <= set(idx.tolist())
    np.testing.assert_array_equal(s, scores[[np.flatnonzero(idx == i)[0] for i in out]])
