"""What `lmrec.evaluate.auto` reports: every trial, the best-so-far curve and the winner."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmrec.evaluate.protocol import EvalResult
    from lmrec.models.base import Recommender

# The states of a trial that ran:
#   complete  fitted and scored on the whole validation part
#   pruned    scored on the first rung (a quarter of the validation users, or a third of its
#             training time for a budgeted iterative model) and below the median there
#   failed    the family could not be fitted or scored (the error is in `note`); its later
#             proposals are skipped
# Proposals that ran nothing are only counted (`AutoResult.not_run`):
#   repeat    the same family and parameters as an earlier trial: its outcome was reused
#   skipped   a failed family, or a cost estimate that did not fit in the time left
TRIAL_STATES: tuple[str, ...] = ("complete", "pruned", "failed")


@dataclass
class AutoTrial:
    """One proposal of the search.

    value: the validation metric (complete and repeat trials); rung: the first-rung value the
    pruner judged (None without a rung). seconds: wall-clock time the trial took; at_s: time
    since the search started, at its end. time_budget_s: the training time given to the fit
    (None: unlimited, or a closed-form family that ignores it).
    """

    number: int
    family: str
    params: dict[str, Any]
    state: str
    value: float | None = None
    rung: float | None = None
    seconds: float = 0.0
    at_s: float = 0.0
    time_budget_s: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "family": self.family,
                "params": {k: _json(v) for k, v in self.params.items()},
                "state": self.state, "value": _json(self.value), "rung": _json(self.rung),
                "seconds": round(self.seconds, 3), "at_s": round(self.at_s, 3),
                "time_budget_s": _json(self.time_budget_s), "note": self.note}


@dataclass
class AutoResult:
    """The outcome of `auto_search` / `auto_train`.

    family, params: the winner (the best complete trial on the validation metric) and its
    searched parameters (the others keep their defaults); valid_value: its validation value.
    curve: (seconds since the start, best value so far) at every improvement.
    model: the winner refitted (on train + valid by `auto_search`, on all data by
    `auto_train`); test: its EvalResult on the test part (`auto_search` only).
    seconds: "search", "refit" (the final fit), "test" (its evaluation), "total".
    stop: why the search stopped ("budget": no trial fits in the time left; "max_trials";
    "exhausted": only repeats were proposed). not_run: proposals not run, per reason.
    """

    family: str
    params: dict[str, Any]
    valid_value: float
    metric: str
    history: str
    seed: int
    budget_s: float | None
    max_trials: int | None
    families: list[str]
    trials: list[AutoTrial]
    curve: list[tuple[float, float]]
    stop: str
    not_run: dict[str, int] = field(default_factory=dict)
    refit_on: str = "train+valid"
    refit_time_budget_s: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    model: Recommender | None = None
    test: EvalResult | None = None

    def counts(self) -> dict[str, int]:
        """Trials per state (zeros included), then the proposals not run ("repeat",
        "skipped")."""
        ran = {s: sum(t.state == s for t in self.trials) for s in TRIAL_STATES}
        return {**ran, "repeat": 0, "skipped": 0, **self.not_run}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the "auto" section of `lmrec evaluate --model auto --json`."""
        return {
            "winner": {"family": self.family,
                       "params": {k: _json(v) for k, v in self.params.items()},
                       f"valid {self.metric}": _json(self.valid_value)},
            "metric": self.metric, "history": self.history, "seed": self.seed,
            "budget_s": _json(self.budget_s), "max_trials": self.max_trials,
            "families": list(self.families), "stop": self.stop, "refit_on": self.refit_on,
            "refit_time_budget_s": _json(self.refit_time_budget_s),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "counts": self.counts(),
            "curve": [{"at_s": round(t, 3), "best": _json(v)} for t, v in self.curve],
            "trials": [t.to_dict() for t in self.trials],
        }

    def describe(self) -> str:
        """One line: the winner, its parameters and validation value, and the search size."""
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in self.params.items())
        return (f"auto: {self.family}" + (f" ({shown})" if shown else "")
                + f", valid {self.metric} {self.valid_value:.4f}; {len(self.trials)} trials in "
                f"{self.seconds.get('search', 0.0):.1f} s over {len(self.families)} families"
                f" (stopped: {self.stop})")


def _json(v: Any) -> Any:
    """A JSON-ready value: floats rounded (NaN and infinities as None), the rest as is."""
    if isinstance(v, bool) or not isinstance(v, float | int):
        return v
    if isinstance(v, int):
        return int(v)
    return None if math.isnan(v) or math.isinf(v) else round(float(v), 6)
