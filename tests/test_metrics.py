"""Top-k metrics: hand-computed examples, RecBole's reference loop and ranx agreement."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lmrec import metrics as M
from lmrec.errors import ConfigError

PEERS = Path("/work/shared/peers")


def _truth(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), n_items))


# --- hand-computed examples --------------------------------------------------------------------
TOPK = np.array([[3, 0, 5, 7, -1],   # truth {1, 3, 5}: hits at ranks 1 and 3; padded
                 [0, 1, 4, 2, 6],    # truth {2}: hit at rank 4
                 [1, 2, 3, 4, 5]])   # no truth: not evaluated
TRUTH = _truth([[1, 3, 5], [2], []], 8)


def test_hit_matrix_by_hand() -> None:
    hits = M.hit_matrix(TOPK, TRUTH)
    assert hits.tolist() == [[True, False, True, False, False],
                             [False, False, False, True, False],
                             [False, False, False, False, False]]


def test_accuracy_by_hand() -> None:
    m = M.ranking_metrics(TOPK, TRUTH, ks=(2, 5))
    # user 0 (truth {1, 3, 5}), k = 5: 2 hits at ranks 1 and 3
    assert m["recall@5"][0] == pytest.approx(2 / 3)
    assert m["precision@5"][0] == pytest.approx(0.4)  # 2 / 5, padding counts as a miss
    assert m["hit@5"][0] == 1.0
    assert m["mrr@5"][0] == 1.0
    # dcg = 1/log2(2) + 1/log2(4) = 1.5; idcg over min(3, 5) = 3 ranks: 1 + 0.63093 + 0.5
    assert m["ndcg@5"][0] == pytest.approx(1.5 / 2.1309297535714575)
    assert m["ndcg@5"][0] == pytest.approx(0.703918, abs=1e-6)
    # map: (P@1 + P@3) / min(3, 5) = (1 + 2/3) / 3
    assert m["map@5"][0] == pytest.approx(0.5555556)
    # user 0, k = 2: one hit at rank 1
    assert m["recall@2"][0] == pytest.approx(1 / 3)
    assert m["precision@2"][0] == pytest.approx(0.5)
    assert m["ndcg@2"][0] == pytest.approx(1 / 1.6309297535714575)  # idcg over 2 ranks
    assert m["map@2"][0] == pytest.approx(0.5)  # 1 / min(3, 2)
    # user 1 (truth {2}): hit at rank 4 only
    assert m["recall@2"][1] == 0.0 and m["ndcg@2"][1] == 0.0 and m["mrr@2"][1] == 0.0
    assert m["recall@5"][1] == 1.0
    assert m["precision@5"][1] == pytest.approx(0.2)
    assert m["mrr@5"][1] == pytest.approx(0.25)
    assert m["ndcg@5"][1] == pytest.approx(1 / math.log2(5))  # 0.430677
    assert m["map@5"][1] == pytest.approx(0.25)
    # user 2 has no truth: NaN, and skipped by the mean
    assert all(np.isnan(v[2]) for v in m.values())
    mean = M.mean_metrics(m)
    assert mean["recall@5"] == pytest.approx((2 / 3 + 1) / 2)
    assert mean["hit@2"] == pytest.approx(0.5)


def test_short_lists_and_duplicate_truth() -> None:
    # a list shorter than k: precision still divides by k; duplicates in truth count once
    truth = sp.csr_matrix((np.ones(3), ([0, 0, 0], [4, 4, 2])), shape=(1, 6))
    m = M.ranking_metrics(np.array([[4, 1]]), truth, ks=(5,))
    assert m["precision@5"][0] == pytest.approx(0.2)
    assert m["recall@5"][0] == pytest.approx(0.5)


def test_beyond_accuracy_by_hand() -> None:
    lists = np.array([[0, 1], [0, 2]])
    assert M.coverage(lists, 4, 2) == pytest.approx(0.75)
    assert M.exposure(lists, 4, 2).tolist() == [2, 1, 1, 0]
    # sorted [0, 1, 1, 2]: sum (2i - n - 1) x_i = -1 + 1 + 6 = 6; / (n * total) = 6 / 16
    assert M.gini(np.array([2, 1, 1, 0])) == pytest.approx(0.375)
    assert M.gini(np.array([3, 3, 3])) == pytest.approx(0.0)
    pop = np.array([4, 2, 1, 0])  # users per item, 4 training users
    # p = [1, .5, .25, .25 (clamped to 1/4)] -> self-information [0, 1, 2, 2]
    nov = M.novelty(np.array([[0, 1], [2, 3], [-1, -1]]), pop, 4, 2)
    assert nov[:2].tolist() == pytest.approx([0.5, 2.0])
    assert np.isnan(nov[2])
    assert M.mean_popularity(np.array([[0, 1, -1]]), pop, 3)[0] == pytest.approx(3.0)


@pytest.mark.parametrize("sparse", [False, True])
def test_diversity_by_hand(sparse: bool) -> None:
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    f = sp.csr_matrix(feats) if sparse else feats
    lists = np.array([[0, 1, 2], [0, -1, -1], [0, 3, 1]])
    d = M.intra_list_diversity_at(lists, f, (2, 3))
    # pairs of [0, 1, 2]: cos 0, 1/sqrt2, 1/sqrt2 -> 1 - (2 / sqrt2) / 3
    assert d[3][0] == pytest.approx(1 - math.sqrt(2) / 3)
    assert d[2][0] == pytest.approx(1.0)  # [0, 1] orthogonal
    assert np.isnan(d[3][1])  # one item: no pair
    assert d[3][2] == pytest.approx(1.0)  # a zero feature row has cosine 0 with everything
    gram = M.cosine_gram(f)
    assert gram is not None
    d2 = M.intra_list_diversity_at(lists, None, (2, 3), gram=gram)
    np.testing.assert_allclose(d2[3], d[3], rtol=1e-6)


def test_diversity_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    x = sp.random(60, 40, density=0.15, random_state=4, format="csr")
    x.data[:] = 1.0
    feats = M.cooccurrence_features(x)  # (40 items, 60 users)
    lists = np.stack([rng.permutation(40)[:8] for _ in range(25)])
    lists[3, 5:] = -1
    ks = (3, 8)
    dense_gram = M.intra_list_diversity_at(lists, feats, ks)
    via_vectors = M.intra_list_diversity_at(lists, feats.toarray(), ks)
    monkeypatch.setattr(M, "_DENSE_GRAM_MAX", 0)  # force the pairwise sparse path
    pairwise = M.intra_list_diversity_at(lists, feats, ks)
    for k in ks:
        np.testing.assert_allclose(via_vectors[k], dense_gram[k], rtol=1e-5)
        np.testing.assert_allclose(pairwise[k], dense_gram[k], rtol=1e-5)
    # brute force for one list
    f = feats.toarray()
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    row = lists[0, :8]
    sims = [f[a] @ f[b] for i, a in enumerate(row) for b in row[i + 1 :]]
    assert dense_gram[8][0] == pytest.approx(1 - np.mean(sims), rel=1e-5)


def test_bad_cutoffs() -> None:
    with pytest.raises(ConfigError):
        M.check_ks([0, 5])
    assert M.check_ks([10, 5, 10]) == (5, 10)


# --- agreement with reference implementations ---------------------------------------------------
def _random_case(seed: int, n_users: int = 80, n_items: int = 40, k: int = 15):
    rng = np.random.default_rng(seed)
    topk = np.stack([rng.permutation(n_items)[:k] for _ in range(n_users)]).astype(np.int64)
    truth = [sorted(rng.choice(n_items, size=rng.integers(1, 12), replace=False).tolist())
             for _ in range(n_users)]
    return topk, truth, _truth(truth, n_items)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_ranx(seed: int) -> None:
    import ranx  # a dev dependency: this cross-check must run, never skip
    topk, truth_sets, truth = _random_case(seed)
    ks = (1, 5, 10)
    ours = M.ranking_metrics(topk, truth, ks)
    qrels = ranx.Qrels({f"u{u:04d}": {f"i{i:04d}": 1 for i in t} for u, t in enumerate(truth_sets)})
    run = ranx.Run({f"u{u:04d}": {f"i{i:04d}": float(topk.shape[1] - r) for r, i in enumerate(row)}
                    for u, row in enumerate(topk)})
    n_truth = np.array([len(t) for t in truth_sets])
    for k in ks:
        names = {"recall": f"recall@{k}", "precision": f"precision@{k}", "ndcg": f"ndcg@{k}",
                 "hit": f"hit_rate@{k}", "mrr": f"mrr@{k}", "map": f"map@{k}"}
        ref = ranx.evaluate(qrels, run, list(names.values()), return_mean=False)
        for ours_name, ranx_name in names.items():
            expected = np.asarray(ref[ranx_name], dtype=np.float64)
            got = ours[f"{ours_name}@{k}"]
            if ours_name == "map":  # ranx divides by |truth|, RecBole by min(|truth|, k)
                got = got * np.minimum(n_truth, k) / n_truth
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12,
                                       err_msg=f"{ours_name}@{k}")


def _peerdata():
    path = PEERS / "peerdata.py"
    if not path.exists() or importlib.util.find_spec("pandas") is None:
        pytest.skip(f"{path} (or pandas) not available")
    spec = importlib.util.spec_from_file_location("peerdata", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("peerdata", mod)
    spec.loader.exec_module(mod)
    return mod


def test_agrees_with_peer_recbole_loop() -> None:
    peer = _peerdata()
    topk, truth_sets, truth = _random_case(7, n_users=120, n_items=60, k=10)
    ours = M.mean_metrics(M.ranking_metrics(topk, truth, (10,)))
    ref = peer.topk_metrics(topk, [set(t) for t in truth_sets], k=10)
    for name in ("recall", "precision", "ndcg", "hit", "mrr"):
        assert ours[f"{name}@10"] == pytest.approx(ref[f"{name}@10"], rel=1e-12)


def test_recbole_split_counts_match_peer() -> None:
    from lmrec.evaluate import recbole_split_counts

    peer = _peerdata()
    n = np.arange(1, 300)
    for ratios in ((0.8, 0.1, 0.1), (0.7, 0.3), (0.6, 0.2, 0.2)):
        ours = recbole_split_counts(n, ratios)
        ref = np.array([peer.recbole_split_counts(int(x), ratios) for x in n]).T
        np.testing.assert_array_equal(ours, ref)
