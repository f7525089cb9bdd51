"""What the re-rankers know about the catalogue and the user: built once per dataset or bundle.

Item groups: `long-tail` splits the catalogue by training popularity (the most popular 20% of
items are the head, the rest the long tail); a single-valued item column makes each value a
group (a missing value is a group of its own). Category distributions (calibration, the
miscalibration metric) come from a categorical or multi-valued item column: p(g|i) is uniform
over the item's labels, as in Steck (2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec import columns as C
from lmrec.columns import Role
from lmrec.errors import ConfigError
from lmrec.metrics import cooccurrence_features

if TYPE_CHECKING:
    from lmrec.data.dataset import Dataset

LONG_TAIL = "long-tail"
HEAD_SHARE = 0.2  # the most popular 20% of items are the head, the rest the long tail
CATEGORY_NAMES = ("genres", "genre", "category", "categories")  # calibration's default column
MISSING = "(missing)"

Similarity = Callable[[np.ndarray], np.ndarray]  # (n,) item indices -> (n, n) cosine


@dataclass(frozen=True)
class UserContext:
    """One user as the re-rankers see them: internal index (-1 = unknown), history item
    indices (oldest first), user-table attributes (column -> value, absent = unknown) and the
    request time (Unix seconds; None = the data's last event)."""

    user: int
    history: np.ndarray
    attributes: Mapping[str, Any] = field(default_factory=dict)
    now: int | None = None


class RerankData:
    """Catalogue-level facts for the re-rankers: item table (row i = item i) and roles, training
    popularity (n_items,), item similarity, the user table (row u = user u) and `now`."""

    def __init__(self, items: pl.DataFrame, roles: Mapping[str, Role], popularity: np.ndarray,
                 *, similarity: Similarity | None = None, users: pl.DataFrame | None = None,
                 now: int | None = None) -> None:
        self.items = items
        self.n_items = items.height
        self.roles = {c: _role(items, c, roles) for c in items.columns if c != C.ITEM}
        self.popularity = np.asarray(popularity, dtype=np.float64)
        if self.popularity.shape != (self.n_items,):
            raise ValueError(f"popularity has shape {self.popularity.shape}, "
                             f"expected ({self.n_items},)")
        self._similarity = similarity
        self.users = users
        self.now = now
        self._dists: dict[str, tuple[sp.csr_matrix, tuple[str, ...]]] = {}
        self._groups: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {}

    @classmethod
    def from_dataset(cls, ds: Dataset, *, similarity: Similarity | None = None) -> RerankData:
        """From a (training) Dataset: its item and user tables, popularity and last event time.
        Similarity defaults to the items' attribute cosine, else their co-occurrence cosine."""
        roles = {c: s.role for c, s in ds.item_schema.items()}
        if similarity is None:
            similarity = (attribute_similarity(ds.item_table, roles)
                          or cosine_rows(cooccurrence_features(ds.matrix("binary"))))
        times = ds.events[C.TIME] if C.TIME in ds.events.columns else None
        now = None if times is None or times.null_count() == times.len() else int(times.max())
        return cls(ds.item_table, roles, ds.item_popularity(), similarity=similarity,
                   users=ds.user_table, now=now)

    # --- similarity ----------------------------------------------------------------------
    @cached_property
    def similarity(self) -> Similarity | None:
        """(n,) -> (n, n) item similarity: the one given, else attribute cosine, else None."""
        if self._similarity is not None:
            return self._similarity
        return attribute_similarity(self.items, self.roles)

    # --- users ---------------------------------------------------------------------------
    def user_context(self, user: int, history: np.ndarray, now: int | None = None
                     ) -> UserContext:
        """The user's attributes from the user table (none for an unknown user, -1)."""
        attrs: dict[str, Any] = {}
        if self.users is not None and 0 <= user < self.users.height:
            row = self.users.row(int(user), named=True)
            attrs = {k: v for k, v in row.items() if k != C.USER and v is not None}
        return UserContext(int(user), np.asarray(history, dtype=np.int64).ravel(), attrs,
                           self.now if now is None else int(now))

    # --- categories ------------------------------------------------------------------------
    def category_column(self, arg: str | None = None) -> str:
        """The column calibration uses: `arg`, else the first of genres/genre/category/
        categories, else the first categorical or multi-valued column."""
        labelled = [c for c, r in self.roles.items() if r in (Role.CATEGORICAL, Role.MULTI)]
        if arg is not None:
            if arg not in self.items.columns or arg == C.ITEM:
                raise ConfigError(f"no item column {arg!r} (categorical or multi: "
                                  f"{', '.join(labelled) or 'none'})")
            if self.roles[arg] not in (Role.CATEGORICAL, Role.MULTI):
                raise ConfigError(f"item column {arg!r} is {self.roles[arg]}, not categorical "
                                  "or multi-valued")
            return arg
        for c in (*CATEGORY_NAMES, *labelled):
            if c in labelled:
                return c
        raise ConfigError("the items have no categorical or multi-valued column")

    def item_distribution(self, column: str) -> tuple[sp.csr_matrix, tuple[str, ...]]:
        """(n_items, G) float64 CSR p(g|i) (each row sums to 1, or 0 without labels) and the
        G labels (sorted)."""
        if column not in self._dists:
            long = _labels_long(self.items[column])
            labels = tuple(sorted(long["v"].unique().to_list()))
            codes = long["v"].replace_strict(labels, list(range(len(labels))),
                                             return_dtype=pl.Int64).to_numpy()
            rows = long["row"].to_numpy()
            m = sp.csr_matrix((np.ones(rows.size), (rows, codes)),
                              shape=(self.n_items, len(labels)))
            m.data[:] = 1.0  # a label repeated in a row counts once
            sums = np.asarray(m.sum(axis=1)).ravel()
            inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
            self._dists[column] = (sp.csr_matrix(sp.diags(inv) @ m), labels)
        return self._dists[column]

    # --- groups ------------------------------------------------------------------------------
    def long_tail(self) -> np.ndarray:
        """(n_items,) bool: outside the ceil(20%) most popular items (ties: lower index first)."""
        return self.groups(LONG_TAIL)[0] == 1

    def groups(self, arg: str | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
        """(n_items,) int64 group codes and group names: `long-tail` (default; 0 = head,
        1 = long tail) or a single-valued item column (one group per value)."""
        arg = arg or LONG_TAIL
        if arg not in self._groups:
            if arg == LONG_TAIL:
                head = np.argsort(-self.popularity, kind="stable")[
                    : math.ceil(HEAD_SHARE * self.n_items)]
                codes = np.ones(self.n_items, dtype=np.int64)
                codes[head] = 0
                self._groups[arg] = (codes, ("head", LONG_TAIL))
            else:
                values = self._single_valued(arg).fill_null(MISSING)
                names = tuple(sorted(values.unique().to_list()))
                codes = values.replace_strict(names, list(range(len(names))),
                                              return_dtype=pl.Int64).to_numpy()
                self._groups[arg] = (codes, names)
        return self._groups[arg]

    def protected(self, arg: str | None = None) -> np.ndarray:
        """(n_items,) bool, FA*IR's protected items: `long-tail` (default) or `COLUMN=VALUE`."""
        if arg is None or arg == LONG_TAIL:
            return self.long_tail()
        col, eq, value = arg.partition("=")
        if not eq or not value:
            raise ConfigError(f"name the protected group as {LONG_TAIL} or COLUMN=VALUE, "
                              f"got {arg!r}")
        if col in self.items.columns and self.roles.get(col) == Role.MULTI:
            s = self.items[col].cast(pl.List(pl.String))
            return s.list.contains(value).fill_null(False).to_numpy()
        s = self._single_valued(col)
        return (s == value).fill_null(False).to_numpy()

    # --- numbers and times -------------------------------------------------------------------
    def numeric(self, column: str, *, table: str = "item") -> np.ndarray:
        """(n,) float64 values of a numeric (or time) column, NaN where missing."""
        frame = self.items if table == "item" else self.users
        if frame is None:
            raise ConfigError(f"no {table} table (a model bundle from before user tables)")
        if column not in frame.columns or column in (C.ITEM, C.USER):
            raise ConfigError(f"no {table} column {column!r}")
        s = frame[column]
        if s.dtype.is_temporal():
            s = s.cast(pl.Datetime("us")).dt.epoch("s")
        if not (s.dtype.is_numeric() or s.dtype in (pl.Boolean, pl.Null)):  # Null: all empty
            raise ConfigError(f"{table} column {column!r} is {s.dtype}, not numeric")
        return s.cast(pl.Float64).fill_nan(None).to_numpy().astype(np.float64)

    def time_column(self, arg: str | None = None) -> str:
        """The item time column for freshness: `arg`, else the first time-role column."""
        if arg is not None:
            return arg
        for c, r in self.roles.items():
            if r == Role.TIME:
                return c
        raise ConfigError("the items have no time column; name one as freshness=W:COLUMN")

    def _single_valued(self, column: str) -> pl.Series:
        if column not in self.items.columns or column == C.ITEM:
            raise ConfigError(f"no item column {column!r}")
        if isinstance(self.items[column].dtype, pl.List):
            raise ConfigError(f"item column {column!r} is multi-valued; name a single-valued "
                              "column (one group per item)")
        return self.items[column].cast(pl.String)


# --- helpers ---------------------------------------------------------------------------------
def _role(items: pl.DataFrame, column: str, roles: Mapping[str, Role]) -> Role:
    """The column's role, else one inferred from its type (tables without a schema)."""
    if column in roles:
        return Role(roles[column])
    dtype = items[column].dtype
    if isinstance(dtype, pl.List):
        return Role.MULTI
    if dtype.is_temporal():
        return Role.TIME
    if dtype.is_numeric():
        return Role.NUMERIC
    return Role.CATEGORICAL


def _labels_long(s: pl.Series) -> pl.DataFrame:
    """(row, v) pairs of a categorical or multi-valued column's labels, nulls dropped."""
    values = s.cast(pl.List(pl.String)) if isinstance(s.dtype, pl.List) else s.cast(pl.String)
    frame = pl.DataFrame({"v": values}).with_row_index("row")
    if isinstance(values.dtype, pl.List):
        frame = frame.filter(pl.col("v").list.len() > 0).explode("v")
    return frame.drop_nulls("v").select(pl.col("row").cast(pl.Int64), "v")


def attribute_similarity(items: pl.DataFrame, roles: Mapping[str, Role]) -> Similarity | None:
    """Cosine of the items' one-hot categorical and multi-valued labels, or None without any."""
    cols = [c for c in items.columns if c != C.ITEM
            and _role(items, c, roles) in (Role.CATEGORICAL, Role.MULTI)]
    parts = []
    for c in cols:
        long = _labels_long(items[c])
        if long.height:
            parts.append(long.with_columns((pl.lit(f"{c}=") + pl.col("v")).alias("v")))
    if not parts:
        return None
    long = pl.concat(parts)
    codes = long["v"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    m = sp.csr_matrix((np.ones(codes.size, dtype=np.float32),
                       (long["row"].to_numpy(), codes)),
                      shape=(items.height, int(codes.max()) + 1))
    m.data[:] = 1.0
    return cosine_rows(m)


def cosine_rows(features: sp.spmatrix) -> Similarity:
    """(n,) -> (n, n) cosine of the given rows of a (n_items, d) sparse feature matrix."""
    f = sp.csr_matrix(features, dtype=np.float32)
    norms = np.sqrt(np.asarray(f.multiply(f).sum(axis=1)).ravel())
    unit = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ f, dtype=np.float32)

    def pairwise(idx: np.ndarray) -> np.ndarray:
        rows = unit[np.asarray(idx, dtype=np.int64)]
        return np.asarray((rows @ rows.T).toarray(), dtype=np.float32)

    return pairwise
