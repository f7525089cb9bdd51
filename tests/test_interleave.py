"""Team-draft interleaving: the draft itself, its fairness, and click credit."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.serve.interleave import credit, team_draft


class Coins:
    """A stand-in generator whose `random(n)` returns fixed coin values (< 0.5: A picks)."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def random(self, n: int) -> np.ndarray:
        return np.array((self.values + [0.0] * n)[:n])


def test_known_draft_skips_what_the_other_team_showed() -> None:
    # pick 1: a tie, the coin (0.9) gives B the first pick: its best, 1
    # pick 2: A is behind and takes its best, 0      (its coin, 0.1, is not used)
    # pick 3: a tie, the coin (0.3) gives A the pick: 1 is shown, so 2
    # pick 4: B is behind: 1 and 0 are shown, so 4
    items, teams = team_draft([0, 1, 2, 3], [1, 0, 4, 5], 4, Coins([0.9, 0.1, 0.3, 0.7]))
    assert items.tolist() == [1, 0, 2, 4]
    assert teams.tolist() == [1, 0, 0, 1]
    assert items.dtype == np.int64 and teams.dtype == np.int8


def test_each_item_once_and_each_team_in_its_own_order() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        a = rng.permutation(30)[:12]
        b = rng.permutation(30)[:12]
        items, teams = team_draft(a, b, 10, rng)
        assert len(items) == 10 and len(set(items.tolist())) == 10
        assert abs(int((teams == 0).sum()) - int((teams == 1).sum())) <= 1
        for team, ranking in ((0, a.tolist()), (1, b.tolist())):
            mine = [ranking.index(x) for x in items[teams == team].tolist()]
            assert mine == sorted(mine)  # a team adds its items best first
            # and never skips one of its items that was not yet shown
            for x, at in zip(items[teams == team].tolist(), mine, strict=True):
                shown_before = set(items[: items.tolist().index(x)].tolist())
                assert set(ranking[:at]) <= shown_before


def test_the_draft_is_fair_between_the_teams() -> None:
    rng = np.random.default_rng(5)
    a, b = np.arange(20), np.arange(20)[::-1]
    draws, k = 4000, 5  # odd k: one team gets 3 slots, the coin decides which
    first_a = count_a = 0
    for _ in range(draws):
        _, teams = team_draft(a, b, k, rng)
        first_a += int(teams[0] == 0)
        count_a += int((teams == 0).sum())
    se = 0.5 / np.sqrt(draws)
    assert abs(first_a / draws - 0.5) < 4 * se
    assert abs(count_a / draws - k / 2) < 4 * se  # each team contributes k/2 on average


def test_random_clicks_favour_neither_ranker() -> None:
    rng = np.random.default_rng(9)
    a, b = np.arange(50), rng.permutation(50)
    outcomes = []
    for _ in range(3000):
        _, teams = team_draft(a, b, 10, rng)
        outcomes.append(credit(teams, rng.random(10) < 0.2))
    assert abs(np.mean(outcomes)) < 4 * np.std(outcomes) / np.sqrt(len(outcomes))


def test_drafting_stops_when_a_ranking_runs_out() -> None:
    items, _ = team_draft([0, 1], [0, 1, 2, 3], 4, np.random.default_rng(0))
    assert sorted(items.tolist()) == [0, 1]  # A has nothing left to add after two picks
    items, _ = team_draft([], [0, 1], 3, np.random.default_rng(0))
    assert items.size == 0
    items, _ = team_draft([0, 1, 2], [3, 4, 5], 0, np.random.default_rng(0))
    assert items.size == 0


@pytest.mark.parametrize(("clicked_teams", "expected"), [
    ([], 0), ([0], 1), ([1], -1), ([0, 1], 0), ([0, 0, 1], 1), ([1, 1, 0], -1)])
def test_credit_by_teams_of_clicked_items(clicked_teams: list[int], expected: int) -> None:
    assert credit(clicked_teams) == expected


def test_credit_by_clicked_positions_or_mask() -> None:
    teams = np.array([0, 1, 0, 1], dtype=np.int8)
    assert credit(teams, [1, 3]) == -1
    assert credit(teams, [0]) == 1
    assert credit(teams, np.array([True, True, False, False])) == 0
    assert credit(teams, []) == 0
    with pytest.raises(ValueError, match="must be 0"):
        credit([0, 2])
