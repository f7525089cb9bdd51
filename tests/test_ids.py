"""One rule for ids and behaviour types (lmrec.ids), applied by `data prepare`; the service's
side of the same rules is tested in test_serve_api_input.py."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from lmrec import ids
from lmrec.collect import ColumnMapping
from lmrec.errors import InputError
from lmrec.prepare import PrepareConfig, prepare


def _csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("user,item,event\n" + "".join(f"{u},{i},{e}\n" for u, i, e in rows),
                    encoding="utf-8")
    return path


def test_the_rules() -> None:
    for good in ("view", "add to cart", "浏览", "x" * 64):
        assert ids.event_type_problem(good) is None, good
    for bad in ("", " view", "view ", "a\tb", "a\x01b", "a\u202eb", "a\u200eb", "x" * 65):
        assert ids.event_type_problem(bad), bad
    for good in ("a0", "浏览者", "x y", "007"):
        assert ids.id_problem(good) is None, good
    for bad in ("", " ", "\t", " a", "a ", "a\x00", "a\x7f", "a\x85b", "a\u202ab", "a\u202eb",
                "a\u2066b", "a\u2069b", "a\u200eb", "a\u200fb"):
        assert ids.id_problem(bad), repr(bad)
    assert [ids.canonical_int(t) for t in ("7", "-7", "0", "07", "+7", "-0", " 7", "7.0",
                                           "9223372036854775808", 7, True)] == [
        7, -7, 0, None, None, None, None, None, None, 7, None]


def test_prepare_takes_printable_unicode_types(tmp_path: Path) -> None:
    path = _csv(tmp_path / "events.csv", [("u1", "i1", "浏览"), ("u1", "i2", "add to cart"),
                                          ("u2", "i1", "购买")])
    ds = prepare(path, mapping=ColumnMapping(event="event"),
                 config=PrepareConfig(behaviour_weights={"浏览": 1.0, "add to cart": 3.0,
                                                         "购买": 4.0})).dataset
    assert set(ds.behaviour_weights) == {"浏览", "add to cart", "购买"}


@pytest.mark.parametrize(("row", "column", "what"), [
    (("u2", "i1", "vi\x01ew"), "event", "invalid behaviour type"),
    (("u\u202e2", "i1", "view"), "user", "invalid user id"),
    (("u2", "i\x1b1", "view"), "item", "invalid item id"),
    (("u2", "i\u20661", "view"), "item", "invalid item id"),
])
def test_prepare_refuses_control_and_bidi_characters_in_one_line(
        tmp_path: Path, row: tuple[str, str, str], column: str, what: str) -> None:
    path = _csv(tmp_path / "events.csv", [("u1", "i1", "view"), row])
    with pytest.raises(InputError) as err:
        prepare(path, mapping=ColumnMapping(event="event"))
    message = str(err.value)
    assert message.startswith(f"{path}, line 3, column '{column}': {what}; expected "), message
    assert "\n" not in message and "\x01" not in message and "\u202e" not in message
    # skipped rows are counted, the rest prepares
    ds = prepare(path, mapping=ColumnMapping(event="event"), on_bad_rows="skip").dataset
    assert ds.n_events == 1


def test_ids_are_integers_only_in_canonical_form() -> None:
    def dtype(values: list[str]) -> pl.DataType:
        frame = pl.DataFrame({"user": values, "item": ["i"] * len(values)})
        return prepare(frame).dataset.users.dtype

    assert dtype(["7", "-3", "12"]) == pl.Int64
    for odd in ("007", "+7", "7.0", "-0"):
        assert dtype(["7", odd]) == pl.String, odd
    frame = pl.DataFrame({"user": ["7", "+7"], "item": ["i", "j"]})
    assert sorted(prepare(frame).dataset.users.ids.to_list()) == ["+7", "7"]  # two users
