"""Dataset loaders, the registry and the download/verify code.

Counts on the real files come from each dataset's SOURCE.md (and the releases' READMEs).
Nothing here downloads: downloads are tested with file:// URLs to zips built in tmp_path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import polars as pl
import pytest

from lmrec.columns import Role
from lmrec.datasets import (
    DATASETS,
    TAOBAO_WINDOW,
    fetch_dataset,
    get_spec,
    list_datasets,
    load_dataset,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_latest_small,
    load_taobao,
    verify_archive,
)
from lmrec.errors import ConfigError, InputError
from lmrec.prepare import PrepareConfig


def dataset_dir(shared: Path, name: str) -> Path:
    path = shared / name
    if not path.is_dir():
        pytest.skip(f"{name} not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # the machine's own dataset folder and cache must not leak into the resolution tests
    monkeypatch.delenv("LMREC_DATASETS_DIR", raising=False)
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "no-cache"))


# --- MovieLens 100K ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml100k(shared_datasets: Path):
    return load_movielens_100k(dataset_dir(shared_datasets, "ml-100k"))


@pytest.mark.shared_data
def test_ml100k_counts(ml100k) -> None:
    ds = ml100k.dataset
    assert (ds.n_events, ds.n_users, ds.n_items) == (100_000, 943, 1_682)
    assert ml100k.report.summary["behaviours"] == {"rating": 100_000}
    values = ds.events["value"].value_counts().sort("value")
    assert dict(values.iter_rows()) == {1.0: 6110, 2.0: 11370, 3.0: 27145, 4.0: 34174,
                                        5.0: 21201}


@pytest.mark.shared_data
def test_ml100k_items_and_users(ml100k) -> None:
    ds = ml100k.dataset
    roles = {k: v.role for k, v in ds.item_schema.items()}
    assert roles == {"title": Role.TEXT, "year": Role.NUMERIC, "release_date": Role.TIME,
                     "genres": Role.MULTI}
    assert len(ds.item_schema["genres"].vocabulary or ()) == 19
    toy = ds.item_table.filter(pl.col("item") == 1).row(0, named=True)
    assert toy["title"] == "Toy Story (1995)"
    assert toy["year"] == 1995
    assert sorted(toy["genres"]) == ["Animation", "Children's", "Comedy"]
    # u.item is latin-1: the accented titles must survive
    assert ds.item_table["title"].str.contains("Misérables").any()
    assert {k: v.role for k, v in ds.user_schema.items()} == {
        "age": Role.NUMERIC, "gender": Role.CATEGORICAL, "occupation": Role.CATEGORICAL,
        "zip_region": Role.CATEGORICAL}
    assert ds.user_table.filter(pl.col("user") == 1).row(0, named=True)["occupation"] == \
        "technician"
    assert dict(ds.user_table["gender"].value_counts().iter_rows()) == {"M": 670, "F": 273}
    assert ds.encoded_features("item")["genres"].shape == (1_682, 19)


@pytest.mark.shared_data
def test_ml100k_min_rating_and_core(shared_datasets: Path) -> None:
    cfg = PrepareConfig(min_rating=3, core=10)
    prepared = load_movielens_100k(dataset_dir(shared_datasets, "ml-100k"), cfg)
    ds = prepared.dataset
    assert (ds.n_users, ds.n_items, ds.n_events) == (939, 1_016, 80_393)
    # the caller's fields win; the dataset's defaults fill the rest
    used = ds.metadata["prepare_config"]
    assert used["min_rating"] == 3 and used["core"] == 10 and used["dedupe"] == "user-item"


# --- MovieLens latest-small ----------------------------------------------------------------
@pytest.mark.shared_data
def test_ml_latest_small(shared_datasets: Path) -> None:
    folder = dataset_dir(shared_datasets, "ml-latest-small")
    prepared = load_movielens_latest_small(folder)
    ds = prepared.dataset
    assert (ds.n_events, ds.n_users, ds.n_items) == (100_836, 610, 9_742)
    assert ds.n_items - prepared.report.summary["items_without_events"] == 9_724
    assert ds.events["value"].min() == 0.5
    items = ds.item_table
    assert {k: v.role for k, v in ds.item_schema.items()} == {
        "title": Role.TEXT, "genres": Role.MULTI, "year": Role.NUMERIC, "tags": Role.MULTI}
    # "(no genres listed)" is an empty list, not a label
    assert "(no genres listed)" not in (ds.item_schema["genres"].vocabulary or ())
    assert items.filter(pl.col("genres").list.len() == 0).height == 34
    tagged = pl.read_csv(folder / "tags.csv")["movieId"].n_unique()
    assert items.filter(pl.col("tags").list.len() > 0).height == tagged
    toy = items.filter(pl.col("item") == 1).row(0, named=True)
    assert toy["tags"] == ["fun", "pixar"]
    # quoted titles with commas (the file is CRLF with quoted fields)
    assert items.filter(pl.col("item") == 11).row(0, named=True)["title"] == \
        "American President, The (1995)"


# --- Taobao --------------------------------------------------------------------------------
@pytest.mark.shared_data
def test_taobao_sample_counts(shared_datasets: Path) -> None:
    folder = dataset_dir(shared_datasets, "taobao-userbehavior-sample")
    prepared = load_taobao(folder)
    ds = prepared.dataset
    # The raw counts hold after the default cleaning: the file has no exact duplicate rows
    # (all 4,321 (user, item, behaviour, timestamp) tuples are distinct) and every timestamp
    # is from 2017, far from the future_tolerance_s limit; only the time window is not applied.
    assert (ds.n_events, ds.n_users, ds.n_items) == (4_321, 43, 3_276)
    assert prepared.report.rows_dropped == 0
    assert prepared.report.summary["behaviours"] == {"buy": 77, "cart": 190, "fav": 128,
                                                     "pv": 3_926}
    assert ds.item_schema["category"].role == Role.CATEGORICAL
    assert len(ds.item_schema["category"].vocabulary or ()) == 567
    # the file itself may be given, too
    by_file = load_taobao(folder / "UserBehavior_head4321.csv")
    assert by_file.dataset.n_events == 4_321


@pytest.mark.shared_data
def test_taobao_official_window(shared_datasets: Path) -> None:
    folder = dataset_dir(shared_datasets, "taobao-userbehavior-sample")
    prepared = load_dataset("taobao", folder, official_window=True)
    # the one event of 2017-09-11 falls outside 2017-11-25..2017-12-03
    assert prepared.dataset.n_events == 4_320
    ts = prepared.dataset.events["timestamp"]
    assert ts.min() >= TAOBAO_WINDOW[0] and ts.max() <= TAOBAO_WINDOW[1]


# --- MovieLens 1M, on lines written here in the release's format -----------------------------
ML1M_RATINGS = """1::1193::5::978300760
1::661::3::978302109
1::914::3::978301968
2::1193::4::978298413
2::661::2::978299000
2::661::5::978299999
3::3408::4::978297039
"""
ML1M_USERS = """1::F::1::10::48067
2::M::56::16::70072
3::M::25::15::55117
"""
ML1M_MOVIES = """661::James and the Giant Peach (1996)::Animation|Children's|Musical
914::My Fair Lady (1964)::Musical|Romance
1193::One Flew Over the Cuckoo's Nest (1975)::Drama
3408::Misérables, Les (1998)::Drama
"""


def write_ml1m(folder: Path, ratings: str = ML1M_RATINGS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(ratings, encoding="ascii")
    (folder / "users.dat").write_text(ML1M_USERS, encoding="ascii")
    (folder / "movies.dat").write_text(ML1M_MOVIES, encoding="latin-1")
    return folder


def test_ml1m_format(tmp_path: Path) -> None:
    prepared = load_movielens_1m(write_ml1m(tmp_path / "ml-1m"))
    ds = prepared.dataset
    # user 2 rated 661 twice: one row per (user, item), the later rating kept
    assert (ds.n_events, ds.n_users, ds.n_items) == (6, 3, 4)
    again = ds.events.filter((pl.col("user_idx") == ds.users.index(pl.Series([2]))[0])
                             & (pl.col("item_idx") == ds.items.index(pl.Series([661]))[0]))
    assert again["value"].to_list() == [5.0]
    users = ds.user_table
    assert users.filter(pl.col("user") == 2).row(0, named=True)["occupation"] == "self-employed"
    assert users.filter(pl.col("user") == 1).row(0, named=True)["gender"] == "F"
    movie = ds.item_table.filter(pl.col("item") == 3408).row(0, named=True)
    assert movie["title"] == "Misérables, Les (1998)" and movie["year"] == 1998
    peach = ds.item_table.filter(pl.col("item") == 661).row(0, named=True)
    assert peach["genres"] == ["Animation", "Children's", "Musical"]
    assert ds.item_schema["title"].role == Role.TEXT


def test_ml1m_bad_lines_name_the_line(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "a", ML1M_RATINGS + "4::1193::5\n")
    with pytest.raises(InputError, match=r"ratings\.dat, line 8: wrong number of fields"):
        load_movielens_1m(folder)
    # a blank line before the bad value: the reported line is still the physical one
    folder = write_ml1m(tmp_path / "b", "1::1193::5::978300760\n\n1::661::x::978302109\n")
    with pytest.raises(InputError, match=r"ratings\.dat, line 3, column 'rating'"):
        load_movielens_1m(folder)


# --- registry --------------------------------------------------------------------------------
def test_registry_lists_and_rejects_unknown_names() -> None:
    names = [s.name for s in list_datasets()]
    assert {"movielens-100k", "movielens-1m", "movielens-latest-small", "taobao"} <= set(names)
    with pytest.raises(ConfigError, match=r"known datasets: .*movielens-100k"):
        load_dataset("movielens-99k")
    with pytest.raises(ConfigError, match="movielens-100k has no option 'official_window'"):
        load_dataset("movielens-100k", official_window=True)


def test_folder_missing_a_file(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    (folder / "users.dat").unlink()
    with pytest.raises(InputError, match=r"ml-1m: .*'users\.dat' not found"):
        load_dataset("movielens-1m", folder)
    with pytest.raises(InputError, match="not found"):
        load_dataset("movielens-1m", tmp_path / "nowhere")


def test_taobao_without_local_copy_explains(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"tianchi.*--from"):
        load_dataset("taobao", cache_dir=tmp_path)


def test_no_download_when_switched_off(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="downloading is off"):
        load_dataset("movielens-100k", cache_dir=tmp_path, download=False)


@pytest.mark.shared_data
def test_resolution_from_env_and_parent_folder(shared_datasets: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    dataset_dir(shared_datasets, "taobao-userbehavior-sample")
    via_parent = load_dataset("taobao", shared_datasets)
    monkeypatch.setenv("LMREC_DATASETS_DIR", str(shared_datasets))
    via_env = load_dataset("taobao", download=False)
    assert via_parent.dataset.n_events == via_env.dataset.n_events == 4_321


# --- download and verification (file:// URLs only) --------------------------------------------
ML100K_FILES = {
    "u.data": "1\t10\t4\t881250949\n2\t10\t3\t881250950\n2\t20\t5\t881250951\n",
    "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
    "u.item": "\n".join(
        f"{i}|Film {i} (1995)|01-Jan-1995||http://example.org/{i}|" + "|".join(
            "1" if g == i % 19 else "0" for g in range(19)) for i in (10, 20)) + "\n",
}


def make_zip(tmp_path: Path) -> tuple[Path, str]:
    archive = tmp_path / "src" / "ml-100k.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for name, text in ML100K_FILES.items():
            zf.writestr(f"ml-100k/{name}", text)
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_verify_unpack_and_load(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    archive, md5 = make_zip(tmp_path)
    spec = dataclasses.replace(get_spec("movielens-100k"), urls=(archive.as_uri(),), md5=md5)
    monkeypatch.setitem(DATASETS, "movielens-100k", spec)
    seen: list[tuple[int, int | None]] = []
    cache = tmp_path / "cache"
    prepared = load_dataset("movielens-100k", cache_dir=cache,
                            progress=lambda done, total: seen.append((done, total)))
    assert (prepared.dataset.n_events, prepared.dataset.n_users) == (3, 2)
    assert (cache / "ml-100k" / "u.data").is_file()
    size = archive.stat().st_size
    assert seen[-1] == (size, size)
    # a second call finds the unpacked folder and downloads nothing
    monkeypatch.setitem(DATASETS, "movielens-100k",
                        dataclasses.replace(spec, urls=("file:///nonexistent/ml-100k.zip",)))
    assert load_dataset("movielens-100k", cache_dir=cache).dataset.n_events == 3


def test_checksum_mismatch_deletes_the_file(tmp_path: Path) -> None:
    archive, _ = make_zip(tmp_path)
    spec = dataclasses.replace(get_spec("movielens-100k"), urls=(archive.as_uri(),),
                               md5="0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="checksum mismatch"):
        fetch_dataset(spec, cache)
    assert not (cache / "ml-100k.zip").exists()
    assert not (cache / "ml-100k").exists()


def test_trust_on_first_use(tmp_path: Path) -> None:
    archive, _ = make_zip(tmp_path)
    spec = dataclasses.replace(get_spec("movielens-100k"), urls=(archive.as_uri(),), md5=None)
    cache = tmp_path / "cache"
    fetch_dataset(spec, cache)
    cached = cache / "ml-100k.zip"
    record = cache / "ml-100k.zip.sha256"
    assert record.read_text().split()[0] == hashlib.sha256(cached.read_bytes()).hexdigest()
    verify_archive(cached)  # matches its record
    cached.write_bytes(cached.read_bytes() + b"tampered")
    with pytest.raises(InputError, match=r"checksum mismatch.*ml-100k\.zip\.sha256"):
        verify_archive(cached)
    assert not cached.exists()


def test_download_failure_is_clear(tmp_path: Path) -> None:
    spec = dataclasses.replace(get_spec("movielens-100k"),
                               urls=((tmp_path / "missing.zip").as_uri(),))
    with pytest.raises(InputError, match=r"cannot download .*--from"):
        fetch_dataset(spec, tmp_path / "cache")
