"""Simulated shoppers with known preferences, driving a live server: checks that the
experiment loop (A/B tests, interleaving, off-policy evaluation) finds what is true.

    report = simulate([Path("models/ease"), Path("models/als")], WorldParams(1000, 1000, 0),
                      SimConfig(impressions=20_000))

`lmrec simulate` is the command-line face of `simulate`.
"""

from lmrec.simulate.phases import SimConfig
from lmrec.simulate.report import simulate
from lmrec.simulate.world import ClickModel, SimWorld, WorldParams

__all__ = ["ClickModel", "SimConfig", "SimWorld", "WorldParams", "simulate"]
