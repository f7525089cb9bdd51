"""`lmrec simulate`: the shop's hidden world, the click model, and the experiment loop checked
against the truth on simulated shoppers.

The end-to-end run uses a small world (400 users, 50 items) so that a logging policy's pool of
50 candidates holds every item a user has not seen: the off-policy estimators then have full
support, and their intervals can be held to the true CTR. Popularity and EASE differ clearly
there (true CTRs about 0.24 and 0.35 with the steeper click model used). Requests go one at a
time and the service's request ids come from a seeded generator, so that every draw the
server makes (team draft, exploration) and so the whole report is the same on every run.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import sys
import uuid
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest

from helpers_cli import one_error_line, run
from lmrec.cli import main
from lmrec.datasets import generate_shop
from lmrec.datasets.shop import generate_shop_world, shop_dataset
from lmrec.errors import ConfigError
from lmrec.models import create_model
from lmrec.serve.bundle import write_bundle
from lmrec.simulate import ClickModel, SimWorld, WorldParams
from lmrec.train.options import TrainingOptions

WORLD = WorldParams(n_users=400, n_items=50, seed=1)
# steeper than the default (offset -5): more clicks per slate, so a few thousand impressions
# carry enough clicks for the off-policy estimators
OFFSET = -3.0


# --- the world -----------------------------------------------------------------------------
def _digest(tables: Any) -> str:
    h = hashlib.sha256()
    for frame in (tables.events, tables.users, tables.items):
        buf = io.BytesIO()
        frame.write_csv(buf)
        h.update(buf.getvalue())
    return h.hexdigest()


@pytest.mark.parametrize(("args", "options", "expected"), [
    ((), {}, "542ebebdedbf882ad284972cc5be4f2cb8ee20d74d866e2ec76305a4f4af1f73"),
    ((1000, 1000), {"seed": 0, "bots": 3},
     "73ed40d0c412fb74fb4f7fba94dcb224bf6af530e9cee676e8bc90e747e94778"),
    ((300, 200), {"seed": 7, "n_categories": 4, "n_brands": 10},
     "10cf303b536a800c54270155046ade6dc8ead909c41fe2b5815ac1cfb7f17358"),
])
def test_generate_shop_tables_are_unchanged(args: tuple[int, ...], options: dict[str, Any],
                                            expected: str) -> None:
    # digests taken before the world was exposed: bundles trained on the shop stay valid
    assert _digest(generate_shop(*args, **options)) == expected


def test_the_world_is_the_one_behind_the_tables() -> None:
    data, world = generate_shop_world(300, 200, seed=7)
    assert _digest(data) == _digest(generate_shop(300, 200, seed=7))
    assert (world.n_users, world.n_items) == (300, 200)
    util = world.utility(np.arange(300))
    assert util.shape == (300, 200)
    users, items = np.array([[0], [5], [299]]), np.array([[3, 0, 199], [1, 2, 3], [7, 7, 8]])
    np.testing.assert_array_equal(world.pair_utility(users, items),
                                  util[users, items])
    # the hidden preferences explain the log: users view the items they like
    views = data.events.filter(pl.col("event") == "view")
    u, i = views["user"].to_numpy() - 1, views["item"].to_numpy() - 1
    z = (util - util.mean(axis=1, keepdims=True)) / util.std(axis=1, keepdims=True)
    assert z[u, i].mean() > 1.5
    # and buyers buy what they like even more
    buys = data.events.filter(pl.col("event") == "purchase")
    assert z[buys["user"].to_numpy() - 1, buys["item"].to_numpy() - 1].mean() > z[u, i].mean()


@pytest.fixture(scope="module")
def world() -> SimWorld:
    return SimWorld.generate(WorldParams(300, 200, 7))


def test_click_model_is_position_based(world: SimWorld) -> None:
    cm = world.clicks
    np.testing.assert_allclose(cm.examination(4), [1, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose(ClickModel(eta=0).examination(3), [1, 1, 1])
    users = np.array([0, 0, 1])
    slates = np.array([[5, 6, -1], [6, 5, -1], [5, 6, 7]])
    p = world.click_probabilities(users, slates)
    assert p.shape == (3, 3) and p[0, 2] == 0 and p[1, 2] == 0  # an empty slot is never clicked
    attr = world.attraction(np.array([[0]]), np.array([[5, 6]]))[0]
    np.testing.assert_allclose(p[0, :2], attr * [1, 0.5])
    np.testing.assert_allclose(p[1, :2], attr[::-1] * [1, 0.5])  # the position, not the item
    np.testing.assert_allclose(world.expected_clicks(users, slates), p.sum(axis=1))
    # the slate of a user's best items beats a random one, and the best item leads it
    util = world.world.utility(np.array([3]))[0]
    best = np.argsort(-util)[:10]
    rand = np.random.default_rng(0).choice(200, 10, replace=False)
    good, bad, flipped = (world.expected_clicks(np.array([3]), s[None])[0]
                          for s in (best, rand, best[::-1]))
    assert good > flipped > bad and 0.05 < good < 1.5


def test_sampled_clicks_follow_the_probabilities(world: SimWorld) -> None:
    n = 40_000
    users = np.full(n, 3)
    slate = np.argsort(-world.world.utility(np.array([3]))[0])[:5]
    slates = np.tile(slate, (n, 1))
    clicks = world.sample_clicks(users, slates, np.random.default_rng(1).random((n, 5)))
    p = world.click_probabilities(users[:1], slates[:1])[0]
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(clicks.mean(axis=0) - p) < 4 * se)


def test_a_bundle_of_another_world_is_refused(world: SimWorld) -> None:
    world.check_items(world.items, "x")  # its own catalogue
    world.check_items(world.items.sample(50, seed=0), "x")  # a part of it (core filtering)
    other = generate_shop(300, 200, seed=8).items
    with pytest.raises(ConfigError, match="--seed, --shop-users and --shop-items"):
        world.check_items(other, "--bundle b")
    with pytest.raises(ConfigError, match="not those of the shop world"):
        world.check_items(world.items.drop("title"), "--bundle b")


# --- the loop, end to end ------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ds = shop_dataset(WORLD.n_users, WORLD.n_items, seed=WORLD.seed).dataset
    root = tmp_path_factory.mktemp("sim-bundles")
    out = {}
    for name in ("popularity", "ease"):
        model = create_model(name).fit(ds, TrainingOptions(rng=0))
        out[name] = write_bundle(model, ds, root / name)
    other = shop_dataset(WORLD.n_users, WORLD.n_items, seed=WORLD.seed + 1).dataset
    model = create_model("popularity").fit(other, TrainingOptions(rng=0))
    out["other-world"] = write_bundle(model, other, root / "other")
    return out


def _seeded_request_ids(seed: int) -> SimpleNamespace:
    gen = random.Random(seed)
    return SimpleNamespace(uuid4=lambda: uuid.UUID(int=gen.getrandbits(128), version=4))


def _simulate_json(args: list[str]) -> dict[str, Any]:
    """`lmrec simulate ARGS --json` in this process (so that the request ids can be seeded)."""
    old, out, err = sys.argv, io.StringIO(), io.StringIO()
    sys.argv = ["lmrec", "simulate", *args, "--json"]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        raise AssertionError(f"lmrec simulate exited with {exc.code}: {err.getvalue()}") from None
    finally:
        sys.argv = old
    return dict(json.loads(out.getvalue()))


@pytest.fixture(scope="module")
def report(bundles: dict[str, Path]) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lmrec.serve.service.uuid", _seeded_request_ids(0))
        return _simulate_json([
            "--bundle", str(bundles["popularity"]), "--bundle", str(bundles["ease"]),
            "--shop-users", str(WORLD.n_users), "--shop-items", str(WORLD.n_items),
            "--seed", str(WORLD.seed), "--attraction-offset", str(OFFSET),
            "--impressions", "1000", "--interleave-impressions", "600",
            "--ope-impressions", "1500", "--look-every", "100", "--concurrency", "1",
            # near-uniform logging over the pool, each on its model's score scale
            "--explore", "plackett-luce:50", "--explore", "plackett-luce:0.1"])


def test_the_ab_test_picks_the_truly_better_bundle(report: dict[str, Any]) -> None:
    a, b = report["bundles"]
    assert (a["model"], b["model"]) == ("popularity", "ease")
    assert b["true_ctr"] > 1.2 * a["true_ctr"] > 0.1
    ab = report["ab"]
    assert ab["true_winner"] == ab["leader"] == report["winner"] == "B" and ab["correct"]
    assert ab["runner_up"] == "A" and ab["measured_relative"] > 0 and ab["true_relative"] > 0.2
    assert ab["significant"] and ab["p_value"] < 0.05
    assert ab["p_value"] == ab["comparison"]["p_value"] and ab["comparison"]["ctr_diff"] > 0
    for arm in (a, b):
        assert arm["ab"]["impressions"] >= 1000
    assert ab["first_significant_at"] is not None
    assert ab["first_significant_at"] <= ab["impressions"]


def test_each_ope_interval_covers_the_true_ctr(report: dict[str, Any]) -> None:
    a, b = report["bundles"]
    assert a["ope"]["logged_under"] == "B" and b["ope"]["logged_under"] == "A"
    for arm in (a, b):
        ope = arm["ope"]
        assert ope["impressions"] >= 1500 and ope["unsupported"] == 0
        # the truth on the logged contexts, not the logging bundle's own CTR
        assert ope["true_ctr"] != pytest.approx(ope["logging_true_ctr"], rel=0.02)
        for name in ("ips", "snips", "dr"):
            est = ope["estimates"][name]
            lo, hi = est["ci"]
            assert lo <= ope["true_ctr"] <= hi, (arm["label"], name, est, ope["true_ctr"])
            assert est["covers_true_ctr"]
            assert hi - lo < 1.5 * ope["true_ctr"]  # an interval that says something


def test_interleaving_agrees_from_fewer_impressions(report: dict[str, Any]) -> None:
    il, ab = report["interleaving"], report["ab"]
    assert il["arms"] == ["A", "B"]
    assert il["winner"] == il["favours"] == ab["leader"] and il["agrees_with_ab"]
    assert il["preference"] < 0 and il["p_value"] < 0.05  # favours B, the second arm
    assert il["impressions"] < ab["impressions"]
    assert il["first_significant_at"] is not None


def test_text_output(report: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from lmrec.cli.simulate import _print

    _print(report)
    text = capsys.readouterr().out
    assert "A/B: B leads A by +" in text and "truly better arm is B: correct" in text
    assert "favours B (agrees with the A/B test)" in text and "Winner: B" in text


# --- bad input -----------------------------------------------------------------------------
def test_bad_input_is_one_line(bundles: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    world = ["--shop-users", str(WORLD.n_users), "--shop-items", str(WORLD.n_items),
             "--seed", str(WORLD.seed)]
    pop, ease = str(bundles["popularity"]), str(bundles["ease"])
    for args, needle in (
        (["--bundle", pop], "--bundle"),
        (["--bundle", pop, "--bundle", pop], "--bundle"),
        (["--bundle", pop, "--bundle", str(tmp_path)], "not a model bundle"),
        (["--bundle", pop, "--bundle", str(bundles["other-world"])], "--shop-users"),
        (["--bundle", pop, "--bundle", ease, "--impressions", "0"], "--impressions"),
        (["--bundle", pop, "--bundle", ease, "--explore", "boltzmann:1"], "--explore"),
        (["--bundle", pop, "--bundle", ease, "--explore", "plackett-luce:1",
          "--explore", "plackett-luce:1", "--explore", "plackett-luce:1"], "--explore"),
    ):
        code, out, err = run(["simulate", *args, *world], capsys)
        one_error_line(code, err, needle, out)
    # the default world (the demo's) is not the one these bundles were trained on
    code, out, err = run(["simulate", "--bundle", pop, "--bundle", ease], capsys)
    one_error_line(code, err, "seed 0, 1000 users, 1000 items", out)
