"""`auto`: families and parameters searched on the validation part within a budget, the winner
refitted on train + valid and tested once; seeded runs repeat; the CLI of evaluate, compare and
train; bad options are one line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers_cli import one_error_line, run
from lmrec.data.dataset import Dataset
from lmrec.data.stats import DataStats
from lmrec.errors import ConfigError
from lmrec.evaluate import auto as auto_mod
from lmrec.evaluate import (
    auto_plan,
    auto_search,
    auto_train,
    default_families,
    fit_and_evaluate,
    split_random,
)
from lmrec.evaluate.auto import WARM_START
from lmrec.evaluate.auto_plan import ITERATIVE_SHARE, Costs
from lmrec.evaluate.splits import Split
from lmrec.models import MODELS, Recommender, create_model, register_model, unregister_model
from lmrec.testing import planted_dataset
from lmrec.train import TrainingOptions

CHEAP = ["popularity", "itemknn", "ease", "als", "userknn"]


def _split() -> Split:
    return split_random(planted_dataset(), (0.6, 0.2, 0.2), seed=0)


def _outcome(result: Any) -> list[tuple[Any, ...]]:
    return [(t.family, t.params, t.state, t.value, t.rung) for t in result.trials]


# --- the library ---------------------------------------------------------------------------
def test_trial_count_mode_repeats_and_warm_starts_with_defaults() -> None:
    split = _split()
    a = auto_search(split, None, seed=3, families=CHEAP, max_trials=9)
    b = auto_search(split, None, seed=3, families=CHEAP, max_trials=9)
    assert _outcome(a) == _outcome(b) and len(a.trials) == 9 and a.stop == "max_trials"
    assert (a.family, a.params, a.valid_value) == (b.family, b.params, b.valid_value)
    assert a.test is not None and b.test is not None
    assert a.test.metrics == b.test.metrics
    # the warm start: the defaults of the cheap closed-form families, first and in order
    warm = [f for f in WARM_START if f in CHEAP]
    assert [t.family for t in a.trials[:len(warm)]] == warm
    for t in a.trials[:len(warm)]:
        # a value the config leaves to the data is the one its data rule sets for train
        config = MODELS[t.family].Config()
        rule = MODELS[t.family](config).data_settings(DataStats.of(split.train))
        assert t.params and t.params == {
            k: rule[k] if getattr(config, k) is None else getattr(config, k) for k in t.params}
    # the winner is the best complete trial; the curve only rises, at rising times
    complete = [t for t in a.trials if t.state == "complete"]
    assert a.valid_value == max(t.value for t in complete if t.value is not None)
    assert [v for _, v in a.curve] == sorted(v for _, v in a.curve)
    assert a.curve[-1][1] == a.valid_value
    assert [t for t, _ in a.curve] == sorted(t for t, _ in a.curve)
    assert all(t.seconds > 0 for t in a.trials)
    other = auto_search(split, None, seed=4, families=CHEAP, max_trials=9)
    assert _outcome(other)[len(warm):] != _outcome(a)[len(warm):]  # the seed drives TPE


def test_search_scores_validation_only_then_tests_once(monkeypatch: pytest.MonkeyPatch) -> None:
    split = _split()
    calls: list[tuple[str, int]] = []
    real = auto_mod.evaluate

    def spy(model: Recommender, split_: Split, ks: Any, *, part: str = "test", **kw: Any
            ) -> Any:
        calls.append((part, split_.train.n_events))
        return real(model, split_, ks, part=part, **kw)

    monkeypatch.setattr(auto_mod, "evaluate", spy)
    result = auto_search(split, None, seed=0, families=["ease", "itemknn"], max_trials=4,
                         ks=(5, 10))
    assert split.valid is not None
    assert [p for p, _ in calls[:-1]] == ["valid"] * (len(calls) - 1)
    assert {n for _, n in calls[:-1]} == {split.train.n_events}
    assert calls[-1] == ("test", split.train.n_events + split.valid.n_events)
    # refitted on train + valid: every pair of both parts is training data now
    model, test = result.model, result.test
    assert model is not None and test is not None
    assert model.seen_.nnz == (split.train.matrix("binary") + split.valid.matrix("binary")).nnz
    # the usual test metrics and keys; no test user is shown a train or valid item
    plain = fit_and_evaluate(create_model("ease"), split, (5, 10))
    assert test.metrics.keys() == plain.metrics.keys() and test.part == "test"
    users = np.flatnonzero(np.diff(split.test.matrix("binary").tocsr().indptr))
    items, _ = model.recommend_idx(users, 5)
    known = (split.train.matrix("binary") + split.valid.matrix("binary")).tocsr()
    for u, row in zip(users, items, strict=True):
        assert not set(row[row >= 0]) & set(known[u].indices)


def test_budget_is_honoured_and_iterative_fits_get_time_budgets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # small priors, so that an iterative family (bpr) fits in a short budget here
    monkeypatch.setattr(auto_plan, "OVER_BASE", 0.2)
    monkeypatch.setattr(auto_plan, "OVER_PER_EVENT", 0.0)
    given: list[float | None] = []
    fit = Recommender.fit

    def spy(self: Recommender, dataset: Dataset, options: TrainingOptions | None = None
            ) -> Recommender:
        if self.name == "bpr":
            given.append(None if options is None else options.time_budget_s)
        return fit(self, dataset, options)

    monkeypatch.setattr(Recommender, "fit", spy)
    budget = 6.0
    t0 = time.perf_counter()
    result = auto_search(_split(), budget, seed=0,
                         families=["popularity", "itemknn", "ease", "bpr"])
    elapsed = time.perf_counter() - t0
    assert elapsed <= 1.1 * budget, elapsed
    assert result.seconds["total"] <= 1.1 * budget
    assert result.stop in ("budget", "exhausted") and result.test is not None
    bpr = [t for t in result.trials if t.family == "bpr"]
    assert bpr and all(t.time_budget_s is not None
                       and 0 < t.time_budget_s <= max(1.0, ITERATIVE_SHARE * budget)
                       for t in bpr)
    assert given and all(b is not None for b in given)
    if result.family == "bpr":  # its refit: its training time, scaled to train + valid
        assert given[-1] == result.refit_time_budget_s
    assert all(t.time_budget_s is None for t in result.trials if t.family != "bpr")
    counts = result.counts()
    assert sum(counts[s] for s in ("complete", "pruned", "failed")) == len(result.trials)
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["winner"]["family"] == result.family and doc["budget_s"] == budget
    assert len(doc["trials"]) == len(result.trials) and doc["curve"]


def test_a_tiny_budget_still_gives_the_warm_start_winner() -> None:
    result = auto_search(_split(), 0.05, seed=0, families=CHEAP)
    assert result.trials[0].family == "popularity"
    assert result.family in CHEAP and result.test is not None


def test_costs_plan_bounds_iterative_trials() -> None:
    train = _split().train
    costs = Costs(train, 600.0, refit_scale=1.2)
    plan = costs.plan("bpr", left=600.0, reserve=1.0)
    assert plan.ok and plan.rung and plan.time_budget_s == ITERATIVE_SHARE * 600.0
    short = costs.plan("bpr", left=5.0, reserve=1.0)
    assert not short.ok  # a trial and its refit would not fit
    assert costs.plan("ease", left=5.0, reserve=1.0).ok  # closed-form, cheap here
    assert not costs.plan("ease", left=0.01, reserve=0.0).ok
    assert Costs(train, None, 1.2).plan("bpr", left=0.0, reserve=1e9).ok  # no clock


def test_pruning_on_the_first_rung(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto_mod, "PRUNE_MIN_USERS", 10)  # the planted data has 36 users
    result = auto_search(_split(), None, seed=1, families=["popularity", "ease", "itemknn"],
                         max_trials=14)
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned, _outcome(result)
    assert all(t.value is None and t.rung is not None for t in pruned)
    assert all(t.rung is not None for t in result.trials if t.state == "complete")
    assert result.family != "popularity"


class _Broken(Recommender):
    name = "auto-broken-test"

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        raise ConfigError("cannot fit on this data")

    def _score(self, users: np.ndarray, histories: Any) -> np.ndarray:
        raise AssertionError


def test_a_failing_family_is_left_out_and_new_models_are_families() -> None:
    register_model(_Broken)
    try:
        assert _Broken.name in default_families(planted_dataset())
        result = auto_search(_split(), None, seed=0, families=[_Broken.name, "ease"],
                             max_trials=6)
    finally:
        unregister_model(_Broken.name)
    failed = [t for t in result.trials if t.state == "failed"]
    assert len(failed) == 1 and "cannot fit on this data" in failed[0].note
    assert result.family == "ease"


def test_default_families_follow_the_data() -> None:
    ds = planted_dataset()  # items with a title (text) and genres
    assert {"content", "content-text"} <= set(default_families(ds))
    bare = ds.with_events(ds.events)
    object.__setattr__(bare, "item_schema", {})
    fams = default_families(bare)
    assert "content-text" not in fams and "content" not in fams
    assert set(fams) == set(MODELS) - {"content", "content-text"}


def test_bad_arguments() -> None:
    split = _split()
    with pytest.raises(ConfigError, match="budget_s"):
        auto_search(split, 0, max_trials=2)
    with pytest.raises(ConfigError, match="max_trials"):
        auto_search(split, None)
    with pytest.raises(ConfigError, match="unknown model family"):
        auto_search(split, None, max_trials=2, families=["nope"])
    with pytest.raises(ConfigError, match="metric"):
        auto_search(split, None, max_trials=2, metric="coverage@10")
    with pytest.raises(ConfigError, match="validation part"):
        auto_search(split_random(planted_dataset(), (0.8, 0.2), seed=0), None, max_trials=2)


def test_auto_train_fits_the_winner_on_all_data() -> None:
    ds = planted_dataset()
    result = auto_train(ds, None, seed=0, families=["ease", "itemknn"], max_trials=4)
    assert result.model is not None and result.refit_on == "all data"
    assert result.model.seen_.nnz == ds.matrix("binary").nnz
    assert result.test is None and result.family in ("ease", "itemknn")


# --- the command line ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_dataset(users_a=40, users_b=60, items_per_group=20, seen_per_user=10
                           ).save(tmp_path_factory.mktemp("auto") / "d")


def _strip_seconds(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _strip_seconds(v) for k, v in doc.items()
                if k not in ("seconds", "at_s", "budget_s")}
    if isinstance(doc, list):
        return [_strip_seconds(v) for v in doc]
    return doc


def test_cli_evaluate_auto_json_repeats(data_dir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--data", str(data_dir), "--model", "auto", "--max-trials", "6",
            "--families", "popularity,itemknn,ease", "--json"]
    code, out1, err = run(args, capsys)
    assert code == 0, err
    code, out2, _ = run(args, capsys)
    first, second = json.loads(out1), json.loads(out2)
    assert _strip_seconds(first) == _strip_seconds(second)
    code, plain, _ = run(["evaluate", "--data", str(data_dir), "--model", "ease", "--json"],
                         capsys)
    single = json.loads(plain)
    assert set(single["settings"]) == {"l2"}  # EASE's lambda, chosen from the data
    assert set(first) - {"auto"} == set(single) - {"settings"}  # the same metric keys
    assert first["auto"]["winner"]["family"] in ("popularity", "itemknn", "ease")
    assert len(first["auto"]["trials"]) == 6 and first["auto"]["curve"]
    code, out, err = run(["evaluate", "--data", str(data_dir), "--model", "auto", "--budget",
                          "3s", "--families", "ease,itemknn"], capsys)
    assert code == 0, err
    assert "auto: what was tried" in out and "best so far" in out
    assert "auto: " in err and "refitted on train + valid" in err


def test_cli_compare_and_train_auto(data_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from lmrec.models import load_model

    report = tmp_path / "report"
    code, out, err = run(["compare", "--data", str(data_dir), "--models", "auto,ease",
                          "--max-trials", "4", "--families", "ease,itemknn", "--report",
                          str(report), "--json"], capsys)
    assert code == 0, err
    assert list(json.loads(out)) == ["auto", "ease"]
    md = (report / "report.md").read_text()
    assert "auto: every trial" in md and "auto: best so far" in md
    assert json.loads((report / "auto.json").read_text())["trials"]
    bundle = tmp_path / "bundle"
    code, _, err = run(["train", "--data", str(data_dir), "--model", "auto", "--max-trials",
                        "4", "--families", "ease,itemknn", "--out", str(bundle)], capsys)
    assert code == 0, err
    assert "auto: " in err and "Trained" in err
    doc = json.loads((bundle / "auto.json").read_text())
    model = load_model(bundle)
    assert model.name == doc["winner"]["family"] and doc["refit_on"] == "all data"


@pytest.mark.parametrize(("extra", "needle"), [
    (["--model", "auto", "--budget", "90"], "--budget"),
    (["--model", "auto", "--budget", "0s"], "--budget"),
    (["--model", "auto", "--budget", "-5m"], "--budget"),
    (["--model", "auto", "--budget", "1.5d"], "--budget"),
    (["--model", "auto", "--budget", "soon"], "--budget"),
    (["--model", "auto"], "--budget"),
    (["--model", "ease", "--budget", "5m"], "--budget"),
    (["--model", "ease", "--families", "ease"], "--families"),
    (["--model", "auto", "--budget", "5m", "--families", "ease,nope"], "--families"),
    (["--model", "auto", "--budget", "5m", "--max-trials", "0"], "--max-trials"),
    (["--model", "auto", "--budget", "5m", "--param", "l2=5"], "--param"),
    (["--model", "auto", "--budget", "5m", "--tune"], "--tune"),
    (["--model", "auto", "--budget", "5m", "--split", "kfold"], "--split"),
    (["--model", "auto", "--budget", "5m", "--part", "valid"], "--part"),
    (["--model", "auto", "--budget", "5m", "--ratios", "0.8,0.2"], "--split"),
])
def test_cli_evaluate_bad_auto_options(data_dir: Path, capsys: pytest.CaptureFixture[str],
                                       extra: list[str], needle: str) -> None:
    code, out, err = run(["evaluate", "--data", str(data_dir), *extra], capsys)
    one_error_line(code, err, needle, out)


@pytest.mark.parametrize(("command", "needle"), [
    (["train", "--model", "auto", "--budget", "15", "--out", "OUT"], "--budget"),
    (["train", "--model", "auto", "--budget", "1m", "--param", "l2=3", "--out", "OUT"],
     "--param"),
    (["train", "--model", "ease", "--max-trials", "3", "--out", "OUT"], "--max-trials"),
    (["compare", "--models", "auto,ease", "--budget", "0.0h", "--report", "OUT"], "--budget"),
    (["compare", "--models", "ease", "--budget", "1m", "--report", "OUT"], "--budget"),
    (["compare", "--models", "auto,ease", "--budget", "1m", "--ratios", "0.8,0.2",
      "--report", "OUT"], "--split"),
])
def test_cli_train_and_compare_bad_auto_options(
        data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        command: list[str], needle: str) -> None:
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    code, out, err = run([*args, "--data", str(data_dir)], capsys)
    one_error_line(code, err, needle, out)
    assert not (tmp_path / "out").exists()


def test_parse_duration() -> None:
    from lmrec.cli.options import parse_duration

    assert parse_duration("90s") == 90 and parse_duration("15m") == 900
    assert parse_duration("1.5h") == 5400 and parse_duration(" 2 M ") == 120
    for bad in ("90", "0s", "-1m", "1e3s", "inf s", "", "1.5d", "m"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_duration(bad)
