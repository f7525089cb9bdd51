"""`--model auto` in `lmrec evaluate`, `compare` and `train`: its options, the search with
progress, and what it prints (`lmrec.evaluate.auto` does the work)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmrec.cli.checks import check_range
from lmrec.cli.options import parse_duration
from lmrec.console import err, table
from lmrec.errors import ConfigError
from lmrec.serve.security import split_list

if TYPE_CHECKING:
    import polars as pl

    from lmrec.data.dataset import Dataset
    from lmrec.evaluate.auto_result import AutoResult, AutoTrial
    from lmrec.evaluate.splits import Split

AUTO = "auto"


@dataclass(frozen=True)
class AutoOptions:
    budget_s: float | None
    families: list[str] | None
    max_trials: int | None
    started: float = field(default_factory=time.perf_counter)  # when the command began

    def search_kwargs(self) -> dict[str, Any]:
        """`families`, `max_trials` and `budget_s`: the budget less what the command spent
        before the search (loading and splitting the data), so that it bounds the command."""
        budget = None if self.budget_s is None else max(
            0.1, self.budget_s - (time.perf_counter() - self.started))
        return {"budget_s": budget, "families": self.families, "max_trials": self.max_trials}

    def restarted(self) -> AutoOptions:
        """These options with the clock started now (auto as one entry of compare)."""
        return replace(self, started=time.perf_counter())


def auto_options(auto: bool, budget: str | None, families: str | None,
                 max_trials: int | None, conflicts: Mapping[str, bool] | None = None
                 ) -> AutoOptions | None:
    """The checked `--model auto` options (None when the model is not auto). `conflicts` maps
    an option to whether it was given; none of them goes with auto."""
    given = {"--budget": budget is not None, "--families": families is not None,
             "--max-trials": max_trials is not None}
    if not auto:
        for option, is_given in given.items():
            if is_given:
                raise ConfigError(f"{option} applies only to --model auto")
        return None
    for option, is_given in (conflicts or {}).items():
        if is_given:
            raise ConfigError(f"{option} does not go with --model auto (it searches the models "
                              "and their parameters itself)")
    if budget is None and max_trials is None:
        raise ConfigError("--model auto needs --budget (e.g. --budget 15m) or --max-trials")
    budget_s = None if budget is None else parse_duration(budget, "--budget")
    check_range("--max-trials", max_trials, low=1)
    return AutoOptions(budget_s, _families(families), max_trials)


def _families(value: str | None) -> list[str] | None:
    from lmrec.models import MODELS

    if value is None:
        return None
    names = list(dict.fromkeys(split_list(value)))
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise ConfigError(f"--families {value!r}: " + (
            f"unknown model {unknown[0]!r}; available: {', '.join(sorted(MODELS))}"
            if unknown else "give at least one model name"))
    return names


def check_auto_split(split: Split) -> None:
    """Refuse a split without a validation part before any work (auto searches on it)."""
    if split.valid is None or split.valid.n_events == 0:
        raise ConfigError("--model auto searches on the validation part: use --split random "
                          "with three --ratios (e.g. 0.8,0.1,0.1) or --split loo")


def run_auto(split: Split, opts: AutoOptions, ks: list[int], seed: int, history: Any,
             step: Any) -> AutoResult:
    """`auto_search` with progress; the winner's line on stderr."""
    from lmrec.evaluate.auto import auto_search

    check_auto_split(split)
    metric = f"ndcg@{10 if 10 in ks else ks[0]}"
    result = auto_search(split, seed=seed, metric=metric, history=history, ks=ks,
                         on_trial=_progress(step, metric, opts), **opts.search_kwargs())
    err.print(result.describe(), highlight=False)
    test_s = result.seconds.get("refit", 0.0) + result.seconds.get("test", 0.0)
    err.print(f"auto: {result.family} refitted on train + valid and tested once in "
              f"{test_s:.1f} s; {result.seconds.get('total', 0.0):.1f} s in all", highlight=False)
    return result


def train_auto(ds: Dataset, opts: AutoOptions, seed: int, out_dir: Path, step: Any
               ) -> AutoResult:
    """`auto_train` with progress: the winner fitted on all of `ds` (`result.model`)."""
    from lmrec.evaluate.auto import auto_train

    result = auto_train(ds, seed=seed, extra_params={"checkpoint_dir": str(out_dir / "run")},
                        on_trial=_progress(step, "ndcg@10", opts), **opts.search_kwargs())
    err.print(result.describe(), highlight=False)
    return result


def _progress(step: Any, metric: str, opts: AutoOptions) -> Any:
    def on_trial(trial: AutoTrial, best: float | None) -> None:
        shown = "-" if best is None else f"{best:.4f}"
        limit = "" if opts.budget_s is None else f" of {opts.budget_s:.0f}"
        step(f"trial {trial.number + 1} ({trial.family}, {trial.state}); best valid {metric} "
             f"{shown}; {trial.at_s:.0f}{limit} s")
    return on_trial


def auto_tables(result: AutoResult) -> list[Any]:
    """Rich tables: the trials per family, and the best-so-far curve."""
    tried = table(f"auto: what was tried ({result.metric} on the validation part)",
                  ["family", "trials", "complete", "pruned", "failed", "best valid", "seconds"],
                  [tuple("-" if v is None else v for v in row)
                   for row in _per_family(result).iter_rows()])
    curve = table("auto: best so far", ["at (s)", "best valid"],
                  [(f"{t:.1f}", v) for t, v in result.curve])
    return [tried, curve]


def auto_sections(result: AutoResult) -> list[tuple[str, pl.DataFrame]]:
    """Report sections (title, frame): the winner, the families tried, the best-so-far curve
    and every trial."""
    import polars as pl

    winner = pl.DataFrame({
        "field": ["family", *[f"param {k}" for k in result.params], f"valid {result.metric}",
                  "refitted on", "budget (s)", "search (s)", "total (s)", "stopped by"],
        "value": [result.family, *[str(v) for v in result.params.values()],
                  f"{result.valid_value:.4f}", result.refit_on, str(result.budget_s),
                  f"{result.seconds.get('search', 0.0):.1f}",
                  f"{result.seconds.get('total', 0.0):.1f}", result.stop]})
    trials = pl.DataFrame([{
        "trial": t.number + 1, "family": t.family, "state": t.state,
        "params": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in t.params.items()),
        f"valid {result.metric}": t.value, "rung": t.rung, "seconds": round(t.seconds, 3),
        "at (s)": round(t.at_s, 2), "note": t.note} for t in result.trials])
    curve = pl.DataFrame({"at (s)": [round(t, 2) for t, _ in result.curve],
                          "best valid": [v for _, v in result.curve]})
    title = "auto (refitted on train + valid before testing; other models fit on train)"
    return [(f"{title}: winner", winner), ("auto: families tried", _per_family(result)),
            ("auto: best so far", curve), ("auto: every trial", trials)]


def _per_family(result: AutoResult) -> pl.DataFrame:
    import polars as pl

    rows = []
    for family in result.families:
        ts = [t for t in result.trials if t.family == family]
        if not ts:
            continue
        values = [t.value for t in ts if t.value is not None]
        rows.append({"family": family, "trials": len(ts),
                     "complete": sum(t.state == "complete" for t in ts),
                     "pruned": sum(t.state == "pruned" for t in ts),
                     "failed": sum(t.state == "failed" for t in ts),
                     "best valid": max(values) if values else None,
                     "seconds": round(sum(t.seconds for t in ts), 2)})
    return pl.DataFrame(rows)
