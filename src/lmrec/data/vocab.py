"""Id vocabularies: external ids <-> dense internal indices 0..n-1."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl

from lmrec.errors import InputError
from lmrec.ids import canonical_int, ints_from_text

# a list of up to this many ids (a request's user, a visitor's history, an allow-list) is
# looked up by a binary search over numpy: a polars round trip costs ~1 ms whatever the size,
# which was most of serving a 165-item history; past it polars' vectorised cast wins
FEW = 4_096


class IdVocabulary:
    """An ordered set of external ids (all Int64 or all String); position = internal index.

    Lookups are vectorised; `index` answers -1 for ids that are not in the vocabulary.
    """

    __slots__ = ("_ids", "_is_sorted", "_np")

    def __init__(self, ids: pl.Series | Iterable[Any]) -> None:
        s = ids if isinstance(ids, pl.Series) else pl.Series(list(ids))
        if s.dtype.is_integer():
            s = s.cast(pl.Int64)
        elif s.dtype != pl.String:
            s = s.cast(pl.String)
        if s.null_count():
            raise InputError("an id vocabulary cannot hold a null id")
        if s.n_unique() != s.len():
            raise InputError("an id vocabulary cannot hold the same id twice")
        self._ids = s.alias("id")
        self._np = self._ids.to_numpy()
        n = self._ids.len()
        self._is_sorted = bool(n < 2 or (self._ids.slice(1) > self._ids.slice(0, n - 1)).all())

    @classmethod
    def from_values(cls, values: pl.Series) -> IdVocabulary:
        """The sorted distinct values."""
        return cls(values.unique().sort())

    @property
    def ids(self) -> pl.Series:
        return self._ids

    @property
    def dtype(self) -> pl.DataType:
        return self._ids.dtype

    def __len__(self) -> int:
        return self._ids.len()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdVocabulary) and self._ids.equals(other._ids)

    def __hash__(self) -> int:  # vocabularies are compared by value, never hashed
        raise TypeError("IdVocabulary is not hashable")

    def coerce(self, values: Iterable[Any] | pl.Series) -> pl.Series:
        """Values cast to this vocabulary's id type; those that cannot be become null.

        An integer vocabulary takes ints and canonical integer text only
        (`lmrec.ids.canonical_int`): "7" is 7, while "07", " 7", "+7" and "7.0" are no id of
        it, just as `prepare` would have kept them apart from 7 (as strings)."""
        if self.dtype == pl.String:
            s = values if isinstance(values, pl.Series) else pl.Series(list(values),
                                                                       strict=False)
            return s.cast(pl.String, strict=False)
        if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.integer):
            values = pl.Series(values)
        if not isinstance(values, pl.Series):
            return pl.Series([canonical_int(v) for v in values], dtype=pl.Int64)
        if values.dtype.is_integer():
            return values.cast(pl.Int64, strict=False)
        return ints_from_text(values.cast(pl.String, strict=False))

    def canonical(self, raw: Any) -> tuple[str, Any]:
        """(text, id) of one external id: for an integer vocabulary an int or canonical
        integer text gives ("7", 7); anything else is text, kept as it is ("07", "07")."""
        if self.dtype == pl.Int64:
            v = canonical_int(raw)
            if v is not None:
                return str(v), v
        text = str(raw)
        return text, text

    def index(self, values: Iterable[Any] | pl.Series) -> np.ndarray:
        """Internal indices (int64) of external ids; -1 where the id is unknown."""
        if self._is_sorted and isinstance(values, list | tuple) and 0 < len(values) <= FEW:
            few = self._index_few(values)
            if few is not None:
                return few
        s = self.coerce(values)
        if len(self) == 0:
            return np.full(s.len(), -1, dtype=np.int64)
        if self._is_sorted:
            # binary search: O(n log m) with no hash table, which matters for 20M events
            pos = self._ids.search_sorted(s, side="left").to_numpy().astype(np.int64)
            pos = np.minimum(pos, len(self) - 1)
            hit = (self._ids.gather(pos) == s).fill_null(False).to_numpy()
            return np.where(hit, pos, -1)
        idx = s.replace_strict(self._ids, np.arange(len(self), dtype=np.int64), default=-1,
                               return_dtype=pl.Int64)
        return idx.to_numpy()

    def _index_few(self, values: list[Any] | tuple[Any, ...]) -> np.ndarray | None:
        """`index` of up to FEW ids by one binary search over the numpy copy: a request's user
        costs microseconds instead of a polars round trip (~1 ms). The same rules as `coerce`;
        None for values it would cast (anything but text in a text vocabulary)."""
        if self.dtype == pl.Int64:
            ints = [canonical_int(v) for v in values]
            known = np.array([k is not None for k in ints])
            keys = np.array([0 if k is None else k for k in ints], dtype=np.int64)
        elif all(isinstance(v, str) for v in values):
            known = np.ones(len(values), dtype=bool)
            keys = np.empty(len(values), dtype=object)  # str compared as str, as in _np
            keys[:] = list(values)
        else:
            return None
        if self._np.size == 0:
            return np.full(keys.size, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._np, keys), self._np.size - 1)
        return np.where(known & (self._np[pos] == keys), pos, -1).astype(np.int64)

    def id_of(self, idx: np.ndarray | Iterable[int]) -> np.ndarray:
        """External ids of internal indices (an int64 or object array)."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            # numpy would wrap -1 (the "unknown" index) around to the last id
            raise IndexError(f"index out of range for a vocabulary of {len(self)} ids")
        return self._np[idx]

    def to_python(self, idx: int) -> Any:
        v = self._np[idx]
        return v.item() if hasattr(v, "item") else v
