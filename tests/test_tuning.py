"""Hyperparameter search: validation part only, within the space, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers_cli import run
from lmrec.errors import ConfigError
from lmrec.evaluate import protocol, split_random, tune
from lmrec.models import create_model, model_class
from lmrec.models.hyperparams import FloatRange, IntRange
from lmrec.testing import planted_dataset


def test_tune_searches_validation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = planted_dataset()
    split = split_random(ds, (0.6, 0.2, 0.2), seed=0)
    parts: list[str] = []
    real = protocol.evaluate

    def spy(model, split_, ks, *, part="test", **kw):  # type: ignore[no-untyped-def]
        parts.append(part)
        return real(model, split_, ks, part=part, **kw)

    monkeypatch.setattr(protocol, "evaluate", spy)
    space = model_class("itemknn").Config.search_space
    result = tune(lambda p: create_model("itemknn", p), space, split, trials=6, seed=1)
    assert parts and set(parts) == {"valid"}
    assert len(result.trials) == 6
    assert result.best_value == max(t["value"] for t in result.trials)
    k, shrink = result.best_params["k"], result.best_params["shrink"]
    assert isinstance(space["k"], IntRange) and isinstance(space["shrink"], FloatRange)
    assert space["k"].low <= k <= space["k"].high
    assert space["shrink"].low <= shrink <= space["shrink"].high
    again = tune(lambda p: create_model("itemknn", p), space, split, trials=6, seed=1)
    assert again.best_params == result.best_params


def test_tune_keeps_fixed_parameters_and_needs_valid() -> None:
    ds = planted_dataset()
    split = split_random(ds, (0.6, 0.2, 0.2), seed=0)
    space = model_class("itemknn").Config.search_space
    result = tune(lambda p: create_model("itemknn", p), space, split, trials=3,
                  fixed={"k": 7})
    assert result.best_params["k"] == 7
    assert all(t["params"].keys() == {"shrink"} for t in result.trials)
    with pytest.raises(ConfigError, match="validation part"):
        tune(lambda p: create_model("itemknn", p), space,
             split_random(ds, (0.8, 0.2), seed=0), trials=2)
    with pytest.raises(ConfigError, match="nothing to tune"):
        tune(lambda p: create_model("ease", p), model_class("ease").Config.search_space,
             split, trials=2, fixed={"l2": 5.0})


def test_cli_tune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.csv"
    path.write_text("user,item\n" + "".join(f"u{u},i{(u * 7 + j) % 30}\n" for u in range(30)
                                            for j in range(10)))
    run(["data", "prepare", "--events", str(path), "--out", str(tmp_path / "d")], capsys)
    code, out, err = run(["evaluate", "--data", str(tmp_path / "d"), "--model", "ease",
                          "--tune", "--trials", "3", "--json"], capsys)
    assert code == 0, err
    assert "tuned on the validation part (3 trials" in err and "l2=" in err
    assert "ndcg@10" in json.loads(out)
    code, _, err = run(["evaluate", "--data", str(tmp_path / "d"), "--model", "ease",
                        "--tune", "--split", "kfold", "--folds", "2"], capsys)
    assert code == 2 and "single split" in err
