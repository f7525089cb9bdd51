"""Damaged model folders and bundles: `lmrec recommend` and `lmrec serve` refuse them with one
line naming the file (exit code 2, no traceback), whatever the damage.

Bundles carry per-file sha256 digests in bundle.json, checked on every load; plain model folders
(`Recommender.save`, no bundle.json) rely on read errors being caught and on shape checks
against the vocabularies and the config.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers_cli import CliProcess, cli_processes, one_error_line, run
from helpers_serve import planted_bundle
from lmrec.errors import InputError
from lmrec.models import create_model, load_model
from lmrec.models.registry import MODELS
from lmrec.serve.bundle import load_bundle, read_bundle_meta
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions
from test_models_contract import TINY_PARAMS


# --- ways to damage a file -------------------------------------------------------------------
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def bad_crc(path: Path) -> None:
    """Flip one byte inside the largest member of a (stored, uncompressed) .npz: the archive
    still opens, reading that member fails its CRC check."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len = int.from_bytes(data[info.header_offset + 26: info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size - 4] ^= 0xFF  # in the array's bytes, past the .npy header
    path.write_bytes(bytes(data))


def wrong_shape(path: Path) -> None:
    """EASE's item-item matrix B one row and column short (a valid archive, valid arrays)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["model.B"] = arrays["model.B"][:-1, :-1]
    np.savez(path, allow_pickle=False, **arrays)


DAMAGE: dict[str, tuple[str, Callable[[Path], None]]] = {
    "truncated-arrays": ("arrays.npz", truncate),
    "bad-crc-arrays": ("arrays.npz", bad_crc),
    "wrong-shape-arrays": ("arrays.npz", wrong_shape),
    "truncated-items": ("items.parquet", truncate),
    "truncated-users": ("users.parquet", truncate),
    "truncated-histories": ("histories.npz", truncate),
}


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_bundle(tmp_path_factory.mktemp("integrity") / "ease")


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import uvicorn

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the server started on a damaged bundle")

    monkeypatch.setattr(uvicorn, "run", refuse)
    yield


# --- bundles ---------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("command", ["recommend", "serve"])
def test_a_damaged_bundle_is_refused_naming_the_file(
        damage: str, command: str, good_bundle: Path, tmp_path: Path, no_server: None,
        capsys: pytest.CaptureFixture[str],
        real_runs: dict[tuple[str, str], tuple[Path, CliProcess]]) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(good_bundle, folder)
    name, spoil = DAMAGE[damage]
    spoil(folder / name)
    args = (["recommend", str(folder), "--user", "a0"] if command == "recommend" else
            ["serve", str(folder), "--store", f"sqlite:///{tmp_path / 'events.db'}"])
    code, _, err = run(args, capsys)
    line = one_error_line(code, err, str(folder / name))
    assert "does not match the one recorded in bundle.json" in line


def test_the_digests_name_the_file_and_cover_every_file(good_bundle: Path,
                                                        tmp_path: Path) -> None:
    meta = read_bundle_meta(good_bundle)
    assert set(meta["files"]) == {"config.json", "arrays.npz", "items.parquet",
                                  "histories.npz", "users.parquet"}
    assert meta["model_version"].endswith(meta["content_sha256"][:12])
    folder = tmp_path / "b"
    shutil.copytree(good_bundle, folder)
    (folder / "rules.toml").write_text('exclude_items = ["A1"]\n')  # not part of the bundle
    with pytest.raises(InputError, match=r"rules\.toml: not part of the bundle as written"):
        load_bundle(folder)
    (folder / "rules.toml").unlink()
    (folder / "histories.npz").unlink()
    with pytest.raises(InputError, match=r"histories\.npz: missing"):
        load_bundle(folder)


def test_an_index_file_is_covered_too(tmp_path: Path) -> None:
    params = {"epochs": 2, "dim": 8, "id_dim": 8, "layers": "16", "batch_size": 64}
    folder = planted_bundle(tmp_path / "ann", "two-tower", params, ann_threshold=10)
    files = read_bundle_meta(folder)["files"]
    index_files = [n for n in files if n.startswith("index/")]
    assert index_files
    truncate(folder / index_files[0])
    with pytest.raises(InputError) as info:
        load_bundle(folder)
    assert info.value.file == index_files[0] and "/" + index_files[0] in str(info.value)


def test_bundles_without_per_file_digests_still_load(good_bundle: Path, tmp_path: Path) -> None:
    """Bundles written before `files` existed are checked as a whole (content_sha256)."""
    folder = tmp_path / "old"
    shutil.copytree(good_bundle, folder)
    meta = json.loads((folder / "bundle.json").read_text())
    del meta["files"]
    (folder / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(folder).model_version == meta["model_version"]
    truncate(folder / "items.parquet")
    with pytest.raises(InputError, match=r"bundle\.json: the bundle's files do not match "
                                             "its content_sha256"):
        load_bundle(folder)
    del meta["content_sha256"]  # older still: nothing to check, but reading fails clearly
    (folder / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"items\.parquet: damaged: cannot be read"):
        load_bundle(folder)


# --- plain model folders (no bundle.json) ------------------------------------------------------
@pytest.fixture(scope="module")
def ease_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plain") / "ease"
    create_model("ease").fit(planted_dataset(), TrainingOptions(rng=0)).save(folder)
    return folder


@pytest.mark.parametrize(("damage", "message"), [
    ("truncated-arrays", "damaged: cannot be read as arrays"),
    ("bad-crc-arrays", "damaged: cannot be read as arrays (Bad CRC-32"),
    ("wrong-shape-arrays", "the arrays do not fit the model's config and vocabularies"),
])
def test_a_damaged_model_folder_is_refused_naming_the_file(
        damage: str, message: str, ease_folder: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "model"
    shutil.copytree(ease_folder, folder)
    name, spoil = DAMAGE[damage]
    spoil(folder / name)
    with pytest.raises(InputError, match=re.escape(message)):
        load_model(folder)
    code, _, err = run(["recommend", str(folder), "--user", "a0", "--json"], capsys)
    assert message in one_error_line(code, err, str(folder / name))


def _resave(folder: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(folder / "arrays.npz", allow_pickle=False, **arrays)


@pytest.mark.parametrize(("model", "change", "message"), [
    ("als", lambda a: a.update({"model.V": a["model.V"][:-2]}), "scores have shape"),
    ("als", lambda a: a.update({"model.U": a["model.U"][:, :-1]}), "model.U|shapes|align"),
    ("als", lambda a: a.update({"model.U": a["model.U"][:-1]}), "model.U has 35 rows"),
    ("ease", lambda a: a.update({"popularity": a["popularity"][:-1]}), "popularity has shape"),
    ("ease", lambda a: a.update({"seen.indices": a["seen.indices"] + 100}), "seen.indices"),
    ("ease", lambda a: a.update({"item_ids": a["item_ids"][:-1]}), "seen|popularity|shape"),
    ("two-tower", lambda a: a.update({"model.state.user_id.weight":
                                      a["model.state.user_id.weight"][:, :-1]}),
     "size mismatch|state.user_id.weight"),
])
def test_wrong_shapes_in_a_model_folder_are_caught_on_load(
        model: str, change: Callable[[dict[str, np.ndarray]], None], message: str,
        tmp_path: Path) -> None:
    folder = tmp_path / model
    create_model(model, TINY_PARAMS.get(model, {})).fit(
        planted_dataset(), TrainingOptions(rng=0)).save(folder)
    _resave(folder, change)
    with pytest.raises(InputError, match=message) as info:
        load_model(folder)
    assert info.value.file == "arrays.npz" and "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_loads_after_its_first_and_last_users_were_redacted(
        name: str, tmp_path: Path) -> None:
    """The load-time probe scores the first and the last user: it must not trip over users
    whose rows are empty."""
    model = create_model(name, TINY_PARAMS.get(name, {})).fit(planted_dataset(),
                                                              TrainingOptions(rng=0))
    model.redact_users([0, len(model.users_) - 1])
    loaded = load_model(model.save(tmp_path / name))
    assert loaded.score(np.array([1])).shape == (1, len(loaded.items_))


def test_a_config_that_is_not_text_is_one_clear_error(ease_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(ease_folder, folder)
    (folder / "config.json").write_bytes(bytes(range(256)))
    with pytest.raises(InputError, match=r"config\.json is not valid JSON \(not UTF-8"):
        load_model(folder)


# --- as a real process ---------------------------------------------------------------------------
# Started together with the first bundle test (see `real_runs`): they run on the other core while
# the in-process tests run, and each test below checks its own process.
REAL = [("recommend", "bad-crc-arrays"), ("serve", "truncated-items")]


@pytest.fixture(scope="module")
def real_runs(good_bundle: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[dict[tuple[str, str], tuple[Path, CliProcess]]]:
    jobs, folders = {}, {}
    for command, damage in REAL:
        tmp = tmp_path_factory.mktemp(f"real-{command}")
        folder = tmp / "bundle"
        shutil.copytree(good_bundle, folder)
        name, spoil = DAMAGE[damage]
        spoil(folder / name)
        args = (["recommend", str(folder), "--user", "a0"] if command == "recommend" else
                ["serve", str(folder), "--store", f"sqlite:///{tmp / 'e.db'}", "--port", "1"])
        jobs[(command, damage)] = (args, tmp / "run", {"COLUMNS": "80"})
        folders[(command, damage)] = folder / name
    with cli_processes(jobs) as started:
        yield {key: (folders[key], proc) for key, proc in started.items()}


@pytest.mark.parametrize(("command", "damage"), REAL)
def test_damage_as_a_user_sees_it(
        command: str, damage: str,
        real_runs: dict[tuple[str, str], tuple[Path, CliProcess]]) -> None:
    damaged, run_ = real_runs[(command, damage)]
    proc = run_.result()
    one_error_line(proc.returncode, proc.stderr, str(damaged))
    assert proc.stdout == ""
