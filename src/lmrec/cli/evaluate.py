"""`lmrec evaluate` (with --tune) and `lmrec compare`.

`--rerank NAME=WEIGHT[:ARG]` (repeatable, `lmrec.rerank`): evaluate scores the re-ranked lists;
compare also evaluates every model at each re-ranker's weights linspace(0, W, 5) and draws
the trade-off curves (`lmrec.evaluate.tradeoffs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmrec.cli.auto import (
    AUTO,
    auto_options,
    auto_sections,
    auto_tables,
    check_auto_split,
    run_auto,
)
from lmrec.cli.checks import check_choice, check_out, check_range
from lmrec.cli.options import (
    SEED_MAX,
    _BudgetOption,
    _FamiliesOption,
    _MaxTrialsOption,
    _parse_ks,
    parse_params,
    parse_variant,
)
from lmrec.cli.rerank import RerankOption, named, parse_rerank_options
from lmrec.cli.transfer import check_transfer_options, load_source, transfer_and_evaluate
from lmrec.console import err, metrics_summary, out, print_json, steps, table
from lmrec.errors import ConfigError
from lmrec.jsonfile import write_json
from lmrec.serve.security import split_list as _split_list


def _check_split_options(ratios: str, test_share: float, holdout_share: float,
                         max_train_events: int, seed: int, folds: int | None = None
                         ) -> tuple[float, ...]:
    """The split options of evaluate and compare, checked whatever the split kind (a value
    that no split can use is a mistake even where this split ignores it); the ratios parsed."""
    from lmrec.evaluate.splits import check_ratios

    try:
        r = tuple(float(x) for x in _split_list(ratios))
    except ValueError:
        raise ConfigError(f"--ratios {ratios!r} is not a list of numbers") from None
    try:
        check_ratios(r)
    except ConfigError as exc:
        raise ConfigError(f"--ratios {ratios!r}: {exc}") from None
    check_range("--test-share", test_share, low=0, high=1, low_open=True, high_open=True)
    check_range("--holdout-share", holdout_share, low=0, high=1, low_open=True,
                high_open=True)
    # 0 would leave every test user with no training event: nobody could be scored
    check_range("--max-train-events", max_train_events, low=1)
    check_range("--seed", seed, low=0, high=SEED_MAX)
    check_range("--folds", folds, low=2)
    return r


def _splits(ds: Any, split: str, ratios: tuple[float, ...], test_share: float, folds: int,
            seed: int, holdout_share: float = 0.2, max_train_events: int = 5) -> list:
    """The splits asked for (options checked by `_check_split_options`); notes to stderr."""
    from lmrec.evaluate import make_splits

    splits = make_splits(ds, split, ratios=ratios, test_share=test_share, folds=folds, seed=seed,
                         holdout_share=holdout_share, max_train_events=max_train_events)
    for note in dict.fromkeys(n for s in splits for n in s.notes):
        err.print(f"[yellow]note:[/] {note}")
    return splits


def evaluate_cmd(
    data: Annotated[Path, typer.Option("--data", help="A prepared dataset folder.")],
    model: Annotated[str | None, typer.Option(
        "--model", help="Model name (required unless --transfer-from).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="KEY=VALUE, repeatable.")
                     ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with model parameters.")
                      ] = None,
    split: Annotated[str, typer.Option(
        help="random | loo | temporal | kfold | cold-items | cold-users")] = "random",
    ratios: Annotated[str, typer.Option(help="train,valid,test shares for --split random")
                      ] = "0.8,0.1,0.1",
    test_share: Annotated[float, typer.Option(help="Test share for --split temporal")] = 0.2,
    holdout_share: Annotated[float, typer.Option(
        help="Share of items (cold-items) or users (cold-users) held out for test")] = 0.2,
    max_train_events: Annotated[int, typer.Option(
        help="Items a test user keeps in training for --split cold-users")] = 5,
    folds: Annotated[int, typer.Option(help="Folds for --split kfold")] = 5,
    k: Annotated[str, typer.Option("--k", help="Cutoffs, e.g. 10,20")] = "10",
    seed: Annotated[int, typer.Option(help="Random seed (split and model).")] = 0,
    part: Annotated[str, typer.Option(help="test | valid")] = "test",
    history: Annotated[str, typer.Option(
        help="observed (score each user's events as of the evaluated part, as served) | "
             "trained (score the model's fitted state, RecBole's general protocol)")
                       ] = "observed",
    tune: Annotated[bool, typer.Option(
        "--tune", help="Search hyperparameters on the validation part first.")] = False,
    trials: Annotated[int, typer.Option(help="Trials for --tune.")] = 20,
    budget: _BudgetOption = None,
    families: _FamiliesOption = None,
    max_trials: _MaxTrialsOption = None,
    rerank: RerankOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object of metrics.")
                       ] = False,
    transfer_from: Annotated[Path | None, typer.Option(
        "--transfer-from", help="A bundle of `lmrec train` (sasrec/hstu with text items): "
                                "transfer its model zero-shot to the split's training part "
                                "instead of fitting --model.")] = None,
) -> None:
    """Fit a model on a split's training part and print full-ranking metrics (of the lists
    after --rerank, when given).

    `--transfer-from BUNDLE` fits nothing: the bundle's text-native model is applied to this
    data's catalogue and users as trained (zero-shot transfer) and evaluated the same way.

    `--model auto --budget 15m` searches models and parameters on the validation part, refits
    the winner on train + valid and tests it once (--json: the usual metrics plus "auto")."""
    from lmrec.data import Dataset
    from lmrec.evaluate import (
        HISTORY_POLICIES,
        SPLIT_KINDS,
        cross_validate,
        evaluate,
        fit_and_evaluate,
    )
    from lmrec.models import create_model

    if transfer_from is not None:
        check_transfer_options({"--model": model is not None, "--param": bool(param),
                                "--config": config is not None, "--tune": tune,
                                "--split kfold": split == "kfold"})
    elif model is None:
        raise ConfigError("Missing option '--model' (or --transfer-from BUNDLE)")
    params = parse_params(param, config)
    auto = auto_options(model == AUTO, budget, families, max_trials, {
        "--param": bool(param), "--config": config is not None, "--tune": tune,
        "--part valid": part == "valid", "--split kfold": split == "kfold"})
    if auto is None and model is not None:
        create_model(model, params)  # refuse unknown models and parameters before any work
    specs = parse_rerank_options(rerank)
    ks = _parse_ks(k)
    r = _check_split_options(ratios, test_share, holdout_share, max_train_events, seed, folds)
    check_choice("--split", split, SPLIT_KINDS)
    check_choice("--part", part, ("test", "valid"))
    check_choice("--history", history, HISTORY_POLICIES)
    check_range("--trials", trials, low=1)
    if tune and split == "kfold":
        raise ConfigError("--tune takes a single split (random with a validation part, or "
                          "loo), not --split kfold")
    source = None if transfer_from is None else load_source(transfer_from)
    name = model if source is None else f"{source.name} from {transfer_from}"
    ds = Dataset.load(data)
    if ks[-1] > ds.n_items:
        raise ConfigError(f"--k {ks[-1]} is larger than the catalogue ({ds.n_items} items)")
    described = _check_rerank(specs, ds)
    with steps(f"evaluating {name}") as step:
        step("splitting")
        splits = _splits(ds, split, r, test_share, folds, seed, holdout_share, max_train_events)
        if tune:
            params = _tune(model, params, splits[0], ks, trials, seed, history, step)
        if source is not None:
            step("transferring and scoring")
            res = transfer_and_evaluate(source, transfer_from, splits[0], ks, part=part,
                                        history=history, rerank=specs)
            metrics, extra = dict(res.metrics), {"transfer_from": str(transfer_from)}
        elif auto is not None:
            found = run_auto(splits[0], auto, ks, seed, history, step)
            assert found.test is not None
            tested = found.test
            if specs and found.model is not None:  # the winner's lists, re-ranked
                step("re-ranking")
                tested = evaluate(found.model, _refit_split(splits[0]), ks, history=history,
                                  rerank=specs)
            metrics, extra = dict(tested.metrics), {"auto": found.to_dict()}
        elif len(splits) > 1:
            step(f"{len(splits)} folds")
            summary = cross_validate(lambda: create_model(model, params), splits, ks,
                                     history=history, rerank=specs)
            metrics = {key: v["mean"] for key, v in summary.items()}
            extra = {f"{key}_std": v["std"] for key, v in summary.items()}
        else:
            step("fitting and scoring")
            fitted = create_model(model, params)
            res = fit_and_evaluate(fitted, splits[0], ks, rng=seed, part=part, history=history,
                                   rerank=specs)
            metrics, extra = dict(res.metrics), {}
            if fitted.settings_:  # what the data rules chose for the parameters left to them
                extra["settings"] = fitted.settings_
    if described:
        extra["rerank"] = described
    if as_json:
        print_json({**metrics, **extra})
        return
    rows = [(key, v) for key, v in metrics.items()]
    rows += [(f"{key} (from the data)", v) for key, v in extra.get("settings", {}).items()]
    reranked = f", re-ranked by {described}" if described else ""
    out.print(table(f"{name} on {ds.name} ({split} split, {part}, {history} histories"
                    f"{reranked})", ["metric", "value"], rows))
    if auto is not None:
        for t in auto_tables(found):
            out.print(t)


def _tune(model: str, params: dict[str, Any], split: Any, ks: list[int], trials: int,
          seed: int, history: Any, step: Any) -> dict[str, Any]:
    """Best parameters on the validation part (`--param` values stay fixed)."""
    from lmrec.evaluate import tune
    from lmrec.models import create_model, model_class

    metric = f"ndcg@{10 if 10 in ks else ks[0]}"
    best = {"value": float("-inf")}

    def on_trial(i: int, trial_params: dict[str, Any], value: float) -> None:
        best["value"] = max(best["value"], value)
        step(f"tuning: trial {i}/{trials}, best valid {metric} {best['value']:.4f}")

    result = tune(lambda p: create_model(model, p), model_class(model).Config.search_space,
                  split, metric=metric, trials=trials, seed=seed, fixed=params,
                  history=history, on_trial=on_trial)
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in result.best_params.items())
    err.print(f"tuned on the validation part ({trials} trials, {result.seconds:.1f} s): "
              f"valid {metric} {result.best_value:.4f} with {shown}")
    return result.best_params


def _check_rerank(specs: list[Any], ds: Any) -> str:
    """Refuse re-rankers the data cannot serve (a missing column, ...) before any work; their
    description ("" for none)."""
    if not specs:
        return ""
    from lmrec.rerank import RerankData, RerankPipeline

    return named(lambda: RerankPipeline.build(specs, RerankData.from_dataset(ds))).describe()


def _refit_split(split: Any) -> Any:
    """The split `--model auto` tests its winner on: trained on train + valid (as
    `lmrec.evaluate.auto.auto_search` refits it)."""
    import polars as pl

    from lmrec.evaluate.splits import Split

    train, valid = split.train, split.valid
    both = train.with_events(pl.concat([train.events, valid.events], how="vertical_relaxed"))
    return Split(train=both, valid=None, test=split.test, name=split.name, kind=split.kind,
                 notes=split.notes)


def _sweeps(specs: list[Any], fitted: dict[str, Any], results: dict[str, Any], split: Any,
            ks: list[int], history: Any, step: Any) -> dict[str, dict[str, list]]:
    """Every fitted model at each re-ranker's weights linspace(0, W, 5) (0: its own list)."""
    from lmrec.evaluate import evaluate
    from lmrec.evaluate.tradeoffs import at_weight, spec_label, sweep_weights

    out: dict[str, dict[str, list]] = {}
    for spec in specs:
        label = spec_label(spec)
        out[label] = {}
        for name, (model, on) in fitted.items():
            points = [(0.0, results[name])]
            for w in sweep_weights(spec.weight)[1:]:
                step(f"{name} with {spec.name}={w:g}")
                points.append((w, evaluate(model, on or split, ks, history=history,
                                           rerank=[at_weight(spec, w)])))
            out[label][name] = points
    return out


def compare_cmd(
    data: Annotated[Path, typer.Option("--data", help="A prepared dataset folder.")],
    report: Annotated[Path, typer.Option("--report", help="Folder for the report.")],
    models: Annotated[str, typer.Option("--models", help="Comma-separated model names.")] = "",
    variant: Annotated[list[str] | None, typer.Option(
        "--variant", help="A model with parameters, LABEL=MODEL:key=value,key=value "
                          "(repeatable), e.g. tt-text=two-tower:text=true")] = None,
    split: Annotated[str, typer.Option(
        help="random | loo | temporal | cold-items | cold-users")] = "random",
    ratios: Annotated[str, typer.Option()] = "0.8,0.1,0.1",
    test_share: Annotated[float, typer.Option()] = 0.2,
    holdout_share: Annotated[float, typer.Option(
        help="Share of items (cold-items) or users (cold-users) held out for test")] = 0.2,
    max_train_events: Annotated[int, typer.Option(
        help="Items a test user keeps in training for --split cold-users")] = 5,
    k: Annotated[str, typer.Option("--k", help="Cutoffs, e.g. 5,10,20")] = "5,10,20",
    seed: Annotated[int, typer.Option()] = 0,
    history: Annotated[str, typer.Option(
        help="observed (score each user's events as of the evaluated part, as served) | "
             "trained (score the model's fitted state, RecBole's general protocol)")
                       ] = "observed",
    budget: _BudgetOption = None,
    families: _FamiliesOption = None,
    max_trials: _MaxTrialsOption = None,
    rerank: Annotated[list[str] | None, typer.Option(
        "--rerank", help="A re-ranker NAME=W to sweep: every model is also evaluated at "
                         "weights linspace(0, W, 5) and the report draws accuracy against "
                         "calibration and exposure; repeatable (see `lmrec evaluate "
                         "--rerank`).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run several models on one split; write a Markdown/HTML report with plots.

    `auto` in --models is one entry: the search of `lmrec evaluate --model auto` (with
    --budget), its winner refitted on train + valid; its trials go into the report.
    `--rerank NAME=W` sweeps a re-ranker's weight (its trade-off curves go into the report)."""
    from lmrec.data import Dataset
    from lmrec.evaluate import (
        HISTORY_POLICIES,
        SPLIT_KINDS,
        evaluate,
        fit_and_evaluate,
        metrics_table,
        write_report,
    )
    from lmrec.models import create_model

    check_out(report, "--report")
    names = _split_list(models)
    auto = auto_options(AUTO in names, budget, families, max_trials)
    recs: dict[str, Any] = {n: None if n == AUTO else create_model(n) for n in names}
    for spec in variant or []:
        label, model_name, params = parse_variant(spec)
        if label in recs:
            raise ConfigError(f"--variant {spec!r}: the label {label!r} is already taken")
        recs[label] = create_model(model_name, params)
    if not recs:
        raise ConfigError("give --models and/or --variant")
    specs = parse_rerank_options(rerank)
    _check_sweeps(specs)
    ks = _parse_ks(k)
    r = _check_split_options(ratios, test_share, holdout_share, max_train_events, seed)
    check_choice("--split", split, tuple(s for s in SPLIT_KINDS if s != "kfold"))
    check_choice("--history", history, HISTORY_POLICIES)
    ds = Dataset.load(data)
    if ks[-1] > ds.n_items:
        raise ConfigError(f"--k {ks[-1]} is larger than the catalogue ({ds.n_items} items)")
    specs = _resolved(specs, ds)
    splits = _splits(ds, split, r, test_share, 2, seed, holdout_share, max_train_events)
    if auto is not None:
        check_auto_split(splits[0])
    results = {}
    fitted: dict[str, Any] = {}  # label -> (model, the split it is tested on: None = splits[0])
    found = None
    with steps("comparing") as step:
        for n, rec in recs.items():
            step(n)
            if rec is None:  # auto: search, refit the winner on train + valid, test once
                assert auto is not None
                found = run_auto(splits[0], auto.restarted(), ks, seed, history, step)
                assert found.test is not None
                results[n] = found.test
                if found.model is not None:
                    fitted[n] = (found.model, _refit_split(splits[0]))
                continue
            results[n] = fit_and_evaluate(rec, splits[0], ks, rng=seed, history=history)
            fitted[n] = (rec, None)
            # a blend's members, as fitted inside it, so the report shows who wins which slice
            for member, fitted in getattr(rec, "named_members", dict)().items():
                results[f"{n}/{member}"] = evaluate(fitted, splits[0], ks, history=history)
        sweeps = _sweeps(specs, fitted, results, splits[0], ks, history, step)
        step("writing the report")
        paths = write_report(results, report, title=f"lmrec compare on {ds.name}",
                             split_info=splits[0].sizes(),
                             sections=() if found is None else auto_sections(found),
                             tradeoffs=sweeps)
        if found is not None:
            paths["auto"] = write_json(report / "auto.json", found.to_dict())
    if as_json:
        print_json({n: r.to_dict()["metrics"] for n, r in results.items()})
        return
    out.print(metrics_summary(metrics_table(results, ks), 10 if 10 in ks else ks[0]))
    if sweeps:
        from lmrec.evaluate.tradeoffs import tradeoff_table

        main_k = 10 if 10 in ks else ks[0]
        shown = tradeoff_table(sweeps, main_k).select(
            "rerank", "model", "weight", *(f"{m}@{main_k}" for m in (
                "ndcg", "miscalibration", "exposure_gini", "tail_exposure")))
        out.print(table("Re-ranking trade-offs (all columns in the report)",
                        *_frame_rows(shown)))
    err.print(f"Report: {paths.get('html')} (also {paths.get('markdown')}, "
              f"{paths.get('json')})")


def _check_sweeps(specs: list[Any]) -> None:
    """A sweep needs a weight to sweep."""
    for spec in specs:
        if spec.name == "suitability":
            raise ConfigError(f"--rerank {str(spec)!r}: a hard constraint has no weight to "
                              "sweep (evaluate with it: lmrec evaluate --rerank)")


def _resolved(specs: list[Any], ds: Any) -> list[Any]:
    """The sweeps' specs with their arguments resolved against the data (the default
    calibration column, group...), each checked; one sweep per re-ranker and argument."""
    from lmrec.evaluate.tradeoffs import spec_label
    from lmrec.rerank import RerankData, RerankPipeline

    data = RerankData.from_dataset(ds)
    out, seen = [], set()
    for spec in specs:
        resolved = named(lambda s=spec: RerankPipeline.build([s], data)).specs[0]
        label = spec_label(resolved)
        if label in seen:
            raise ConfigError(f"--rerank {label!r} is given twice")
        seen.add(label)
        out.append(resolved)
    return out


def _frame_rows(frame: Any) -> tuple[list[str], list[tuple]]:
    return list(frame.columns), [tuple("-" if v is None else v for v in row)
                                 for row in frame.iter_rows()]
