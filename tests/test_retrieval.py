"""ItemIndex: exact and HNSW inner-product top-k, exclusions, filters, persistence, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmrec.errors import ConfigError, InputError
from lmrec.serve.retrieval import ItemIndex


def factor_like(n: int, n_queries: int, dim: int = 32, *, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Items and queries like a trained factor model's: low rank, clustered, varying norms."""
    rng = np.random.default_rng(seed)
    rank = 12
    basis = rng.standard_normal((rank, dim)) / np.sqrt(rank)
    spectrum = 1 / np.sqrt(np.arange(1, rank + 1))
    centres = rng.standard_normal((100, rank)) * spectrum
    items = centres[rng.integers(0, 100, n)] + 0.5 * rng.standard_normal((n, rank)) * spectrum
    items = items @ basis * np.exp(0.3 * rng.standard_normal((n, 1)))
    users = (centres[rng.integers(0, 100, n_queries)]
             + 0.3 * rng.standard_normal((n_queries, rank)) * spectrum) @ basis
    noise = 0.02 * rng.standard_normal((n + n_queries, dim))
    return (items + noise[:n]).astype(np.float32), (users + noise[n:]).astype(np.float32)


def brute_force(q: np.ndarray, v: np.ndarray, k: int, banned: np.ndarray | None = None
                ) -> np.ndarray:
    """(B, k) best items by inner product, ties to the smaller index; banned (B, n) bool.
    Each score is summed the same way (not by BLAS, whose order depends on the item's place in
    its blocking), so identical vectors tie exactly."""
    v64 = v.astype(np.float64)
    s = np.stack([(v64 * row).sum(axis=1) for row in q.astype(np.float64)])
    if banned is not None:
        s[banned] = -np.inf
    order = np.lexsort((np.broadcast_to(np.arange(v.shape[0]), s.shape), -s), axis=1)
    return order[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float((found[:, :, None] == truth[:, None, :]).any(axis=1).mean())


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    return factor_like(20_000, 300)


@pytest.fixture(scope="module")
def hnsw(catalogue: tuple[np.ndarray, np.ndarray]) -> ItemIndex:
    # one build thread: the graph (and so the recall) is the same on every run
    return ItemIndex.build(catalogue[0], kind="hnsw", threads=1)


def banned_mask(n_rows: int, n: int, exclude: list[np.ndarray], allowed: np.ndarray | None
                ) -> np.ndarray:
    banned = np.zeros((n_rows, n), dtype=bool)
    for r, e in enumerate(exclude):
        banned[r, e] = True
    if allowed is not None:
        banned[:, ~allowed] = True
    return banned


def test_exact_equals_brute_force(rng: np.random.Generator) -> None:
    v = rng.standard_normal((700, 16)).astype(np.float32)
    v[5] = v[9]  # a tie: the smaller index must come first
    q = rng.standard_normal((25, 16)).astype(np.float32)
    q[0] = v[5] * 3
    index = ItemIndex.build(v, kind="exact")
    idx, scores = index.search(q, 12)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(idx, brute_force(q, v, 12))
    np.testing.assert_allclose(scores, np.take_along_axis(q @ v.T, idx, axis=1), rtol=1e-5)
    assert list(idx[0, :2]) == [5, 9]
    assert (np.diff(scores, axis=1) <= 0).all()


def test_exact_search_breaks_many_ties_by_the_smaller_index(rng: np.random.Generator) -> None:
    # 60 vectors, each the vector of about 15 items spread over the catalogue, some negated
    # (sign flips are exact), and 40 zero vectors: every score is shared by many items, and a
    # BLAS product may round two copies of one vector apart by a bit
    v = rng.standard_normal((60, 24)).astype(np.float32)[rng.integers(0, 60, 900)]
    v[::7] *= -1
    v[rng.choice(900, 40, replace=False)] = 0
    q = rng.standard_normal((80, 24)).astype(np.float32)
    index = ItemIndex.build(v, kind="exact")
    for allowed in (None, rng.random(900) < 0.3, rng.random(900) < 0.8):  # gather, blank
        banned = None if allowed is None else np.broadcast_to(~allowed, (80, 900))
        idx, scores = index.search(q, 40, allowed=allowed)
        np.testing.assert_array_equal(idx, brute_force(q, v, 40, banned))
        same = np.all(v[idx[:, 1:]] == v[idx[:, :-1]], axis=2)
        assert (scores[:, 1:][same] == scores[:, :-1][same]).all()  # copies score alike


def test_top_k_keeps_the_smallest_indices_tied_at_the_cut() -> None:
    from lmrec.models.ranking import top_k

    scores = np.zeros((2, 1000), np.float32)
    scores[:, 500:] = 1.0
    scores[1, :3] = -np.inf
    idx, vals = top_k(scores, 510)  # the cut falls among 500 zeros: 0..9 must be kept
    np.testing.assert_array_equal(idx[0], np.r_[500:1000, 0:10])
    np.testing.assert_array_equal(idx[1], np.r_[500:1000, 3:13])
    assert (vals[:, :500] == 1).all() and (vals[:, 500:] == 0).all()


def test_auto_kind_switches_at_threshold(catalogue: tuple[np.ndarray, np.ndarray]) -> None:
    v = catalogue[0][:2000]
    assert ItemIndex.build(v).kind == "exact"
    assert ItemIndex.build(v, exact_below=1000, threads=1).kind == "hnsw"


def test_hnsw_recall_and_exact_scores(hnsw: ItemIndex,
                                      catalogue: tuple[np.ndarray, np.ndarray]) -> None:
    v, q = catalogue
    idx, scores = hnsw.search(q, 10)
    assert recall(idx, brute_force(q, v, 10)) >= 0.95
    # the scores are the true inner products of the returned items, best first
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", q, v[idx]), rtol=1e-4,
                               atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_exclude_and_allowed_are_honoured(kind: str, hnsw: ItemIndex,
                                          catalogue: tuple[np.ndarray, np.ndarray],
                                          rng: np.random.Generator,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    v, q = catalogue
    q = q[:100]
    index = hnsw if kind == "hnsw" else ItemIndex.build(v, kind="exact")
    if kind == "hnsw":  # this filter is mild: the ANN must answer by over-fetching alone
        monkeypatch.setattr(index, "_search_exact", None)
    # like a heavy user's seen items: 100 of the row's exact top 300
    exclude = [rng.choice(row, 100, replace=False) for row in brute_force(q, v, 300)]
    allowed = rng.random(v.shape[0]) < 0.9
    banned = banned_mask(q.shape[0], v.shape[0], exclude, allowed)
    idx, scores = index.search(q, 10, exclude=exclude, allowed=allowed)
    assert (idx >= 0).all() and np.isfinite(scores).all()  # k results: plenty remain
    assert not np.take_along_axis(banned, idx, axis=1).any()
    truth = brute_force(q, v, 10, banned)
    if kind == "exact":
        np.testing.assert_array_equal(idx, truth)
    else:
        assert recall(idx, truth) >= 0.9


class _SearchSpy:
    """Wraps a faiss index and records the k of every search."""

    def __init__(self, index: object) -> None:
        self.index, self.ks = index, []

    def search(self, x: np.ndarray, k: int, **kw: object) -> tuple[np.ndarray, np.ndarray]:
        self.ks.append(k)
        return self.index.search(x, k, **kw)


def test_ann_fetches_more_until_k_survive(hnsw: ItemIndex,
                                          catalogue: tuple[np.ndarray, np.ndarray],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    v, q = catalogue
    q = q[:5]
    # a filter against the queries' own neighbourhoods (their top 150): the first fetch,
    # sized for a 4% filter, finds nothing allowed and has to grow
    allowed = np.ones(v.shape[0], dtype=bool)
    allowed[brute_force(q, v, 150)] = False
    spy = _SearchSpy(hnsw._faiss)
    monkeypatch.setattr(hnsw, "_faiss", spy)
    idx, scores = hnsw.search(q, 10, allowed=allowed)
    assert spy.ks[:4] == [11, 22, 44, 88]
    assert (idx >= 0).all() and np.isfinite(scores).all()
    assert allowed[idx].all()
    truth = brute_force(q, v, 10, banned_mask(5, v.shape[0], [], allowed))
    assert recall(idx, truth) >= 0.8  # ranks 151-160: deeper in the graph than a top 10 (0.9)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_selective_filter_is_exact_and_pads(kind: str, hnsw: ItemIndex,
                                            catalogue: tuple[np.ndarray, np.ndarray],
                                            rng: np.random.Generator) -> None:
    v, q = catalogue
    q = q[:20]
    index = hnsw if kind == "hnsw" else ItemIndex.build(v, kind="exact")
    allowed = np.zeros(v.shape[0], dtype=bool)
    allowed[rng.choice(v.shape[0], 40, replace=False)] = True
    exclude = [rng.choice(np.flatnonzero(allowed), 5, replace=False) for _ in range(q.shape[0])]
    idx, _ = index.search(q, 10, exclude=exclude, allowed=allowed)
    truth = brute_force(q, v, 10, banned_mask(q.shape[0], v.shape[0], exclude, allowed))
    np.testing.assert_array_equal(idx, truth)  # a 0.2% filter falls back to exact search

    # fewer eligible items than k: all of them, then padding
    few = np.zeros(v.shape[0], dtype=bool)
    few[[3, 70, 900]] = True
    idx, scores = index.search(q[:2], 5, exclude=[np.array([70]), np.array([], np.int64)],
                               allowed=few)
    assert sorted(idx[0, :2]) == [3, 900] and (idx[0, 2:] == -1).all()
    assert sorted(idx[1, :3]) == [3, 70, 900] and (idx[1, 3:] == -1).all()
    assert np.isneginf(scores[0, 2:]).all() and np.isfinite(scores[1, :3]).all()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_save_load_round_trip(kind: str, tmp_path: Path,
                              catalogue: tuple[np.ndarray, np.ndarray]) -> None:
    v, q = catalogue
    index = ItemIndex.build(v[:3000], kind=kind, ef_search=40, threads=1)
    index.save(tmp_path / "idx")
    loaded = ItemIndex.load(tmp_path / "idx")
    assert (loaded.kind, loaded.n_items, loaded.dim) == (kind, 3000, v.shape[1])
    assert loaded.ef_search == index.ef_search
    exclude = [np.arange(r, r + 30) for r in range(q.shape[0])]
    for a, b in zip(index.search(q, 10, exclude=exclude),
                    loaded.search(q, 10, exclude=exclude), strict=True):
        np.testing.assert_array_equal(a, b)
    names = {p.name for p in (tmp_path / "idx").iterdir()}
    assert names == {"index.json", "hnsw.faiss" if kind == "hnsw" else "vectors.npy"}


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_k_larger_than_catalogue_and_empty_queries(kind: str,
                                                   rng: np.random.Generator) -> None:
    v = rng.standard_normal((30, 8)).astype(np.float32)
    q = rng.standard_normal((4, 8)).astype(np.float32)
    index = ItemIndex.build(v, kind=kind, threads=1)
    idx, scores = index.search(q, 50)
    assert idx.shape == scores.shape == (4, 50)
    np.testing.assert_array_equal(idx[:, :30], brute_force(q, v, 30))
    assert (idx[:, 30:] == -1).all() and np.isneginf(scores[:, 30:]).all()
    idx, scores = index.search(np.empty((0, 8), np.float32), 10)
    assert idx.shape == scores.shape == (0, 10)
    assert index.search(q, 0)[0].shape == (4, 0)


def test_clear_errors(rng: np.random.Generator, tmp_path: Path) -> None:
    v = rng.standard_normal((50, 8)).astype(np.float32)
    index = ItemIndex.build(v)
    with pytest.raises(InputError, match=r"queries: .*8 dimensions"):
        index.search(np.ones((2, 9), np.float32), 5)
    with pytest.raises(InputError, match="queries: must be a 2-D array"):
        index.search(np.ones(8, np.float32), 5)
    with pytest.raises(InputError, match="k: must be a non-negative integer"):
        index.search(np.ones((1, 8), np.float32), -1)
    with pytest.raises(InputError, match=r"allowed: .*shape \(50,\)"):
        index.search(np.ones((1, 8), np.float32), 5, allowed=np.ones(49, bool))
    with pytest.raises(InputError, match=r"exclude: .*one array .* per query row"):
        index.search(np.ones((2, 8), np.float32), 5, exclude=[np.array([1])])
    with pytest.raises(InputError, match=r"exclude\[0\]: .*\[0, 50\)"):
        index.search(np.ones((1, 8), np.float32), 5, exclude=[np.array([50])])
    with pytest.raises(InputError, match="item_vecs: must be a 2-D array"):
        ItemIndex.build(np.ones(8, np.float32))
    with pytest.raises(InputError, match="item_vecs: contains NaN"):
        ItemIndex.build(np.full((3, 2), np.nan, np.float32))
    with pytest.raises(ConfigError, match="kind: unknown index kind 'ivf2'"):
        ItemIndex.build(v, kind="ivf2")
    with pytest.raises(InputError, match="not a saved item index"):
        ItemIndex.load(tmp_path)
