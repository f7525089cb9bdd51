"""Scoring a history reads only the last position, at the width the history needs: hstu's
last-query-only last layer and the trimmed scoring window give the scores of the full-width
forward pass (what serving a fresh history relies on, benchmarks/serve_load.py --scenario
hstu)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from lmrec.data.dataset import Sequences
from lmrec.models import create_model
from lmrec.models.hstu import HSTUConfig, HSTUNet
from lmrec.models.sequential import SeqData
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions

SMALL: dict[str, Any] = {"hidden": 16, "heads": 2, "layers": 2, "epochs": 2, "batch_size": 16,
                         "max_len": 12, "progress": False}


@pytest.mark.parametrize("times", [False, True])
def test_hstu_hidden_last_is_the_forward_pass_last_position(times: bool) -> None:
    torch.manual_seed(0)
    net = HSTUNet(30, 2, HSTUConfig(hidden=8, heads=2, layers=3, max_len=7,
                                    use_event_types=True, use_time_gaps=True)).eval()
    with torch.no_grad():
        for mod in net.bias:  # visible biases (they start near 0)
            mod.pos.normal_()
            mod.time.normal_()
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0, 9]])
    batch = {"items": items, "events": (items > 0).long(), "gaps": items % 5}
    if times:
        batch["times"] = torch.tensor([[0, 0, 10, 20, 3000, -1, 10**6]] * 3)
    with torch.no_grad():
        want = net(batch)[:, -1]
        got = net.hidden_last(batch)
    assert got.shape == (3, 8)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["hstu", "sasrec", "gru4rec"])
def test_trimmed_scoring_gives_the_full_width_scores(name: str) -> None:
    ds = planted_dataset()
    params = {k: v for k, v in SMALL.items() if name != "gru4rec" or k != "heads"}
    model = create_model(name, params).fit(ds, TrainingOptions(rng=0))
    rng = np.random.default_rng(0)
    lengths = [3, 0, 20, 7, 1]  # shorter and longer than max_len, and empty
    hists = Sequences.from_lists([rng.integers(0, len(ds.items), n) for n in lengths])
    got = model.score(np.full(len(lengths), -1), hists)
    data = SeqData.from_sequences(hists, model.event_types_)
    full = data.last_windows(model.config.max_len)  # the untrimmed window
    with torch.no_grad():
        want = (model.net_(full)[:, -1] @ model.net_.item_table()[1:].T).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for n in (3, 0, 20):  # one history alone: scored at its own width
        one = Sequences.from_lists([rng.integers(0, len(ds.items), n)])
        width = model._score_width(SeqData.from_sequences(one, model.event_types_))
        assert width == (max(1, min(n, 12)) if model.trims_padding else 12)
