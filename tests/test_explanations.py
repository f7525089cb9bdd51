"""Known answers of every explanation method (lmrec.models.explanations) and the serving
engine's `because`, which must be the model's top-attributed history item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from helpers_serve import planted_bundle
from lmrec.data.dataset import Sequences
from lmrec.errors import InputError
from lmrec.models import create_model
from lmrec.models.base import Recommender
from lmrec.models.explanations import history_items, occlusion, without
from lmrec.models.sequential import SequenceNet
from lmrec.serve.bundle import load_bundle
from lmrec.serve.engine import Engine, Query
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions

TINY_SEQ = {"hidden": 8, "heads": 1, "inner": 8, "layers": 1, "epochs": 5, "batch_size": 8,
            "lr": 0.01, "dropout": 0.0, "loss": "gbce", "negatives": 8, "max_len": 5,
            "progress": False}


def _fit(name: str, **params: Any) -> Recommender:
    return create_model(name, params).fit(planted_dataset(), TrainingOptions(rng=0))


def _score(model: Recommender, user: int, history: np.ndarray | Sequences) -> np.ndarray:
    rows = history if isinstance(history, Sequences) else [np.asarray(history)]
    return model.score(np.array([user]), rows)[0].astype(np.float64)


# A history with a repeated item (its events count as one item) in a planted user's group
HISTORY = np.array([0, 3, 5, 3, 7])
EXPLAINED = np.array([1, 2, 4, 20])


def test_history_items_are_distinct_by_last_event_oldest_first() -> None:
    seqs = Sequences.from_lists([np.array([4, 2, 4, 9, 2])])
    assert history_items(seqs).tolist() == [4, 9, 2]
    rows = without(seqs, [np.array([2]), np.array([4, 9]), np.zeros(0, np.int64)])
    assert [rows.of(r).tolist() for r in range(3)] == [[4, 4, 9], [2, 2], [4, 2, 4, 9, 2]]


@pytest.mark.parametrize(("name", "params"), [
    ("ease", {"l2": 10.0}), ("slim", {}), ("admm-slim", {}), ("itemknn", {"k": 5}),
    ("ease", {"l2": 10.0, "weighting": "weight"})])
def test_linear_terms_are_exact_and_sum_to_the_score(name: str, params: dict[str, Any]
                                                     ) -> None:
    model = _fit(name, **params)
    e = model.explain(-1, HISTORY, EXPLAINED)
    assert e.method == "linear" and e.history.tolist() == [0, 5, 3, 7]
    weights = model.S_.toarray() if name == "itemknn" else model.B_
    # binary rows hold each distinct item once; weighted ones its summed event weights (1
    # per untyped event: item 3 occurs twice)
    x = np.array([(i == HISTORY).sum() if params.get("weighting") == "weight" else 1
                  for i in e.history])
    expect = (x[:, None] * weights[np.ix_(e.history, EXPLAINED)]).T
    np.testing.assert_allclose(e.contributions, expect, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(e.contributions.sum(axis=1),
                               _score(model, -1, HISTORY)[EXPLAINED], rtol=1e-5, atol=1e-6)


def test_als_terms_match_implicits_explain_and_sum_to_the_score() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    model = _fit("als", reg=5.0, factors=8, alpha=4.0)
    e = model.explain(0, HISTORY, EXPLAINED)
    assert e.method == "als-decomposition"
    np.testing.assert_allclose(e.contributions.sum(axis=1),
                               _score(model, 0, HISTORY)[EXPLAINED], rtol=1e-4, atol=1e-5)
    # implicit's own explain, on the confidences c = 1 + alpha x of the history's row
    ref = AlternatingLeastSquares(factors=8, regularization=5.0, alpha=1.0, dtype=np.float64)
    ref.item_factors = model.V_.astype(np.float64)
    conf = sp.csr_matrix((np.full(4, 5.0), (np.zeros(4, int), e.history)),
                         shape=(1, model.n_items))
    for k, item in enumerate(EXPLAINED):
        total, top, _ = ref.explain(0, conf, int(item), N=10)
        assert e.contributions[k].sum() == pytest.approx(total, rel=1e-4, abs=1e-6)
        got = dict(zip(e.history.tolist(), e.contributions[k].tolist(), strict=True))
        for other, value in top:
            assert got[int(other)] == pytest.approx(value, rel=1e-4, abs=1e-6)


def test_userknn_names_the_voters_and_its_terms_sum_to_the_score() -> None:
    model = _fit("userknn", k=5)
    e = model.explain(-1, HISTORY, EXPLAINED)
    score = _score(model, -1, HISTORY)[EXPLAINED]
    assert e.method == "neighbours" and len(e.neighbours) == EXPLAINED.size
    np.testing.assert_allclose(e.contributions.sum(axis=1), score, rtol=1e-5, atol=1e-6)
    for k, voters in enumerate(e.neighbours):
        assert sum(w for _, w in voters) == pytest.approx(score[k], rel=1e-5, abs=1e-6)
        weights = [w for _, w in voters]
        assert weights == sorted(weights, reverse=True)
        # every voter is a training user who has the item
        assert all(model.seen_[u, EXPLAINED[k]] > 0 for u, _ in voters)


def test_occlusion_is_the_exact_score_drop() -> None:
    model = _fit("multvae", hidden=(16,), latent=8, epochs=5, batch_size=8, progress=False)
    e = model.explain(-1, HISTORY, EXPLAINED)
    assert e.method == "occlusion"
    full = _score(model, -1, HISTORY)
    for j, item in enumerate(e.history):
        rest = HISTORY[item != HISTORY]
        np.testing.assert_allclose(e.contributions[:, j],
                                   (full - _score(model, -1, rest))[EXPLAINED], atol=1e-6)


def test_a_history_free_score_is_explained_as_non_personal() -> None:
    model = _fit("popularity")
    for e in (model.explain(0, HISTORY, EXPLAINED),
              occlusion(model, 0, Sequences.from_lists([HISTORY]), EXPLAINED)):
        assert e.method == "non-personal"
        assert e.history.size == 0 and e.contributions.shape == (EXPLAINED.size, 0)
        assert (e.top()[0] == -1).all()


class _LinearSeqNet(SequenceNet):
    """h_t = sum_{s <= t} x_s W: every score is linear in the position inputs x_s, so gradient
    x input is exactly x_s W . t_i."""

    def __init__(self, item_emb: nn.Embedding, w: Tensor) -> None:
        super().__init__()
        self.item_emb, self.drop, self.w = item_emb, nn.Dropout(0.0), nn.Parameter(w)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x = self.drop(self.item_emb(batch["items"]))  # (B, L, d)
        return torch.cumsum(x @ self.w, dim=1)

    def item_table(self) -> Tensor:
        return self.item_emb.weight


def test_gradient_x_input_is_exact_on_a_linear_network() -> None:
    model = _fit("gru4rec", embedding=4, hidden=8, epochs=1, batch_size=8, max_len=4,
                 progress=False)
    g = torch.Generator().manual_seed(0)
    emb = model.net_.item_emb
    model.net_ = _LinearSeqNet(emb, torch.randn(4, 4, generator=g))
    e = model.explain(-1, HISTORY, EXPLAINED)  # window: the last 4 events, 3 5 3 7
    assert e.method == "gradient x input"
    table = emb.weight.detach().numpy().astype(np.float64)
    w = model.net_.w.detach().numpy().astype(np.float64)
    expect = np.zeros((EXPLAINED.size, e.history.size))
    for item in (3, 5, 3, 7):  # the repeated item's two positions add up
        expect[:, list(e.history).index(item)] += (table[item + 1] @ w) @ table[EXPLAINED + 1].T
    np.testing.assert_allclose(e.contributions, expect, rtol=1e-4, atol=1e-6)
    assert e.contributions[:, list(e.history).index(0)].tolist() == [0.0] * 4  # out of window
    np.testing.assert_allclose(e.contributions.sum(axis=1),
                               _score(model, -1, HISTORY)[EXPLAINED], rtol=1e-4, atol=1e-6)


def _scaled_position_score(model: Recommender, module: nn.Module, history: np.ndarray,
                           position: int | None, factor: float, item: int) -> float:
    """The score of `item` with the output of `module` scaled by `factor` (at one window
    position, or all of it when None)."""

    def hook(_m: nn.Module, _i: object, out: Tensor) -> Tensor:
        out = out.clone()
        if position is None:
            return out * factor
        out[:, position] = out[:, position] * factor
        return out

    handle = module.register_forward_hook(hook)
    try:
        return float(_score(model, 0, history)[item])
    finally:
        handle.remove()


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_gradient_x_input_matches_finite_differences(name: str) -> None:
    params = dict(TINY_SEQ) if name == "sasrec" else {
        "embedding": 8, "hidden": 8, "epochs": 5, "batch_size": 8, "max_len": 5,
        "dropout": 0.0, "progress": False}
    model = _fit(name, **params)
    history = np.array([0, 3, 5, 7, 9])  # distinct, all in the window
    e = model.explain(0, history, EXPLAINED)
    eps = 1e-3
    for pos, item in enumerate(history):
        for k, target in enumerate(EXPLAINED):
            up = _scaled_position_score(model, model.net_.drop, history, pos, 1 + eps, target)
            down = _scaled_position_score(model, model.net_.drop, history, pos, 1 - eps,
                                          target)
            j = list(e.history).index(item)
            assert e.contributions[k, j] == pytest.approx((up - down) / (2 * eps),
                                                          rel=2e-2, abs=2e-4)


def test_two_tower_attributes_history_items_and_user_features() -> None:
    model = _fit("two-tower", epochs=3, batch_size=32, dim=8, id_dim=8, feature_dim=4,
                 layers=(16,), history="gru", progress=False)
    history = np.array([0, 3, 5])
    e = model.explain(0, history, EXPLAINED)
    assert e.method == "gradient x input" and "user id" in e.features
    assert e.features["user id"].shape == (EXPLAINED.size,)
    eps = 1e-3
    m = model.module_
    for k, target in enumerate(EXPLAINED):
        for pos in range(3):  # the tower reads the history right-aligned in its window
            window = m.user_hist.shape[1]
            args = (model, m.history.emb, history, window - 3 + pos)
            fd = (_scaled_position_score(*args, 1 + eps, target)
                  - _scaled_position_score(*args, 1 - eps, target)) / (2 * eps)
            j = list(e.history).index(history[pos])
            assert e.contributions[k, j] == pytest.approx(fd, rel=2e-2, abs=2e-4)
        fd = (_scaled_position_score(model, m.user_id, history, None, 1 + eps, target)
              - _scaled_position_score(model, m.user_id, history, None, 1 - eps, target))
        assert e.features["user id"][k] == pytest.approx(fd / (2 * eps), rel=2e-2, abs=2e-4)


def test_explain_refuses_bad_input() -> None:
    model = _fit("ease", l2=10.0)
    with pytest.raises(InputError, match="items to explain"):
        model.explain(0, HISTORY, np.array([model.n_items]))
    with pytest.raises(InputError, match="history items"):
        model.explain(0, np.array([-3]), EXPLAINED)
    with pytest.raises(InputError, match="one history"):
        model.explain(0, Sequences.from_lists([HISTORY, HISTORY]), EXPLAINED)
    with pytest.raises(InputError, match="user indices"):
        model.explain(10_000, HISTORY, EXPLAINED)


@pytest.mark.parametrize(("name", "params"), [("sasrec", TINY_SEQ), ("itemknn", {"k": 5}),
                                              ("als", {"reg": 5.0, "factors": 8})])
def test_the_engine_names_the_top_attributed_history_item(
        name: str, params: dict[str, Any], tmp_path: Path) -> None:
    engine = Engine(load_bundle(planted_bundle(tmp_path / "b", name, params)))
    user = int(engine.bundle.users.index(["a0"])[0])
    hist, n_live = engine.history(user, [])
    items, _ = engine.recommend(user, hist, n_live, Query(k=4, explain=True))
    idx = engine.item_indices([s.item for s in items])
    best, _ = engine.model.explain(user, hist, idx).top()
    assert [s.because for s in items] == [
        engine.external_item(int(b)) if b >= 0 else None for b in best]
    assert any(s.because is not None for s in items)
    for s in items:
        if s.because is not None:
            assert s.reason is not None and s.reason.startswith("because")
