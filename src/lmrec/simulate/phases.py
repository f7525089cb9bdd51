"""The three experiments the simulator runs against a live server, one server (and one fresh
SQLite store) each.

    ab_test      arms A, B, ... with equal shares, deterministic top-k, `impressions` per arm
    interleave   two arms merged by team draft in every answer
    ope_log      one bundle served with exploration; its log then evaluates another bundle
                 off-policy (`lmrec.serve.replay` + `lmrec.evaluate.ope`)

Each phase returns what the server reported (GET /v1/experiments), what the simulator knows
to be true (the true expected clicks of every served slate) and, for the online tests, the
impressions after which the server's p-value first fell below 0.05 (looked up every
`look_every` impressions: the granularity of that figure).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.simulate.server import LiveApp
from lmrec.simulate.traffic import Impression, Traffic, UserStream, experiment
from lmrec.simulate.world import SimWorld

ALPHA = 0.05


@dataclass(frozen=True)
class SimConfig:
    """How much traffic each phase sends, and how.

    impressions: per arm in the A/B test. interleave_impressions: in the interleaving test
    (0: skipped). ope_impressions: logged under each exploring bundle (0: OPE skipped).
    explore: the logging policy of the OPE logs (`lmrec.serve.explore`), one for every bundle
    or one per bundle: a Plackett-Luce temperature acts on the model's own score scale (a
    popularity count needs another than a cosine), so each bundle may need its own.
    concurrency: requests in flight at once. look_every: impressions between two looks at the
    server's p-value.
    """

    impressions: int = 20_000
    interleave_impressions: int = 5_000
    ope_impressions: int = 5_000
    k: int = 10
    explore: tuple[str, ...] = ("plackett-luce:0.5",)
    concurrency: int = 4
    look_every: int = 500
    seed: int = 0


    def explore_of(self, bundle: int) -> str:
        """The logging policy of the `bundle`-th bundle."""
        return self.explore[bundle] if len(self.explore) > 1 else self.explore[0]


@dataclass(frozen=True)
class Arm:
    label: str  # A, B, ...: the arm's name on the server
    bundle: Path


def _settings(**kw: Any) -> Any:
    from lmrec.serve.app import ServeSettings

    return ServeSettings(docs=False, torch_threads=1, **kw)


def _arm_specs(arms: list[Arm]) -> tuple[Any, ...]:
    from lmrec.serve.arms import ArmSpec

    return tuple(ArmSpec(name=a.label, bundle=a.bundle, share=1.0 / len(arms)) for a in arms)


def _stream(cfg: SimConfig, world: SimWorld, phase: int) -> UserStream:
    # one independent stream per phase, all from the run's seed
    return UserStream(world.n_users, cfg.k, np.random.SeedSequence([cfg.seed, phase]))


def _first_below(trace: list[tuple[int, float]]) -> int | None:
    return next((n for n, p in trace if p < ALPHA), None)


def _p_value(section: dict[str, Any] | None) -> float:
    p = (section or {}).get("p_value")
    return 1.0 if p is None else float(p)


def ab_test(arms: list[Arm], world: SimWorld, cfg: SimConfig) -> dict[str, Any]:
    """Every arm gets `cfg.impressions` impressions (a few more where a round overshoots);
    users keep their arm, so once an arm is full its users are passed over."""
    arm_of: dict[int, str] = {}
    count: Counter[str] = Counter()
    tallied = 0
    trace: list[tuple[int, float]] = []

    def tally(served: list[Impression]) -> bool:
        nonlocal tallied
        for imp in served[tallied:]:
            arm_of[imp.user] = str(imp.arm)
            count[str(imp.arm)] += 1
        tallied = len(served)
        return all(count[a.label] >= cfg.impressions for a in arms)

    def full(user: int) -> bool:
        arm = arm_of.get(user)
        return arm is not None and count[arm] >= cfg.impressions

    with tempfile.TemporaryDirectory(prefix="lmrec-sim-ab-") as tmp:
        settings = _settings(arms=_arm_specs(arms), assignment_salt=f"lmrec-sim-{cfg.seed}")
        with LiveApp(arms[0].bundle, _store_url(tmp), settings) as app, \
                app.client(cfg.concurrency) as client:
            traffic = Traffic(client, world, cfg.k, cfg.concurrency)
            served = traffic.run(
                _stream(cfg, world, 1), tally, skip=full, every=cfg.look_every,
                look=lambda s: trace.append(
                    (len(s), _p_value(experiment(client).get("comparison")))))
            report = experiment(client)
    true_ctr = {a.label: _mean([i.expected for i in served if i.arm == a.label]) for a in arms}
    clicks = {a.label: np.array([i.clicks.sum() for i in served if i.arm == a.label],
                                dtype=np.float64) for a in arms}
    return {"report": report, "true_ctr": true_ctr, "clicks": clicks,
            "impressions": dict(count), "trace": trace, "first_significant_at":
            _first_below(trace)}


def interleave(pair: tuple[Arm, Arm], world: SimWorld, cfg: SimConfig) -> dict[str, Any]:
    """`cfg.interleave_impressions` team-draft slates of the two arms."""
    trace: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="lmrec-sim-il-") as tmp:
        settings = _settings(arms=_arm_specs(list(pair)),
                             interleave=(pair[0].label, pair[1].label),
                             assignment_salt=f"lmrec-sim-{cfg.seed}")
        with LiveApp(pair[0].bundle, _store_url(tmp), settings) as app, \
                app.client(cfg.concurrency) as client:
            traffic = Traffic(client, world, cfg.k, cfg.concurrency)
            served = traffic.run(
                _stream(cfg, world, 2), lambda s: len(s) >= cfg.interleave_impressions,
                every=cfg.look_every, look=lambda s: trace.append(
                    (len(s), _p_value(experiment(client).get("interleaving")))))
            report = experiment(client)
    return {"report": report, "impressions": len(served),
            "true_ctr_interleaved": _mean([i.expected for i in served]), "trace": trace,
            "first_significant_at": _first_below(trace)}


def ope_log(logger: Arm, explore: str, targets: list[Arm], world: SimWorld,
            cfg: SimConfig) -> dict[str, dict[str, Any]]:
    """Serve `logger` with the `explore` policy for `cfg.ope_impressions` impressions, then
    evaluate each target off-policy on that log, beside its true expected clicks on the same
    contexts."""
    from lmrec.evaluate.ope import evaluate_target
    from lmrec.serve.replay import describe, replay
    from lmrec.serve.service import build_engine
    from lmrec.serve.store import open_store

    with tempfile.TemporaryDirectory(prefix="lmrec-sim-ope-") as tmp:
        url = _store_url(tmp)
        with LiveApp(logger.bundle, url, _settings(explore=explore)) as app, \
                app.client(cfg.concurrency) as client:
            traffic = Traffic(client, world, cfg.k, cfg.concurrency)
            served = traffic.run(_stream(cfg, world, 3),
                                 lambda s: len(s) >= cfg.ope_impressions)
        user_of = {imp.request_id: imp.user for imp in served}
        logged_value = _mean([imp.expected for imp in served])
        store = open_store(url)
        out: dict[str, dict[str, Any]] = {}
        try:
            for target in targets:
                engine = build_engine(target.bundle)
                log = replay(engine, store, cfg.k)
                users = np.array([user_of[r] for r in log.request_ids], dtype=np.int64)
                slates = _world_slates(engine, world, log.target)
                truth = world.expected_clicks(users, slates)
                ope = evaluate_target(log.items, log.propensities, log.clicks, log.target)
                out[target.label] = {
                    "logged_under": logger.label, "policy": explore,
                    "logging_true_ctr": logged_value,
                    "true_ctr": _mean(truth.tolist()), "ope": ope.to_dict(),
                    "replay": describe(log)}
        finally:
            store.close()
    return out


def _world_slates(engine: Any, world: SimWorld, target: np.ndarray) -> np.ndarray:
    """Engine item indices (-1 padded) -> world item indices (-1 padded)."""
    out = np.full(target.shape, -1, dtype=np.int64)
    shown = target >= 0
    ids = [engine.external_item(int(i)) for i in target[shown]]
    out[shown] = world.item_index(ids)
    return out


def _store_url(folder: str) -> str:
    return f"sqlite:///{Path(folder) / 'events.db'}"


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
