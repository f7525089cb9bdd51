"""The `--rerank NAME=WEIGHT[:ARG]` option of evaluate, compare, recommend and serve
(`lmrec.rerank`): repeatable, checked before any work, a bad one refused in one line naming
--rerank."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from lmrec.errors import ConfigError

T = TypeVar("T")

RerankOption = Annotated[list[str] | None, typer.Option(
    "--rerank", help="Re-rank the lists, NAME=WEIGHT[:ARG]; repeatable: mmr=0.3, "
                     "calibration=0.5[:COLUMN], fair=P[:GROUP], exposure=W[:GROUP], "
                     "suitability=ITEMCOL<=USERCOL, freshness=W[:TIMECOL[:HALF_LIFE_DAYS]].")]


def parse_rerank_options(raw: list[str] | None) -> list[Any]:
    """The --rerank options as `RerankSpec`s (ConfigError naming --rerank for a bad one)."""
    from lmrec.rerank import parse_rerank

    return [named(lambda t=text: parse_rerank(t)) for text in raw or []]


def named(build: Callable[[], T]) -> T:
    """`build()`, its ConfigError made to name --rerank (e.g. a column the data lacks)."""
    try:
        return build()
    except ConfigError as exc:
        message = str(exc)
        if "--rerank" in message:
            raise
        raise ConfigError(f"--rerank: {message}") from None
