"""`lmrec evaluate --transfer-from BUNDLE`: a text-native model trained by `lmrec train` on one
dataset, transferred zero-shot to another's catalogue and users, and evaluated.

Texts are encoded by the tiny deterministic bag-of-words encoder of test_text_native (patched in
for the whole module, so that the bundle trained once serves every test).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers_cli import one_error_line, run, run_ok
from lmrec.evaluate import evaluate, make_splits
from lmrec.models import load_model
from lmrec.models.text_transfer import transfer
from test_text_native import TINY, fake_item_text_vectors, groups

# the network of test_text_native's TINY, fewer epochs: the CLI must match the API, not learn
PARAMS = [f"{k}={v}" for k, v in {**TINY, "epochs": 5}.items() if k != "progress"]


@pytest.fixture(scope="module", autouse=True)
def fake_encoder() -> Iterator[None]:
    import lmrec.features.embedding_cache as cache

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache, "item_text_vectors", fake_item_text_vectors)
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Dataset folders a (source) and b (other item and user ids, another catalogue order,
    the same texts); bundles of sasrec trained on a: text (text_only), id+text (text=true) and
    ids (ids only)."""
    root = tmp_path_factory.mktemp("transfer")
    paths = {"a": groups().save(root / "a"),
             "b": groups(prefix="x", users="v", order=3).save(root / "b")}
    for name, extra in (("text", ["text_only=true"]), ("id+text", ["text=true"]),
                        ("ids", ["epochs=1"])):
        args = ["train", "--data", str(paths["a"]), "--model", "sasrec", "--out",
                str(root / name)]
        for p in [*PARAMS, *extra]:
            args += ["--param", p]
        run_ok(args)
        paths[name] = root / name
    return paths


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("bundle", ["text", "id+text"])
def test_transfer_from_gives_the_python_api_metrics(world: dict[str, Path], bundle: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["evaluate", "--data", str(world["b"]), "--transfer-from",
                          str(world[bundle]), "--k", "5,10", "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["transfer_from"] == str(world[bundle])
    from lmrec.data import Dataset

    split = make_splits(Dataset.load(world["b"]), "random", seed=0)[0]
    source = load_model(world[bundle])
    want = evaluate(transfer(source, split.train), split, [5, 10]).metrics
    assert want and all(_same(got[k], v) for k, v in want.items()), (got, want)
    assert want["ndcg@10"] > 0.2  # the alpha/beta groups carry over by their texts


def test_transfer_from_table_names_the_bundle(world: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["evaluate", "--data", str(world["b"]), "--transfer-from",
                          str(world["text"]), "--part", "valid"], capsys)
    assert code == 0, err
    title = "".join(out.split())  # the title may wrap anywhere in a narrow table
    assert f"sasrecfrom{world['text']}ondataset(randomsplit,valid," in title


def test_id_only_bundle_is_refused_in_one_line(world: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["evaluate", "--data", str(world["b"]), "--transfer-from",
                          str(world["ids"])], capsys)
    line = one_error_line(code, err, "--transfer-from", out)
    assert "text_only=true" in line and out == ""


@pytest.mark.parametrize(("args", "option"), [
    (["--model", "sasrec"], "--model"),
    (["--param", "epochs=2"], "--param"),
    (["--tune"], "--tune"),
    (["--split", "kfold"], "--split kfold"),
    (["--model", "auto", "--budget", "1m"], "--model"),
])
def test_transfer_from_conflicts(world: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                 args: list[str], option: str) -> None:
    code, out, err = run(["evaluate", "--data", str(world["b"]), "--transfer-from",
                          str(world["text"]), *args], capsys)
    one_error_line(code, err, option, out)


def test_not_a_bundle_and_no_model(world: dict[str, Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["evaluate", "--data", str(world["b"]), "--transfer-from",
                          str(world["a"])], capsys)  # a dataset folder, not a bundle
    assert "not a model bundle" in one_error_line(code, err, "--transfer-from", out)
    code, out, err = run(["evaluate", "--data", str(world["b"])], capsys)
    one_error_line(code, err, "--model", out)
