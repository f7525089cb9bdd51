"""The re-ranking specs of a request (`lmrec.rerank`), as the engine and the service read them.

A request names its re-rankers in `rerank` (`NAME=WEIGHT[:ARG]`, repeatable); `diversity=x`
is `mmr=x` (the older parameter; giving both is refused). `lmrec serve --rerank` sets default
re-rankers (`merge_rerank`): a request's stage replaces the default stage of the same name and
the other defaults stay, so a hard constraint set by the server cannot be lifted by a request.
Errors name `rerank` over HTTP (QueryError, a 400) and `--rerank` on the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from lmrec.errors import ConfigError
from lmrec.rerank import RerankSpec, parse_rerank
from lmrec.serve.filters import QueryError

HARD_STAGES = ("suitability",)  # re-rankers that only mask items (no re-ordering)


def request_specs(rerank: Sequence[str], diversity: float = 0.0) -> list[RerankSpec]:
    """A request's re-ranking specs: `rerank`, after `mmr=diversity` when diversity > 0;
    QueryError naming `rerank` (or `diversity`) for a bad one."""
    try:
        specs = [parse_rerank(t, option="rerank") for t in rerank]
    except ConfigError as exc:
        raise QueryError(str(exc)) from None
    if diversity > 0:
        if any(s.name == "mmr" for s in specs):
            raise QueryError("diversity: give it once, as diversity=x or as rerank=mmr=x")
        specs.insert(0, parse_rerank(f"mmr={diversity!r}", option="diversity"))
    return specs


def soft(specs: Iterable[RerankSpec]) -> bool:
    """Whether any of the stages re-orders the candidates (not only masks them)."""
    return any(s.name not in HARD_STAGES for s in specs)


def merge_rerank(default: Sequence[str], given: Sequence[str], diversity: bool = False
                 ) -> tuple[str, ...]:
    """The server's default re-rankers with a request's (module docstring; `diversity`
    counts as an mmr stage)."""
    if not default:
        return tuple(given)
    names = {_stage_name(t) for t in given} | ({"mmr"} if diversity else set())
    return (*(t for t in default if _stage_name(t) not in names), *given)


def http_message(message: str) -> str:
    """A --rerank error as a request's: naming the `rerank` field."""
    return message.replace("--rerank", "rerank")


def check_defaults(texts: Sequence[str], engines: Iterable[Any], exploring: bool
                   ) -> tuple[str, ...]:
    """`lmrec serve --rerank` specs, checked against every engine served (ConfigError naming
    --rerank: the server does not start with re-rankers its bundles cannot use)."""
    specs = [parse_rerank(t) for t in texts]
    if exploring and soft(specs):
        raise ConfigError("--rerank: only hard constraints (suitability) go with --explore, "
                          "which draws the slate itself")
    for engine in engines:
        try:
            engine.rerank_pipeline(specs)
        except ConfigError as exc:
            if "--rerank" in str(exc):
                raise
            raise ConfigError(f"--rerank: {exc}") from None
    return tuple(texts)


def _stage_name(text: str) -> str:
    name = text.partition("=")[0].strip().lower()
    return "mmr" if name == "diversity" else name
