"""kcore_mask against a brute-force k-core."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lmrec.prepare import kcore_mask


def brute(pairs: list[tuple[int, int]], uk: int, ik: int) -> set[int]:
    """Repeatedly remove any user with < uk rows or item with < ik rows; return kept rows."""
    keep = set(range(len(pairs)))
    while True:
        uc: dict[int, int] = {}
        ic: dict[int, int] = {}
        for r in keep:
            u, i = pairs[r]
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        bad = {r for r in keep if uc[pairs[r][0]] < uk or ic[pairs[r][1]] < ik}
        if not bad:
            return keep
        keep -= bad


def is_valid(pairs: list[tuple[int, int]], rows: set[int], uk: int, ik: int) -> bool:
    uc: dict[int, int] = {}
    ic: dict[int, int] = {}
    for r in rows:
        uc[pairs[r][0]] = uc.get(pairs[r][0], 0) + 1
        ic[pairs[r][1]] = ic.get(pairs[r][1], 0) + 1
    return all(v >= uk for v in uc.values()) and all(v >= ik for v in ic.values())


pairs_st = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(pairs=pairs_st, uk=st.integers(0, 4), ik=st.integers(0, 4))
def test_matches_brute_force(pairs: list[tuple[int, int]], uk: int, ik: int) -> None:
    users = np.array([u for u, _ in pairs], dtype=np.int64)
    items = np.array([i for _, i in pairs], dtype=np.int64)
    mask = kcore_mask(users, items, uk or None, ik or None)
    assert mask.dtype == bool and mask.shape == (len(pairs),)
    kept = set(np.flatnonzero(mask).tolist())
    assert kept == brute(pairs, uk, ik)
    # a fixed point: every kept user and item meets its threshold
    assert is_valid(pairs, kept, uk, ik)
    # idempotent
    again = kcore_mask(users[mask], items[mask], uk or None, ik or None)
    assert again.all()


@settings(max_examples=100, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=9),
       k=st.integers(1, 3))
def test_maximal(pairs: list[tuple[int, int]], k: int) -> None:
    """No valid sub-list is larger than the result (checked exhaustively on tiny inputs)."""
    users = np.array([u for u, _ in pairs], dtype=np.int64)
    items = np.array([i for _, i in pairs], dtype=np.int64)
    kept = set(np.flatnonzero(kcore_mask(users, items, k, k)).tolist())
    n = len(pairs)
    for bits in range(1 << n):
        rows = {r for r in range(n) if bits >> r & 1}
        if is_valid(pairs, rows, k, k):
            assert rows <= kept  # the k-core contains every valid sub-list


def test_user_core_differs_from_item_core() -> None:
    # user 0: items 0,1,2; user 1: item 0; user 2: item 0
    users = np.array([0, 0, 0, 1, 2])
    items = np.array([0, 1, 2, 0, 0])
    assert kcore_mask(users, items, 2, None).tolist() == [True, True, True, False, False]
    assert kcore_mask(users, items, None, 2).tolist() == [True, False, False, True, True]
    # both: items 1, 2 go (1 row each), then user 0 has 1 row and goes, then item 0 has 2
    assert kcore_mask(users, items, 1, 2).tolist() == [True, False, False, True, True]
    assert kcore_mask(users, items, 2, 2).tolist() == [False] * 5


def test_empty_and_no_filter() -> None:
    e = np.array([], dtype=np.int64)
    assert kcore_mask(e, e, 2, 2).shape == (0,)
    assert kcore_mask(np.array([0]), np.array([0]), None, None).tolist() == [True]
