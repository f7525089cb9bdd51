"""Loader for Alibaba's Taobao UserBehavior log (Tianchi dataset 649).

Each line is `user,item,category,behavior,timestamp` with no header; behaviour is one of
pv (page view), fav, cart, buy. The item table is derived from the log: item -> category.
"""

from __future__ import annotations

from pathlib import Path

from lmrec import columns as C
from lmrec.collect.events import ColumnMapping
from lmrec.collect.readers import Table, read_table
from lmrec.columns import Role
from lmrec.datasets.movielens import with_defaults
from lmrec.errors import InputError, Location
from lmrec.prepare import PrepareConfig, Prepared, prepare

TAOBAO_FILES = ("UserBehavior.csv", "UserBehavior_head4321.csv")
TAOBAO_BEHAVIOURS = ("pv", "fav", "cart", "buy")
# The documented collection window, 2017-11-25 00:00 to 2017-12-03 23:59:59 in China Standard
# Time (UTC+8), as Unix seconds. The raw log holds some events outside it.
TAOBAO_WINDOW = (1_511_539_200, 1_512_316_799)
_COLUMNS = (C.USER, C.ITEM, "category", "behavior", "timestamp")
_MAPPING = ColumnMapping(user=C.USER, item=C.ITEM, event="behavior", time="timestamp")


def find_taobao_file(source: str | Path) -> Path:
    """The UserBehavior file itself, or the known file name inside a folder."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        for name in TAOBAO_FILES:
            if (path / name).is_file():
                return path / name
        raise InputError(
            f"taobao: none of the files {list(TAOBAO_FILES)} found in the folder",
            location=Location(str(path)),
            expected="the UserBehavior.csv file from Tianchi dataset 649",
        )
    raise InputError("file or folder not found", location=Location(str(path)))


def load_taobao(
    source: str | Path,
    config: PrepareConfig | None = None,
    *,
    official_window: bool = False,
) -> Prepared:
    """Taobao UserBehavior from the CSV file or a folder holding it.

    `official_window` keeps only events inside TAOBAO_WINDOW (unless `config` sets its own
    time_min/time_max); by default every event of the file is kept.
    """
    path = find_taobao_file(source)
    events = read_table(path, delimiter=",", header=False, column_names=_COLUMNS)
    items = Table(
        # every event carries its item's category; the first seen is the item's category
        frame=events.frame.select(C.ITEM, "category").unique(C.ITEM, keep="first",
                                                             maintain_order=True),
        source=str(path),
        kind="frame",
    )
    window = {"time_min": TAOBAO_WINDOW[0], "time_max": TAOBAO_WINDOW[1]} if official_window \
        else {}
    # category ids are numbers, but labels: without the override they would be normalised
    cfg = with_defaults(config, item_roles={"category": Role.CATEGORICAL}, **window)
    return prepare(events, None, items, mapping=_MAPPING, config=cfg, name="taobao")
