"""hstu: the pointwise aggregated attention and its biases against hand computations, causality,
padding invariance, a planted pattern, determinism and save/load. The shared contract
(tests/test_models_contract.py) covers it as a registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lmrec.data.dataset import Dataset, Sequences
from lmrec.models import HSTU, load_model
from lmrec.models.hstu import (
    POSITION_BUCKETS,
    HSTUConfig,
    HSTULayer,
    HSTUNet,
    RelativeBias,
    pointwise_attention,
    position_bucket,
    relative_buckets,
    time_bucket,
    times_from_gaps,
)
from lmrec.train.options import TrainingOptions

TINY: dict[str, Any] = {"hidden": 16, "heads": 2, "layers": 1, "epochs": 40, "batch_size": 16,
                        "lr": 0.01, "dropout": 0.0, "max_len": 6, "progress": False}


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def layer_norm(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:  # weight 1, bias 0
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + eps)


# --- the attention, by hand ----------------------------------------------------------------------
def test_pointwise_attention_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    b, h, length, dh, n = 2, 2, 4, 3, 5
    q, k, v = (rng.normal(size=(b, h, length, dh)) for _ in range(3))
    bias = rng.normal(size=(b, h, length, length))
    mask = np.tril(np.ones((length, length), bool))[None, None].repeat(b, 0)
    mask[1, :, :, 0] = False  # row 1's first position is padding
    want = (silu(q @ k.transpose(0, 1, 3, 2) + bias) * mask / n) @ v  # no softmax
    got = pointwise_attention(*(torch.from_numpy(a) for a in (q, k, v, bias, mask)), n)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_hstu_layer_matches_its_formula() -> None:
    """U, V, Q, K = split(SiLU(f1(LN(X)))); Y = f2(LN(A V) * U); X + Y (no dropout)."""
    torch.manual_seed(0)
    d, heads, length, n = 4, 2, 3, 6
    layer = HSTULayer(d, heads, n, 0.0).double().eval()
    x = torch.randn(1, length, d, dtype=torch.float64)
    bias = torch.randn(1, heads, length, length, dtype=torch.float64)
    mask = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        got = layer(x, bias, mask).numpy()[0]
    w1, b1 = layer.f1.weight.detach().numpy(), layer.f1.bias.detach().numpy()
    w2, b2 = layer.f2.weight.detach().numpy(), layer.f2.bias.detach().numpy()
    x0 = x.numpy()[0]  # (L, d)
    uvqk = silu(layer_norm(x0) @ w1.T + b1)  # (L, 4d)
    u, v, q, k = (uvqk[:, i * d:(i + 1) * d] for i in range(4))
    dh = d // heads
    av = np.zeros((length, d))
    causal = np.tril(np.ones((length, length)))
    for hh in range(heads):
        s = slice(hh * dh, (hh + 1) * dh)
        a = silu(q[:, s] @ k[:, s].T + bias.numpy()[0, hh]) * causal / n  # (L, L)
        av[:, s] = a @ v[:, s]
    want = x0 + (layer_norm(av) * u) @ w2.T + b2
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


# --- the biases ----------------------------------------------------------------------------------
def test_position_buckets_of_known_distances() -> None:
    d = torch.tensor([0, 1, 15, 16, 19, 20, 22, 31, 32, 64, 128, 255, 256, 1000, -3])
    want = [0, 1, 15, 16, 16, 17, 17, 19, 20, 24, 28, 31, 31, 31, 0]
    assert position_bucket(d).tolist() == want
    assert POSITION_BUCKETS == 32


def test_time_buckets_of_known_gaps() -> None:
    gap = torch.tensor([0, 1, 2, 3, 59, 3600, 86400, 10**12, 5])
    known = torch.tensor([True] * 8 + [False])
    # 1 + floor(log2(1 + gap)), capped at 31; unknown -> 0
    assert time_bucket(gap, known, 32).tolist() == [1, 2, 2, 3, 6, 12, 17, 31, 0]


def test_times_rebuilt_from_gap_tokens() -> None:
    # token k >= 2 is a gap in [2^(k-1) - 1, 2^k - 1), taken as 1.5 2^(k-1) - 1
    assert times_from_gaps(torch.tensor([[0, 1, 2, 3]])).tolist() == [[0.0, 0.0, 2.0, 7.0]]


def test_raw_timestamps_give_exact_gaps_and_unknown_is_bucket_zero() -> None:
    batch = {"items": torch.tensor([[0, 5, 6, 7]]), "gaps": torch.zeros(1, 4, dtype=torch.long),
             "times": torch.tensor([[0, 100, 160, -1]])}
    rel, tb = relative_buckets(batch, 32)
    assert rel.tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [2, 1, 0, 0], [3, 2, 1, 0]]
    # |160 - 100| = 60 -> 1 + floor(log2 61) = 6; padding (column/row 0) and t = -1 -> 0
    assert tb[0].tolist() == [[0, 0, 0, 0], [0, 1, 6, 0], [0, 6, 1, 0], [0, 0, 0, 0]]


def test_a_bias_entry_set_by_hand_moves_exactly_its_logits() -> None:
    heads, buckets, length = 2, 8, 5
    mod = RelativeBias(heads, buckets, time_bias=True)
    with torch.no_grad():
        mod.pos.zero_()
        mod.time.zero_()
    times = torch.tensor([[0, 0, 10, 10, 1000]])
    batch = {"items": torch.tensor([[1, 2, 3, 4, 5]]), "times": times}
    rel, tb = relative_buckets(batch, buckets)
    before = mod(rel, tb).detach()  # (1, h, L, L)
    assert torch.equal(before, torch.zeros(1, heads, length, length))
    with torch.no_grad():
        mod.pos[0, 2] = 1.5  # head 0, distance 2
        mod.time[1, 4] = -0.75  # head 1, gaps 7..14 s (|10 - 0| = 10)
    moved = mod(rel, tb).detach() - before
    i, j = np.indices((length, length))
    want = np.zeros((heads, length, length), np.float32)
    want[0][i - j == 2] = 1.5
    t = times[0].numpy()
    want[1][np.abs(t[:, None] - t[None, :]) == 10] = -0.75
    assert torch.equal(moved[0], torch.from_numpy(want))
    # and the logits of the attention move by exactly that much
    q, k = (torch.randn(1, heads, length, 3) for _ in range(2))
    mask = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
    logit = pointwise_attention(  # v = I: the attention weights themselves
        q, k, torch.eye(length).expand(1, heads, -1, -1), before + moved, mask, 1)
    silu_t = torch.nn.functional.silu
    assert torch.allclose(logit, silu_t(q @ k.transpose(-2, -1) + moved) * mask, atol=1e-6)


# --- the network ---------------------------------------------------------------------------------
def _net(**kw: Any) -> HSTUNet:
    torch.manual_seed(0)
    cfg = HSTUConfig(hidden=8, heads=2, layers=2, max_len=6, **kw)
    with torch.no_grad():
        net = HSTUNet(20, 1, cfg)
        for mod in net.bias:  # visible biases, so that the checks below exercise them
            mod.pos.normal_()
            mod.time.normal_()
    return net.eval()


@pytest.mark.parametrize("times", [False, True])
def test_a_later_position_changes_nothing_earlier(times: bool) -> None:
    net = _net(use_event_types=True, use_time_gaps=True)
    ev = torch.tensor([[0, 1, 1, 1, 1, 1]])
    a = {"items": torch.tensor([[0, 3, 4, 5, 6, 7]]), "events": ev, "gaps": ev * 3}
    b = {"items": torch.tensor([[0, 3, 4, 9, 1, 12]]), "events": ev,
         "gaps": torch.tensor([[0, 3, 3, 9, 2, 20]])}  # positions 3.. differ, times too
    if times:
        a["times"] = torch.tensor([[0, 10, 20, 30, 40, 50]])
        b["times"] = torch.tensor([[0, 10, 20, 9000, -1, 10**9]])
    with torch.no_grad():
        ha, hb = net(a), net(b)
    assert torch.equal(ha[:, :3], hb[:, :3])
    assert not torch.allclose(ha[:, 3:], hb[:, 3:])


@pytest.mark.parametrize("times", [False, True])
def test_left_padding_changes_nothing(times: bool) -> None:
    net = _net(use_time_gaps=True)
    items = torch.tensor([[4, 9, 2, 7]])
    gaps = torch.tensor([[0, 5, 12, 3]])
    short = {"items": torch.cat([torch.zeros(1, 2, dtype=torch.long), items], 1),
             "gaps": torch.cat([torch.zeros(1, 2, dtype=torch.long), gaps], 1)}  # L = 6
    long = {k: torch.cat([torch.zeros(1, 5, dtype=torch.long), v], 1)
            for k, v in short.items()}  # L = 11: five more padding positions
    if times:
        short["times"] = torch.tensor([[0, 0, 100, 200, 5000, 5004]])
        long["times"] = torch.cat([torch.zeros(1, 5, dtype=torch.long), short["times"]], 1)
    with torch.no_grad():
        hs, hl = net(short)[:, -1], net(long)[:, -1]
    torch.testing.assert_close(hs, hl, rtol=1e-5, atol=1e-6)
    both = {k: torch.cat([short[k], short[k]]) for k in short}  # and a batch of two rows
    with torch.no_grad():
        torch.testing.assert_close(net(both)[0, -1], hs[0], rtol=1e-5, atol=1e-6)


# --- the model -----------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "gbce"])
def test_learns_planted_cycle(loss: str, cycles: Dataset) -> None:
    model = HSTU(**TINY, loss=loss, negatives=4).fit(cycles, TrainingOptions(rng=0))
    vocab = cycles.items
    for start in (0, 3, 6):
        hist = [int(vocab.index([f"i{(start + t) % 8}"])[0]) for t in range(3)]
        scores = model.score(np.array([-1]), [np.array(hist)])
        best = vocab.to_python(int(scores[0].argmax()))
        assert best == f"i{(start + 3) % 8}", (start, best)


def test_two_fits_with_a_seed_score_identically(cycles: Dataset) -> None:
    params = {**TINY, "epochs": 3, "dropout": 0.2}
    a = HSTU(**params).fit(cycles, TrainingOptions(rng=7)).score(np.arange(cycles.n_users))
    b = HSTU(**params).fit(cycles, TrainingOptions(rng=7)).score(np.arange(cycles.n_users))
    assert np.array_equal(a, b)


def test_save_load_keeps_scores(cycles: Dataset, tmp_path: Path) -> None:
    params = {**TINY, "epochs": 3, "loss": "gbce", "negatives": 4, "use_event_types": True,
              "use_time_gaps": True, "time_buckets": 16}
    model = HSTU(**params).fit(cycles, TrainingOptions(rng=1))
    loaded = load_model(model.save(tmp_path / "hstu"))
    assert isinstance(loaded, HSTU) and loaded.config == model.config
    s = Sequences.from_lists([np.array([1, 2, 3])])
    hist = Sequences(s.indptr, s.items, s.events, np.array([0, 10, 5000]), ("click",))
    assert np.array_equal(model.score([-1], hist), loaded.score([-1], hist))
    assert np.array_equal(model.score(np.arange(5)), loaded.score(np.arange(5)))


def test_without_time_bias_has_no_time_table() -> None:
    net = HSTUNet(10, 1, HSTUConfig(hidden=8, heads=2, time_bias=False))
    assert all(b.time is None for b in net.bias)
    out = net({"items": torch.tensor([[0, 1, 2]]), "gaps": torch.zeros(1, 3, dtype=torch.long)})
    assert out.shape == (1, 3, 8)


@pytest.mark.skipif("length_buckets" not in HSTUConfig.model_fields,
                    reason="the sequential family has no length-bucketed batches")
def test_length_bucketed_batches_train(cycles: Dataset) -> None:
    params = {**TINY, "epochs": 2, "length_buckets": True}
    model = HSTU(**params).fit(cycles, TrainingOptions(rng=0))
    assert np.isfinite(model.score(np.arange(3))).all()


def test_absolute_positions_count_from_the_most_recent_item() -> None:
    net = _net(abs_positions=True)
    items = torch.tensor([[4, 9, 2, 7]])
    full = {"items": torch.cat([torch.zeros(1, 2, dtype=torch.long), items], 1),
            "times": torch.tensor([[0, 0, 100, 200, 5000, 5004]])}  # L = max_len = 6
    trimmed = {k: v[:, 2:] for k, v in full.items()}  # the left padding cut off: L = 4
    with torch.no_grad():
        torch.testing.assert_close(net(full)[:, -1], net(trimmed)[:, -1], rtol=1e-5,
                                   atol=1e-6)
        no_pos = _net()(full)[:, -1]
    assert not torch.allclose(net(full)[:, -1], no_pos)
