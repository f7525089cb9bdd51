"""The Amazon Beauty and Sports sequence files: the parser on tiny files written here, the
registry and CLI, and the counts of SOURCE.md on the real files (skipped when absent)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest

from helpers_cli import one_error_line, run
from lmrec.data.dataset import Dataset
from lmrec.datasets import get_spec, load_amazon_beauty, load_dataset, load_sequences
from lmrec.errors import InputError
from lmrec.evaluate.splits import split_loo
from lmrec.prepare import Dedupe, PrepareConfig

# user 2 bought item 7 twice; a blank line, a CRLF line, a tab and a double space; user 4's
# line holds no items
TINY = "1 10 11 12\n2 7 13 7 14\n\n3\t12  10 15\r\n4\n5 11 14 10\n"


def write(folder: Path, text: str, name: str = "Beauty.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8", newline="")
    return folder


def history(ds: Dataset, user: int) -> list[int]:
    """The user's items in time order, as external ids."""
    u = int(ds.users.index(pl.Series([user]))[0])
    ev = ds.events.filter(pl.col("user_idx") == u).sort("timestamp")
    return [ds.items.to_python(int(i)) for i in ev["item_idx"]]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # the machine's own dataset folder and cache must not leak into the resolution tests
    monkeypatch.delenv("LMREC_DATASETS_DIR", raising=False)
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "no-cache"))


# --- the parser ----------------------------------------------------------------------------
def test_tiny_file_order_repeats_and_empty_users(tmp_path: Path) -> None:
    prepared = load_amazon_beauty(write(tmp_path / "amazon-beauty", TINY))
    ds = prepared.dataset
    # user 4 has no items, so no events; the repeat of item 7 stays a second event
    assert (ds.n_users, ds.n_items, ds.n_events) == (4, 7, 13)
    assert history(ds, 2) == [7, 13, 7, 14]
    assert history(ds, 3) == [12, 10, 15]
    # the timestamp is the position in the user's sequence, 1 = oldest
    u3 = int(ds.users.index(pl.Series([3]))[0])
    assert ds.events.filter(pl.col("user_idx") == u3)["timestamp"].sort().to_list() == [1, 2, 3]
    assert prepared.report.summary["behaviours"] == {"interaction": 13}
    assert prepared.report.rows_dropped == 0
    flags = " ".join(prepared.report.flags)
    assert "positions in each user's sequence" in flags
    assert "1 user lines hold no items" in flags
    assert ds.metadata["prepare_config"]["dedupe"] == "none"


def test_callers_config_wins(tmp_path: Path) -> None:
    folder = write(tmp_path / "b", TINY)
    cfg = PrepareConfig(dedupe=Dedupe.USER_ITEM)
    ds = load_dataset("amazon-beauty", folder, download=False, config=cfg).dataset
    assert ds.n_events == 12 and sorted(history(ds, 2)) == [7, 13, 14]


def test_loo_holds_out_the_last_item_of_each_line(tmp_path: Path) -> None:
    ds = load_amazon_beauty(write(tmp_path / "b", TINY)).dataset
    split = split_loo(ds)
    test = split.test.events
    got = {ds.users.to_python(int(u)): ds.items.to_python(int(i))
           for u, i in zip(test["user_idx"], test["item_idx"], strict=True)}
    assert got == {1: 12, 2: 14, 3: 15, 5: 10}


@pytest.mark.parametrize(("text", "where"), [
    ("1 10 11\n2 10 x1 12\n", r"Beauty\.txt, line 2, column 'item': field 3 is not an integer"),
    ("1 10 11\n\nu3 10 12\n", r"Beauty\.txt, line 3, column 'user': field 1 is not an integer"),
    ("1 10 11\n2 10 1.5\n", r"Beauty\.txt, line 2, column 'item'.*found '1\.5'"),
    # "007" would not survive the trip to an integer and back
    ("1 10 007\n", r"Beauty\.txt, line 1, column 'item'"),
    ("1 10 11\n2 12\n1 13\n", r"Beauty\.txt, line 3, column 'user': user 1 has a second line "
                              r"\(the first is line 1\)"),
    (b"1 10 11\n2 1\xff2\n".decode("latin-1"), r"Beauty\.txt, line 2, column 'item'"),
    ("\n \n", r"Beauty\.txt: file has no user lines"),
    ("1\n2\n", r"Beauty\.txt: no line holds an item"),
])
def test_malformed_lines_name_file_and_line(tmp_path: Path, text: str, where: str) -> None:
    folder = tmp_path / "b"
    folder.mkdir()
    # latin-1 here writes the one byte 0xff, which is not UTF-8
    (folder / "Beauty.txt").write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError, match=where):
        load_amazon_beauty(folder)


def test_sequences_of_any_name(tmp_path: Path) -> None:
    path = write(tmp_path, "7 1 2\n", name="seq.txt") / "seq.txt"
    prepared = load_sequences(path, name="mine")
    assert prepared.dataset.name == "mine" and prepared.dataset.n_events == 2


# --- registry ------------------------------------------------------------------------------
def test_registry_specs_never_download() -> None:
    for name, file in (("amazon-beauty", "Beauty.txt"),
                       ("amazon-sports", "Sports_and_Outdoors.txt")):
        spec = get_spec(name)
        assert spec.urls == () and spec.files == ((file,),) and spec.accepts_file
        assert "redistribution" in spec.licence


def test_without_a_copy_the_error_asks_for_from(tmp_path: Path) -> None:
    for download in (True, False):
        with pytest.raises(InputError, match=r"amazon-sports: no local copy.*terms forbid "
                                             r"redistribution.*Sports_and_Outdoors\.txt.*--from"):
            load_dataset("amazon-sports", download=download)


def test_folder_without_the_file_names_it(tmp_path: Path) -> None:
    write(tmp_path / "x", TINY, name="Sports.txt")
    with pytest.raises(InputError, match=r"amazon-sports: file 'Sports_and_Outdoors\.txt' not "
                                         r"found in the folder"):
        load_dataset("amazon-sports", tmp_path / "x", download=False)
    # the file itself, or the parent of a folder named as the dataset, will do
    write(tmp_path / "p" / "amazon-sports", TINY, name="Sports_and_Outdoors.txt")
    assert load_dataset("amazon-sports", tmp_path / "p").dataset.n_events == 13
    file = tmp_path / "p" / "amazon-sports" / "Sports_and_Outdoors.txt"
    assert load_dataset("amazon-sports", file).dataset.name == "amazon-sports"


# --- CLI -----------------------------------------------------------------------------------
def test_cli_get_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write(tmp_path / "amazon-beauty", TINY)
    code, _, err = run(["datasets", "get", "amazon-beauty", "--from", str(folder), "--out",
                        str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert Dataset.load(tmp_path / "out").n_events == 13
    code, out, _ = run(["datasets", "list"], capsys)
    assert code == 0 and "amazon-beauty" in out and "amazon-sports" in out


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = str(tmp_path / "out")
    code, out, err = run(["datasets", "get", "amazon-beauty", "--out", new], capsys)
    one_error_line(code, err, "Beauty.txt", out)
    code, out, err = run(["datasets", "get", "amazon-beauty", "--from", str(tmp_path), "--out",
                          new], capsys)
    one_error_line(code, err, "'Beauty.txt' not found", out)
    folder = write(tmp_path / "bad", "1 2 3\n4 5 six\n")
    code, out, err = run(["datasets", "get", "amazon-beauty", "--from", str(folder), "--out",
                          new], capsys)
    one_error_line(code, err, "Beauty.txt, line 2, column 'item'", out)


# --- the real files (SOURCE.md of each) ----------------------------------------------------
REAL = {
    # name: (folder, file, sha256, (users, items, interactions))
    "amazon-beauty": ("amazon-beauty", "Beauty.txt",
                      "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
                      (22_363, 12_101, 198_502)),
    "amazon-sports": ("amazon-sports", "Sports_and_Outdoors.txt",
                      "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
                      (35_598, 18_357, 296_337)),
}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(REAL))
def test_source_counts(shared_datasets: Path, name: str) -> None:
    folder_name, file, sha256, counts = REAL[name]
    folder = shared_datasets / folder_name
    if not (folder / file).is_file():
        pytest.skip(f"{name}: {folder / file} not found (set $LMREC_SHARED_DATASETS)")
    # the counts are those of this exact file
    assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == sha256
    prepared = load_dataset(name, folder, download=False)
    ds = prepared.dataset
    # nothing is dropped: the files hold no repeats, no bad lines and no item-less users
    assert (ds.n_users, ds.n_items, ds.n_events) == counts
    assert prepared.report.rows_dropped == 0
    # the first line of both files starts "1 1 2 3 4 5 ..." in that order
    assert history(ds, 1)[:5] == [1, 2, 3, 4, 5]
