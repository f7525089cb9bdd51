"""Knowledge distillation of a sequential teacher into a smaller student (lmrec.models.distill)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from helpers_cli import one_error_line, run
from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError
from lmrec.models import GRU4Rec, Popularity, SASRec, load_model
from lmrec.models.distill import Distiller, distill_kl
from lmrec.prepare import prepare
from lmrec.train.options import TrainingOptions

N_ITEMS = 30
TEACHER: dict[str, Any] = {"hidden": 32, "heads": 2, "inner": 64, "layers": 2, "epochs": 30,
                           "batch_size": 16, "lr": 0.01, "dropout": 0.0, "max_len": 8,
                           "progress": False}
STUDENT: dict[str, Any] = {"hidden": 8, "heads": 1, "inner": 16, "layers": 1, "epochs": 30,
                           "batch_size": 16, "lr": 0.01, "dropout": 0.0, "max_len": 8,
                           "progress": False}


def walks(step: int | None, n_users: int = 60, length: int = 8, seed: int = 0,
          n_items: int = N_ITEMS) -> Dataset:
    """Users walk the ring of `n_items` items (item i -> i + step) from random starts; with
    step None every next item is drawn at random (nothing to learn but popularity). The items
    are listed in full, so every such dataset has the same item vocabulary."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        for t in range(length):
            item = (start + step * t) % n_items if step is not None else int(rng.integers(n_items))
            rows.append((f"u{u}", f"i{item:02d}", 1000 * t))
    events = pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")
    items = pl.DataFrame({"item": [f"i{i:02d}" for i in range(n_items)]})
    return prepare(events, items=items, name=f"walks-{step}").dataset


@pytest.fixture(scope="module")
def ring() -> Dataset:
    return walks(1)


@pytest.fixture(scope="module")
def noise() -> Dataset:
    return walks(None, seed=1)


@pytest.fixture(scope="module")
def teacher(ring: Dataset) -> SASRec:
    """A teacher that learnt the ring: after item i comes item i + 1."""
    return SASRec(**TEACHER).fit(ring, TrainingOptions(rng=0))


# --- the loss term ----------------------------------------------------------------------------
def test_kl_is_zero_when_the_student_equals_the_teacher() -> None:
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    assert distill_kl(logits, logits.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    # a per-row constant does not change a softmax
    shifted = logits + torch.arange(5.0)[:, None]
    assert distill_kl(shifted, logits, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_known_answer_with_temperature() -> None:
    """Teacher logits (log 3, 0), student (0, 0): at T = 1 p = (3/4, 1/4), q = (1/2, 1/2); at
    T = 2 the teacher's softmax is (sqrt 3, 1) / (1 + sqrt 3) and the term is scaled by T^2."""
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    expected_t1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert distill_kl(student, teacher, 1.0).item() == pytest.approx(expected_t1, rel=1e-5)
    p = math.sqrt(3) / (1 + math.sqrt(3))
    expected_t2 = 4 * (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5))
    assert distill_kl(student, teacher, 2.0).item() == pytest.approx(expected_t2, rel=1e-5)


def test_kl_gradient_reaches_the_student_only() -> None:
    student = torch.zeros(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    distill_kl(student, teacher, 2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    # no positions: zero, and still part of the graph
    empty = torch.zeros(0, 4, requires_grad=True)
    out = distill_kl(empty, torch.zeros(0, 4), 2.0)
    assert out.item() == 0.0 and out.requires_grad


def test_the_teacher_reads_behaviours_by_name() -> None:
    """Behaviour tokens are positions in each model's own list: the student's are mapped to
    the teacher's by name, unknown ones to 0 (padding/unknown)."""
    teacher: Any = SimpleNamespace(config=SimpleNamespace(max_len=8),
                                   event_types_=("buy", "view"))
    d = Distiller(teacher, ("view", "buy", "cart"), 1.0, 2.0)
    assert d.events.tolist() == [0, 2, 1, 0]


# --- fitting --------------------------------------------------------------------------------
def top_k(model: SASRec, histories: list[np.ndarray], k: int) -> np.ndarray:
    scores = model.score(np.full(len(histories), -1), histories)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of each row of `a` that is also in the same row of `b`."""
    return float(np.mean([np.isin(x, y).mean() for x, y in zip(a, b, strict=True)]))


def test_a_distilled_student_learns_what_only_the_teacher_knows(
        teacher: SASRec, noise: Dataset) -> None:
    """The student's own data is noise (random next items); the teacher knows the ring. The
    distilled student ranks the ring's next item first, the plain one does not, and its top-10
    overlaps the teacher's more."""
    plain = SASRec(**STUDENT).fit(noise, TrainingOptions(rng=0))
    taught = SASRec(**STUDENT, distill_weight=5.0).fit(
        noise, TrainingOptions(rng=0, teacher=teacher))
    histories = [np.array([(s + t) % N_ITEMS for t in range(5)]) for s in range(N_ITEMS)]
    following = np.array([(s + 5) % N_ITEMS for s in range(N_ITEMS)])
    assert (top_k(teacher, histories, 1)[:, 0] == following).mean() == 1.0
    hit_taught = (top_k(taught, histories, 1)[:, 0] == following).mean()
    hit_plain = (top_k(plain, histories, 1)[:, 0] == following).mean()
    assert hit_taught >= 0.8 > 0.2 >= hit_plain, (hit_taught, hit_plain)
    reference = top_k(teacher, histories, 10)
    assert overlap(top_k(taught, histories, 10), reference) > \
        overlap(top_k(plain, histories, 10), reference) + 0.1


def test_distillation_is_deterministic_with_a_seed(teacher: SASRec, ring: Dataset) -> None:
    a, b = (SASRec(**{**STUDENT, "epochs": 5, "dropout": 0.2}).fit(
        ring, TrainingOptions(rng=3, teacher=teacher)) for _ in range(2))
    users = np.arange(ring.n_users)
    np.testing.assert_array_equal(a.score(users), b.score(users))
    # the teacher was only read: its network is still on the CPU and unchanged
    assert next(teacher.net_.parameters()).device.type == "cpu"


def test_a_recurrent_teacher_teaches_a_transformer(ring: Dataset) -> None:
    gru = GRU4Rec(embedding=16, hidden=16, epochs=20, batch_size=16, lr=0.01, dropout=0.0,
                  max_len=8, progress=False).fit(ring, TrainingOptions(rng=0))
    student = SASRec(**{**STUDENT, "epochs": 3}).fit(ring, TrainingOptions(rng=0, teacher=gru))
    assert np.isfinite(student.score(np.arange(3))).all()


@pytest.mark.parametrize("case", ["other items", "not sequential", "not fitted",
                                  "shorter history", "itself"])
def test_a_teacher_that_cannot_teach_is_refused(case: str, teacher: SASRec,
                                                ring: Dataset) -> None:
    student = SASRec(**{**STUDENT, "epochs": 1})
    other: Any = {
        "other items": lambda: SASRec(**{**TEACHER, "epochs": 1}).fit(
            walks(1, n_items=N_ITEMS + 1), TrainingOptions(rng=0)),
        "not sequential": lambda: Popularity().fit(ring),
        "not fitted": lambda: SASRec(**TEACHER),
        "shorter history": lambda: SASRec(**{**TEACHER, "epochs": 1, "max_len": 4}).fit(
            ring, TrainingOptions(rng=0)),
        "itself": lambda: student,
    }[case]()
    with pytest.raises(ConfigError) as exc:
        student.fit(ring, TrainingOptions(rng=0, teacher=other))
    message = str(exc.value)
    assert "\n" not in message and message.startswith("teacher: "), message


def test_save_and_load_keep_no_teacher_state(teacher: SASRec, ring: Dataset,
                                             tmp_path: Path) -> None:
    plain = SASRec(**{**STUDENT, "epochs": 2}).fit(ring, TrainingOptions(rng=0))
    taught = SASRec(**{**STUDENT, "epochs": 2}).fit(ring, TrainingOptions(rng=0,
                                                                          teacher=teacher))
    plain.save(tmp_path / "plain")
    taught.save(tmp_path / "taught")
    with np.load(tmp_path / "plain" / "arrays.npz") as p, \
            np.load(tmp_path / "taught" / "arrays.npz") as t:
        assert {k: p[k].shape for k in p.files} == {k: t[k].shape for k in t.files}
    loaded = load_model(tmp_path / "taught")
    users = np.arange(ring.n_users)
    np.testing.assert_array_equal(loaded.score(users), taught.score(users))
    assert "teacher" not in (tmp_path / "taught" / "config.json").read_text()
    # a loaded student is as good a teacher as any fitted model
    SASRec(**{**STUDENT, "epochs": 1}).fit(ring, TrainingOptions(rng=0, teacher=loaded))


# --- CLI --------------------------------------------------------------------------------------
def _params(values: dict[str, Any]) -> list[str]:
    out = []
    for key, value in values.items():
        out += ["--param", f"{key}={value}"]
    return out


def test_cli_train_with_a_teacher(ring: Dataset, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    data, big, small = tmp_path / "data", tmp_path / "big", tmp_path / "small"
    ring.save(data)
    tiny = {**TEACHER, "epochs": 3}
    code, _, err = run(["train", "--data", str(data), "--model", "sasrec", "--out", str(big),
                        *_params(tiny)], capsys)
    assert code == 0, err
    student = {**STUDENT, "epochs": 2, "distill_temperature": 3}
    code, _, err = run(["train", "--data", str(data), "--model", "sasrec", "--out", str(small),
                        "--teacher", str(big), *_params(student)], capsys)
    assert code == 0, err
    model = load_model(small)
    assert model.config.hidden == STUDENT["hidden"] and model.config.distill_temperature == 3
    code, out, err = run(["recommend", str(small), "--user", "u0", "--json"], capsys)
    assert code == 0, err

    # refused before training, one line naming --teacher
    code, out, err = run(["train", "--data", str(data), "--model", "ease", "--out",
                          str(tmp_path / "e"), "--teacher", str(big)], capsys)
    one_error_line(code, err, "--teacher", out)
    code, out, err = run(["train", "--data", str(data), "--model", "sasrec", "--out",
                          str(tmp_path / "n"), "--teacher", str(tmp_path / "nothing")], capsys)
    one_error_line(code, err, "--teacher", out)
    other = tmp_path / "other"
    walks(1, n_items=N_ITEMS + 1).save(other)
    code, out, err = run(["train", "--data", str(other), "--model", "sasrec", "--out",
                          str(tmp_path / "o"), "--teacher", str(big), *_params(student)],
                         capsys)
    line = one_error_line(code, err, "--teacher", out)
    assert "items" in line
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
