"""`auto`: search model families and their hyperparameters within a wall-clock budget.

`auto_search(split, budget_s, seed=...)` runs Optuna's TPE sampler (seeded) over one
categorical "family" parameter and, conditional on it (define-by-run), that family's
`Config.search_space`. Every trial fits on `split.train` and is scored on `split.valid` only:

- Warm start: the defaults of the cheap closed-form families (`WARM_START`) are the first
  trials, so even a tiny budget ends with a sound winner.
- Pruning hopeless trials on a first rung: a trial is first scored on a seeded quarter of the
  validation users (when there are at least `PRUNE_MIN_USERS`); a budgeted iterative model is
  first trained for a third of its time (successive halving with a restart). More than
  `PRUNE_MARGIN` below the best complete trial's value there (the same users), it is pruned;
  the rung value is reported to Optuna (step 0), whose TPE ranks pruned trials by it.
- The budget: a family outside `CLOSED_FORM` trains through the epoch loop and gets
  `TrainingOptions(time_budget_s=...)`, at most `ITERATIVE_SHARE` of the budget, so one trial
  cannot eat it. A trial is launched only when a conservative estimate of its cost (and of the
  final refit of whichever model would win) fits in what is left; the estimates come from
  the trials run so far, per family. Every trial records its seconds.
- Then the winner is refitted on train + valid (one Dataset of both parts) and tested once.
  Test users are ranked with their train + valid items masked: exactly the usual test masking,
  since both parts are now training data; with the "observed" history policy they are scored
  from their train + valid events.

`budget_s` bounds the whole call: search, refit and test. `max_trials` bounds the number of
proposals; with `budget_s=None` nothing depends on the clock, so a seeded run repeats exactly
when its families' fits are deterministic. `auto_train(dataset, ...)` searches on an internal
per-user 9:1 split and fits the winner on all the data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec.columns import Role
from lmrec.data.dataset import Dataset
from lmrec.data.stats import DataStats
from lmrec.errors import ConfigError
from lmrec.evaluate.auto_plan import (
    CLOSED_FORM,
    MIN_TRAIN_S,
    RUNG_TIME,
    SAFETY,
    Clock,
    Costs,
    Plan,
)
from lmrec.evaluate.auto_result import AutoResult, AutoTrial
from lmrec.evaluate.protocol import HistoryPolicy, check_history, evaluate
from lmrec.evaluate.splits import Split, split_random
from lmrec.evaluate.tuning import _suggest as suggest
from lmrec.metrics import ACCURACY_METRICS
from lmrec.models.base import Recommender
from lmrec.models.hyperparams import Choice, FloatRange
from lmrec.train.options import TrainingOptions

WARM_START: tuple[str, ...] = ("popularity", "itemknn", "ease", "als")
NEEDS_ITEM_TEXT = frozenset({"content-text"})  # a text encoder: only for data with item text
NEEDS_ITEM_ATTRIBUTES = frozenset({"content"})
RUNG_USERS = 0.25  # first-rung share of the validation users
PRUNE_MIN_USERS = 200  # fewer validation users: no user rung
PRUNE_MARGIN = 0.05  # pruned: this far below the best complete trial on the first rung
MAX_IDLE = 25  # consecutive proposals that ran nothing: stop (space exhausted, or no time)


def default_families(dataset: Dataset) -> list[str]:
    """Every registered model (`lmrec.models.MODELS`, new ones included) that can run on
    `dataset`: content-text only with item text, content only with item attributes."""
    from lmrec.models import MODELS

    has_text = any(spec.role == Role.TEXT for spec in dataset.item_schema.values())
    return [name for name in MODELS
            if not (name in NEEDS_ITEM_TEXT and not has_text)
            and not (name in NEEDS_ITEM_ATTRIBUTES and not dataset.item_schema)]


def auto_search(
    split: Split,
    budget_s: float | None,
    *,
    seed: int = 0,
    families: Sequence[str] | None = None,
    metric: str = "ndcg@10",
    history: HistoryPolicy = "observed",
    max_trials: int | None = None,
    ks: Iterable[int] = (10,),
    on_trial: Callable[[AutoTrial, float | None], None] | None = None,
) -> AutoResult:
    """Search on `split`'s validation part, refit the winner on train + valid, test once.

    The result's `test` is the winner's EvalResult on the test part (cutoffs `ks`; the usual
    metric keys), `model` the refitted winner. `on_trial(trial, best_value)` is called after
    every proposal. See the module docstring.
    """
    if split.valid is None or split.valid.n_events == 0:
        raise ConfigError("auto needs a validation part: use --ratios with three parts "
                          "(e.g. 0.8,0.1,0.1) or --split loo")
    train, valid = split.train, split.valid
    both = train.with_events(pl.concat([train.events, valid.events], how="vertical_relaxed"))
    search = _Search(split, budget_s, seed=seed, families=families, metric=metric,
                     history=history, max_trials=max_trials, refit_events=both.n_events,
                     on_trial=on_trial)
    result = search.run()
    model, fit_s = search.refit(result, both)
    refit_split = Split(train=both, valid=None, test=split.test, name=split.name,
                        kind=split.kind, notes=split.notes)
    test = evaluate(model, refit_split, ks, part="test", history=history)
    test.seconds = {"fit": fit_s, **test.seconds}
    result.model, result.test = model, test
    result.seconds.update(refit=fit_s, test=test.eval_seconds, total=search.clock.elapsed())
    return result


def auto_train(
    dataset: Dataset,
    budget_s: float | None,
    *,
    seed: int = 0,
    families: Sequence[str] | None = None,
    metric: str = "ndcg@10",
    history: HistoryPolicy = "observed",
    max_trials: int | None = None,
    valid_share: float = 0.1,
    extra_params: Mapping[str, Any] | None = None,
    on_trial: Callable[[AutoTrial, float | None], None] | None = None,
) -> AutoResult:
    """Search on an internal per-user random split of `dataset` (`valid_share` of each user's
    items for validation), then fit the winner on all of `dataset` (`result.model`).

    `extra_params` are given to the winner where its Config has them (e.g. checkpoint_dir).
    """
    if not 0 < valid_share < 1:
        raise ConfigError(f"valid_share must be in (0, 1), got {valid_share}")
    inner = split_random(dataset, (1 - valid_share, valid_share), seed=seed)
    empty = inner.test.with_events(inner.test.events.clear())
    split = Split(train=inner.train, valid=inner.test, test=empty,
                  name=f"internal {inner.name}", kind="random", notes=inner.notes)
    search = _Search(split, budget_s, seed=seed, families=families, metric=metric,
                     history=history, max_trials=max_trials, refit_events=dataset.n_events,
                     on_trial=on_trial)
    result = search.run()
    model, fit_s = search.refit(result, dataset, extra_params)
    result.model, result.refit_on = model, "all data"
    result.seconds.update(refit=fit_s, total=search.clock.elapsed())
    return result


# --- the search ----------------------------------------------------------------------------
class _Search:
    def __init__(self, split: Split, budget_s: float | None, *, seed: int,
                 families: Sequence[str] | None, metric: str, history: HistoryPolicy,
                 max_trials: int | None, refit_events: int,
                 on_trial: Callable[[AutoTrial, float | None], None] | None) -> None:
        from lmrec.models import MODELS

        if budget_s is not None and not (isinstance(budget_s, int | float)
                                         and math.isfinite(budget_s) and budget_s > 0):
            raise ConfigError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
        if max_trials is not None and (isinstance(max_trials, bool)
                                       or not isinstance(max_trials, int) or max_trials < 1):
            raise ConfigError(f"max_trials must be a positive integer, got {max_trials!r}")
        if budget_s is None and max_trials is None:
            raise ConfigError("give a time budget, a trial count (max_trials) or both")
        check_history(history)
        name, _, k = metric.partition("@")
        if name not in ACCURACY_METRICS or not k.isdigit() or int(k) < 1:
            raise ConfigError(f"metric must be an accuracy metric at a cutoff such as "
                              f"'ndcg@10' ({', '.join(ACCURACY_METRICS)}), got {metric!r}")
        fams = list(dict.fromkeys(families if families is not None
                                  else default_families(split.train)))
        unknown = [f for f in fams if f not in MODELS]
        if unknown or not fams:
            raise ConfigError(f"unknown model famil{'ies' if len(unknown) > 1 else 'y'} "
                              f"{', '.join(map(repr, unknown))}; available: "
                              f"{', '.join(sorted(MODELS))}" if unknown else
                              "families is empty: give at least one model family")
        self.split, self.seed, self.metric, self.k = split, seed, metric, int(k)
        self.history, self.max_trials, self.families = history, max_trials, fams
        self.classes = {f: MODELS[f] for f in fams}
        self.train_stats = DataStats.of(split.train)  # what the families' data rules read
        self.on_trial = on_trial
        self.clock = Clock(budget_s)
        self.costs = Costs(split.train, budget_s, refit_events / max(split.train.n_events, 1))
        self.parts = _rung_parts(split, seed)
        self.first: dict[int, float] = {}  # complete trial -> its value on the first rung

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> AutoResult:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        prune_after = max(1, sum(f in self.families for f in WARM_START))
        # trials are pruned here, by their first rung (see `_run`), not by an Optuna pruner
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.seed),
            pruner=optuna.pruners.NopPruner())
        for family in (f for f in WARM_START if f in self.families):
            study.enqueue_trial({"family": family, **self._defaults(family)})
        trials: list[AutoTrial] = []
        curve: list[tuple[float, float]] = []
        done: dict[tuple[str, str], AutoTrial] = {}
        failed: set[str] = set()
        not_run = {"repeat": 0, "skipped": 0}
        best: AutoTrial | None = None
        idle, stop = 0, "exhausted"
        while idle < MAX_IDLE:
            if self.max_trials is not None and len(trials) >= self.max_trials:
                stop = "max_trials"
                break
            reserve = 0.0 if best is None else self.costs.refit_s(best.family,
                                                                   best.time_budget_s)
            left = self.clock.left()
            if best is not None and not any(self.costs.plan(f, left, reserve).ok
                                            for f in self.families if f not in failed):
                stop = "budget"
                break
            ot = study.ask()
            family = ot.suggest_categorical("family", self.families)
            space = self.classes[family].Config.search_space
            params = {n: suggest(ot, f"{family}.{n}", dim) for n, dim in space.items()}
            key = (family, repr(sorted(params.items())))
            plan = self.costs.plan(family, left, reserve)
            if family in failed or (best is not None and not plan.ok):
                # a family that failed, or a trial that does not fit in the time left
                not_run["skipped"] += 1
                idle, stop = idle + 1, "budget"
                study.tell(ot, state=optuna.trial.TrialState.PRUNED)
                continue
            if key in done:  # the same proposal again: its outcome, nothing run
                not_run["repeat"] += 1
                idle, stop = idle + 1, "exhausted"
                if done[key].state == "complete":
                    study.tell(ot, done[key].value)
                else:
                    study.tell(ot, state=optuna.trial.TrialState.PRUNED)
                continue
            idle = 0
            trial = done[key] = AutoTrial(len(trials), family, params, "failed")
            # hopeless: more than PRUNE_MARGIN below the best first-rung value of a complete
            # trial (the same users), once the warm start is complete
            bar = ((1 - PRUNE_MARGIN) * max(self.first.values())
                   if len(self.first) >= prune_after else None)
            self._run(ot, trial, plan, bar)
            trial.at_s = self.clock.elapsed()
            if trial.state == "complete" and trial.value is not None:
                study.tell(ot, trial.value)
                if best is None or trial.value > (best.value or -math.inf):
                    best = trial
                    curve.append((trial.at_s, trial.value))
            else:
                if trial.state == "failed":
                    failed.add(family)
                study.tell(ot, state=optuna.trial.TrialState.PRUNED)
            trials.append(trial)
            if self.on_trial is not None:
                self.on_trial(trial, None if best is None else best.value)
        if best is None or best.value is None:
            notes = "; ".join(dict.fromkeys(f"{t.family}: {t.note}" for t in trials if t.note))
            raise ConfigError(f"auto: no model family could be fitted and scored ({notes})")
        return AutoResult(
            family=best.family, params=dict(best.params), valid_value=best.value,
            metric=self.metric, history=self.history, seed=self.seed,
            budget_s=self.clock.budget_s, max_trials=self.max_trials,
            families=list(self.families), trials=trials, curve=curve, stop=stop,
            not_run=not_run, seconds={"search": self.clock.elapsed()},
            refit_time_budget_s=self._refit_budget(best))

    def _defaults(self, family: str) -> dict[str, Any]:
        """The family's default values of its searched parameters (those inside the space);
        those its config leaves to the data as its data rule sets them for the train part."""
        klass = self.classes[family]
        config = klass.Config()
        from_data = klass(config).data_settings(self.train_stats)
        out = {}
        for name, dim in klass.Config.search_space.items():
            v = getattr(config, name, None)
            v = from_data.get(name) if v is None else v
            inside = (v in dim.values if isinstance(dim, Choice) else
                      isinstance(v, int | float) and dim.low <= v <= dim.high
                      and (isinstance(dim, FloatRange) or isinstance(v, int)))
            if inside:
                out[f"{family}.{name}"] = v
        return out

    def _run(self, ot: Any, trial: AutoTrial, plan: Plan, bar: float | None) -> None:
        """Fit and score one trial (its state, values and seconds set on `trial`).

        The first rung's value is reported to Optuna at step 0; below `bar` (None: no bar
        yet) the trial is pruned. A budgeted iterative trial has a first rung only once
        there is a bar.
        """
        family, params = trial.family, trial.params
        t0 = time.perf_counter()
        trial.time_budget_s = None if family in CLOSED_FORM else plan.time_budget_s
        try:
            if bar is not None and plan.rung and plan.time_budget_s is not None:
                model = self._fit(family, params, RUNG_TIME * plan.time_budget_s)
                trial.rung = _defined(self._score(model, self.parts[0])[0])
                ot.report(trial.rung, 0)
                if trial.rung < bar:
                    trial.state = "pruned"
                    return
            model = self._fit(family, params, plan.time_budget_s)
            t1 = time.perf_counter()
            first, vals = self._score(model, self.parts[0])
            if len(self.parts) > 1 and trial.rung is None:  # the users' rung
                trial.rung = _defined(first)
                ot.report(trial.rung, 0)
                if bar is not None and trial.rung < bar:
                    trial.state = "pruned"
                    return
            if len(self.parts) > 1:
                vals = np.concatenate([vals, self._score(model, self.parts[1])[1]])
            self.costs.eval[family] = max(self.costs.eval.get(family, 0.0),
                                          time.perf_counter() - t1)
            trial.value = _defined(_mean(vals))
            self.first[trial.number] = _defined(first)
            trial.state = "complete"
        except _Undefined:
            trial.state, trial.note = "failed", "the metric is undefined on this split"
        except Exception as exc:  # any family may fail on some data: it is left out
            trial.state, trial.note = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            trial.seconds = time.perf_counter() - t0

    def _fit(self, family: str, params: Mapping[str, Any], time_budget_s: float | None
             ) -> Recommender:
        klass = self.classes[family]
        model = klass(klass.Config.from_params(dict(params)))
        t0 = time.perf_counter()
        model.fit(self.split.train, TrainingOptions(rng=self.seed, time_budget_s=time_budget_s))
        seconds = time.perf_counter() - t0
        if family in CLOSED_FORM:
            self.costs.fit[family] = max(self.costs.fit.get(family, 0.0), seconds)
        elif time_budget_s is not None:  # the latest: a first fit may include one-off costs
            self.costs.over[family] = max(0.0, seconds - time_budget_s)
        return model

    def _score(self, model: Recommender, part: Split) -> tuple[float | None, np.ndarray]:
        """The metric on one part's warm users, and their per-user values."""
        result = evaluate(model, part, [self.k], part="valid", history=self.history)
        vals = result.per_user[self.metric][~result.cold]
        return _mean(vals), vals

    def _score_all(self, model: Recommender, family: str) -> tuple[float | None, np.ndarray]:
        t1 = time.perf_counter()
        vals = np.concatenate([self._score(model, p)[1] for p in self.parts])
        self.costs.eval[family] = max(self.costs.eval.get(family, 0.0),
                                      time.perf_counter() - t1)
        return _mean(vals), vals

    # -- the winner -------------------------------------------------------------------------
    def _refit_budget(self, best: AutoTrial) -> float | None:
        if best.family in CLOSED_FORM or best.time_budget_s is None:
            return None
        return self.costs.q * best.time_budget_s

    def refit(self, result: AutoResult, data: Dataset,
              extra_params: Mapping[str, Any] | None = None) -> tuple[Recommender, float]:
        """The winner fitted on `data` (its training time scaled to the data, within what is
        left of the budget); the fit's seconds."""
        klass = self.classes[result.family]
        fields = klass.Config.model_fields
        params = {**{k: v for k, v in (extra_params or {}).items() if k in fields},
                  **result.params}
        budget = result.refit_time_budget_s
        if budget is not None:
            budget = max(MIN_TRAIN_S, min(budget, SAFETY * self.clock.left()
                                          - 1.5 * self.costs.eval_s(result.family)))
            result.refit_time_budget_s = budget
        model = klass(klass.Config.from_params(params))
        t0 = time.perf_counter()
        model.fit(data, TrainingOptions(rng=self.seed, time_budget_s=budget))
        return model, time.perf_counter() - t0


class _Undefined(Exception):
    """No user of the validation part could be scored."""


def _rung_parts(split: Split, seed: int) -> list[Split]:
    """The validation part cut into the first rung (a seeded RUNG_USERS share of its users)
    and the rest; one part when it has fewer than PRUNE_MIN_USERS users."""
    valid = split.valid
    assert valid is not None
    users = np.unique(valid.events[C.USER_IDX].to_numpy())
    if users.size < PRUNE_MIN_USERS:
        return [split]
    pick = np.random.default_rng(seed).choice(users, size=math.ceil(RUNG_USERS * users.size),
                                              replace=False)
    first = valid.events[C.USER_IDX].is_in(pick.tolist())
    return [replace(split, valid=valid.with_events(valid.events.filter(mask)))
            for mask in (first, ~first)]


def _defined(value: float | None) -> float:
    if value is None:
        raise _Undefined
    return value


def _mean(vals: np.ndarray) -> float | None:
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else None
