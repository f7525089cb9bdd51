"""Sequential models: windows, causal masking, planted next-item patterns, history scoring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from lmrec import testing as T
from lmrec.data.dataset import Dataset, Sequences
from lmrec.errors import InputError
from lmrec.evaluate import evaluate, split_loo
from lmrec.models import GRU4Rec, Popularity, Recommender, SASRec, load_model
from lmrec.models.gru4rec import GRU4RecConfig, GRU4RecNet
from lmrec.models.hyperparams import ModelConfig
from lmrec.models.sasrec import SASRecConfig, SASRecNet
from lmrec.models.sequence_losses import gbce_beta, next_item_loss
from lmrec.models.sequential import SeqData, gather_windows, time_gap_tokens
from lmrec.prepare import prepare
from lmrec.train.options import TrainingOptions

TINY: dict[str, dict[str, Any]] = {
    "sasrec": {"hidden": 16, "heads": 2, "inner": 32, "layers": 1, "epochs": 40,
               "batch_size": 16, "lr": 0.01, "dropout": 0.0, "max_len": 6, "progress": False},
    "gru4rec": {"embedding": 16, "hidden": 16, "epochs": 40, "batch_size": 16, "lr": 0.01,
                "dropout": 0.0, "max_len": 6, "progress": False},
}
MODELS: dict[str, type[Recommender]] = {"sasrec": SASRec, "gru4rec": GRU4Rec}


def seqs_of(rows: list[list[int]], times: list[list[int]] | None = None) -> Sequences:
    s = Sequences.from_lists([np.array(r) for r in rows])
    if times is None:
        return s
    ts = np.concatenate([np.array(t, dtype=np.int64) for t in times])
    return Sequences(s.indptr, s.items, s.events, ts, ("click",))


# --- windows ---------------------------------------------------------------------------------
def test_windows_are_right_aligned_and_padded() -> None:
    values = np.array([5, 6, 7, 8, 9, 1, 2])  # row 0 = 5..9, row 1 = 1, 2
    out = gather_windows(values, np.array([0, 5]), np.array([5, 7]), 3, offset=1)
    assert out.tolist() == [[8, 9, 10], [0, 2, 3]]
    d = SeqData.from_sequences(seqs_of([[4, 5, 6, 7, 8, 9, 10], [1, 2], [3]]), ())
    assert d.last_windows(4)["items"].tolist() == [[8, 9, 10, 11], [0, 0, 2, 3], [0, 0, 0, 4]]


def test_training_chunks_cover_every_target_once() -> None:
    d = SeqData.from_sequences(seqs_of([[0, 1, 2, 3, 4, 5, 6], [7, 8], [9]]), ())
    rows, ends = d.training_chunks(3)
    assert rows.tolist() == [0, 0, 1] and ends.tolist() == [7, 4, 9]  # 6 targets -> 2 chunks
    b = d.chunk_batch(rows, ends, 3)
    # tokens are items + 1: each target is the item after its input
    assert b["items"].tolist() == [[4, 5, 6], [1, 2, 3], [0, 0, 8]]
    assert b["targets"].tolist() == [[5, 6, 7], [2, 3, 4], [0, 0, 9]]
    targets = b["targets"][b["targets"] > 0] - 1
    assert sorted(targets.tolist()) == [1, 2, 3, 4, 5, 6, 8]  # every non-first item once


def test_time_gap_tokens() -> None:
    s = seqs_of([[1, 2, 3], [4, 5]], [[0, 0, 1000], [50, -1]])
    # first event 0; same second -> bucket 1; 1000 s -> 1 + floor(log2(1001)) = 10; unknown 0
    assert time_gap_tokens(s).tolist() == [0, 1, 10, 0, 0]


def test_take_gathers_rows_in_order() -> None:
    s = seqs_of([[1, 2], [3], [4, 5, 6]])
    t = s.take(np.array([2, 0, 2]))
    assert t.indptr.tolist() == [0, 3, 5, 8]
    assert t.items.tolist() == [4, 5, 6, 1, 2, 4, 5, 6]


def test_gbce_beta_limits() -> None:
    assert gbce_beta(10, 101, 0.0) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(10, 101, 1.0) == pytest.approx(0.1)  # t = 1: beta = sampling rate


def test_next_item_loss_matches_its_formula() -> None:
    torch.manual_seed(0)
    emb = torch.randn(6, 4)  # row 0 = padding; tokens 1..5 = items 0..4
    hidden = torch.randn(1, 3, 4)
    batch = {"targets": torch.tensor([[0, 2, 3]]), "negatives": torch.tensor([[1, 4]])}
    # position 0 has no target; positions 1 and 2 target tokens 2 and 3 (items 1 and 2)
    h = hidden[0, 1:]
    logits = h @ emb[1:].T
    ce = (torch.logsumexp(logits, 1) - logits[[0, 1], [1, 2]]).mean()
    torch.testing.assert_close(next_item_loss(hidden, batch, emb, loss="ce"), ce)
    beta = gbce_beta(2, 5, 0.5)
    pos = (h * emb[[2, 3]]).sum(1)
    neg = h @ emb[[1, 4]].T
    gbce = (-beta * F.logsigmoid(pos) - F.logsigmoid(-neg).sum(1)).mean()
    torch.testing.assert_close(next_item_loss(hidden, batch, emb, loss="gbce", gbce_t=0.5),
                               gbce)


@pytest.mark.parametrize("loss", ["ce", "gbce"])
def test_next_item_loss_falls_and_ranks_the_targets_first(loss: str) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(1, 3, 4, requires_grad=True)
    emb = torch.randn(6, 4, requires_grad=True)
    batch = {"targets": torch.tensor([[0, 2, 3]]), "negatives": torch.tensor([[1, 4]])}
    opt = torch.optim.Adam([hidden, emb], lr=0.05)
    values = []
    for _ in range(150):
        opt.zero_grad()
        value = next_item_loss(hidden, batch, emb, loss=loss)
        value.backward()
        opt.step()
        values.append(value.item())
    assert values[-1] < 0.1 * values[0], (values[0], values[-1])
    with torch.no_grad():
        scores = hidden[0, 1:] @ emb.T  # (2 positions, 6 tokens)
    if loss == "ce":  # the whole catalogue: each target first
        assert scores[:, 1:].argmax(1).tolist() == [1, 2]
    else:  # sampled negatives: each target above every negative
        assert (scores[[0, 1], [2, 3]][:, None] > scores[:, [1, 4]]).all()


# --- networks ----------------------------------------------------------------------------
@pytest.mark.parametrize("net_name", ["sasrec", "gru4rec"])
def test_causal_prediction_ignores_later_items(net_name: str) -> None:
    torch.manual_seed(0)
    net: torch.nn.Module
    if net_name == "sasrec":
        net = SASRecNet(20, 1, SASRecConfig(hidden=8, heads=2, max_len=6, use_event_types=True,
                                            use_time_gaps=True))
    else:
        net = GRU4RecNet(20, 1, GRU4RecConfig(embedding=8, hidden=8, max_len=6,
                                              use_event_types=True, use_time_gaps=True))
    net.eval()
    a = torch.tensor([[0, 3, 4, 5, 6, 7]])
    b = torch.tensor([[0, 3, 4, 9, 1, 12]])  # positions 3.. differ
    ev = torch.tensor([[0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        ha = net({"items": a, "events": ev, "gaps": ev * 3})
        hb = net({"items": b, "events": ev, "gaps": ev * 3})
    assert torch.equal(ha[:, :3], hb[:, :3])
    assert not torch.allclose(ha[:, 3:], hb[:, 3:])


# --- models ------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "gbce"])
@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_learns_planted_cycle(name: str, loss: str, cycles: Dataset) -> None:
    model = MODELS[name](**TINY[name], loss=loss, negatives=4).fit(cycles,
                                                                   TrainingOptions(rng=0))
    vocab = cycles.items
    for start in (0, 3, 6):
        hist = [int(vocab.index([f"i{(start + t) % 8}"])[0]) for t in range(3)]
        scores = model.score(np.array([-1]), [np.array(hist)])
        best = vocab.to_python(int(scores[0].argmax()))
        assert best == f"i{(start + 3) % 8}", (start, best)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_gbce_and_side_embeddings_train(name: str, cycles: Dataset, tmp_path: Path) -> None:
    params = {**TINY[name], "loss": "gbce", "negatives": 4, "use_event_types": True,
              "use_time_gaps": True, "epochs": 3}
    model = MODELS[name](**params).fit(cycles, TrainingOptions(rng=1))
    path = model.save(tmp_path / name)
    loaded = load_model(path)
    hist = seqs_of([[1, 2, 3]], [[0, 10, 5000]])
    assert np.array_equal(model.score([-1], hist), loaded.score([-1], hist))
    assert np.array_equal(model.score(np.arange(5)), loaded.score(np.arange(5)))


def test_history_scoring_changes_scores(cycles: Dataset) -> None:
    model = SASRec(**{**TINY["sasrec"], "epochs": 2}).fit(cycles, TrainingOptions(rng=0))
    s = model.score(np.full(3, -1), [np.array([0, 1]), np.array([4, 5]), np.array([], np.int64)])
    assert s.shape == (3, cycles.n_items) and s.dtype == np.float32 and np.isfinite(s).all()
    assert not np.allclose(s[0], s[1])
    # the training history of a user gives the same scores as score(user)
    own = cycles.sequences().take(np.array([7]))
    assert np.allclose(model.score([-1], own), model.score(np.array([7])), atol=1e-6)
    with pytest.raises(InputError, match="internal indices"):
        model.score([-1], [np.array([cycles.n_items])])
    # a model whose scores do not depend on a history takes one all the same (and checks it)
    pop = Popularity().fit(cycles, TrainingOptions(rng=0))
    np.testing.assert_array_equal(pop.score([-1], [np.array([0])]), pop.score([-1]))
    with pytest.raises(InputError, match="internal indices"):
        pop.score([-1], [np.array([cycles.n_items])])


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_redacted_user_scores_as_unknown_and_empty_history(name: str, cycles: Dataset,
                                                           tmp_path: Path) -> None:
    params = {**TINY[name], "epochs": 2}
    T.check_redacted_user_is_unknown(lambda: MODELS[name](**params), tmp_path, cycles)
    model = MODELS[name](**params).fit(cycles, TrainingOptions(rng=0))
    before = model.score(np.arange(cycles.n_users))
    model.redact_users([3])
    after = model.score(np.arange(cycles.n_users))
    # (a batch of 60 rows and one of 1 may differ in the last float bit)
    np.testing.assert_allclose(after[3], model.score([-1], Sequences.empty(1))[0], atol=1e-6)
    np.testing.assert_array_equal(np.delete(after, 3, 0), np.delete(before, 3, 0))
    assert model.history_.of(3).size == 0
    assert cycles.sequences().of(3).size == 6  # the training Dataset is left alone


class _NextIndex(Recommender):
    """Scores item (last history item + 1) highest: shows which history evaluate passes."""

    name = "next-index"

    class Config(ModelConfig):
        pass

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        self.seqs_ = dataset.sequences()

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        seqs = self.seqs_.take(users) if histories is None else histories
        out = np.zeros((seqs.n_rows, self.n_items), dtype=np.float32)
        has = seqs.lengths() > 0
        last = seqs.items[seqs.indptr[1:][has] - 1]
        out[np.flatnonzero(has), (last + 1) % self.n_items] = 1.0
        return out


def test_evaluate_scores_test_from_train_plus_valid_history() -> None:
    # every user walks items 0, 1, 2, ... in time order: the test item follows the valid one
    rows = [(f"u{u}", f"i{t:02d}", t) for u in range(5) for t in range(u, u + 6)]
    ds = prepare(pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row"),
                 name="walk").dataset
    split = split_loo(ds)
    model = _NextIndex().fit(split.train)
    # valid: history = train, the next item is the valid item
    assert evaluate(model, split, [1], part="valid",
                    history="observed").metrics["hit@1"] == 1.0
    # test: history = train + valid; with train alone the guess would be the (masked) valid item
    assert evaluate(model, split, [1], part="test", history="observed").metrics["hit@1"] == 1.0
    assert evaluate(model, split, [1], part="test", history="observed",
                    batch_size=2).metrics["hit@1"] == 1.0
    # history="trained" scores from the fitted state (score(users)), as classic models are
    # evaluated: the guess is then the masked valid item, so the test item is not ranked first
    assert evaluate(model, split, [1], part="test", history="trained").metrics["hit@1"] < 1.0
