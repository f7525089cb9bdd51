"""Team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008).

Two rankers A and B each rank items; the shown list is drafted like picking sports teams:
the team with fewer picks so far picks next (a coin flip on a tie) and adds its best item not
shown yet. Clicks are credited to the team that contributed the clicked item, and the team
with more clicks wins the impression. Because either team is equally likely to pick first
at every round, a user who clicks at random gives neither side an advantage.

    items, teams = team_draft(ranking_a, ranking_b, k=10, rng=rng)   # teams: 0 = A, 1 = B
    outcome = credit(teams[clicked_positions])                        # +1 A, -1 B, 0 tie
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def team_draft(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(items (n,) int64, teams (n,) int8) for n <= k: the interleaved list of two rankings
    of internal item indices, best first, and the team (0: `a`, 1: `b`) of each shown item.

    As in the paper, a team skips its items already shown, and drafting stops when either
    ranking has nothing left to add (so n < k only when one ranking runs out).
    """
    rank = ([int(x) for x in a], [int(x) for x in b])
    nxt = [0, 0]  # per team: where in its ranking its next candidate is
    count = [0, 0]  # per team: items contributed so far
    shown: set[int] = set()
    items: list[int] = []
    teams: list[int] = []
    flips = rng.random(max(int(k), 0)).tolist()  # one coin per pick, drawn up front
    while len(items) < k:
        for t in (0, 1):  # skip what the other team (or this one) already showed
            while nxt[t] < len(rank[t]) and rank[t][nxt[t]] in shown:
                nxt[t] += 1
        if nxt[0] == len(rank[0]) or nxt[1] == len(rank[1]):
            break
        team = 0 if count[0] < count[1] or (count[0] == count[1]
                                            and flips[len(items)] < 0.5) else 1
        item = rank[team][nxt[team]]
        shown.add(item)
        items.append(item)
        teams.append(team)
        count[team] += 1
    return np.array(items, dtype=np.int64), np.array(teams, dtype=np.int8)


def credit(teams: Sequence[int] | np.ndarray,
           clicked: Sequence[int] | np.ndarray | None = None) -> int:
    """+1 when team 0 (the first ranker) got more clicks, -1 when team 1 did, 0 on a tie
    (no clicks included).

    `teams`: the team (0 or 1) of each clicked item; or, with `clicked` (the clicked
    positions, or a boolean mask over the list), the team of every shown item."""
    t = np.asarray(teams, dtype=np.int64)
    if clicked is not None:
        c = np.asarray(clicked)
        t = t[c if c.dtype == np.bool_ else c.astype(np.int64)]
    if t.size and not np.isin(t, (0, 1)).all():
        raise ValueError("teams must be 0 (first ranker) or 1 (second ranker)")
    ones = int(t.sum())
    return int(np.sign((t.size - ones) - ones))
