"""Model bundles: what `lmrec train` writes and `lmrec serve` reads."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers_cli import run
from helpers_serve import planted_bundle
from lmrec.errors import ConfigError, InputError
from lmrec.models import create_model, load_model
from lmrec.serve import bundle as bundle_module
from lmrec.serve.bundle import bundle_lock, load_bundle, read_bundle_meta, write_bundle
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions


def test_train_writes_a_complete_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    ds = planted_dataset()
    ds.save(tmp_path / "data")
    out = tmp_path / "bundle"
    code, _, err = run(["train", "--data", str(tmp_path / "data"), "--model", "ease",
                        "--out", str(out)], capsys)
    assert code == 0, err
    meta = read_bundle_meta(out)
    assert meta["model"] == "ease" and meta["n_items"] == ds.n_items
    assert meta["model_version"].startswith("ease-")
    assert meta["model_version"].endswith(meta["content_sha256"][:12])
    assert meta["item_roles"] == {"genres": "multi", "title": "text"}
    assert meta["index"] is None  # a 24-item catalogue is searched exactly

    b = load_bundle(out)
    seqs = ds.sequences()
    for name in ("indptr", "items", "events", "timestamps"):
        assert np.array_equal(getattr(b.histories, name), getattr(seqs, name)), name
    assert b.histories.event_types == seqs.event_types
    assert b.items.equals(ds.item_table)
    assert b.users == ds.users and b.item_ids == ds.items

    # the same folder still works with `lmrec recommend`
    code, stdout, err = run(["recommend", str(out), "--user", "a0", "--k", "3", "--json"],
                            capsys)
    assert code == 0, err
    rec = json.loads(stdout.splitlines()[0])
    direct = load_model(out).recommend(["a0"], 3).to_records()[0]
    assert rec == direct and all(it["item"].startswith("A") for it in rec["items"])


def test_model_version_follows_the_content(tmp_path: Path) -> None:
    a = read_bundle_meta(planted_bundle(tmp_path / "a", "ease", {"l2": 10.0}))
    b = read_bundle_meta(planted_bundle(tmp_path / "b", "ease", {"l2": 10.0}))
    c = read_bundle_meta(planted_bundle(tmp_path / "c", "ease", {"l2": 50.0}))
    assert a["content_sha256"] == b["content_sha256"]  # deterministic training, same bytes
    assert a["content_sha256"] != c["content_sha256"]
    assert a["model_version"] != c["model_version"]


def test_rules_are_checked_and_shipped(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('exclude_items = ["A1"]\n[[boost]]\nfilter = "genres:beta"\nweight = 2.0\n')
    out = planted_bundle(tmp_path / "b", rules=rules)
    assert (out / "rules.toml").read_text() == rules.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text('{"exclude_items": [], "boost": [{"filter": "genres:beta"}], "x": 1}')
    with pytest.raises(ConfigError, match="x"):
        planted_bundle(tmp_path / "c", rules=bad)


def test_unfinished_or_mixed_bundles_are_refused(tmp_path: Path) -> None:
    out = planted_bundle(tmp_path / "b")
    shutil.copytree(out, tmp_path / "unfinished")
    (tmp_path / "unfinished" / "bundle.json").unlink()
    with pytest.raises(InputError, match=r"no bundle\.json"):
        load_bundle(tmp_path / "unfinished")

    # a model trained on other data dropped into the folder
    other = planted_dataset(users_a=5, users_b=7, items_per_group=8, seed=3)
    create_model("ease").fit(other, TrainingOptions(rng=0)).save(out)
    # the digests (config.json differs too: it records the lambda EASE's rule chose)
    with pytest.raises(InputError, match=r"(config\.json|arrays\.npz): damaged or replaced"):
        load_bundle(out)
    meta = json.loads((out / "bundle.json").read_text())  # a bundle without digests: the
    for key in ("files", "content_sha256"):                # vocabularies still tell
        del meta[key]
    (out / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="do not belong together"):
        load_bundle(out)

    with pytest.raises(InputError, match="not trained on this dataset"):
        write_bundle(create_model("ease").fit(other, TrainingOptions(rng=0)), planted_dataset(),
                     tmp_path / "x")


def test_embedding_models_get_an_ann_index_above_the_threshold(tmp_path: Path) -> None:
    params = {"epochs": 3, "dim": 8, "id_dim": 8, "layers": "16", "batch_size": 64}
    small = load_bundle(planted_bundle(tmp_path / "exact", "two-tower", params))
    assert small.index is None and small.meta["embedding_scorer"] is True
    big = load_bundle(planted_bundle(tmp_path / "ann", "two-tower", params, ann_threshold=10))
    assert big.meta["index"] == "index" and big.index.kind == "hnsw"
    vecs = big.model.item_embeddings()
    q = vecs[:3] + 0.01
    idx, _ = big.index.search(q, 5)
    exact = np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :5]
    assert np.array_equal(idx, exact)  # HNSW over 24 items finds the true neighbours


def test_items_table_keeps_list_columns(tmp_path: Path) -> None:
    b = load_bundle(planted_bundle(tmp_path / "b"))
    assert b.items.schema["genres"] == pl.List(pl.String)


def test_serve_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    create_model("ease").fit(planted_dataset(), TrainingOptions(rng=0)).save(
        tmp_path / "model-only")
    code, _, err = run(["serve", str(tmp_path / "model-only"), "--port", "1"], capsys)
    assert code == 2 and "not a model bundle" in err and "Traceback" not in err


def _load_in_thread(folder: Path) -> threading.Thread:
    t = threading.Thread(target=load_bundle, args=(folder,), daemon=True)
    t.start()
    return t


def test_readers_wait_for_writers_and_not_for_each_other(tmp_path: Path) -> None:
    folder = planted_bundle(tmp_path / "b")
    with bundle_lock(folder):  # a writer (write_bundle, redact_bundle) holds the folder
        reader = _load_in_thread(folder)
        reader.join(0.5)
        assert reader.is_alive()  # a reload cannot read files half replaced
    reader.join(30)
    assert not reader.is_alive()
    with bundle_lock(folder, shared=True):  # another reader
        reader = _load_in_thread(folder)
        reader.join(30)
        assert not reader.is_alive()
    with bundle_lock(folder):  # the writer itself may read (a redaction reloads)
        assert load_bundle(folder).model_version == read_bundle_meta(folder)["model_version"]


def test_a_reader_of_a_read_only_folder_needs_no_lock_file(tmp_path: Path) -> None:
    folder = planted_bundle(tmp_path / "b")
    # a lock file that cannot be opened, as in a read-only folder without one (chmod would
    # not stop root)
    (folder / bundle_module.LOCK_FILE).unlink()
    (folder / bundle_module.LOCK_FILE).mkdir()
    assert load_bundle(folder).model.name == "ease"


def test_write_bundle_replaces_every_file_and_bundle_json_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = planted_bundle(tmp_path / "b")  # written over below, as a retraining would
    moved: list[str] = []
    real = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        moved.append(Path(dst).name)
        real(src, dst)

    monkeypatch.setattr(bundle_module.os, "replace", replace)
    planted_bundle(folder, "itemknn")
    assert moved[-1] == "bundle.json"
    assert {"config.json", "arrays.npz", "items.parquet", "histories.npz"} <= set(moved[:-1])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".lock", "arrays.npz", "bundle.json", "config.json", "histories.npz",
         "items.parquet", "users.parquet"])  # no temporary files left
    assert load_bundle(folder).model.name == "itemknn"
