"""Public datasets (MovieLens, Taobao, Amazon Beauty/Sports) and the e-commerce generator."""

from lmrec.datasets.amazon import load_amazon_beauty, load_amazon_sports, load_sequences
from lmrec.datasets.download import default_cache_dir, download_file, unpack_zip, verify_archive
from lmrec.datasets.movielens import (
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_latest_small,
)
from lmrec.datasets.registry import (
    DATASETS,
    DatasetSpec,
    fetch_dataset,
    get_spec,
    list_datasets,
    load_dataset,
    locate_dataset,
)
from lmrec.datasets.shop import ShopData, generate_shop, shop_dataset
from lmrec.datasets.taobao import TAOBAO_WINDOW, load_taobao

__all__ = [
    "DATASETS",
    "TAOBAO_WINDOW",
    "DatasetSpec",
    "ShopData",
    "default_cache_dir",
    "download_file",
    "fetch_dataset",
    "generate_shop",
    "get_spec",
    "list_datasets",
    "load_amazon_beauty",
    "load_amazon_sports",
    "load_dataset",
    "load_movielens_1m",
    "load_movielens_100k",
    "load_movielens_latest_small",
    "load_sequences",
    "load_taobao",
    "locate_dataset",
    "shop_dataset",
    "unpack_zip",
    "verify_archive",
]
