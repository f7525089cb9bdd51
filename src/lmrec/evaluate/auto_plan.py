"""Time planning of `lmrec.evaluate.auto`: conservative cost estimates per model family.

A closed-form family (`CLOSED_FORM`) fits in one go and ignores `time_budget_s`: its cost is
the longest fit seen (times 1.25), or a prior from the data's size before its first trial. Any
other family trains through the epoch loop, which honours `time_budget_s`: its trial gets a
training time (at most `ITERATIVE_SHARE` of the budget) chosen so that the trial, with its
first rung, and the refit it would need if it won, fit in what is left; how far its latest fit ran
past its budget is its overshoot. Evaluation costs are the longest full validation seen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from lmrec.data.dataset import Dataset

# fitted in one go (or a fixed few sweeps): they ignore time_budget_s; the others honour it
CLOSED_FORM = frozenset({"popularity", "content", "content-text", "itemknn", "userknn",
                         "ease", "als"})
ITERATIVE_SHARE = 0.1  # most of the budget one iterative trial may train for
RUNG_TIME = 1 / 3  # first-rung training time of a budgeted iterative trial
MIN_TRAIN_S = 1.0  # an iterative trial given less than this is not worth running
SAFETY = 0.95  # plans use this share of the time left
# prior overshoot of a budgeted fit (set-up, its last epoch, scoring a holdout):
# OVER_SLOPE x its budget + OVER_BASE + OVER_PER_EVENT x training events
OVER_SLOPE, OVER_BASE, OVER_PER_EVENT = 0.5, 2.0, 5e-5


class Clock:
    def __init__(self, budget_s: float | None) -> None:
        self.t0 = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return math.inf if self.budget_s is None else self.budget_s - self.elapsed()


@dataclass
class Plan:
    ok: bool
    time_budget_s: float | None  # the trial's training time (None: unlimited)
    rung: bool  # first train for RUNG_TIME of it


class Costs:
    """Conservative cost estimates per family, from the trials run so far (priors before)."""

    def __init__(self, train: Dataset, budget_s: float | None, refit_scale: float) -> None:
        self.train, self.budget_s, self.q = train, budget_s, refit_scale
        self.fit: dict[str, float] = {}  # closed-form: the longest fit seen
        self.over: dict[str, float] = {}  # iterative: how far the latest fit ran past its budget
        self.eval: dict[str, float] = {}  # the longest full validation seen

    def eval_s(self, family: str) -> float:
        if family in self.eval:
            return self.eval[family]
        return max(self.eval.values(), default=0.2 + 2e-6 * self.train.n_events)

    def fit_s(self, family: str) -> float:
        if family in self.fit:
            return 1.25 * self.fit[family]
        n_items, nnz = self.train.n_items, self.train.n_events
        if family == "ease":
            return 2e-10 * n_items ** 3 + 4e-6 * nnz  # a dense item x item inverse
        if family == "content-text":
            return 10.0 + 0.02 * n_items  # loading a text encoder, encoding the items
        return 0.1 + 4e-6 * nnz

    def refit_s(self, family: str, time_budget_s: float | None) -> float:
        """The final fit and test of `family` if it won with this training time."""
        test = 1.5 * self.eval_s(family)
        if family in CLOSED_FORM or time_budget_s is None:
            return self.fit_s(family) * self.q + test
        t = 1.1 * self.q * time_budget_s
        return t + self.overshoot(family, t) + test

    def overshoot(self, family: str, time_budget_s: float) -> float:
        """How far a fit given `time_budget_s` may run past it: as far as the family's latest
        fit did (its last epoch, set-up, scoring a holdout), else the prior (OVER_SLOPE, ...)."""
        if family in self.over:
            return self.over[family]
        return OVER_SLOPE * time_budget_s + self._over_base()

    def _over_base(self) -> float:
        return OVER_BASE + OVER_PER_EVENT * self.train.n_events

    def plan(self, family: str, left: float, reserve: float) -> Plan:
        """Whether a trial of `family` and the refit of the winner fit in `left` seconds
        (`reserve`: the refit of the current best), and the trial's training time."""
        if self.budget_s is None:
            return Plan(True, None, False)
        room = SAFETY * left
        ev = self.eval_s(family)
        if family in CLOSED_FORM:
            cost = self.fit_s(family) + ev
            ok = cost + max(reserve, self.refit_s(family, None)) <= room
            return Plan(ok, max(room - reserve - ev, 0.1), False)
        # trial(t) = a t + c1: a first rung of RUNG_TIME t and then t, each with an overshoot;
        # refit(t) = b t + c2 (`refit_s`); both must fit: trial + max(reserve, refit) <= room
        seen = family in self.over
        slope = 0.0 if seen else OVER_SLOPE
        base = self.over[family] if seen else self._over_base()
        a = (1 + RUNG_TIME) * (1 + slope)
        c1 = 2 * base + ev
        b, c2 = 1.1 * self.q * (1 + slope), base + 1.5 * ev
        t = min(max(MIN_TRAIN_S, ITERATIVE_SHARE * self.budget_s),
                (room - reserve - c1) / a, (room - c1 - c2) / (a + b))
        return Plan(t >= max(MIN_TRAIN_S, 0.02 * self.budget_s), t, True)
