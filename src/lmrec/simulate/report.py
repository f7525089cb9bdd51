"""`simulate()`: the three phases on a set of bundles, and the report that sets what the
server measured beside what is true.

Report (JSON-ready dict):

    world          shop_users, shop_items, seed, click_model {eta, offset, slope}
    config         impressions (per A/B arm), interleave_impressions, ope_impressions, k,
                   explore (one policy per bundle), traffic_seed
    bundles        one per bundle, in order: label (its arm: A, B, ...), path, model,
                   model_version, true_ctr (mean true expected clicks of the slates it served in
                   the A/B test), ab {impressions, clicks, ctr, ctr_ci, covers_true_ctr} (the
                   server's figures), ope {logged_under, policy, impressions, true_ctr (its true
                   expected clicks on the logged contexts), logging_true_ctr, estimates
                   {ips|snips|dr: {value, ci, ess, covers_true_ctr}}, matched, unsupported} or
                   null when skipped
    ab             comparison (the server's, of the first two arms), leader (highest measured
                   CTR), runner_up, p_value and significant (leader against runner-up),
                   measured_relative, true_winner, correct (leader is the true winner),
                   true_relative, impressions (all arms), first_significant_at (impressions
                   after which the server's p-value first fell below 0.05), trace ([impressions,
                   p-value] at each look)
    interleaving   arms (the A/B test's two best, in label order), impressions, wins, ties,
                   preference (> 0 favours the first arm), preference_ci, p_value, winner (the
                   server's: null unless significant), favours, agrees_with_ab,
                   first_significant_at, trace; null when skipped
    winner         the A/B test's leader when significant, else null
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from lmrec.errors import ConfigError, LmrecError
from lmrec.evaluate.abtest import diff_test
from lmrec.simulate.phases import ALPHA, Arm, SimConfig, ab_test, interleave, ope_log
from lmrec.simulate.world import ClickModel, SimWorld, WorldParams

LABELS = "ABCDEFGH"


def check_bundles(bundles: list[Path], world: SimWorld) -> list[dict[str, Any]]:
    """Each bundle's metadata; ConfigError (naming --bundle) for a folder that is not a bundle
    or whose items are not the world's."""
    from lmrec.serve.bundle import ITEMS_FILE, read_bundle_meta

    if not 2 <= len(bundles) <= len(LABELS):
        raise ConfigError(f"--bundle: give between 2 and {len(LABELS)} bundles to compare, got "
                          f"{len(bundles)}")
    if len({b.resolve() for b in bundles}) != len(bundles):
        raise ConfigError("--bundle: each bundle may be given once")
    metas = []
    for b in bundles:
        try:
            meta = read_bundle_meta(b)
            items = pl.read_parquet(b / ITEMS_FILE)
        except (LmrecError, OSError, pl.exceptions.PolarsError) as exc:
            raise ConfigError(f"--bundle {b}: {exc}") from None
        world.check_items(items, f"--bundle {b}")
        metas.append(meta)
    return metas


def simulate(bundles: list[Path], params: WorldParams | None = None,
             cfg: SimConfig | None = None, clicks: ClickModel | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the A/B test, the interleaving test and the OPE logs; the report (module doc)."""
    params, cfg = params or WorldParams(), cfg or SimConfig()
    say = progress or (lambda _: None)
    say("generating the shop world")
    world = SimWorld.generate(params, clicks)
    metas = check_bundles(bundles, world)
    if len(cfg.explore) not in (1, len(bundles)):
        raise ConfigError(f"--explore: give one policy for every bundle or one per bundle "
                          f"({len(bundles)}), got {len(cfg.explore)}")
    arms = [Arm(LABELS[n], b) for n, b in enumerate(bundles)]

    say(f"A/B test: {cfg.impressions} impressions per arm")
    ab = ab_test(arms, world, cfg)
    by_arm = {a["arm"]: a for a in ab["report"].get("arms", [])}
    measured = {a.label: float(by_arm.get(a.label, {}).get("ctr", float("nan"))) for a in arms}
    decision = _decide(ab, measured)

    il = None
    if cfg.interleave_impressions > 0:
        # the contest that decides: the A/B test's two best arms, in label order
        top = sorted((a for a in arms if a.label in (decision["leader"],
                                                      decision["runner_up"])),
                     key=lambda a: a.label)
        say(f"interleaving {top[0].label},{top[1].label}: {cfg.interleave_impressions} "
            "impressions")
        il = _interleaving(interleave((top[0], top[1]), world, cfg),
                           (top[0].label, top[1].label), decision["leader"])

    ope: dict[str, dict[str, Any]] = {}
    if cfg.ope_impressions > 0:
        for n, logger in enumerate(arms):
            target = arms[n - 1]  # A is evaluated on B's log, B on C's, ..., the last on A's
            explore = cfg.explore_of(n)
            say(f"off-policy: {target.label} on a log of {logger.label} ({explore})")
            ope.update(ope_log(logger, explore, [target], world, cfg))

    rows = []
    for arm, meta in zip(arms, metas, strict=True):
        served = by_arm.get(arm.label, {})
        true = ab["true_ctr"][arm.label]
        rows.append({
            "label": arm.label, "path": str(arm.bundle), "model": meta.get("model"),
            "model_version": meta.get("model_version"), "true_ctr": true,
            "ab": {"impressions": served.get("impressions"), "clicks": served.get("clicks"),
                   "ctr": served.get("ctr"), "ctr_ci": served.get("ctr_ci"),
                   "covers_true_ctr": _covers(served.get("ctr_ci"), true)},
            "ope": _ope(ope.get(arm.label)),
        })
    return {
        "world": {"shop_users": params.n_users, "shop_items": params.n_items,
                  "seed": params.seed, "click_model": world.clicks.to_dict()},
        "config": {"impressions": cfg.impressions,
                   "interleave_impressions": cfg.interleave_impressions,
                   "ope_impressions": cfg.ope_impressions, "k": cfg.k,
                   "explore": [cfg.explore_of(n) for n in range(len(arms))],
                   "traffic_seed": cfg.seed},
        "bundles": rows,
        "ab": {"comparison": ab["report"].get("comparison"), **decision,
               "impressions": sum(ab["impressions"].values()),
               "first_significant_at": ab["first_significant_at"], "trace": ab["trace"]},
        "interleaving": il,
        "winner": decision["leader"] if decision["significant"] else None,
    }


def _decide(ab: dict[str, Any], measured: dict[str, float]) -> dict[str, Any]:
    """The A/B test's leader (highest measured CTR) against the runner-up: the server's
    comparison when it compares these two (always, with two bundles), else Welch's test on
    the simulator's own per-impression clicks (the very clicks the server counted)."""
    ranked = sorted(measured, key=lambda n: -measured[n])
    leader, runner = ranked[0], ranked[1]
    comp = ab["report"].get("comparison") or {}
    if {comp.get("control"), comp.get("treatment")} == {leader, runner}:
        p, significant = comp.get("p_value"), bool(comp.get("significant"))
    else:
        p = diff_test(ab["clicks"][runner], ab["clicks"][leader]).p_value
        significant = bool(p < ALPHA)
    true = ab["true_ctr"]
    true_winner = max(true, key=lambda n: true[n])
    return {"leader": leader, "runner_up": runner, "p_value": p, "significant": significant,
            "measured_relative": _relative(measured[runner], measured[leader]),
            "true_winner": true_winner, "correct": leader == true_winner,
            "true_relative": _relative(true[runner], true[leader])}


def _interleaving(il: dict[str, Any], labels: tuple[str, str], leader: str
                  ) -> dict[str, Any]:
    rep = il["report"].get("interleaving") or {}
    pref = float(rep.get("preference") or 0.0)
    favours = labels[0] if pref > 0 else labels[1] if pref < 0 else None
    return {"arms": list(labels), "impressions": rep.get("impressions", il["impressions"]),
            "wins": rep.get("wins"), "ties": rep.get("ties"), "preference": pref,
            "preference_ci": rep.get("preference_ci"), "p_value": rep.get("p_value"),
            "winner": rep.get("winner"), "favours": favours,
            "agrees_with_ab": favours == leader,
            "first_significant_at": il["first_significant_at"], "trace": il["trace"]}


def _ope(found: dict[str, Any] | None) -> dict[str, Any] | None:
    if found is None:
        return None
    true = found["true_ctr"]
    rep = found["ope"]
    estimates = {e["estimator"]: {"value": e["value"], "ci": e["ci"], "ess": e["ess"],
                                  "covers_true_ctr": _covers(e["ci"], true)}
                 for e in rep["estimates"]}
    return {"logged_under": found["logged_under"], "policy": found["policy"],
            "impressions": rep["impressions"], "true_ctr": true,
            "logging_true_ctr": found["logging_true_ctr"], "estimates": estimates,
            "matched": rep["matched"], "unsupported": rep["unsupported"]}


def _covers(ci: Any, value: float) -> bool | None:
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return bool(ci[0] <= value <= ci[1])


def _relative(control: float | None, treatment: float | None) -> float | None:
    if control is None or treatment is None or control == 0:
        return None
    return float(treatment / control - 1.0)
