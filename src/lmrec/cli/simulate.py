"""`lmrec simulate`: simulated shoppers with known preferences against a live server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmrec.cli.checks import check_range
from lmrec.cli.options import SEED_MAX
from lmrec.console import err, out, print_json, steps, table


def simulate(
    bundle: Annotated[list[Path], typer.Option(
        "--bundle", help="A bundle trained on the shop world's data; repeat for each arm "
        "(2 to 8: A, B, ... in order).")],
    impressions: Annotated[int, typer.Option(help="Impressions per arm in the A/B test.")
                           ] = 20_000,
    interleave_impressions: Annotated[int | None, typer.Option(
        help="Impressions of the interleaving test (0 skips it; default a quarter of "
        "--impressions).")] = None,
    ope_impressions: Annotated[int | None, typer.Option(
        help="Impressions logged under each exploring bundle for off-policy estimates (0 "
        "skips them; default a quarter of --impressions).")] = None,
    k: Annotated[int, typer.Option(help="Items per slate.")] = 10,
    explore: Annotated[list[str] | None, typer.Option(
        help="Logging policy of the off-policy logs: plackett-luce:T or epsilon-greedy:E; once "
        "for every bundle, or once per bundle (a temperature acts on the model's own score "
        "scale; default plackett-luce:0.5).")] = None,
    shop_users: Annotated[int, typer.Option(help="The shop world's users (as `lmrec demo "
                                                 "--users`).")] = 1000,
    shop_items: Annotated[int, typer.Option(help="The shop world's items (as `lmrec demo "
                                                 "--items`).")] = 1000,
    seed: Annotated[int, typer.Option(help="The shop world's seed (as `lmrec demo --seed`).")
                    ] = 0,
    traffic_seed: Annotated[int, typer.Option(help="Seed of the simulated users and clicks.")
                            ] = 0,
    eta: Annotated[float, typer.Option(help="Position bias: position j is examined with "
                                            "probability (1 + j)^-eta.")] = 1.0,
    attraction_offset: Annotated[float, typer.Option(
        help="Attraction = sigmoid(offset + slope * standardised utility).")] = -5.0,
    attraction_slope: Annotated[float, typer.Option(help="See --attraction-offset.")] = 1.0,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 4,
    look_every: Annotated[int, typer.Option(
        help="Impressions between two looks at the server's p-value.")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Drive simulated shoppers (whose true click probabilities are known) against a live
    server: an A/B test, an interleaving test and off-policy estimates of each bundle, beside
    each bundle's true CTR."""
    from lmrec.serve.explore import Explorer
    from lmrec.simulate import ClickModel, SimConfig, WorldParams
    from lmrec.simulate import simulate as run

    check_range("--impressions", impressions, low=1)
    il = impressions // 4 if interleave_impressions is None else interleave_impressions
    ope = impressions // 4 if ope_impressions is None else ope_impressions
    check_range("--interleave-impressions", il, low=0)
    check_range("--ope-impressions", ope, low=0)
    check_range("--k", k, low=1, high=100)
    check_range("--shop-users", shop_users, low=1)
    check_range("--shop-items", shop_items, low=1)
    check_range("--seed", seed, low=0, high=SEED_MAX)
    check_range("--traffic-seed", traffic_seed, low=0, high=SEED_MAX)
    check_range("--eta", eta, low=0)
    check_range("--attraction-offset", attraction_offset)
    check_range("--attraction-slope", attraction_slope)
    check_range("--concurrency", concurrency, low=1, high=64)
    check_range("--look-every", look_every, low=1)
    policies = tuple(explore or ["plackett-luce:0.5"])
    for spec in policies:
        Explorer.parse(spec)  # a bad spec: one line naming --explore
    cfg = SimConfig(impressions=impressions, interleave_impressions=il, ope_impressions=ope,
                    k=k, explore=policies, concurrency=concurrency, look_every=look_every,
                    seed=traffic_seed)
    clicks = ClickModel(eta=eta, offset=attraction_offset, slope=attraction_slope)
    with steps("simulating") as step:
        report = run(bundle, WorldParams(shop_users, shop_items, seed), cfg, clicks, step)
    if as_json:
        print_json(report)
        return
    _print(report)


def _print(rep: dict[str, Any]) -> None:
    rows = []
    for b in rep["bundles"]:
        ope = b["ope"] or {}
        est = ope.get("estimates", {})
        rows.append((b["label"], b["model"], b["true_ctr"], b["ab"]["ctr"],
                     _ci(b["ab"]["ctr_ci"]), ope.get("true_ctr", "-"),
                     *(_est(est.get(e)) for e in ("ips", "snips", "dr"))))
    out.print(table("True CTR (expected clicks per slate) beside the server's estimates",
                    ["arm", "model", "true CTR", "A/B CTR", "A/B 95% CI",
                     "true CTR on OPE log", "IPS", "SNIPS", "DR"], rows))
    ab = rep["ab"]
    out.print(f"A/B: {ab['leader']} leads {ab['runner_up']} by "
              f"{_pct(ab['measured_relative'])} (truly {_pct(ab['true_relative'])}; the truly "
              f"better arm is {ab['true_winner']}: {'correct' if ab['correct'] else 'WRONG'}), "
              f"p = {_num(ab['p_value'])}, significant: {ab['significant']}; first p < 0.05 "
              f"after {ab['first_significant_at'] or '-'} of {ab['impressions']} impressions")
    il = rep["interleaving"]
    if il:
        out.print(f"Interleaving {','.join(il['arms'])}: preference {il['preference']:+.4f} "
                  f"{_ci(il['preference_ci'])} favours {il['favours'] or 'neither'} "
                  f"({'agrees' if il['agrees_with_ab'] else 'DISAGREES'} with the A/B test), "
                  f"p = {_num(il['p_value'])}; first p < 0.05 after "
                  f"{il['first_significant_at'] or '-'} of {il['impressions']} impressions")
    out.print(f"Winner: {rep['winner'] or 'none (the A/B test is not significant)'}")
    err.print("--json gives every figure")


def _num(x: Any) -> str:
    return "-" if x is None else f"{float(x):.4g}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):+.1f}%"


def _ci(ci: Any) -> str:
    return "-" if not ci or ci[0] is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def _est(e: dict[str, Any] | None) -> str:
    if not e:
        return "-"
    mark = "" if e["covers_true_ctr"] else " (misses)"
    return f"{e['value']:.4f} {_ci(e['ci'])}{mark}"
