"""Loaders for the Amazon Beauty and Sports sequence files (S3-Rec / ICLRec / TIGER format).

Each line is `user_id item_id item_id ...`: one user, the items oldest first, no timestamps,
ratings or attributes. The choices made here, and why:

- Time is the position in the user's sequence (1, 2, 3, ... as Unix seconds): the file's order
  is the only time there is, and as timestamps it survives preparation's sort, so leave-one-out
  and sequence models see each history in the published order. Positions are comparable only
  within one user: a global temporal split over them, or a time filter (time_min/max,
  burst_max), is meaningless (the report says so).
- Behaviour type is the default ("interaction"): the events are reviews, used as implicit
  feedback, with no value.
- An item repeated in one line is a repeated purchase and stays a repeated event (dedupe
  "none" by default); the published files hold no repeats, so the counts are unaffected.
- Blank lines are skipped; a line with a user and no items gives that user no events, so the
  user is left out and the report says how many such lines there were.
- A user on two lines, or an id that is not integer text, is refused with the file and line:
  both mean a file that is not the published one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec import ids
from lmrec.collect.events import ColumnMapping
from lmrec.datasets.movielens import LinesTable, require_file, with_defaults
from lmrec.errors import InputError, Location
from lmrec.prepare import Dedupe, PrepareConfig, Prepared, prepare

BEAUTY_FILES = ("Beauty.txt",)
SPORTS_FILES = ("Sports_and_Outdoors.txt",)
_MAPPING = ColumnMapping(user=C.USER, item=C.ITEM, time=C.TIME)
_TOKENS = "tokens"
_FIELD = "field"  # 0 = the user id, 1.. = the items, oldest first
_LINE = "lineno"
TIME_NOTE = ("timestamps are positions in each user's sequence (1 = oldest), not times: "
             "the file has none; compare them only within a user")


def read_sequences(path: Path) -> tuple[LinesTable, int]:
    """The events of a sequence file as a table (user, item, timestamp = position), with the
    number of user lines that hold no items.

    Fields are split on any run of whitespace, so tabs or double spaces are read as the same
    file; every id must be integer text.
    """
    name = str(path)
    data = path.read_bytes()
    # undecodable bytes become U+FFFD and then fail the integer check, naming their line
    text = data.decode("utf-8", errors="replace")
    lines = pl.DataFrame({"line": pl.Series(text.split("\n"), dtype=pl.String)})
    tokens = (lines.with_row_index(_LINE, offset=1)
              .select(_LINE, pl.col("line").str.extract_all(r"\S+").alias(_TOKENS))
              .filter(pl.col(_TOKENS).list.len() > 0))
    if tokens.height == 0:
        raise InputError("file has no user lines", location=Location(name),
                         expected="lines 'user_id item_id item_id ...'")
    empty_users = int((tokens[_TOKENS].list.len() == 1).sum())
    fields = (tokens.with_columns(pl.int_ranges(0, pl.col(_TOKENS).list.len()).alias(_FIELD))
              .explode(_TOKENS, _FIELD))
    as_int = ids.ints_from_text(fields[_TOKENS])
    bad = as_int.is_null().to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        field = int(fields[_FIELD][first])
        raise InputError(
            f"field {field + 1} is not an integer id",
            location=Location(name, line=int(fields[_LINE][first]),
                              column=C.USER if field == 0 else C.ITEM),
            expected="whole-number ids separated by spaces: 'user_id item_id item_id ...'",
            found=str(fields[_TOKENS][first]),
        )
    fields = fields.with_columns(as_int.alias(_TOKENS))
    users = fields.filter(pl.col(_FIELD) == 0)
    repeated = (~users[_TOKENS].is_first_distinct()).to_numpy()
    if repeated.any():
        # the published files hold each user once; a second line would interleave positions
        second = int(np.flatnonzero(repeated)[0])
        user = int(users[_TOKENS][second])
        first_line = int(users.filter(pl.col(_TOKENS) == user)[_LINE][0])
        raise InputError(
            f"user {user} has a second line (the first is line {first_line})",
            location=Location(name, line=int(users[_LINE][second]), column=C.USER),
            expected="one line per user",
        )
    events = (fields.with_columns(pl.col(_TOKENS).first().over(_LINE).alias(C.USER))
              .filter(pl.col(_FIELD) > 0))
    if events.height == 0:
        raise InputError("no line holds an item", location=Location(name),
                         expected="lines 'user_id item_id item_id ...'")
    frame = events.select(pl.col(C.USER), pl.col(_TOKENS).alias(C.ITEM),
                          pl.col(_FIELD).cast(pl.Int64).alias(C.TIME))
    table = LinesTable(frame=frame, source=name, kind="lines",
                       line_numbers=events[_LINE].to_numpy())
    return table, empty_users


def load_sequences(path: str | Path, config: PrepareConfig | None = None, *,
                   name: str = "sequences") -> Prepared:
    """Any file in the one-sequence-per-line format, prepared as `name`.

    The caller's config wins; by default nothing is deduplicated (repeats are repeat events).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", location=Location(str(path)))
    table, empty_users = read_sequences(path)
    cfg = with_defaults(config, dedupe=Dedupe.NONE)
    prepared = prepare(table, mapping=_MAPPING, config=cfg, name=name)
    prepared.report.flags.append(TIME_NOTE)
    if empty_users:
        prepared.report.flags.append(
            f"{empty_users} user lines hold no items: those users have no events and are left "
            "out")
    return prepared


def _sequence_file(source: str | Path, names: tuple[str, ...], dataset: str) -> Path:
    path = Path(source)
    if path.is_dir():
        found = [path / n for n in names if (path / n).is_file()]
        return found[0] if found else require_file(path, names[0], dataset)
    return path


def load_amazon_beauty(source: str | Path, config: PrepareConfig | None = None) -> Prepared:
    """Amazon Beauty, 5-core (S3-Rec/ICLRec/TIGER): Beauty.txt, or a folder holding it."""
    path = _sequence_file(source, BEAUTY_FILES, "amazon-beauty")
    return load_sequences(path, config, name="amazon-beauty")


def load_amazon_sports(source: str | Path, config: PrepareConfig | None = None) -> Prepared:
    """Amazon Sports and Outdoors, 5-core: Sports_and_Outdoors.txt, or a folder holding it."""
    path = _sequence_file(source, SPORTS_FILES, "amazon-sports")
    return load_sequences(path, config, name="amazon-sports")
