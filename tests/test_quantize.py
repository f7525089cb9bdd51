"""Compressed item indexes (`ItemIndex.build(quantize=...)`, `lmrec train --quantize`): codes
saved and loaded, recall against exact float32 search, exclusions and filters, ties, memory,
decoding, and the CLI from training to serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers_cli import one_error_line, run
from lmrec.errors import ConfigError, InputError
from lmrec.serve.bundle import load_bundle
from lmrec.serve.engine import Engine, Query
from lmrec.serve.retrieval import ItemIndex
from lmrec.testing import planted_dataset
from test_retrieval import banned_mask, brute_force, factor_like, recall

CODES = [("exact", "fp16"), ("exact", "int8"), ("exact", "pq"), ("ivf", "none"),
         ("ivf", "fp16"), ("ivf", "int8"), ("ivf", "pq")]
# recall@10 against exact float32 search on `catalogue` (measured: exact fp16 1.0, int8 .995,
# pq .864; ivf at its default nprobe (19 of 153 lists) .9925 none/fp16, .988 int8, .86 pq),
# with room for a different BLAS or faiss build
RECALL_BOUND = {("exact", "fp16"): 0.99, ("exact", "int8"): 0.98, ("exact", "pq"): 0.75,
                ("ivf", "none"): 0.97, ("ivf", "fp16"): 0.97, ("ivf", "int8"): 0.96,
                ("ivf", "pq"): 0.75}
K = 10


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    return factor_like(6_000, 200)


@pytest.fixture(scope="module")
def indexes(catalogue: tuple[np.ndarray, np.ndarray]) -> dict[tuple[str, str], ItemIndex]:
    items = catalogue[0]
    return {(kind, q): ItemIndex.build(items, kind=kind, quantize=q, threads=1)
            for kind, q in CODES}


@pytest.mark.parametrize(("kind", "quantize"), CODES)
def test_recall_against_exact_float32(kind: str, quantize: str,
                                      catalogue: tuple[np.ndarray, np.ndarray],
                                      indexes: dict[tuple[str, str], ItemIndex]) -> None:
    items, users = catalogue
    truth = brute_force(users, items, K)
    found, scores = indexes[kind, quantize].search(users, K)
    assert recall(found, truth) >= RECALL_BOUND[kind, quantize]
    assert (np.diff(scores, axis=1) <= 0).all()  # best first


@pytest.mark.parametrize("quantize", ["fp16", "int8", "pq"])
def test_the_flat_scan_is_exact_over_the_decoded_vectors(
        quantize: str, catalogue: tuple[np.ndarray, np.ndarray],
        indexes: dict[tuple[str, str], ItemIndex]) -> None:
    """What a compressed exact index returns is the exact top k of its decoded vectors, with
    their inner products as scores, exclusions and filters applied."""
    index = indexes["exact", quantize]
    users = catalogue[1][:40]
    decoded = index.vectors(np.arange(index.n_items))
    rng = np.random.default_rng(1)
    exclude = [rng.choice(index.n_items, int(rng.integers(0, 50)), replace=False)
               for _ in range(users.shape[0])]
    for allowed in (None, rng.random(index.n_items) < 0.7, rng.random(index.n_items) < 0.05):
        found, scores = index.search(users, K, exclude=exclude, allowed=allowed)
        banned = banned_mask(users.shape[0], index.n_items, exclude, allowed)
        truth = brute_force(users, decoded, K, banned)
        want = np.take_along_axis(users.astype(np.float64) @ decoded.T.astype(np.float64),
                                  truth, 1)
        np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-4)
        assert recall(found, truth) >= 0.99  # near-ties may swap in float32


@pytest.mark.parametrize(("kind", "quantize"), CODES)
def test_exclusions_and_filters_are_honoured(kind: str, quantize: str,
                                             catalogue: tuple[np.ndarray, np.ndarray],
                                             indexes: dict[tuple[str, str], ItemIndex]) -> None:
    index = indexes[kind, quantize]
    users = catalogue[1][:30]
    rng = np.random.default_rng(2)
    # each row's exclusions include its own best items, as a served user's history does
    best, _ = ItemIndex.build(catalogue[0], kind="exact").search(users, 100)
    exclude = [np.concatenate([best[b, :60], rng.choice(index.n_items, 20)])
               for b in range(users.shape[0])]
    for allowed in (rng.random(index.n_items) < 0.5, rng.random(index.n_items) < 0.01):
        found, scores = index.search(users, K, exclude=exclude, allowed=allowed)
        eligible = allowed.sum() - np.array([np.unique(e[allowed[e]]).size for e in exclude])
        for b in range(users.shape[0]):
            row = found[b][found[b] >= 0]
            assert row.size == min(K, eligible[b])  # complete: k when k remain
            assert allowed[row].all() and not np.isin(row, exclude[b]).any()
            assert np.isfinite(scores[b, : row.size]).all()
    tiny = np.zeros(index.n_items, dtype=bool)
    tiny[[5, 17, 4000]] = True
    found, scores = index.search(users[:2], K, exclude=[np.array([17]), np.array([], int)],
                                 allowed=tiny)
    assert set(found[0][:2]) == {5, 4000} and (found[0][2:] == -1).all()
    assert np.isneginf(scores[0][2:]).all() and set(found[1][:3]) == {5, 17, 4000}


def test_an_ivf_row_whose_lists_run_dry_scans_them_all(
        tmp_path: Path, catalogue: tuple[np.ndarray, np.ndarray],
        indexes: dict[tuple[str, str], ItemIndex]) -> None:
    """One probed list (about 40 items, none over 300) cannot answer a row that excludes 300
    of its best items: the row is searched again over every list, which for float32 codes is
    exact."""
    index = indexes["ivf", "none"]
    index.save(tmp_path / "ix")
    index = ItemIndex.load(tmp_path / "ix")  # a copy: nprobe changes only here
    index.nprobe = 1
    items, users = catalogue
    users = users[:20]
    best = brute_force(users, items, 300)
    exclude = list(best)
    found, scores = index.search(users, K, exclude=exclude)
    truth = brute_force(users, items, K, banned_mask(20, len(items), exclude, None))
    np.testing.assert_array_equal(found, truth)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize(("kind", "quantize"), CODES)
def test_ties_go_to_the_smaller_index(kind: str, quantize: str) -> None:
    """Identical vectors get identical codes and so identical scores; more of them than the
    k fetched must still come back as the smallest indices."""
    items, users = factor_like(1_000, 3, seed=4)
    copies = np.array([977, 12, 503, 640, 3, 250, 871, 99, 404, 710, 5, 333])
    # far ahead for query 0: twice the longest item's length, along the query
    items[copies] = 2 * np.linalg.norm(items, axis=1).max() * users[0] / np.linalg.norm(users[0])
    index = ItemIndex.build(items, kind=kind, quantize=quantize, threads=1)
    found, scores = index.search(users[:1], 5)
    np.testing.assert_array_equal(found[0], np.sort(copies)[:5])
    assert (scores[0] == scores[0, 0]).all()
    found, _ = index.search(users[:1], 5, exclude=[np.array([3, 99])])
    np.testing.assert_array_equal(found[0], np.sort(copies)[[1, 2, 4, 5, 6]])


@pytest.mark.parametrize(("kind", "quantize"), CODES)
def test_save_and_load_round_trip(kind: str, quantize: str, tmp_path: Path,
                                  catalogue: tuple[np.ndarray, np.ndarray],
                                  indexes: dict[tuple[str, str], ItemIndex]) -> None:
    index = indexes[kind, quantize]
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert (meta["format_version"], meta["kind"], meta["quantize"]) == (2, kind, quantize)
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == ["codes.faiss", "index.json"]
    loaded = ItemIndex.load(tmp_path / "ix")
    assert (loaded.kind, loaded.quantize, loaded.params) == (kind, quantize, index.params)
    users = catalogue[1][:20]
    exclude = [np.arange(b, b + 30) for b in range(20)]
    for a, b in zip(index.search(users, K, exclude=exclude), loaded.search(users, K,
                                                                          exclude=exclude),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    some = np.array([0, 7, 5999, 7])
    np.testing.assert_array_equal(loaded.vectors(some), index.vectors(some))
    index.norms()
    loaded.norms()
    assert loaded.nbytes == index.nbytes
    assert "pickle" not in (tmp_path / "ix" / "index.json").read_text()


def test_float32_indexes_are_still_written_and_read_as_version_1(
        tmp_path: Path, catalogue: tuple[np.ndarray, np.ndarray]) -> None:
    """Float32 exact and hnsw folders keep the format older lmrec versions wrote and read."""
    items = catalogue[0][:500]
    for kind, file in (("exact", "vectors.npy"), ("hnsw", "hnsw.faiss")):
        ItemIndex.build(items, kind=kind, threads=1).save(tmp_path / kind)
        meta = json.loads((tmp_path / kind / "index.json").read_text())
        assert meta["format_version"] == 1 and "quantize" not in meta
        assert (tmp_path / kind / file).exists()
        loaded = ItemIndex.load(tmp_path / kind)
        assert loaded.quantize == "none"
        np.testing.assert_array_equal(loaded.vectors([3, 1]), items[[3, 1]])


def test_a_codes_file_that_does_not_match_index_json_is_refused(
        tmp_path: Path, indexes: dict[tuple[str, str], ItemIndex]) -> None:
    indexes["exact", "int8"].save(tmp_path / "ix")
    meta_path = tmp_path / "ix" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta["quantize"] = "fp16"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"does not match index\.json"):
        ItemIndex.load(tmp_path / "ix")
    (tmp_path / "ix" / "codes.faiss").unlink()
    with pytest.raises(InputError, match="codes file missing"):
        ItemIndex.load(tmp_path / "ix")


def test_compressed_indexes_hold_fewer_bytes(tmp_path: Path,
                                             catalogue: tuple[np.ndarray, np.ndarray],
                                             indexes: dict[tuple[str, str], ItemIndex]) -> None:
    items = catalogue[0]
    plain = ItemIndex.build(items, kind="exact")
    assert plain.nbytes == items.nbytes
    # codes: fp16 2 bytes a dimension, int8 1, pq 1 per two dimensions (+ codebooks);
    # ivf adds 16 bytes an item (id, id -> list position) and its centroids
    # (at d 32; at d 64 and 1M items ivf int8 is 3.2 times smaller, BENCHMARKS.md)
    limits = {("exact", "fp16"): 2.0, ("exact", "int8"): 3.9, ("exact", "pq"): 4.5,
              ("ivf", "fp16"): 1.5, ("ivf", "int8"): 2.4}
    for (kind, q), factor in limits.items():
        fresh = ItemIndex.build(items, kind=kind, quantize=q, threads=1)  # no norms kept yet
        assert fresh.nbytes * factor <= plain.nbytes, (kind, q, fresh.nbytes)
        fresh.norms()
        assert fresh.nbytes * factor <= plain.nbytes + 4 * factor * len(items)
    plain.save(tmp_path / "plain")
    indexes["exact", "int8"].save(tmp_path / "int8")
    size = {n: sum(p.stat().st_size for p in (tmp_path / n).iterdir()) for n in ("plain",
                                                                                "int8")}
    assert size["int8"] * 3.9 <= size["plain"]


@pytest.mark.parametrize(("kind", "quantize"), CODES)
def test_vectors_decode_rows_and_norms_match(kind: str, quantize: str,
                                             catalogue: tuple[np.ndarray, np.ndarray],
                                             indexes: dict[tuple[str, str], ItemIndex]) -> None:
    index = indexes[kind, quantize]
    items = catalogue[0]
    idx = np.array([4, 0, 4, 5999])
    rows = index.vectors(idx)
    assert rows.dtype == np.float32 and rows.shape == (4, items.shape[1])
    err = np.abs(rows - items[idx]).max() / np.abs(items).max()
    assert err < {"none": 1e-7, "fp16": 1e-3, "int8": 2e-2, "pq": 0.3}[quantize]
    all_rows = index.vectors(np.arange(index.n_items))
    np.testing.assert_allclose(index.norms(), np.linalg.norm(all_rows, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(index.item_vectors, all_rows)
    assert index.vectors(np.array([], dtype=np.int64)).shape == (0, items.shape[1])
    with pytest.raises(InputError, match=r"idx: item indices must lie in \[0, 6000\)"):
        index.vectors([6000])
    with pytest.raises(InputError, match="idx: item indices must be integers"):
        index.vectors(np.array([1.5]))


def test_bad_settings_name_the_option(catalogue: tuple[np.ndarray, np.ndarray]) -> None:
    items = catalogue[0][:300]
    with pytest.raises(ConfigError, match="quantize: unknown value 'int4'"):
        ItemIndex.build(items, quantize="int4")
    with pytest.raises(ConfigError, match="quantize: an hnsw index keeps float32"):
        ItemIndex.build(items, kind="hnsw", quantize="int8")
    index = ItemIndex.build(items, kind="ivf", quantize="int8")
    with pytest.raises(ConfigError, match="nprobe: must lie in"):
        index.nprobe = 0
    with pytest.raises(ConfigError, match="nprobe: only an ivf index"):
        ItemIndex.build(items, kind="exact", quantize="int8").nprobe = 3
    with pytest.raises(ConfigError, match="nlist: must lie in"):
        ItemIndex.build(items, kind="ivf", nlist=301)


def test_auto_picks_ivf_for_a_large_compressed_catalogue(
        catalogue: tuple[np.ndarray, np.ndarray]) -> None:
    items = catalogue[0]
    assert ItemIndex.build(items, quantize="int8", exact_below=5_000).kind == "ivf"
    assert ItemIndex.build(items, quantize="int8").kind == "exact"
    assert ItemIndex.build(items[:100], quantize="pq").kind == "exact"  # 100 < 256 items


# --- the CLI and serving --------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_dataset().save(tmp_path_factory.mktemp("quantize") / "d")


def test_train_quantize_int8_then_recommend_and_serve(data_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b"
    code, _, err = run(["train", "--data", str(data_dir), "--model", "als", "--param",
                        "factors=8", "--param", "reg=5.0", "--quantize", "int8", "--out",
                        str(out)], capsys)
    assert code == 0, err
    meta = json.loads((out / "index" / "index.json").read_text())
    assert (meta["kind"], meta["quantize"]) == ("exact", "int8")  # a small catalogue
    assert json.loads((out / "bundle.json").read_text())["index"] == "index"
    code, stdout, err = run(["recommend", str(out), "--user", "a0", "--k", "3", "--json"],
                            capsys)
    assert code == 0, err
    assert len(json.loads(stdout)["items"]) == 3
    bundle = load_bundle(out)
    assert bundle.index is not None and bundle.index.quantize == "int8"
    engine = Engine(bundle)
    user = int(engine.bundle.users.index(["a0"])[0])
    hist, n_live = engine.history(user, [])
    items, _ = engine.recommend(user, hist, n_live, Query(k=4, explain=True, diversity=0.3))
    assert len(items) == 4
    assert all(str(s.item).startswith("A") for s in items)  # a0's own group, as float32 does
    seen = {engine.external_item(int(i)) for i in hist.items}
    assert not seen & {s.item for s in items}
    similar = engine.similar(int(engine.item_indices(["A0"])[0]), 3)
    assert len(similar) == 3 and "A0" not in {s.item for s in similar}
    # and over HTTP, as `lmrec serve` loads it
    from fastapi.testclient import TestClient

    from lmrec.serve.app import ServeSettings, create_app

    app = create_app(out, f"sqlite:///{tmp_path / 'events.db'}", ServeSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/v1/users/a0/recommendations", params={"k": 3, "diversity": 0.5})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 3
        r = client.get("/v1/items/A0/similar", params={"k": 2})
        assert r.status_code == 200 and len(r.json()["items"]) == 2, r.text


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", "als", "--quantize", "int4"], "--quantize"),
    (["--model", "popularity", "--quantize", "int8"], "--quantize"),
])
def test_train_refuses_a_bad_quantize_value(args: list[str], needle: str, data_dir: Path,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run(["train", "--data", str(data_dir), *args, "--out",
                             str(tmp_path / "b")], capsys)
    one_error_line(code, err, needle, stdout)
    assert not (tmp_path / "b" / "bundle.json").exists()


def test_write_bundle_builds_an_ivf_index_from_the_threshold(tmp_path: Path) -> None:
    from lmrec.models import create_model
    from lmrec.serve.bundle import write_bundle
    from lmrec.train.options import TrainingOptions

    ds = planted_dataset()
    rec = create_model("als", {"factors": 8, "reg": 5.0}).fit(ds, TrainingOptions(rng=0))
    with pytest.raises(ConfigError, match="quantize: unknown value 'int4'"):
        write_bundle(rec, ds, tmp_path / "bad", quantize="int4")
    assert not (tmp_path / "bad").exists()
    write_bundle(rec, ds, tmp_path / "b", ann_threshold=10, quantize="fp16")
    index = load_bundle(tmp_path / "b").index
    assert (index.kind, index.quantize, index.n_items) == ("ivf", "fp16", ds.n_items)
    exact = ItemIndex.build(rec.item_embeddings(), kind="exact")
    q = rec.user_embeddings(np.arange(5))
    # the same items (fp16 may swap two near-equal scores of this symmetric data)
    np.testing.assert_array_equal(np.sort(index.search(q, 3)[0]), np.sort(exact.search(q, 3)[0]))
    write_bundle(rec, ds, tmp_path / "plain")  # float32 below the threshold: no index, as before
    assert load_bundle(tmp_path / "plain").index is None
