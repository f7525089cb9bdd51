"""The shared training loop (lmrec.train): determinism, resume, early stopping, the time
budget, losses, negative samplers."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lmrec.train import (
    EpochStats,
    NegativeSampler,
    TrainConfig,
    Trainer,
    bce_loss,
    bpr_loss,
    full_softmax_loss,
    in_batch_softmax_loss,
    run_epochs,
    sampled_softmax_loss,
    seen_keys,
    train,
)


class Interrupted(Exception):
    pass


class ToyTask:
    """Noisy linear regression through a dropout layer: uses both RNGs the loop owns."""

    def __init__(self, fail_at: int | None = None, metrics: list[float] | None = None) -> None:
        gen = np.random.default_rng(0)
        self.x = torch.from_numpy(gen.normal(size=(96, 4)).astype(np.float32))  # (N, 4)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 0.0])  # (N,)
        self.fail_at = fail_at
        self.metrics = metrics
        self.snapshots: list[dict[str, Tensor]] = []

    def build_module(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))

    def batches(self, epoch: int, rng: np.random.Generator) -> Iterator[dict[str, Tensor]]:
        if epoch == self.fail_at:
            raise Interrupted
        order = torch.from_numpy(rng.permutation(len(self.y)))
        for s in range(0, len(order), 16):
            idx = order[s : s + 16]
            yield {"x": self.x[idx], "y": self.y[idx]}

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()

    def validate(self, module: nn.Module) -> float | None:
        self.snapshots.append({k: v.clone() for k, v in module.state_dict().items()})
        if self.metrics is None:  # the loop hands over the module on its device (CUDA too)
            dev = next(module.parameters()).device
            return -float(self.loss(module, {"x": self.x.to(dev), "y": self.y.to(dev)}))
        return self.metrics[len(self.snapshots) - 1]


def _weights(module: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[Tensor], b: list[Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


CFG = TrainConfig(epochs=6, batch_size=16, lr=0.02, progress=False, num_threads=1)


def test_deterministic_and_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    r1 = train(ToyTask(), CFG, np.random.default_rng(3))
    r2 = train(ToyTask(), CFG, 3)
    assert torch.equal(before, torch.get_rng_state()), "the caller's torch RNG was touched"
    assert _same(_weights(r1.module), _weights(r2.module))
    r3 = train(ToyTask(), CFG, 4)
    assert not _same(_weights(r1.module), _weights(r3.module))
    assert r1.history[-1]["loss"] < r1.history[0]["loss"]
    assert r1.examples == 6 * 96 and r1.examples_per_s > 0


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    full = train(ToyTask(), CFG, 7)
    cfg = CFG.model_copy(update={"checkpoint_dir": tmp_path, "resume": True})
    with pytest.raises(Interrupted):
        train(ToyTask(fail_at=3), cfg, 7)
    assert (tmp_path / "checkpoint.pt").exists()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3
    resumed = train(ToyTask(), cfg, 7)
    assert _same(_weights(full.module), _weights(resumed.module))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert len(resumed.history) == CFG.epochs
    record = json.loads((tmp_path / "history.json").read_text())
    assert len(record["history"]) == CFG.epochs and record["best_epoch"] == full.best_epoch
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_early_stopping_restores_best_weights() -> None:
    task = ToyTask(metrics=[0.1, 0.5, 0.3, 0.2, 0.9, 0.9])
    cfg = CFG.model_copy(update={"patience": 2})
    result = train(task, cfg, 0)
    assert result.stopped_early and len(result.history) == 4
    assert result.best_epoch == 2 and result.best_metric == 0.5
    best = task.snapshots[1]
    assert all(torch.equal(v, best[k]) for k, v in result.module.state_dict().items())
    assert [h["metric"] for h in result.history] == [0.1, 0.5, 0.3, 0.2]


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_schedules_and_options(schedule: str) -> None:
    cfg = CFG.model_copy(update={"lr_schedule": schedule, "lr_step_epochs": 2, "lr_gamma": 0.5,
                                 "optimizer": "sgd", "lr": 0.01, "grad_clip": 1.0,
                                 "eval_every": 2})
    result = train(ToyTask(), cfg, 0)
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] == pytest.approx(0.01)
    if schedule == "step":
        assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])
    else:
        assert lrs[-1] < lrs[1] < lrs[0]
    assert [h["metric"] is not None for h in result.history] == [False, True] * 3


def test_config_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(epochs=2, nope=1)  # type: ignore[call-arg]


# --- losses on hand-computed values ---------------------------------------------------------
S = torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.5, -1.0]])  # (2, 3) scores; column 0/1 positive


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_bpr_and_bce_by_hand() -> None:
    pos, neg = S[:, 0], S[:, 1:]  # (2,), (2, 2)
    by_hand = np.mean([np.mean([-math.log(_sig(2 - 1)), -math.log(_sig(2 - 0))]),
                       np.mean([-math.log(_sig(0.5 - 1.5)), -math.log(_sig(0.5 + 1))])])
    assert float(bpr_loss(pos, neg)) == pytest.approx(by_hand, rel=1e-6)
    bce_rows = [(-math.log(_sig(2)) - math.log(1 - _sig(1)) - math.log(1 - _sig(0))) / 3,
                (-math.log(_sig(0.5)) - math.log(1 - _sig(1.5)) - math.log(1 - _sig(-1))) / 3]
    assert float(bce_loss(pos, neg)) == pytest.approx(np.mean(bce_rows), rel=1e-6)
    w = torch.tensor([3.0, 1.0])  # behaviour weights weight the positives
    assert float(bce_loss(pos, neg, w)) == pytest.approx(
        (3 * bce_rows[0] + bce_rows[1]) / 4, rel=1e-6)


def _ce(row: list[float], t: int) -> float:
    return -row[t] + math.log(sum(math.exp(v) for v in row))


def test_sampled_softmax_and_log_q_by_hand() -> None:
    target = torch.tensor([0, 1])
    plain = np.mean([_ce([2, 1, 0], 0), _ce([0.5, 1.5, -1], 1)])
    assert float(sampled_softmax_loss(S, target=target)) == pytest.approx(plain, rel=1e-6)
    assert float(full_softmax_loss(S, target)) == pytest.approx(plain, rel=1e-6)
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    shifted = [[v - math.log(q) for v, q in zip(r, [0.5, 0.25, 0.25], strict=True)]
               for r in ([2, 1, 0], [0.5, 1.5, -1])]
    corrected = np.mean([_ce(shifted[0], 0), _ce(shifted[1], 1)])
    assert float(sampled_softmax_loss(S, log_q, target=target)) == pytest.approx(corrected,
                                                                                 rel=1e-6)
    mask = torch.tensor([[False, False, True], [False, False, False]])
    masked = np.mean([_ce([2, 1], 0), _ce([0.5, 1.5, -1], 1)])
    assert float(sampled_softmax_loss(S, target=target, mask=mask)) == pytest.approx(masked,
                                                                                     rel=1e-6)


def test_in_batch_softmax_masks_repeated_items() -> None:
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (B=3, d=2)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ids = torch.tensor([5, 7, 7])  # rows 1 and 2 share item 7: not each other's negative
    logits = (u @ v.T).tolist()  # [[1,0,0],[0,1,1],[1,1,1]]
    expected = np.mean([_ce(logits[0], 0), _ce([logits[1][0], logits[1][1]], 1),
                         _ce([logits[2][0], logits[2][2]], 1)])
    assert float(in_batch_softmax_loss(u, v, ids)) == pytest.approx(expected, rel=1e-6)
    lq = torch.tensor([0.0, 0.0, 0.0])
    assert float(in_batch_softmax_loss(u, v, ids, log_q=lq, scale=1.0)) == pytest.approx(
        expected, rel=1e-6)
    extra = torch.tensor([[2.0, 0.0]])  # one shared extra negative, item 9, log q = log 0.5
    e_logits = (u @ extra.T)[:, 0].tolist()
    with_extra = np.mean([
        _ce([logits[0][0], logits[0][1], logits[0][2], e_logits[0] - math.log(0.5)], 0),
        _ce([logits[1][0], logits[1][1], e_logits[1] - math.log(0.5)], 1),
        _ce([logits[2][0], logits[2][2], e_logits[2] - math.log(0.5)], 1)])
    got = in_batch_softmax_loss(u, v, ids, log_q=lq, extra=extra, extra_ids=torch.tensor([9]),
                                extra_log_q=torch.tensor([math.log(0.5)]))
    assert float(got) == pytest.approx(with_extra, rel=1e-6)


# --- negatives ----------------------------------------------------------------------------
def test_samplers_exclude_seen_and_follow_popularity() -> None:
    import scipy.sparse as sp

    seen = sp.csr_matrix(np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=np.float32))
    sampler = NegativeSampler(5, keys=seen_keys(seen))
    rng = np.random.default_rng(0)
    neg = sampler.sample(np.array([0, 1] * 500), 3, rng)  # (1000, 3)
    assert neg.shape == (1000, 3)
    assert set(np.unique(neg[0::2])) == {3, 4} and 4 not in set(neg[1::2].ravel())
    pop = NegativeSampler(5, popularity=np.array([1.0, 1.0, 1.0, 1.0, 16.0]), alpha=0.5)
    draws = pop.sample(np.zeros(20000, np.int64), 1, rng).ravel()
    share = np.bincount(draws, minlength=5) / draws.size
    assert share[4] == pytest.approx(0.5, abs=0.02)  # 16^.5 / (4 + 16^.5)
    assert pop.probabilities()[4] == pytest.approx(0.5)


def test_train_config_of_a_model_config() -> None:
    from lmrec.models import NeuMF

    # every TrainConfig field is read from a model config that embeds them flat
    cfg = NeuMF.Config.from_params({"epochs": 7, "lr_schedule": "step", "patience": 2,
                                    "factors": 16, "batch_size": 4096})
    loop = TrainConfig.of(cfg)
    assert set(loop.model_dump()) == set(TrainConfig.model_fields)
    assert loop == TrainConfig(**{k: getattr(cfg, k) for k in TrainConfig.model_fields})
    assert (loop.epochs, loop.lr_schedule, loop.patience, loop.batch_size) == (7, "step", 2,
                                                                              4096)
    # a batch size left to the data (None) cannot make a loop config until the fit fills it in
    with pytest.raises(ValueError):
        TrainConfig.of(NeuMF.Config())
    assert TrainConfig.of(cfg, epochs=3, patience=None).epochs == 3
    assert TrainConfig.of(cfg, patience=None).patience is None
    with pytest.raises(ValueError, match="extra"):
        TrainConfig.of(cfg, factors=8)  # a model field is not the loop's


# --- run_epochs with a plain Python trainer ---------------------------------------------------
class Counter(Trainer):
    """State: one number, +1 per epoch; the metric of each validation comes from a list."""

    def __init__(self, metrics: list[float | None] | None = None, seconds: float = 0.0,
                 clock: list[float] | None = None) -> None:
        self.value = 0
        self.metrics = metrics
        self.seconds, self.clock = seconds, clock  # an epoch advances the fake clock
        self.epochs: list[int] = []

    def train_epoch(self, epoch: int) -> EpochStats:
        if self.clock is not None:
            self.clock[0] += self.seconds
        self.epochs.append(epoch)
        self.value += 1
        return EpochStats(loss=1.0 / self.value, examples=10)

    def validate(self) -> float | None:
        return None if self.metrics is None else self.metrics[self.value - 1]

    def snapshot(self) -> int:
        return self.value

    def restore(self, snapshot: int) -> None:
        self.value = snapshot


def test_run_epochs_early_stopping_restores_the_best_snapshot() -> None:
    trainer = Counter(metrics=[0.1, 0.4, 0.3, 0.35, 0.2, 0.9])
    result = run_epochs(trainer, epochs=6, patience=2, progress=False)
    assert trainer.epochs == [0, 1, 2, 3]  # two validations without improvement after epoch 2
    assert result.stopped_early and result.best_epoch == 2 and result.best_metric == 0.4
    assert trainer.value == 2  # the state of epoch 2, restored
    assert [h["metric"] for h in result.history] == [0.1, 0.4, 0.3, 0.35]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.examples == 40
    # no validation: every epoch runs and the last state stays
    plain = Counter()
    result = run_epochs(plain, epochs=3, progress=False)
    assert plain.value == 3 and result.best_epoch == 3 and not result.stopped_early
    assert result.best_metric is None and [h["loss"] for h in result.history] == [1, 0.5, 1 / 3]


def test_run_epochs_time_budget_stops_after_the_epoch_that_crosses_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lmrec.train import epochs as E

    clock = [100.0]  # a fake wall clock that only epochs advance
    monkeypatch.setattr(E.time, "perf_counter", lambda: clock[0])
    trainer = Counter(seconds=5.0, clock=clock)
    result = run_epochs(trainer, epochs=50, time_budget_s=12.0, progress=False)
    # 5 s per epoch: the budget is crossed during the third epoch, which completes
    assert trainer.epochs == [0, 1, 2] and result.stopped_early
    assert len(result.history) == 3 and trainer.value == 3 and result.best_epoch == 3
    assert result.seconds == 15.0 and [h["seconds"] for h in result.history] == [5.0] * 3
    # a budget met exactly counts as crossed; at least one epoch runs, however small it is
    exact = Counter(seconds=5.0, clock=clock)
    assert len(run_epochs(exact, epochs=50, time_budget_s=10.0, progress=False).history) == 2
    tiny = Counter(seconds=5.0, clock=clock)
    assert len(run_epochs(tiny, epochs=5, time_budget_s=1e-6, progress=False).history) == 1
    # without a budget every epoch runs
    free = Counter(seconds=5.0, clock=clock)
    assert not run_epochs(free, epochs=5, progress=False).stopped_early and free.value == 5
