"""The GET /v1/experiments report on small hand-made logs with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from lmrec.errors import ConfigError
from lmrec.serve.experiments import ArmInfo, experiment_report
from lmrec.serve.store import Slot, StoredEvent, StoredImpression

ARMS = [ArmInfo("A", "v1", 0.5), ArmInfo("B", "v2", 0.5)]


def imp(rid: str, arm: str | None, ts: float, items: str, policy: str = "top-k",
        teams: str | None = None) -> StoredImpression:
    """An impression whose slate is the characters of `items` (teams likewise, A or B)."""
    slate = tuple(Slot(x, 1.0, None, None if teams is None else teams[j])
                  for j, x in enumerate(items))
    return StoredImpression(seq=0, request_id=rid, user="u", model_version="v", arm=arm,
                            policy=policy, slate=slate, timestamp=ts)


def ev(rid: str | None, item: str, kind: str = "click") -> StoredEvent:
    return StoredEvent(seq=0, user="u", item=item, type=kind, timestamp=0.0, event_id=None,
                       value=None, request_id=rid)


IMPRESSIONS = [
    imp("a1", "A", 0, "xyz"), imp("a2", "A", 10, "xyz"),
    imp("a3", "A", 3700, "xyz"), imp("a4", "A", 3800, "xyz"),
    imp("b1", "B", 100, "xyz"), imp("b2", "B", 200, "xyz"),
    imp("b3", "B", 4000, "xyz"), imp("b4", "B", 4100, "xyz"),
    imp("t1", None, 50, "pqrs", "team-draft:A,B", "ABBA"),
    imp("t2", None, 60, "pqrs", "team-draft:A,B", "ABBA"),
    imp("t3", None, 70, "pqrs", "team-draft:A,B", "BAAB"),
    imp("t4", None, 80, "pqrs", "team-draft:A,B", "ABAB"),
    imp("t5", None, 90, "pqrs", "team-draft:A,B", "ABAB"),
]
FEEDBACK = [
    ev("a1", "x"), ev("a1", "x"), ev("a1", "x", "purchase"),  # one click, one conversion
    ev("a1", "q"),  # not in the slate: no click
    ev("a3", "y"),
    ev("b1", "x"), ev("b1", "z", "add_to_cart"),  # two distinct items: two clicks
    ev("b2", "y"), ev("b3", "z"), ev("b3", "z", "purchase"),
    ev("nope", "x"), ev(None, "x"),  # unknown and missing request ids
    ev("t1", "p"),  # team A's item: A wins
    ev("t2", "q"),  # team B's: B wins
    ev("t3", "p"), ev("t3", "q"),  # one each (p is B's here, q A's): a tie
    # t4: no clicks; t5: A's r and s is B's, but r twice counts once, so a tie
    ev("t5", "r"), ev("t5", "r"), ev("t5", "s"),
]


def test_ab_report_known_answer() -> None:
    report = experiment_report(IMPRESSIONS, FEEDBACK, ARMS, "ab", bucket_s=3600)
    json.dumps(report, allow_nan=False)  # valid JSON: no NaN anywhere
    a, b = report["arms"]
    assert report["mode"] == "ab"
    assert (a["arm"], a["model_version"], a["share"]) == ("A", "v1", 0.5)
    assert (a["impressions"], a["clicks"], a["conversions"]) == (4, 2, 1)
    assert (b["impressions"], b["clicks"], b["conversions"]) == (4, 4, 1)
    assert a["ctr"] == 0.5 and b["ctr"] == 1.0 and a["conversion_rate"] == 0.25
    clicks_a, clicks_b = [1, 0, 1, 0], [2, 1, 1, 0]
    half = stats.norm.ppf(0.975) * np.std(clicks_b, ddof=1) / 2
    assert b["ctr_ci"] == pytest.approx([1 - half, 1 + half])
    assert a["ctr_ci"][0] == 0.0  # clipped at 0: a rate is never negative
    cmp = report["comparison"]
    assert (cmp["control"], cmp["treatment"]) == ("A", "B")
    ref = stats.ttest_ind(clicks_b, clicks_a, equal_var=False)
    assert cmp["ctr_diff"] == pytest.approx(0.5)
    assert cmp["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert cmp["ctr_diff_ci"] == pytest.approx(list(ref.confidence_interval(0.95)), rel=1e-9)
    assert cmp["ctr_relative"] == pytest.approx(1.0)
    assert cmp["conversion_diff"] == 0.0 and cmp["conversion_p_value"] == pytest.approx(1.0)
    assert cmp["significant"] is False


def test_interleaving_block_known_answer() -> None:
    inter = experiment_report(IMPRESSIONS, FEEDBACK, ARMS, "interleave")["interleaving"]
    assert inter["arms"] == ["A", "B"] and inter["impressions"] == 5
    assert inter["wins"] == {"A": 1, "B": 1} and inter["ties"] == 2
    assert inter["preference"] == 0.0 and inter["p_value"] == 1.0 and inter["winner"] is None
    # three more wins for A and the preference moves to (4 - 1) / 7
    more = [imp(f"w{i}", None, 95, "pq", "team-draft:A,B", "AB") for i in range(3)]
    inter = experiment_report(IMPRESSIONS + more, FEEDBACK + [ev(f"w{i}", "p") for i in range(3)],
                              ARMS, "interleave")["interleaving"]
    assert inter["wins"] == {"A": 4, "B": 1}
    assert inter["preference"] == pytest.approx(3 / 7)
    assert inter["p_value"] == pytest.approx(stats.binomtest(4, 5, 0.5).pvalue)
    lo, hi = inter["preference_ci"]
    assert -1 <= lo < 3 / 7 < hi <= 1


def test_interleaving_impressions_stay_out_of_the_arms() -> None:
    report = experiment_report(IMPRESSIONS, FEEDBACK, ARMS, "ab")
    assert sum(arm["impressions"] for arm in report["arms"]) == 8
    assert all(row["arm"] in ("A", "B") for row in report["timeline"])


def test_timeline_buckets_per_arm() -> None:
    rows = experiment_report(IMPRESSIONS, FEEDBACK, ARMS, "ab", bucket_s=3600)["timeline"]
    got = [(r["arm"], r["start"], r["impressions"], r["clicks"]) for r in rows]
    assert got == [("A", 0.0, 2, 1), ("B", 0.0, 2, 3), ("A", 3600.0, 2, 1),
                   ("B", 3600.0, 2, 1)]
    assert rows[1]["ctr"] == 1.5
    assert rows[0]["ctr_ci"][0] <= rows[0]["ctr"] <= rows[0]["ctr_ci"][1]


def test_single_mode_counts_unlabelled_impressions() -> None:
    imps = [imp("s1", None, 0, "xy"), imp("s2", None, 1, "xy"), imp("s3", "old", 2, "xy")]
    report = experiment_report(imps, [ev("s1", "y"), ev("s3", "x")],
                               [ArmInfo("default", "v9", 1.0)], "single")
    (arm,) = report["arms"]
    assert (arm["arm"], arm["impressions"], arm["clicks"], arm["ctr"]) == ("default", 2, 1, 0.5)
    assert report["comparison"] is None and report["interleaving"] is None


def test_empty_and_tiny_logs_give_valid_json() -> None:
    report = experiment_report([], [], ARMS, "ab")
    json.dumps(report, allow_nan=False)
    assert report["arms"][0]["ctr"] == 0.0 and report["arms"][0]["ctr_ci"] == [0.0, 0.0]
    assert report["comparison"] is None and report["timeline"] == []
    one = experiment_report([imp("a1", "A", 0, "x")], [ev("a1", "x")], ARMS, "ab")
    json.dumps(one, allow_nan=False)
    assert one["arms"][0]["ctr_ci"] == [1.0, 1.0]  # one impression: no interval yet
    with pytest.raises(ConfigError, match="mode"):
        experiment_report([], [], ARMS, "abc")


def test_matches_a_naive_count_on_a_random_log() -> None:
    rng = np.random.default_rng(4)
    items = [f"i{j}" for j in range(30)]
    imps, fb = [], []
    for r in range(600):
        arm = "A" if r % 3 else "B"
        slate = [items[j] for j in rng.choice(30, 5, replace=False)]
        imps.append(StoredImpression(0, f"r{r}", "u", "v", arm, "top-k",
                                     tuple(Slot(x, 1.0) for x in slate), float(r)))
        for _ in range(rng.poisson(0.6)):
            fb.append(ev(f"r{r}", items[rng.integers(30)], str(rng.choice(["click", "purchase"]))))
    report = experiment_report(imps, fb, ARMS, "ab")
    naive = {"A": [0, 0, 0], "B": [0, 0, 0]}  # impressions, clicks, conversions
    for im in imps:
        shown = {s.item for s in im.slate}
        mine = [e for e in fb if e.request_id == im.request_id and e.item in shown]
        naive[im.arm][0] += 1
        naive[im.arm][1] += len({e.item for e in mine})
        naive[im.arm][2] += len({e.item for e in mine if e.type == "purchase"})
    for arm in report["arms"]:
        assert [arm["impressions"], arm["clicks"], arm["conversions"]] == naive[arm["arm"]]
