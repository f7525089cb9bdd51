"""Known public datasets: where they come from, how they are found locally, how they load.

`load_dataset` looks for a dataset in this order: the `source` given, the folder named by
`LMREC_DATASETS_DIR`, the cache (`LMREC_CACHE_DIR` or ~/.cache/lmrec), and last a download of
the official archive into the cache.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmrec.datasets import download as dl
from lmrec.datasets.amazon import (
    BEAUTY_FILES,
    SPORTS_FILES,
    load_amazon_beauty,
    load_amazon_sports,
)
from lmrec.datasets.movielens import (
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_latest_small,
)
from lmrec.datasets.shop import shop_dataset
from lmrec.datasets.taobao import TAOBAO_FILES, load_taobao
from lmrec.errors import ConfigError, InputError, Location
from lmrec.prepare import PrepareConfig, Prepared

DATASETS_DIR_ENV = "LMREC_DATASETS_DIR"
Loader = Callable[..., Prepared]


@dataclass(frozen=True)
class DatasetSpec:
    """One public dataset.

    `files` lists what a local copy must hold; each entry is a tuple of accepted names (any one
    of them will do). `md5`/`sha256` are published checksums of the archive at `urls[0]`;
    None means none could be confirmed, and the archive is trusted on first use.
    """

    name: str
    description: str
    loader: Loader
    folders: tuple[str, ...]  # local folder names recognised, e.g. "ml-100k"
    files: tuple[tuple[str, ...], ...]
    urls: tuple[str, ...] = ()
    md5: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    homepage: str = ""
    licence: str = ""
    accepts_file: bool = False  # a single data file may be given as the source
    generated: bool = False  # built by lmrec itself: no files, no download
    # why there is no download (said when no local copy is found and `urls` is empty)
    no_download: str = "the site needs a login"

    @property
    def archive_name(self) -> str | None:
        return self.urls[0].rsplit("/", 1)[-1] if self.urls else None

    def missing_files(self, folder: Path) -> list[str]:
        return [names[0] for names in self.files if not any((folder / n).is_file() for n in names)]


_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
_GROUPLENS_TERMS = "GroupLens research licence: research use, cite Harper & Konstan 2015"
# The Amazon sets are the files of salesforce/ICLRec's data/ folder (commit 2890e6c, 2022-09-16;
# sha256 in the datasets' SOURCE.md). lmrec never downloads them: the review data's terms
# forbid redistribution, so a user fetches the file and passes it with --from.
_ICLREC = "https://github.com/salesforce/ICLRec"
_AMAZON_TERMS = ("Amazon review data: research use, cite He & McAuley 2016 and McAuley et al. "
                 "2015; no redistribution")
_AMAZON_NO_DOWNLOAD = "the review data's terms forbid redistribution"

# The MD5 values are GroupLens's published `<zip>.md5` files, quoted identically by many
# independent projects. ml-latest-small is a "development" release that GroupLens may rebuild,
# and no checksum for it could be confirmed: it is trusted on first use.
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="movielens-100k",
            description="MovieLens 100K (1998): 100,000 ratings 1-5 by 943 users on 1,682 "
                        "movies, with demographics, titles, dates and genres",
            loader=load_movielens_100k,
            folders=("ml-100k",),
            files=(("u.data",), ("u.user",), ("u.item",)),
            urls=(_GROUPLENS + "ml-100k.zip",),
            md5="0e33842e24a9c977be4e0107933c0723",
            homepage="https://grouplens.org/datasets/movielens/100k/",
            licence=_GROUPLENS_TERMS + "; no redistribution",
        ),
        DatasetSpec(
            name="movielens-1m",
            description="MovieLens 1M (2003): 1,000,209 ratings 1-5 by 6,040 users on 3,706 "
                        "movies, with demographics, titles and genres",
            loader=load_movielens_1m,
            folders=("ml-1m",),
            # the release's ratings.dat (users.dat and movies.dat are used when present), or
            # a plain ratings table with columns user, item, rating and no timestamps
            files=(("ratings.dat", "ratings.csv", "ratings_user_itemindex_rating.csv"),),
            urls=(_GROUPLENS + "ml-1m.zip",),
            md5="c4d9eecfca2ab87c1945afe126590906",
            homepage="https://grouplens.org/datasets/movielens/1m/",
            licence=_GROUPLENS_TERMS + "; no redistribution",
            accepts_file=True,
        ),
        DatasetSpec(
            name="movielens-latest-small",
            description="MovieLens latest-small (2018 edition): 100,836 half-star ratings by "
                        "610 users on 9,742 movies, with titles, genres and free-text tags",
            loader=load_movielens_latest_small,
            folders=("ml-latest-small",),
            files=(("ratings.csv",), ("movies.csv",)),
            urls=(_GROUPLENS + "ml-latest-small.zip",),
            homepage="https://grouplens.org/datasets/movielens/latest/",
            licence=_GROUPLENS_TERMS + "; redistribution under the same terms",
        ),
        DatasetSpec(
            name="taobao",
            description="Taobao UserBehavior (Alibaba, 2017): ~100M pv/fav/cart/buy events of "
                        "~1M users, with item categories",
            loader=load_taobao,
            folders=("taobao-userbehavior", "taobao-userbehavior-sample", "taobao",
                     "UserBehavior"),
            files=(TAOBAO_FILES,),
            homepage="https://tianchi.aliyun.com/dataset/649",
            licence="Tianchi terms (commonly reported as CC BY-NC-SA 4.0); non-commercial",
            accepts_file=True,
        ),
        DatasetSpec(
            name="amazon-beauty",
            description="Amazon Beauty, 5-core (McAuley et al. 2014, as in S3-Rec, ICLRec and "
                        "TIGER): 198,502 reviews by 22,363 users on 12,101 products, one "
                        "time-ordered sequence per user, no timestamps",
            loader=load_amazon_beauty,
            folders=("amazon-beauty",),
            files=(BEAUTY_FILES,),
            homepage=_ICLREC,
            licence=_AMAZON_TERMS,
            accepts_file=True,
            no_download=_AMAZON_NO_DOWNLOAD,
        ),
        DatasetSpec(
            name="amazon-sports",
            description="Amazon Sports and Outdoors, 5-core (as amazon-beauty): 296,337 "
                        "reviews by 35,598 users on 18,357 products, one time-ordered "
                        "sequence per user, no timestamps",
            loader=load_amazon_sports,
            folders=("amazon-sports",),
            files=(SPORTS_FILES,),
            homepage=_ICLREC,
            licence=_AMAZON_TERMS,
            accepts_file=True,
            no_download=_AMAZON_NO_DOWNLOAD,
        ),
        DatasetSpec(
            name="shop",
            description="Generated e-commerce log (lmrec's own): view/favourite/cart/purchase "
                        "events with hidden user preferences; titles, categories, brands, prices",
            loader=shop_dataset,
            folders=(),
            files=(),
            licence="generated by lmrec; no restrictions",
            generated=True,
        ),
    )
}


def list_datasets() -> list[DatasetSpec]:
    """Every known dataset, by name."""
    return [DATASETS[n] for n in sorted(DATASETS)]


def get_spec(name: str) -> DatasetSpec:
    """The spec of `name`; ConfigError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}"
        ) from None


def load_dataset(
    name: str,
    source: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
    config: PrepareConfig | None = None,
    progress: dl.Progress | None = None,
    **options: Any,
) -> Prepared:
    """Find, (if needed) download, read and prepare a known dataset.

    `options` go to the dataset's loader (e.g. `official_window=True` for taobao, or
    `n_users=5000, seed=1` for the generated "shop").
    """
    spec = get_spec(name)
    _check_options(spec, options)
    if spec.generated:
        if source is not None:
            raise ConfigError(f"{spec.name} is generated; it takes options, not a source")
        return spec.loader(config=config, **options)
    path = locate_dataset(spec, source, cache_dir=cache_dir, download=download,
                          progress=progress)
    return spec.loader(path, config, **options)


def _check_options(spec: DatasetSpec, options: dict[str, Any]) -> None:
    """A clear error for an option the loader does not take (the generator checks its own)."""
    if spec.generated or not options:
        return
    params = inspect.signature(spec.loader).parameters.values()
    known = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"{spec.name} has no option {', '.join(map(repr, unknown))}; "
                          f"its options: {', '.join(known) or 'none'}")


def locate_dataset(
    spec: DatasetSpec,
    source: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
    progress: dl.Progress | None = None,
) -> Path:
    """The local folder (or, for single-file datasets, file) to load `spec` from."""
    if spec.generated:
        raise ConfigError(f"{spec.name} is generated by lmrec; there are no files to locate")
    if source is not None:
        return _from_source(spec, Path(source).expanduser())
    env = os.environ.get(DATASETS_DIR_ENV)
    if env:
        found = _recognised_folder(spec, Path(env).expanduser())
        if found is not None:
            return _complete(spec, found)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else dl.default_cache_dir()
    found = _recognised_folder(spec, cache)
    if found is not None and not spec.missing_files(found):
        return found
    if not spec.urls:
        raise InputError(
            f"{spec.name}: no local copy found, and lmrec has no download for it "
            f"({spec.no_download}). Download {spec.files[0][0]} from {spec.homepage}, then pass "
            f"the file or its folder with --from (source=...), or put it in a folder named "
            f"{spec.folders[0]!r} under ${DATASETS_DIR_ENV}",
            location=Location(str(cache)),
        )
    if not download:
        raise InputError(
            f"{spec.name} not found locally and downloading is off",
            location=Location(str(cache)),
            expected=f"a folder {spec.folders[0]!r} here or under ${DATASETS_DIR_ENV}, or "
            "allow the download",
        )
    return fetch_dataset(spec, cache, progress=progress)


def fetch_dataset(spec: DatasetSpec, cache: Path, *, progress: dl.Progress | None = None) -> Path:
    """Download (unless already cached) and verify the archive, then unpack it in `cache`."""
    archive_name = spec.archive_name
    if archive_name is None:
        raise ConfigError(f"{spec.name} has no download URL")
    archive = cache / archive_name
    if archive.is_file():
        dl.verify_archive(archive, md5=spec.md5, sha256=spec.sha256)
    else:
        dl.download_file(spec.urls[0], archive, md5=spec.md5, sha256=spec.sha256,
                         progress=progress)
    needed = tuple(names[0] for names in spec.files)
    return dl.unpack_zip(archive, cache / spec.folders[0], needed)


def _recognised_folder(spec: DatasetSpec, root: Path) -> Path | None:
    for folder in spec.folders:
        if (root / folder).is_dir():
            return root / folder
    return None


def _from_source(spec: DatasetSpec, source: Path) -> Path:
    if not source.exists():
        raise InputError("file or folder not found", location=Location(str(source)),
                         expected=f"a folder holding the {spec.name} files")
    if source.is_file():
        if spec.accepts_file:
            return source
        raise InputError(
            f"{spec.name} is loaded from a folder, not a single file",
            location=Location(str(source)),
            expected=f"the folder holding {[n[0] for n in spec.files]}",
        )
    if spec.missing_files(source):
        # a folder that holds the dataset's folder, e.g. the parent of ml-100k/
        inner = _recognised_folder(spec, source)
        if inner is not None:
            return _complete(spec, inner)
    return _complete(spec, source)


def _complete(spec: DatasetSpec, folder: Path) -> Path:
    missing = spec.missing_files(folder)
    if missing:
        alternatives = next(n for n in spec.files if n[0] == missing[0])
        raise InputError(
            f"{spec.name}: file {' or '.join(repr(n) for n in alternatives)} not found in the "
            "folder",
            location=Location(str(folder)),
            expected=f"the files {[n[0] for n in spec.files]}",
        )
    return folder
