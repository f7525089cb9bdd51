"""Hyperparameter search on the validation part of a split (Optuna's TPE sampler).

Only the validation part is ever scored while searching; the test part is touched once, by the
caller, with the chosen parameters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lmrec.errors import ConfigError
from lmrec.evaluate.protocol import HistoryPolicy, check_history, fit_and_evaluate
from lmrec.evaluate.splits import Split
from lmrec.models.base import Recommender
from lmrec.models.hyperparams import Choice, FloatRange, IntRange, SearchSpace


@dataclass
class TuneResult:
    best_params: dict[str, Any]
    best_value: float
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)  # params, value, seconds
    seconds: float = 0.0


def tune(
    factory: Callable[[dict[str, Any]], Recommender],
    space: SearchSpace,
    split: Split,
    *,
    metric: str = "ndcg@10",
    trials: int = 20,
    seed: int = 0,
    timeout_s: float | None = None,
    fixed: Mapping[str, Any] | None = None,
    history: HistoryPolicy = "observed",
    on_trial: Callable[[int, dict[str, Any], float], None] | None = None,
) -> TuneResult:
    """Search `space` (minus the `fixed` parameters) for the best validation `metric`.

    `factory(params)` builds an unfitted model; each trial fits it on `split.train` and scores
    `split.valid`, its users scored with the `history` policy (`lmrec.evaluate.evaluate`).
    Deterministic for a given seed when the models are.
    """
    import optuna

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be a positive integer, got {trials!r}")
    check_history(history)
    if split.valid is None or split.valid.n_events == 0:
        raise ConfigError("tuning needs a validation part: use --ratios with three parts "
                          "(e.g. 0.8,0.1,0.1) or --split loo")
    fixed = dict(fixed or {})
    free = {k: v for k, v in space.items() if k not in fixed}
    if not free:
        raise ConfigError("nothing to tune: the model has no search space left "
                          "(every tunable parameter is fixed by --param)")
    k = int(metric.rsplit("@", 1)[1]) if "@" in metric else 10
    log: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {name: _suggest(trial, name, dim) for name, dim in free.items()}
        t0 = time.perf_counter()
        result = fit_and_evaluate(factory({**fixed, **params}), split, [k], rng=seed,
                                  part="valid", history=history)
        value = float(result.metrics[metric])
        log.append({"params": params, "value": value,
                    "seconds": round(time.perf_counter() - t0, 3)})
        if on_trial is not None:
            on_trial(len(log), params, value)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials, timeout=timeout_s)
    return TuneResult(best_params={**fixed, **study.best_params},
                      best_value=float(study.best_value), metric=metric, trials=log,
                      seconds=time.perf_counter() - t0)


def _suggest(trial: Any, name: str, dim: IntRange | FloatRange | Choice) -> Any:
    if isinstance(dim, IntRange):
        return trial.suggest_int(name, dim.low, dim.high, log=dim.log)
    if isinstance(dim, FloatRange):
        return trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    return trial.suggest_categorical(name, list(dim.values))
