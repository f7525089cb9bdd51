"""IdVocabulary round trips, unknown ids, id types."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmrec.data import IdVocabulary
from lmrec.data import vocab as vocab_module
from lmrec.errors import InputError


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.integers(-(2**62), 2**62), unique=True, min_size=1, max_size=30))
def test_int_round_trip(ids: list[int]) -> None:
    v = IdVocabulary(ids)
    assert v.dtype == pl.Int64 and len(v) == len(ids)
    idx = np.arange(len(ids))
    assert v.index(v.id_of(idx)).tolist() == idx.tolist()
    assert v.index(ids).tolist() == idx.tolist()
    assert [v.to_python(i) for i in idx] == ids
    assert all(type(v.to_python(i)) is int for i in idx)
    unknown = max(ids) + 1 if max(ids) < 2**62 else min(ids) - 1
    assert v.index([unknown]).tolist() == [-1]


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.text(min_size=1, max_size=6), unique=True, min_size=1, max_size=30),
       extra=st.text(min_size=1, max_size=6))
def test_string_round_trip(ids: list[str], extra: str) -> None:
    v = IdVocabulary(pl.Series(ids, dtype=pl.String))
    assert v.dtype == pl.String
    idx = np.arange(len(ids))
    assert v.index(v.id_of(idx)).tolist() == idx.tolist()
    assert v.id_of(idx).tolist() == ids
    assert v.index([extra]).tolist() == ([ids.index(extra)] if extra in ids else [-1])


def test_from_values_sorted_distinct_and_lookup_types() -> None:
    v = IdVocabulary.from_values(pl.Series([5, 3, 5, 9]))
    assert v.ids.to_list() == [3, 5, 9]
    assert v.index([9, 3, 4]).tolist() == [2, 0, -1]
    assert v.index(["9", "5", "x", None]).tolist() == [2, 1, -1, -1]
    s = IdVocabulary(["007", "7"])
    assert s.index(["007", "7", 7]).tolist() == [0, 1, 1]
    assert s.to_python(0) == "007"


def test_id_of_refuses_out_of_range() -> None:
    v = IdVocabulary([10, 20])
    with pytest.raises(IndexError):
        v.id_of([-1])  # the "unknown" index must not wrap around to the last id
    with pytest.raises(IndexError):
        v.id_of([2])
    assert v.id_of([]).tolist() == []


def test_refuses_nulls_and_duplicates_and_compares_by_value() -> None:
    with pytest.raises(InputError, match="null"):
        IdVocabulary(pl.Series([1, None]))
    with pytest.raises(InputError, match="twice"):
        IdVocabulary(["a", "a"])
    assert IdVocabulary([1, 2]) == IdVocabulary(pl.Series([1, 2], dtype=pl.Int32))
    assert IdVocabulary([1, 2]) != IdVocabulary(["1", "2"])
    assert IdVocabulary([1, 2]) != IdVocabulary([2, 1])
    with pytest.raises(TypeError):
        hash(IdVocabulary([1]))


def test_an_integer_vocabulary_takes_canonical_integer_text_only() -> None:
    # as `prepare` types ids: "07", "+7" or "7.0" would have stayed strings, apart from 7
    v = IdVocabulary([7, 12, -3])
    assert v.index([7, "7", "-3", np.int64(12)]).tolist() == [0, 0, 2, 1]
    for odd in ("07", "+7", " 7", "7 ", "7\n", "7.0", "-0", "0x7", "٧", 7.0, True, None):
        assert v.index([odd]).tolist() == [-1], repr(odd)
    assert v.index(pl.Series(["07", "7", "+7", "12"])).tolist() == [-1, 0, -1, 1]
    assert v.canonical("7") == v.canonical(7) == ("7", 7)
    assert v.canonical("07") == ("07", "07") and v.canonical(" 7") == (" 7", " 7")
    assert IdVocabulary(["7", "07"]).canonical(7) == ("7", "7")


@given(ids=st.lists(st.one_of(st.text(min_size=1, max_size=4),
                              st.integers(-(2**63), 2**63 - 1)), unique=True, min_size=1,
                    max_size=40),
       asked=st.lists(st.one_of(st.text(max_size=4), st.integers(-(2**64), 2**64),
                                st.booleans(), st.floats(allow_nan=False)), min_size=1,
                      max_size=16))
@settings(max_examples=200, deadline=None)
def test_a_few_ids_are_found_as_many_are(ids: list[Any], asked: list[Any]) -> None:
    """The lookup of up to FEW ids (binary search over numpy) answers as the polars one."""
    ints = [i for i in ids if isinstance(i, int)]
    texts = [i for i in ids if isinstance(i, str)]
    for vocab in (IdVocabulary.from_values(pl.Series(ints or [0], dtype=pl.Int64)),
                  IdVocabulary.from_values(pl.Series(texts or ["x"], dtype=pl.String))):
        probe = asked + [vocab.ids[0], vocab.ids[-1], str(vocab.ids[0])][: 16 - len(asked)]
        probe = probe * 3  # repeats, in any order
        few = vocab.index(probe)
        with patch.object(vocab_module, "FEW", 0):  # the polars path
            many = vocab.index(probe)
        assert few.tolist() == many.tolist(), (probe, few, many)


def test_a_long_list_of_ids_is_looked_up_at_once() -> None:
    """A visitor's history (hundreds of ids) takes the numpy path: no polars round trip."""
    vocab = IdVocabulary.from_values(pl.Series(np.arange(0, 20_000, 2)))
    asked = [*range(0, 2_000, 2), 1, "8", "08", -2, 2**70, 19_998, 20_000]
    with patch.object(pl.Series, "search_sorted", side_effect=AssertionError("polars")):
        got = vocab.index(asked)
    assert got[:1_000].tolist() == list(range(1_000))
    assert got[1_000:].tolist() == [-1, 4, -1, -1, -1, 9_999, -1]
