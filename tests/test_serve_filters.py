"""Item filters (`lmrec.serve.filters`): ranges, comparisons, case-insensitive text, lists."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import TypeAdapter, ValidationError

from lmrec.serve.filters import QueryError, filter_column, filter_hits
from lmrec.serve.schemas import Filter

ITEMS = pl.DataFrame({
    "price": [5.0, 50.0, 150.0, None],
    "year": [1990, 1995, 2001, None],
    "brand": ["Acme", "acme", "Other", None],
    "genres": [["Comedy", "Drama"], [], None, ["Horror"]],
    "sizes": [[36, 38], [40], [], None],
})


@pytest.mark.parametrize(("expr", "expected"), [
    ("price<100", [True, True, False, False]),
    ("price <= 50", [True, True, False, False]),
    ("price>50", [False, False, True, False]),
    ("price>=50", [False, True, True, False]),
    ("price:10..100", [False, True, False, False]),
    ("price:..50", [True, True, False, False]),
    ("price:100..", [False, False, True, False]),
    ("year:1990..1999", [True, True, False, False]),
    ("year:1995", [False, True, False, False]),
    ("year:1995|2001", [False, True, True, False]),
    ("brand:ACME", [True, True, False, False]),
    ("brand:acme|other", [True, True, True, False]),
    ("genres:comedy", [True, False, False, False]),
    ("genres:horror|DRAMA", [True, False, False, True]),
    ("sizes:38..40", [True, True, False, False]),
    ("sizes>39", [False, True, False, False]),
])
def test_filters_keep_the_items_they_name(expr: str, expected: list[bool]) -> None:
    col = filter_column(expr)
    assert filter_hits(ITEMS[col], expr).tolist() == expected


@pytest.mark.parametrize(("expr", "message"), [
    ("brand<5", "does not hold numbers"),
    ("genres:a..b", "does not hold numbers"),
    ("price<cheap", "'cheap' is not a number"),
    ("price:1..x", "'x' is not a number"),
    ("price", "expected column:value"),
    ("price:", "expected column:value"),
    ("<5", "expected column:value"),
])
def test_a_filter_that_cannot_apply_is_refused(expr: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        filter_hits(ITEMS[filter_column(expr)], expr)


def test_the_request_schema_takes_every_form() -> None:
    adapter = TypeAdapter(Filter)
    for expr in ("price<100", "price>=5", "year:1990..1999", "genres:a|b", "brand:acme"):
        assert adapter.validate_python(expr) == expr
    for bad in ("price", "<100", "a\x00:b"):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)
