"""Loaders for the GroupLens MovieLens releases: 100K, 1M and latest-small.

Each loader reads the release's own files with lmrec's readers, builds the item (and user)
attribute tables with explicit roles, and runs the ordinary preparation pipeline. Events are
ratings: behaviour type "rating", value = the rating, one row per (user, item), latest kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec.collect.events import ColumnMapping
from lmrec.collect.readers import Table, read_table
from lmrec.columns import Role
from lmrec.errors import InputError, Location
from lmrec.prepare import Dedupe, Keep, PrepareConfig, Prepared, prepare

RATING_EVENT = "rating"
_RATING_COLUMNS = (C.USER, C.ITEM, "rating", "timestamp")
_RATING_MAPPING = ColumnMapping(user=C.USER, item=C.ITEM, time="timestamp", value="rating",
                                default_event=RATING_EVENT)
# The genre flags of u.item, in the order of u.genre (fixed by the 1998 release).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)
# Occupation codes of ML-1M users.dat, from the release README.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
_NO_GENRES = "(no genres listed)"  # ml-latest's marker for an empty genre list
_TITLE_YEAR = r"\((\d{4})\)\s*$"  # "Toy Story (1995)"

_MOVIE_ROLES: dict[str, Role] = {"title": Role.TEXT, "genres": Role.MULTI, "year": Role.NUMERIC}


# --- shared helpers (also used by the other loaders of this package) ------------------------
def with_defaults(
    config: PrepareConfig | None,
    *,
    user_roles: Mapping[str, Role] | None = None,
    item_roles: Mapping[str, Role] | None = None,
    **defaults: Any,
) -> PrepareConfig:
    """The caller's config, with a dataset's defaults for every field the caller did not set.

    Role overrides are merged: the dataset's roles, then the caller's on top.
    """
    base = config or PrepareConfig()
    explicit = base.model_fields_set
    values = base.model_dump()
    values.update({k: v for k, v in defaults.items() if k not in explicit})
    values["user_roles"] = {**(user_roles or {}), **base.user_roles}
    values["item_roles"] = {**(item_roles or {}), **base.item_roles}
    return PrepareConfig.model_validate(values)


def require_file(folder: Path, name: str, dataset: str) -> Path:
    """`folder / name`, or an InputError that names the folder and the missing file."""
    path = folder / name
    if not path.is_file():
        raise InputError(
            f"{dataset}: file {name!r} not found in the folder",
            location=Location(str(folder)),
            expected=f"the {dataset} release files, including {name}",
        )
    return path


@dataclass
class LinesTable(Table):
    """A table read line by line; remembers the physical line of every row for errors."""

    line_numbers: np.ndarray | None = None

    def locate(self, positions: Iterable[int], column: str | None = None) -> list[Location]:
        assert self.line_numbers is not None
        return [
            Location(self.source, line=int(self.line_numbers[int(p)]), row=int(p) + 1,
                     column=column)
            for p in positions
        ]


def read_separated_lines(
    path: Path, separator: str, names: Sequence[str], *, encoding: str = "utf-8"
) -> LinesTable:
    """Read a headerless file whose fields are split by a multi-character separator ("::").

    pyarrow takes one-character delimiters only; this splits whole lines in polars instead.
    Every column is a string, as with `read_table`; a line with the wrong number of fields
    raises InputError naming the line.
    """
    name = str(path)
    if not path.is_file():
        raise InputError("file not found", location=Location(name))
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"bytes that are not valid {encoding}: {data[exc.start:exc.end]!r}",
            location=Location(name, line=data.count(b"\n", 0, exc.start) + 1),
            expected=f"{encoding} text",
        ) from exc
    # split on "\n" only: str.splitlines would also split on latin-1 control characters
    lines = pl.Series("line", text.split("\n")).str.strip_suffix("\r")
    numbered = pl.DataFrame({"line": lines}).with_row_index("lineno", offset=1)
    numbered = numbered.filter(pl.col("line").str.strip_chars() != "")
    if numbered.height == 0:
        raise InputError("file has no data lines", location=Location(name))
    parts = numbered["line"].str.split(separator)
    n_fields = parts.list.len()
    bad = (n_fields != len(names)).to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"wrong number of fields ({n_fields[first]})",
            location=Location(name, line=int(numbered["lineno"][first])),
            expected=f"{len(names)} fields separated by {separator!r}",
            found=numbered["line"][first],
        )
    frame = pl.DataFrame([parts.list.get(i).alias(n) for i, n in enumerate(names)])
    return LinesTable(frame=frame, source=name, kind="lines",
                      line_numbers=numbered["lineno"].to_numpy())


def _year_from_title(title: pl.Expr) -> pl.Expr:
    return title.str.extract(_TITLE_YEAR, 1).cast(pl.Int32, strict=False)


def _rating_config(config: PrepareConfig | None, **roles: Mapping[str, Role]) -> PrepareConfig:
    return with_defaults(config, dedupe=Dedupe.USER_ITEM, dedupe_keep=Keep.LAST, **roles)


# --- MovieLens 100K ------------------------------------------------------------------------
def load_movielens_100k(folder: str | Path, config: PrepareConfig | None = None) -> Prepared:
    """ml-100k: u.data (ratings), u.user (demographics), u.item (titles, dates, genres)."""
    folder = Path(folder)
    data = require_file(folder, "u.data", "movielens-100k")
    user_path = require_file(folder, "u.user", "movielens-100k")
    item_path = require_file(folder, "u.item", "movielens-100k")

    events = read_table(data, delimiter="\t", header=False, column_names=_RATING_COLUMNS)
    users = read_table(user_path, delimiter="|", header=False,
                       column_names=[C.USER, "age", "gender", "occupation", "zip"])
    users.frame = users.frame.with_columns(
        # the first zip digit is the US postal region; finer zips are too sparse to learn from
        pl.col("zip").str.strip_chars().str.slice(0, 1).alias("zip_region"),
    ).drop("zip")
    raw_items = read_table(item_path, delimiter="|", header=False, encoding="latin-1",
                           column_names=[C.ITEM, "title", "release_date", "video_release_date",
                                         "imdb_url", *ML100K_GENRES])
    raw_items.frame = _ml100k_items(raw_items.frame)
    cfg = _rating_config(
        config,
        user_roles={"age": Role.NUMERIC, "gender": Role.CATEGORICAL,
                    "occupation": Role.CATEGORICAL, "zip_region": Role.CATEGORICAL},
        item_roles={**_MOVIE_ROLES, "release_date": Role.TIME},
    )
    return prepare(events, users, raw_items, mapping=_RATING_MAPPING, config=cfg,
                   name="movielens-100k")


def _ml100k_items(raw: pl.DataFrame) -> pl.DataFrame:
    flags = [pl.when(pl.col(g).str.strip_chars() == "1").then(pl.lit(g)) for g in ML100K_GENRES]
    release = pl.col("release_date").str.strip_chars().str.to_date("%d-%b-%Y", strict=False)
    return raw.select(
        pl.col(C.ITEM),
        pl.col("title").str.strip_chars(),
        # the release year, else the year in the title ("unknown" item 267 has neither)
        pl.coalesce(release.dt.year(), _year_from_title(pl.col("title"))).alias("year"),
        release.alias("release_date"),
        pl.concat_list(flags).list.drop_nulls().alias("genres"),
    )


# --- MovieLens 1M --------------------------------------------------------------------------
def load_movielens_1m(folder: str | Path, config: PrepareConfig | None = None) -> Prepared:
    """ml-1m: ratings.dat, users.dat, movies.dat, all `::`-separated (movies.dat is latin-1).

    `folder` may instead be (or hold) a plain ratings table, e.g. `ratings.csv` with columns
    user, item, rating and no timestamps: then there are no attribute tables.
    """
    folder = Path(folder)
    if folder.is_file() or not (folder / "ratings.dat").is_file():
        return _movielens_1m_table(folder, config)
    ratings_path = require_file(folder, "ratings.dat", "movielens-1m")
    users_path = require_file(folder, "users.dat", "movielens-1m")
    movies_path = require_file(folder, "movies.dat", "movielens-1m")

    events = read_separated_lines(ratings_path, "::", _RATING_COLUMNS)
    users = read_separated_lines(users_path, "::",
                                 [C.USER, "gender", "age", "occupation", "zip"])
    occupation = pl.col("occupation").str.strip_chars().cast(pl.Int64, strict=False)
    users.frame = users.frame.with_columns(
        # codes 0..20 as the README's names; an unknown code stays visible as itself
        pl.when(occupation.is_between(0, len(ML1M_OCCUPATIONS) - 1))
        .then(occupation.replace_strict(list(range(len(ML1M_OCCUPATIONS))),
                                        list(ML1M_OCCUPATIONS), default=None,
                                        return_dtype=pl.String))
        .otherwise(pl.col("occupation"))
        .alias("occupation"),
        pl.col("zip").str.strip_chars().str.slice(0, 1).alias("zip_region"),
    ).drop("zip")
    movies = read_separated_lines(movies_path, "::", [C.ITEM, "title", "genres"],
                                  encoding="latin-1")
    movies.frame = movies.frame.with_columns(
        pl.col("title").str.strip_chars(),
        _year_from_title(pl.col("title")).alias("year"),
        pl.col("genres").str.split("|").list.eval(
            pl.element().str.strip_chars().filter(pl.element().str.strip_chars() != "")),
    )
    cfg = _rating_config(
        config,
        # age is the lower bound of the release's age band (1, 18, 25, ...), so it is ordered
        user_roles={"age": Role.NUMERIC, "gender": Role.CATEGORICAL,
                    "occupation": Role.CATEGORICAL, "zip_region": Role.CATEGORICAL},
        item_roles=dict(_MOVIE_ROLES),
    )
    return prepare(events, users, movies, mapping=_RATING_MAPPING, config=cfg,
                   name="movielens-1m")


def _movielens_1m_table(source: Path, config: PrepareConfig | None) -> Prepared:
    """A ratings table (user, item, rating[, timestamp]) in any format lmrec reads."""
    from lmrec.collect.guess import guess_mapping

    path = source
    if source.is_dir():
        found = [source / n for n in ("ratings.csv", "ratings_user_itemindex_rating.csv")
                 if (source / n).is_file()]
        path = found[0] if found else require_file(source, "ratings.dat", "movielens-1m")
    table = read_table(path)
    guessed = guess_mapping(table.frame.columns, str(path), item=_first_present(
        table.frame.columns, ("item", "item_id", "item_index", "movie_id", "movieId")))
    mapping = ColumnMapping(user=guessed.user, item=guessed.item, time=guessed.time,
                            value=guessed.value, default_event=RATING_EVENT)
    return prepare(table, mapping=mapping, config=_rating_config(config), name="movielens-1m")


def _first_present(columns: Sequence[str], names: Sequence[str]) -> str | None:
    return next((n for n in names if n in columns), None)


# --- MovieLens latest-small ----------------------------------------------------------------
def load_movielens_latest_small(
    folder: str | Path, config: PrepareConfig | None = None
) -> Prepared:
    """ml-latest-small: ratings.csv, movies.csv and (optional) tags.csv, as a `tags` column.

    The item table is the whole catalogue (movies.csv), so unrated movies are items too
    unless a core filter is set.
    """
    folder = Path(folder)
    ratings_path = require_file(folder, "ratings.csv", "movielens-latest-small")
    movies_path = require_file(folder, "movies.csv", "movielens-latest-small")

    events = read_table(ratings_path, delimiter=",",
                        column_names=_RATING_COLUMNS)
    movies = read_table(movies_path, delimiter=",", column_names=[C.ITEM, "title", "genres"])
    genres = pl.col("genres").str.strip_chars()
    frame = movies.frame.with_columns(
        pl.col("title").str.strip_chars(),
        _year_from_title(pl.col("title")).alias("year"),
        pl.when(genres == _NO_GENRES).then(pl.lit("")).otherwise(genres)
        .str.split("|").list.eval(pl.element().filter(pl.element() != ""))
        .alias("genres"),
    )
    item_roles = dict(_MOVIE_ROLES)
    tags_path = folder / "tags.csv"
    if tags_path.is_file():
        tags = read_table(tags_path, delimiter=",",
                          column_names=[C.USER, C.ITEM, "tag", "timestamp"]).frame
        # distinct tags per movie, sorted so that the table is the same on every run
        per_movie = (
            tags.select(pl.col(C.ITEM).str.strip_chars(), pl.col("tag").str.strip_chars())
            .filter(pl.col("tag") != "")
            .group_by(C.ITEM)
            .agg(pl.col("tag").unique().sort().alias("tags"))
        )
        frame = frame.with_columns(pl.col(C.ITEM).str.strip_chars()).join(
            per_movie, on=C.ITEM, how="left", maintain_order="left")
        item_roles["tags"] = Role.MULTI
    items = Table(frame=frame, source=str(movies_path), kind="frame")
    cfg = _rating_config(config, item_roles=item_roles)
    return prepare(events, None, items, mapping=_RATING_MAPPING, config=cfg,
                   name="movielens-latest-small")
