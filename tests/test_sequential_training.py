"""Training options of the sequential models: bf16 autocast, length-bucketed batches trimmed of
padding, and the sampled softmax over shared uniform negatives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from lmrec.data.dataset import Dataset, Sequences
from lmrec.errors import ConfigError
from lmrec.models import GRU4Rec, SASRec, load_model
from lmrec.models.sasrec import SASRecConfig, SASRecNet
from lmrec.models.sequence_losses import next_item_loss, sampled_softmax_loss
from lmrec.models.sequential import SeqData
from lmrec.prepare import prepare
from lmrec.train.options import TrainingOptions

TINY: dict[str, Any] = {"hidden": 16, "heads": 2, "inner": 32, "layers": 1, "epochs": 40,
                        "batch_size": 16, "lr": 0.01, "dropout": 0.0, "max_len": 6,
                        "progress": False}


@pytest.fixture(scope="module")
def cycles() -> Dataset:
    """Users walk a ring of 8 items (i -> i + 1 mod 8) from random starts, 3 to 9 steps."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        start, n = int(rng.integers(8)), int(rng.integers(3, 10))
        rows += [(f"u{u}", f"i{(start + t) % 8}", 1000 * t) for t in range(n)]
    events = pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")
    return prepare(events, name="cycles").dataset


def ranks_the_cycle(model: SASRec, data: Dataset) -> bool:
    vocab = data.items
    for start in (0, 3, 6):
        hist = [int(vocab.index([f"i{(start + t) % 8}"])[0]) for t in range(3)]
        scores = model.score(np.array([-1]), [np.array(hist)])
        if vocab.to_python(int(scores[0].argmax())) != f"i{(start + 3) % 8}":
            return False
    return True


def ragged(n_rows: int = 40, n_items: int = 30, seed: int = 0) -> SeqData:
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, n_items, int(rng.integers(1, 25))) for _ in range(n_rows)]
    return SeqData.from_sequences(Sequences.from_lists(rows), ())


# --- mixed precision ------------------------------------------------------------------------
def test_bf16_training_reaches_the_fp32_loss(cycles: Dataset) -> None:
    fp32 = SASRec(**TINY).fit(cycles, TrainingOptions(rng=0))
    bf16 = SASRec(**TINY, precision="bf16").fit(cycles, TrainingOptions(rng=0))
    a, b = fp32.training_log_[-1]["loss"], bf16.training_log_[-1]["loss"]
    first = fp32.training_log_[0]["loss"]
    assert a < 0.5 * first and abs(a - b) < 0.1 * first, (first, a, b)
    assert a != b  # autocast was on
    assert ranks_the_cycle(bf16, cycles)
    # weights (and so the optimizer's state and saved arrays) and scores stay fp32
    assert all(p.dtype == torch.float32 for p in bf16.net_.parameters())
    assert bf16.score(np.arange(3)).dtype == np.float32


# --- length buckets -------------------------------------------------------------------------
def test_trimmed_batch_gives_the_same_loss_per_window() -> None:
    """Known answer: a batch trimmed of left padding gives each window the loss (and hidden
    states at its items) of the full-width batch."""
    torch.manual_seed(0)
    data, max_len = ragged(), 32
    net = SASRecNet(30, 0, SASRecConfig(hidden=8, heads=2, inner=16, max_len=max_len)).eval()
    rows, ends = data.training_chunks(max_len)
    sel = np.arange(6)
    width = int(data.chunk_lengths(rows[sel], ends[sel], max_len).max())
    assert width < max_len
    full = data.chunk_batch(rows[sel], ends[sel], max_len)
    trim = data.chunk_batch(rows[sel], ends[sel], width)
    assert torch.equal(full["targets"][:, -width:], trim["targets"])
    assert (full["targets"][:, :-width] == 0).all()  # only padding was cut
    with torch.no_grad():
        hf, ht = net(full)[:, -width:], net(trim)
        keep = trim["targets"] > 0
        torch.testing.assert_close(hf[keep], ht[keep], rtol=1e-5, atol=1e-5)
        for b in range(sel.size):  # per window
            one = {k: v[b : b + 1] for k, v in full.items()}
            one_t = {k: v[b : b + 1] for k, v in trim.items()}
            torch.testing.assert_close(
                next_item_loss(net(one), one, net.item_emb.weight, loss="ce"),
                next_item_loss(net(one_t), one_t, net.item_emb.weight, loss="ce"),
                rtol=1e-5, atol=1e-5)


def test_buckets_train_every_window_once_with_less_padding() -> None:
    data, max_len = ragged(), 16
    rows, ends = data.training_chunks(max_len)
    lengths = data.chunk_lengths(rows, ends, max_len)

    def epoch(buckets: bool, seed: int = 3) -> list[dict[str, torch.Tensor]]:
        return list(data.epoch_batches(max_len, 8, np.random.default_rng(seed),
                                       length_buckets=buckets))

    def targets(batches: list[dict[str, torch.Tensor]]) -> list[tuple[int, ...]]:
        # each window's targets without padding, as a multiset over the epoch
        return sorted(tuple(r[r > 0].tolist()) for b in batches for r in b["targets"])

    plain, bucketed = epoch(False), epoch(True)
    assert len(plain) == len(bucketed) == -(-rows.size // 8)
    assert targets(bucketed) == targets(plain)  # every window once, none twice
    assert sum(b["targets"].shape[0] for b in bucketed) == rows.size
    for b in bucketed:  # trimmed to the batch's longest window
        assert b["items"].shape[1] == int((b["items"] > 0).sum(1).max())
    cells = sum(b["items"].numel() for b in bucketed)
    assert cells < sum(b["items"].numel() for b in plain)
    assert cells < 1.25 * lengths.sum()  # nearly no padding left
    # deterministic under a seed, different under another
    again = epoch(True)
    assert all(torch.equal(x["items"], y["items"]) for x, y in zip(bucketed, again, strict=True))
    other = epoch(True, seed=4)
    assert any(x["items"].shape != y["items"].shape or not torch.equal(x["items"], y["items"])
               for x, y in zip(bucketed, other, strict=True))


def test_plain_batches_are_unchanged_by_the_new_options() -> None:
    """Without buckets or shared negatives, the random stream (and so every earlier result)
    is what it was: a permutation, then the per-window negatives."""
    data, max_len = ragged(), 16
    rows, ends = data.training_chunks(max_len)
    rng = np.random.default_rng(7)
    order = rng.permutation(rows.size)
    first = data.chunk_batch(rows[order[:8]], ends[order[:8]], max_len)
    neg = rng.integers(1, 31, (8, 5), dtype=np.int64)
    got = next(data.epoch_batches(max_len, 8, np.random.default_rng(7), n_items=30,
                                  n_negatives=5))
    assert torch.equal(got["items"], first["items"])
    assert torch.equal(got["negatives"], torch.from_numpy(neg))


def test_bucketed_bf16_sampled_fit_is_deterministic_and_learns(cycles: Dataset) -> None:
    params = {**TINY, "length_buckets": True, "loss": "sampled", "negatives": 4,
              "precision": "bf16"}
    a = SASRec(**params).fit(cycles, TrainingOptions(rng=5))
    b = SASRec(**params).fit(cycles, TrainingOptions(rng=5))
    assert np.array_equal(a.score(np.arange(10)), b.score(np.arange(10)))
    assert ranks_the_cycle(a, cycles)


def test_bucketed_fit_learns_the_cycle(cycles: Dataset) -> None:
    model = SASRec(**{**TINY, "max_len": 12}, length_buckets=True).fit(cycles,
                                                                       TrainingOptions(rng=0))
    assert ranks_the_cycle(model, cycles)


# --- sampled softmax ------------------------------------------------------------------------
@pytest.mark.parametrize("logq", [True, False])
def test_sampled_loss_is_full_ce_when_every_item_is_drawn(logq: bool) -> None:
    torch.manual_seed(0)
    n, d = 9, 4
    emb = torch.randn(n + 1, d)  # row 0 = padding
    hidden = torch.randn(2, 5, d)
    targets = torch.tensor([[0, 0, 3, 9, 1], [2, 5, 5, 7, 8]])
    batch = {"targets": targets, "shared_negatives": torch.randperm(n) + 1}
    ce = next_item_loss(hidden, batch, emb, loss="ce")
    torch.testing.assert_close(next_item_loss(hidden, batch, emb, loss="sampled", logq=logq), ce)


@pytest.mark.parametrize("logq", [True, False])
def test_per_window_sampled_loss_is_full_ce_when_every_item_is_drawn(logq: bool) -> None:
    torch.manual_seed(0)
    n, d = 9, 4
    emb, hidden = torch.randn(n + 1, d), torch.randn(2, 5, d)
    targets = torch.tensor([[0, 0, 3, 9, 1], [2, 5, 5, 7, 8]])
    batch = {"targets": targets,
             "negatives": torch.stack([torch.randperm(n) + 1 for _ in range(2)])}  # (B, K)
    ce = next_item_loss(hidden, batch, emb, loss="ce")
    torch.testing.assert_close(next_item_loss(hidden, batch, emb, loss="sampled", logq=logq), ce)


def test_per_window_sampled_loss_matches_the_shared_one_per_window() -> None:
    torch.manual_seed(2)
    emb, hidden = torch.randn(31, 4), torch.randn(2, 5, 4)
    targets = torch.tensor([[0, 4, 3, 9, 1], [2, 5, 6, 7, 8]])
    neg = torch.tensor([[4, 11, 2, 11, 30], [1, 2, 3, 5, 20]])
    batch = {"targets": targets, "negatives": neg}
    want = torch.cat([torch.stack([
        sampled_softmax_loss(hidden[b, t : t + 1], targets[b, t : t + 1], emb, neg[b])
        for t in range(5) if targets[b, t] > 0]) for b in range(2)]).mean()
    torch.testing.assert_close(next_item_loss(hidden, batch, emb, loss="sampled"), want)


def test_sampled_loss_matches_its_formula() -> None:
    torch.manual_seed(1)
    n, d = 20, 3
    emb, h = torch.randn(n + 1, d), torch.randn(2, d)
    targets = torch.tensor([4, 7])
    neg = torch.tensor([4, 11, 2, 11])  # 4 is an accidental hit for the first position
    want = []
    for i, t in enumerate(targets.tolist()):
        pos = h[i] @ emb[t]
        kept = [k for k in neg.tolist() if k != t]
        corr = np.log((n - 1) / len(kept))
        z = torch.logsumexp(torch.stack([pos] + [h[i] @ emb[k] + corr for k in kept]), 0)
        want.append(z - pos)
    torch.testing.assert_close(sampled_softmax_loss(h, targets, emb, neg),
                               torch.stack(want).mean())
    plain = sampled_softmax_loss(h, targets, emb, neg, logq=False)
    logits = torch.cat([(h * emb[targets]).sum(1, keepdim=True), h @ emb[neg].T], 1)
    logits[0, 1] = float("-inf")
    torch.testing.assert_close(plain, F.cross_entropy(logits, torch.zeros(2, dtype=torch.long)))


def test_shared_negatives_are_drawn_per_batch() -> None:
    data = ragged()
    batches = list(data.epoch_batches(8, 16, np.random.default_rng(0), n_items=30,
                                      shared_negatives=12))
    for b in batches:
        neg = b["shared_negatives"]
        assert neg.shape == (12,) and int(neg.min()) >= 1 and int(neg.max()) <= 30
        assert "negatives" not in b
    assert not torch.equal(batches[0]["shared_negatives"], batches[1]["shared_negatives"])


# --- config refusals ------------------------------------------------------------------------
@pytest.mark.parametrize("params, word", [
    ({"precision": "fp16"}, "precision"),
    ({"loss": "softmax"}, "loss"),
    ({"length_buckets": "maybe"}, "length_buckets"),
    ({"negatives": 0}, "negatives"),
    ({"block": "post_ln"}, "block"),
    ({"sampled_per": "user"}, "sampled_per"),
])
def test_bad_values_are_refused_in_one_line(params: dict[str, Any], word: str) -> None:
    with pytest.raises(ConfigError) as info:
        SASRec(**params)
    assert word in str(info.value) and "\n" not in str(info.value)


def test_length_buckets_refused_where_positions_count_from_the_left(cycles: Dataset) -> None:
    model = GRU4Rec(embedding=8, hidden=8, max_len=6, epochs=1, progress=False,
                    length_buckets=True)
    with pytest.raises(ConfigError, match="length_buckets") as info:
        model.fit(cycles, TrainingOptions(rng=0))
    assert "\n" not in str(info.value)


# --- LiGR blocks ----------------------------------------------------------------------------
def test_ligr_blocks_gate_the_residual_and_learn(cycles: Dataset, tmp_path: Path) -> None:
    cfg = SASRecConfig(hidden=8, heads=2, inner=16, layers=1, max_len=6)
    plain = SASRecNet(10, 0, cfg)
    ligr = SASRecNet(10, 0, cfg.model_copy(update={"block": "ligr"}))
    assert not any("gate" in k for k in plain.state_dict())  # saved models keep their keys
    extra = set(ligr.state_dict()) - set(plain.state_dict())
    assert extra == {f"blocks.0.gate{i}.{w}" for i in (1, 2) for w in ("weight", "bias")}
    with torch.no_grad():  # a closed gate (sigmoid -> 0) leaves the residual stream alone
        block = ligr.blocks[0]
        for gate in (block.gate1, block.gate2):
            gate.weight.zero_()
            gate.bias.fill_(-1e4)
        x = torch.randn(2, 6, 8)
        mask = torch.ones(1, 1, 6, 6, dtype=torch.bool).tril()
        torch.testing.assert_close(block.eval()(x, mask), x)
    model = SASRec(**TINY, block="ligr").fit(cycles, TrainingOptions(rng=0))
    assert ranks_the_cycle(model, cycles)
    loaded = load_model(model.save(tmp_path / "ligr"))
    assert np.array_equal(model.score(np.arange(5)), loaded.score(np.arange(5)))


# --- raw timestamps in the batches (for hstu's time bias) -----------------------------------
def test_batches_carry_raw_timestamps() -> None:
    s = Sequences.from_lists([np.array([1, 2, 3]), np.array([4, 5])])
    s = Sequences(s.indptr, s.items, s.events, np.array([10, 20, -1, 7, 9]), ("click",))
    d = SeqData.from_sequences(s, ("click",))
    assert d.last_windows(4)["times"].tolist() == [[0, 10, 20, -1], [0, 0, 7, 9]]
    assert d.take(np.array([1])).last_windows(2)["times"].tolist() == [[7, 9]]
    rows, ends = d.training_chunks(4)
    b = d.chunk_batch(rows, ends, 4)  # inputs of the targets: the events before them
    assert b["times"].tolist() == [[0, 0, 10, 20], [0, 0, 0, 7]]
    bare = SeqData(d.indptr, d.items, d.events, d.gaps)  # built without times: none in batches
    assert "times" not in bare.last_windows(4)


def test_per_window_sampled_fit_learns_the_cycle(cycles: Dataset) -> None:
    model = SASRec(**TINY, loss="sampled", negatives=4).fit(cycles, TrainingOptions(rng=0))
    assert ranks_the_cycle(model, cycles)
