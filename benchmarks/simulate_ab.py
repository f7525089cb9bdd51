"""Does the A/B test detect a 10% relative CTR difference on the demo shop within 20,000
impressions per arm? `lmrec simulate` on two bundles whose true CTRs differ by about 10%.

The demo shop (`lmrec demo`: 1,000 users, 1,000 items, seed 0, 3 bots, the demo's preparation)
is built here the way the demo builds it, and two models are trained on all of it:

    A  userknn with k=5 neighbours per user   (control)
    B  ease with its defaults                  (treatment: about 10% more true clicks)

The pair was found by emulating the served loop (each user's clicks join their history and
leave their next slates; about 40 impressions per user in a 20,000-impression arm, on the
users the server's hash puts in each arm) for several models. True expected clicks per slate
averaged over such a run: ease 0.249 (arm B's users); userknn k=5 0.226 (arm A's users: ease
+10.4%), userknn k=4 0.213, k=6 0.235, itemknn k=2 0.229. A static top 10 of every user
overstates the gaps that remain once users have clicked their favourites (itemknn k=3 is 10%
below ease there, 4-7% in the loop): the served slates' true CTR falls as the best items are
clicked and then excluded (ease: 0.30 over the first 2,000 impressions, 0.21 over the last).
The simulator then serves the pair live (`lmrec.simulate`): an A/B test with
--impressions per arm, an interleaving test, and an off-policy log under each bundle
(Plackett-Luce over the engine's 50-item pool, one temperature per model's score scale).

Reported (printed and written to benchmarks/results/simulate_ab.json): both bundles' true CTRs
and the true relative difference, the A/B estimate with its CI and p-value, the impressions
after which the server's p-value first fell below 0.05, the minimum detectable relative effect
at this size (two-sided 5%, 80% power, from the measured per-impression spread), the
impressions per arm a 10% effect needs, the interleaving result, and each OPE estimate beside
the truth. Command:

    OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/simulate_ab.py
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from lmrec.collect import ColumnMapping, read_table, to_events
from lmrec.datasets import generate_shop
from lmrec.evaluate.abtest import required_impressions
from lmrec.models import create_model
from lmrec.prepare import PrepareConfig, prepare
from lmrec.serve.bundle import write_bundle
from lmrec.simulate import SimConfig, WorldParams, simulate
from lmrec.train.options import TrainingOptions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "simulate_ab.json"
WORLD = WorldParams(n_users=1000, n_items=1000, seed=0)  # `lmrec demo`'s defaults
PAIR = (("userknn-k5", "userknn", {"k": 5}, "plackett-luce:0.5"),
        ("ease", "ease", {}, "plackett-luce:0.1"))
Z_POWER = 2.8016  # z_{0.975} + z_{0.80}


def demo_dataset(work: Path) -> Any:
    """The demo's prepared shop (`lmrec.demo.run_demo`, steps 1-2)."""
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    shop = generate_shop(n_users=WORLD.n_users, n_items=WORLD.n_items, seed=WORLD.seed, bots=3)
    for name, frame in (("events", shop.events), ("items", shop.items), ("users", shop.users)):
        frame.write_csv(raw / f"{name}.csv")
    config = PrepareConfig(max_user_events=500, burst_max=20, burst_window_s=60, core=2)
    mapping = ColumnMapping(user="user", item="item", event="event", time="timestamp")
    events = to_events(read_table(raw / "events.csv"), mapping)
    return prepare(events, read_table(raw / "users.csv"), read_table(raw / "items.csv"),
                   mapping=mapping, config=config, name="shop").dataset


def build_bundles(work: Path) -> list[Path]:
    ds = demo_dataset(work)
    out = []
    for folder, model, params, _ in PAIR:
        rec = create_model(model, params).fit(ds, TrainingOptions(rng=WORLD.seed))
        out.append(write_bundle(rec, ds, work / folder))
    return out


def detection(rep: dict[str, Any], per_arm: int) -> dict[str, Any]:
    """The minimum detectable relative effect at `per_arm` impressions per arm and the
    impressions a 10% effect needs, from the control arm's measured per-impression spread."""
    control = rep["bundles"][0]["ab"]
    lo, hi = control["ctr_ci"]
    sd = (hi - lo) / (2 * 1.959964) * math.sqrt(control["impressions"])
    mean = control["ctr"]
    return {"per_impression_sd": sd, "control_ctr": mean,
            "mde_relative_80pct_power": Z_POWER * sd * math.sqrt(2 / per_arm) / mean,
            "impressions_per_arm_for_10pct": required_impressions(mean, sd, 0.10)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impressions", type=int, default=20_000, help="per A/B arm")
    ap.add_argument("--interleave-impressions", type=int, default=5_000)
    ap.add_argument("--ope-impressions", type=int, default=5_000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmrec-simulate-ab"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    t0 = time.perf_counter()
    bundles = build_bundles(args.work)
    cfg = SimConfig(impressions=args.impressions,
                    interleave_impressions=args.interleave_impressions,
                    ope_impressions=args.ope_impressions, k=10,
                    explore=tuple(p[3] for p in PAIR), concurrency=args.concurrency,
                    look_every=1_000, seed=0)
    rep = simulate(bundles, WORLD, cfg, progress=lambda m: print(
        f"[{time.perf_counter() - t0:6.0f} s] {m}", flush=True))
    ab = rep["ab"]
    summary = {
        "bundles": {b["label"]: {"model": b["model"], "true_ctr": b["true_ctr"],
                                 "ab_ctr": b["ab"]["ctr"], "ab_ctr_ci": b["ab"]["ctr_ci"]}
                    for b in rep["bundles"]},
        "true_relative_difference": ab["true_relative"],
        "measured_relative_difference": ab["measured_relative"],
        "ctr_diff_ci": (ab["comparison"] or {}).get("ctr_diff_ci"), "p_value": ab["p_value"],
        "detected_at_95pct": bool(ab["significant"]) and ab["correct"],
        "first_p_below_05_after_impressions": ab["first_significant_at"],
        **detection(rep, args.impressions),
        "interleaving": {k: rep["interleaving"][k] for k in (
            "impressions", "preference", "preference_ci", "p_value", "winner", "favours",
            "agrees_with_ab", "first_significant_at")} if rep["interleaving"] else None,
        "ope": {b["label"]: None if b["ope"] is None else {
            "logged_under": b["ope"]["logged_under"], "true_ctr": b["ope"]["true_ctr"],
            **{k: {"value": e["value"], "ci": e["ci"], "covers": e["covers_true_ctr"]}
               for k, e in b["ope"]["estimates"].items()},
            "matched": b["ope"]["matched"]} for b in rep["bundles"]},
        "seconds": time.perf_counter() - t0,
    }
    print(json.dumps(summary, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "report": rep}, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
