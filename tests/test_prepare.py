"""prepare(): every cleaning stage, its counts in the quality report, and the report itself."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from helpers_data import EVENT_MAPPING, events_frame
from lmrec.errors import InputError
from lmrec.prepare import PrepareConfig, Prepared, QualityReport, prepare

NOW = 2_000_000_000


def _prep(rows: list[tuple], **cfg: object) -> Prepared:
    p = prepare(events_frame(rows), mapping=EVENT_MAPPING, config=PrepareConfig(**cfg), now=NOW)
    rep = p.report
    assert rep.rows_read - rep.rows_dropped == p.dataset.n_events
    return p


def _stage(p: Prepared, name: str):
    (st,) = [s for s in p.report.stages if s.name == name]
    return st


def _external(p: Prepared) -> list[tuple]:
    """(user, item, event, time, value) of the kept events, in the dataset's order."""
    ds = p.dataset
    ev = ds.events
    return list(zip(ds.users.id_of(ev["user_idx"].to_numpy()).tolist(),
                    ds.items.id_of(ev["item_idx"].to_numpy()).tolist(),
                    ev["event"].to_list(), ev["timestamp"].to_list(), ev["value"].to_list(),
                    strict=True))


ROWS = [
    (1, 1, "view", 100, 5.0),
    (1, 1, "view", 100, 5.0),  # exact duplicate
    (1, 1, "view", 100, 5.0),  # exact duplicate
    (2, 1, None, 100, 4.0),  # missing behaviour type
    (2, 2, None, 101, 4.0),  # missing behaviour type
    (3, 1, "view", None, 3.0),  # missing timestamp
    (3, 2, "view", 50, 3.0),  # before time_min
    (3, 3, "view", 3_000_000_000, 3.0),  # in the future
    (4, 1, "view", 200, 1.0),  # below min_rating
    (4, 2, "view", 201, 2.0),  # equal to min_rating: kept
]


def test_every_stage_counts_its_drops() -> None:
    p = _prep(ROWS, missing_timestamp="drop", time_min=60, min_rating=2)
    rep = p.report
    assert rep.rows_read == 10
    miss = _stage(p, "missing values")
    assert miss.dropped == {"missing timestamp": 1}
    assert miss.changed == {"missing behaviour type set to 'interaction'": 2}
    assert (miss.rows_in, miss.rows_out) == (10, 9)
    assert _stage(p, "time range").dropped == {"timestamp before time_min (60)": 1,
                                               "timestamp in the future": 1}
    dd = _stage(p, "deduplicate")
    assert dd.dropped == {"exact duplicate": 2}
    assert (dd.rows_in, dd.rows_out) == (7, 5)
    assert _stage(p, "minimum rating").dropped == {"value below min_rating (2)": 1}
    assert rep.rows_dropped == 6
    assert p.dataset.n_events == 4
    assert rep.summary["events"] == 4
    assert sorted(_external(p)) == [(1, 1, "view", 100, 5.0), (2, 1, "interaction", 100, 4.0),
                                    (2, 2, "interaction", 101, 4.0), (4, 2, "view", 201, 2.0)]
    # every stage hands its output to the next
    for a, b in zip(rep.stages, rep.stages[1:], strict=False):
        assert a.rows_out == b.rows_in
        assert a.rows_in - sum(a.dropped.values()) == a.rows_out


def test_missing_event_drop_and_timestamp_keep() -> None:
    p = _prep(ROWS, missing_event="drop", default_event="x", future_tolerance_s=None)
    miss = _stage(p, "missing values")
    assert miss.dropped == {"missing behaviour type": 2}
    assert miss.changed == {}
    assert any("1 events have no timestamp (kept)" in n for n in miss.notes)
    assert _stage(p, "time range").dropped == {}
    assert p.dataset.n_events == 10 - 2 - 2


def test_time_max() -> None:
    p = _prep([(1, 1, "v", 10, None), (1, 2, "v", 20, None), (1, 3, "v", 21, None)],
              time_max=20)
    assert _stage(p, "time range").dropped == {"timestamp after time_max (20)": 1}
    assert p.dataset.n_events == 2


def test_future_tolerance() -> None:
    rows = [(1, 1, "v", NOW + 100, None), (1, 2, "v", NOW + 1000, None)]
    p = _prep(rows, future_tolerance_s=500)
    assert _stage(p, "time range").dropped == {"timestamp in the future": 1}
    assert [r[1] for r in _external(p)] == [1]


DUPS = [
    (1, 10, "view", 100, 1.0),
    (1, 10, "view", 300, 3.0),
    (1, 10, "view", 200, 5.0),
    (1, 11, "buy", 50, 2.0),
    (1, 10, "buy", 150, 4.0),
]


@pytest.mark.parametrize(
    ("keep", "kept"),
    [("first", (100, 1.0)), ("last", (300, 3.0)), ("max-value", (200, 5.0))],
)
def test_dedupe_user_item_keeps_the_right_row(keep: str, kept: tuple[int, float]) -> None:
    p = _prep(DUPS, dedupe="user-item", dedupe_keep=keep)
    rows = {(r[0], r[1]): r for r in _external(p)}
    assert len(rows) == 2 and p.dataset.n_events == 2
    if keep == "max-value":
        assert rows[(1, 10)][3:] == kept
    else:  # the "buy" row at t=150 is between first and last; it is not kept
        assert rows[(1, 10)][3:] == kept
    assert _stage(p, "deduplicate").dropped == {f"duplicate (user, item), {keep} kept": 3}


def test_dedupe_keep_last_uses_file_order_for_equal_times() -> None:
    rows = [(1, 10, "view", 100, 1.0), (1, 10, "view", 100, 2.0), (1, 10, "view", 100, 3.0)]
    assert [r[4] for r in _external(_prep(rows, dedupe="user-item", dedupe_keep="last"))] == [3.0]
    assert [r[4] for r in _external(_prep(rows, dedupe="user-item", dedupe_keep="first"))] == [
        1.0]


def test_dedupe_user_item_event_and_none() -> None:
    p = _prep(DUPS, dedupe="user-item-event", dedupe_keep="last")
    assert sorted(_external(p)) == [(1, 10, "buy", 150, 4.0), (1, 10, "view", 300, 3.0),
                                    (1, 11, "buy", 50, 2.0)]
    p = _prep([*DUPS, DUPS[0]], dedupe="none")
    assert p.dataset.n_events == 6
    assert _stage(p, "deduplicate").dropped == {}


def test_burst() -> None:
    rows = [(1, i, "view", 100, None) for i in range(5)]
    rows += [(1, 9, "view", 105, None), (2, 1, "view", 100, None), (2, 2, "view", 100, None)]
    p = _prep(rows, burst_max=2, burst_window_s=1)
    assert _stage(p, "noise").dropped == {"burst (> 2 events in 1 s)": 3}
    kept = sorted((r[0], r[1]) for r in _external(p))
    assert kept == [(1, 0), (1, 1), (1, 9), (2, 1), (2, 2)]  # the first two in file order


def test_bot_dropped_over_max_user_events() -> None:
    rows = [(1, i, "view", 100 + i, None) for i in range(4)]
    rows += [(2, i, "view", 100 + i, None) for i in range(3)]
    p = _prep(rows, max_user_events=3)
    st = _stage(p, "noise")
    assert st.dropped == {"user with more than 3 events (bot)": 4}
    assert "1 users removed as bots" in st.notes
    assert p.dataset.users.ids.to_list() == [2]


def test_heavy_user_is_flagged_not_dropped() -> None:
    rows = [(u, 1, "view", 100, None) for u in range(25)]
    rows += [(99, i, "view", 100 + i, None) for i in range(60)]
    p = _prep(rows)
    assert p.dataset.n_events == 85
    assert len(p.report.flags) == 1
    assert "1 users have more than" in p.report.flags[0]
    assert "the busiest has 60" in p.report.flags[0]
    assert p.report.rows_dropped == 0


KCORE = [(1, "a"), (1, "b"), (2, "a"), (2, "b"), (3, "a"), (1, "c")]


@pytest.mark.parametrize(
    ("cfg", "kept"),
    [
        ({"core": 2}, {(1, "a"), (1, "b"), (2, "a"), (2, "b")}),
        ({"user_core": 2}, {(1, "a"), (1, "b"), (2, "a"), (2, "b"), (1, "c")}),
        ({"item_core": 2}, {(1, "a"), (1, "b"), (2, "a"), (2, "b"), (3, "a")}),
        ({"core": 3}, set()),
    ],
)
def test_kcore_stage(cfg: dict, kept: set[tuple[int, str]]) -> None:
    frame = pl.DataFrame({"user": [u for u, _ in KCORE], "item": [i for _, i in KCORE]})
    if not kept:
        with pytest.raises(InputError, match="no events left"):
            prepare(frame, config=PrepareConfig(**cfg))
        return
    p = prepare(frame, config=PrepareConfig(**cfg))
    got = set(zip(p.dataset.users.id_of(p.dataset.events["user_idx"].to_numpy()).tolist(),
                  p.dataset.items.id_of(p.dataset.events["item_idx"].to_numpy()).tolist(),
                  strict=True))
    assert got == kept
    (reason,) = _stage(p, "k-core").dropped
    assert _stage(p, "k-core").dropped[reason] == len(KCORE) - len(kept)
    assert p.report.rows_read - p.report.rows_dropped == len(kept)


def test_min_rating_without_values_is_a_note() -> None:
    p = _prep([(1, 1, "v", 1, None)], min_rating=3)
    assert p.dataset.n_events == 1
    assert "min_rating ignored" in _stage(p, "minimum rating").notes[0]


def test_behaviour_weights() -> None:
    rows = [(1, 1, "view", 1, None), (1, 2, "purchase", 2, None), (1, 3, "odd", 3, None)]
    p = _prep(rows, unknown_behaviour_weight=0.5)
    assert p.dataset.events["weight"].to_list() == [1.0, 4.0, 0.5]
    assert p.dataset.behaviour_weights == {"odd": 0.5, "purchase": 4.0, "view": 1.0}
    assert "odd" in _stage(p, "behaviour weights").notes[0]


def test_config_refuses_unknown_keys_and_negative_weights() -> None:
    with pytest.raises(ValueError):
        PrepareConfig(cores=5)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        PrepareConfig(behaviour_weights={"view": -1.0})


def test_report_markdown_and_save_load(tmp_path: Path) -> None:
    p = _prep(ROWS, missing_timestamp="drop", time_min=60, min_rating=2)
    rep = p.report
    md = rep.to_markdown()
    assert "| deduplicate | 7 | 5 | exact duplicate: 2 | - |" in md
    assert "- event rows read: 10" in md and "- event rows dropped: 6" in md
    assert "  - timestamp in the future: 1" in md
    assert QualityReport.from_dict(rep.to_dict()) == rep
    folder = p.save(tmp_path / "ds")
    assert (folder / "quality_report.md").read_text() == md
    assert QualityReport.load(folder) == rep
    assert rep.to_dict()["totals"]["rows_dropped"] == 6
