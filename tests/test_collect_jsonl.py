"""JSON lines whose cells are not single values: objects or lists as ids, values of mixed
kinds, NaN and numbers beyond float range. One line naming file, line and column; never a
traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_cli import run
from helpers_data import write
from lmrec.collect import ColumnMapping, read_table, to_events
from lmrec.errors import InputError


def _mapping(columns: list[str]) -> ColumnMapping:
    return ColumnMapping(user="user_id", item="item_id", time="ts" if "ts" in columns else None,
                         value="v" if "v" in columns else None)


def _error(tmp_path: Path, text: str) -> str:
    p = write(tmp_path, "x.jsonl", text)
    with pytest.raises(InputError) as e:
        t = read_table(p)
        to_events(t, _mapping(t.frame.columns))
    return str(e.value).replace(str(tmp_path) + "/", "")


@pytest.mark.parametrize(
    ("text", "where", "found"),
    [
        ('{"user_id": {"a": 1}, "item_id": 1}\n', "line 1, column 'user_id'", '{"a": 1}'),
        ('{"user_id": [1, 2], "item_id": 1}\n', "line 1, column 'user_id'", "[1, 2]"),
        ('{"user_id": 1, "item_id": 1}\n\n{"user_id": {"a": 1}, "item_id": 2}\n',
         "line 3, column 'user_id'", '{"a": 1}'),
        ('{"user_id": 1, "item_id": 1}\n{"user_id": [1], "item_id": 2}\n',
         "line 2, column 'user_id'", "[1]"),
        ('{"user_id": "a", "item_id": "x"}\n{"user_id": "b", "item_id": [1]}\n',
         "line 2, column 'item_id'", "[1]"),
        ('{"user_id": 1, "item_id": 1, "ts": {"t": 5}}\n', "line 1, column 'ts'", '{"t": 5}'),
        ('{"user_id": 1, "item_id": 1, "v": [4]}\n', "line 1, column 'v'", "[4]"),
    ],
)
def test_object_or_list_cells_name_line_and_column(tmp_path: Path, text: str, where: str,
                                                     found: str) -> None:
    m = _error(tmp_path, text)
    assert m.startswith(f"x.jsonl, {where}: a JSON object or list, not a single value")
    assert m.endswith(f"found {found!r}")


def test_skip_policy_drops_only_the_object_rows(tmp_path: Path) -> None:
    p = write(tmp_path, "x.jsonl", '{"user_id": 1, "item_id": 1}\n'
                                   '{"user_id": {"a": 1}, "item_id": 2}\n'
                                   '{"user_id": 3, "item_id": 3}\n')
    ev = to_events(read_table(p), _mapping([]), on_bad_rows="skip")
    assert ev.frame["user"].to_list() == [1, 3]
    assert [(b.reason, b.location.line) for b in ev.bad_rows] == [
        ("a JSON object or list, not a single value", 2)]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"user_id": 1, "item_id": 1, "v": 1}\n{"user_id": 2, "item_id": 2, "v": NaN}\n',
         "x.jsonl, line 2: invalid JSON (NaN is not valid JSON)"),
        ('{"user_id": 1, "item_id": 1, "v": 1e400}\n',
         "x.jsonl, line 1, column 'v': number out of range"),
    ],
)
def test_non_finite_json_numbers(tmp_path: Path, text: str, needle: str) -> None:
    p = write(tmp_path, "x.jsonl", text)
    with pytest.raises(InputError) as e:
        t = read_table(p)
        to_events(t, _mapping(t.frame.columns))
    assert needle in str(e.value).replace(str(tmp_path) + "/", "")


def test_mixed_kinds_read_as_text(tmp_path: Path) -> None:
    p = write(tmp_path, "x.jsonl", '{"user_id": true, "item_id": 1}\n'
                                   '{"user_id": 1, "item_id": "a"}\n')
    t = read_table(p)
    assert t.frame.rows() == [("true", "1"), ("1", "a")]


@pytest.mark.parametrize("cell", ['{"a": 1}', "[1, 2]"])
def test_cli_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             cell: str) -> None:
    p = write(tmp_path, "e.jsonl", '{"user_id": 1, "item_id": 1}\n'
                                   f'{{"user_id": {cell}, "item_id": 2}}\n')
    code, out, err = run(["data", "prepare", "--events", str(p), "--out",
                          str(tmp_path / "d")], capsys)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err + out
    assert f"{p}, line 2, column 'user_id'" in lines[0]
