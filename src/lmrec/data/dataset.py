"""The prepared Dataset and its on-disk folder format.

A Dataset is immutable: splits and filters build new Datasets that share the vocabularies.
Folder layout (all written by `save`, read by `load`):

    metadata.json        format version, counts, feature schemas, behaviour weights, config
    events.parquet       user_idx, item_idx, event, timestamp, value, weight (time-ordered per user)
    users.parquet        row i describes user i: `user` (external id) + attribute columns
    items.parquet        row i describes item i: `item` (external id) + attribute columns
    quality_report.json / .md   written by preparation
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec import columns as C
from lmrec.columns import Role
from lmrec.data.vocab import IdVocabulary
from lmrec.errors import InputError, Location
from lmrec.jsonfile import read_json
from lmrec.version import __version__

FORMAT_VERSION = 1
MatrixValue = Literal["weight", "binary", "count", "value"]


@dataclass(frozen=True)
class FeatureSpec:
    """How one attribute column is encoded; fitted once by preparation and saved."""

    role: Role
    vocabulary: tuple[str, ...] | None = None  # categorical / multi labels (code = position + 1)
    mean: float | None = None  # numeric / time normalisation
    std: float | None = None
    dim: int | None = None  # vector length

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": str(self.role)}
        if self.vocabulary is not None:
            d["vocabulary"] = list(self.vocabulary)
        for k in ("mean", "std", "dim"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        vocab = d.get("vocabulary")
        return cls(Role(d["role"]), tuple(vocab) if vocab is not None else None,
                   d.get("mean"), d.get("std"), d.get("dim"))


@dataclass(eq=False)
class Sequences:
    """Per-user time-ordered item sequences in CSR layout.

    The items of user u are `items[indptr[u]:indptr[u + 1]]`, oldest first. Treated as
    immutable, except `forget_rows`, which erasure uses to empty a model's stored histories in
    place (the object a model holds stays the same object).
    """

    indptr: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # (n_events,) int32 item indices
    events: np.ndarray  # (n_events,) int32 behaviour codes into `event_types`
    timestamps: np.ndarray  # (n_events,) int64, -1 where unknown
    event_types: tuple[str, ...]

    @classmethod
    def from_lists(cls, histories: Sequences | Iterable[np.ndarray]) -> Sequences:
        """Item-index arrays (oldest first), one per row, as Sequences (no types or times);
        a Sequences is returned as it is."""
        if isinstance(histories, Sequences):
            return histories
        arrays = [np.asarray(h, dtype=np.int64).ravel() for h in histories]
        lengths = np.array([a.size for a in arrays], dtype=np.int64)
        indptr = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        items = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
        return cls(indptr, items, np.zeros(items.size, np.int32),
                   np.full(items.size, -1, np.int64), ())

    @classmethod
    def empty(cls, n_rows: int, event_types: tuple[str, ...] = ()) -> Sequences:
        """`n_rows` empty histories."""
        return cls(np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int32),
                   np.zeros(0, np.int32), np.zeros(0, np.int64), event_types)

    @property
    def n_rows(self) -> int:
        return int(self.indptr.size - 1)

    def of(self, user: int) -> np.ndarray:
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def checked(self, n_items: int) -> Sequences:
        """Self, refused (InputError) when an item index is outside [0, n_items)."""
        if self.items.size and (self.items.min() < 0 or self.items.max() >= n_items):
            raise InputError(f"history items must be internal indices in [0, {n_items})")
        return self

    def take(self, rows: np.ndarray) -> Sequences:
        """The rows `rows` (B,), in that order, as new Sequences (vectorised gather)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # source position of every output event: its row's start plus its offset inside the row
        src = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return Sequences(indptr, self.items[src], self.events[src], self.timestamps[src],
                         self.event_types)

    def forget_rows(self, rows: np.ndarray) -> None:
        """Empty the rows `rows` in place (erasure); the other rows keep their events."""
        dropped = np.zeros(self.n_rows, dtype=bool)
        dropped[np.asarray(rows, dtype=np.int64)] = True
        keep = ~np.repeat(dropped, np.diff(self.indptr))
        kept_before = np.zeros(keep.size + 1, dtype=np.int64)
        np.cumsum(keep, out=kept_before[1:])
        self.indptr = kept_before[self.indptr].astype(self.indptr.dtype)
        self.items, self.events = self.items[keep], self.events[keep]
        self.timestamps = self.timestamps[keep]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Id vocabularies, interactions and feature tables. Build with `lmrec.prepare` or `load`."""

    users: IdVocabulary
    items: IdVocabulary
    events: pl.DataFrame  # canonical columns with user_idx/item_idx instead of external ids
    user_table: pl.DataFrame
    item_table: pl.DataFrame
    user_schema: dict[str, FeatureSpec] = field(default_factory=dict)
    item_schema: dict[str, FeatureSpec] = field(default_factory=dict)
    behaviour_weights: dict[str, float] = field(default_factory=dict)
    name: str = "dataset"
    metadata: dict[str, Any] = field(default_factory=dict)
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.user_table.height != len(self.users) or self.item_table.height != len(self.items):
            raise InputError("feature tables must have one row per vocabulary entry")

    # --- sizes ----------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_events(self) -> int:
        return self.events.height

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: {self.n_users} users, {self.n_items} items, "
                f"{self.n_events} events)")

    # --- views ----------------------------------------------------------------------
    def matrix(self, value: MatrixValue = "weight", format: str = "csr") -> sp.spmatrix:
        """The (n_users, n_items) float32 interaction matrix.

        `value`: "weight" sums behaviour weights of repeated events, "count" counts events,
        "binary" is 1 where any event exists, "value" keeps the largest value (e.g. rating).
        """
        key = ("matrix", value, format)
        if key not in self._cache:
            u = self.events[C.USER_IDX].to_numpy()
            i = self.events[C.ITEM_IDX].to_numpy()
            if value == "weight":
                data = self.events[C.WEIGHT].to_numpy().astype(np.float32)
            elif value == "value":
                data = self.events[C.VALUE].fill_null(1.0).to_numpy().astype(np.float32)
            else:
                data = np.ones(u.shape[0], dtype=np.float32)
            m = sp.csr_matrix((data, (u, i)), shape=(self.n_users, self.n_items),
                              dtype=np.float32)
            if value == "value":  # duplicates were summed; take the max instead
                g = (self.events.lazy().group_by(C.USER_IDX, C.ITEM_IDX)
                     .agg(pl.col(C.VALUE).fill_null(1.0).max()).collect())
                m = sp.csr_matrix(
                    (g[C.VALUE].to_numpy().astype(np.float32),
                     (g[C.USER_IDX].to_numpy(), g[C.ITEM_IDX].to_numpy())),
                    shape=(self.n_users, self.n_items), dtype=np.float32)
            elif value == "binary":
                m.data[:] = 1.0
            m.sort_indices()
            m = m.asformat(format)
            self._cache[key] = m
        return self._cache[key]

    def sequences(self) -> Sequences:
        """Time-ordered item sequences of every user (ties keep file order).

        A new Sequences object over cached read-only arrays on every call, so a model that
        keeps it and later forgets users (`Sequences.forget_rows`) leaves this Dataset alone."""
        if "sequences" not in self._cache:
            ev = self.events.with_row_index("_pos").sort(
                [C.USER_IDX, C.TIME, "_pos"], nulls_last=False)
            types = tuple(sorted(ev[C.EVENT].unique().to_list()))
            codes = ev[C.EVENT].replace_strict(list(types), list(range(len(types))),
                                               return_dtype=pl.Int32).to_numpy()
            counts = np.bincount(ev[C.USER_IDX].to_numpy(), minlength=self.n_users)
            indptr = np.zeros(self.n_users + 1, dtype=np.int64)
            np.cumsum(counts, out=indptr[1:])
            self._cache["sequences"] = Sequences(
                indptr=_frozen(indptr),
                items=_frozen(ev[C.ITEM_IDX].to_numpy().astype(np.int32)),
                events=_frozen(codes.astype(np.int32)),
                timestamps=_frozen(ev[C.TIME].fill_null(-1).to_numpy().astype(np.int64)),
                event_types=types,
            )
        return replace(self._cache["sequences"])

    def item_popularity(self) -> np.ndarray:
        """(n_items,) number of distinct users per item."""
        return np.asarray(self.matrix("binary").sum(axis=0)).ravel()

    def encoded_features(self, side: Literal["user", "item"]) -> dict[str, Any]:
        """Model-ready arrays for every attribute column of one side.

        categorical: int32 codes (n,), 0 = unknown; multi: CSR (n, n_labels) float32;
        numeric/time: float32 (n,) normalised; vector: float32 (n, dim); text: list[str].
        """
        key = ("features", side)
        if key in self._cache:  # a new dict (and text lists) so callers cannot alter the cache
            return {k: list(v) if isinstance(v, list) else v for k, v in self._cache[key].items()}
        table = self.user_table if side == "user" else self.item_table
        schema = self.user_schema if side == "user" else self.item_schema
        out: dict[str, Any] = {}
        for col, spec in schema.items():
            s = table[col]
            if spec.role == Role.CATEGORICAL:
                out[col] = _codes(s.cast(pl.String), spec.vocabulary or ())
            elif spec.role == Role.MULTI:
                out[col] = _multi_hot(s, spec.vocabulary or ())
            elif spec.role in (Role.NUMERIC, Role.TIME):
                x = s.cast(pl.Float64).fill_null(spec.mean or 0.0).to_numpy()
                out[col] = ((x - (spec.mean or 0.0)) / (spec.std or 1.0)).astype(np.float32)
            elif spec.role == Role.VECTOR:
                out[col] = np.asarray(s.to_list(), dtype=np.float32).reshape(s.len(), -1)
            elif spec.role == Role.TEXT:
                out[col] = s.cast(pl.String).fill_null("").to_list()
        for v in out.values():
            if isinstance(v, np.ndarray):
                _frozen(v)
        self._cache[key] = out
        return self.encoded_features(side)

    # --- derivation -----------------------------------------------------------------
    def with_events(self, events: pl.DataFrame, name: str | None = None) -> Dataset:
        """A Dataset with the same vocabularies and tables and other events (e.g. a split)."""
        return Dataset(self.users, self.items, events, self.user_table, self.item_table,
                       self.user_schema, self.item_schema, self.behaviour_weights,
                       name or self.name, self.metadata)

    # --- storage --------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.events.write_parquet(folder / "events.parquet")
        self.user_table.write_parquet(folder / "users.parquet")
        self.item_table.write_parquet(folder / "items.parquet")
        meta = dict(self.metadata)
        meta.update({
            "format": "lmrec-dataset",
            "format_version": FORMAT_VERSION,
            "lmrec_version": __version__,
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_events": self.n_events,
            "user_id_type": "int" if self.users.dtype == pl.Int64 else "str",
            "item_id_type": "int" if self.items.dtype == pl.Int64 else "str",
            "user_schema": {k: v.to_dict() for k, v in self.user_schema.items()},
            "item_schema": {k: v.to_dict() for k, v in self.item_schema.items()},
            "behaviour_weights": self.behaviour_weights,
        })
        (folder / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        folder = Path(folder)
        meta_path = folder / "metadata.json"
        if not meta_path.exists():
            raise InputError(
                "not a prepared dataset folder (no metadata.json)",
                location=Location(str(folder)),
                expected="a folder written by `lmrec data prepare` or `lmrec datasets get`",
            )
        meta = read_json(meta_path)
        if meta.get("format") != "lmrec-dataset" or meta.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"dataset format {meta.get('format')!r} version {meta.get('format_version')!r} "
                "is not supported",
                location=Location(str(meta_path)),
                expected=f"lmrec-dataset version {FORMAT_VERSION}; prepare the data again",
            )
        try:
            events = pl.read_parquet(folder / "events.parquet")
            users = pl.read_parquet(folder / "users.parquet")
            items = pl.read_parquet(folder / "items.parquet")
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise InputError(f"cannot read the dataset tables ({exc})",
                             location=Location(str(folder))) from exc
        return cls(
            users=IdVocabulary(users[C.USER]),
            items=IdVocabulary(items[C.ITEM]),
            events=events,
            user_table=users,
            item_table=items,
            user_schema={k: FeatureSpec.from_dict(v) for k, v in meta["user_schema"].items()},
            item_schema={k: FeatureSpec.from_dict(v) for k, v in meta["item_schema"].items()},
            behaviour_weights=meta.get("behaviour_weights", {}),
            name=meta.get("name", folder.name),
            metadata={k: v for k, v in meta.items() if k in ("prepare_config", "sources")},
        )


def _frozen(a: np.ndarray) -> np.ndarray:
    """Mark a cached array read-only: the same array is handed to every caller."""
    a.flags.writeable = False
    return a


def _codes(s: pl.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    return (s.replace_strict(list(vocabulary), list(range(1, len(vocabulary) + 1)), default=0,
                             return_dtype=pl.Int32).to_numpy().astype(np.int32))


def _multi_hot(s: pl.Series, vocabulary: tuple[str, ...]) -> sp.csr_matrix:
    lengths = s.list.len().fill_null(0)
    # explode only non-empty lists: how empty lists explode differs between polars versions
    flat = s.filter(lengths > 0).explode().cast(pl.String)
    codes = _codes(flat, vocabulary) - 1  # -1 = unknown label
    rows = np.repeat(np.arange(s.len()), lengths.to_numpy())
    ok = codes >= 0
    m = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.float32), (rows[ok], codes[ok])),
                      shape=(s.len(), len(vocabulary)), dtype=np.float32)
    m.data[:] = 1.0
    return m
