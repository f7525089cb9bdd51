"""Re-ranking specs: `NAME=WEIGHT[:ARG]` as given to `--rerank` and the HTTP `rerank` field.

    mmr=0.3                          diversity (maximal marginal relevance)
    calibration=0.5[:COLUMN]         Steck (2018) KL calibration to the user's history
    fair=P[:GROUP]                   FA*IR: at least the binomial minimum of protected items
    exposure=W[:GROUP]               rank-weighted group exposure pulled toward the catalogue's
    suitability=ITEMCOL<=USERCOL     hard constraint (also <, >=, >, ==); no weight
    freshness=W[:TIMECOL[:HALFLIFE_DAYS]]   time-decay boost

`diversity=W` is accepted as another name for `mmr=W` (the serving API's older parameter).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lmrec.errors import ConfigError

SOFT = ("mmr", "calibration", "exposure", "freshness")  # weighted objectives, weights sum <= 1
NAMES = (*SOFT, "fair", "suitability")
ALIASES = {"diversity": "mmr"}
OPERATORS = ("<=", ">=", "==", "<", ">")  # two-character operators first: "<=" is not "<"
SYNTAX = "NAME=WEIGHT[:ARG], e.g. calibration=0.5"
_SUITABILITY = re.compile(r"^\s*([^<>=\s]+)\s*(<=|>=|==|<|>)\s*([^<>=\s]+)\s*$")


@dataclass(frozen=True)
class RerankSpec:
    """One re-ranking stage: its name, weight (suitability: 1.0, it is hard) and argument."""

    name: str
    weight: float
    arg: str | None = None

    def __str__(self) -> str:
        if self.name == "suitability":
            return f"suitability={self.arg}"
        w = f"{self.weight:g}"
        return f"{self.name}={w}" if self.arg is None else f"{self.name}={w}:{self.arg}"

    def suitability_parts(self) -> tuple[str, str, str]:
        """(item column, operator, user column) of a suitability spec."""
        m = _SUITABILITY.match(self.arg or "")
        assert m is not None, "checked by parse_rerank"
        return m.group(1), m.group(2), m.group(3)


def spec_error(text: object, problem: str, option: str = "--rerank") -> ConfigError:
    """The one-line error for a spec that cannot be used, naming the option and the spec."""
    return ConfigError(f"{option} {str(text)!r}: {problem}")


def parse_rerank(text: str | RerankSpec, *, option: str = "--rerank") -> RerankSpec:
    """A spec from its text (a RerankSpec is checked and returned). ConfigError, one line
    naming `option` and the spec, when it cannot be read."""
    if isinstance(text, RerankSpec):
        text = str(text)
    if not isinstance(text, str):
        raise spec_error(text, f"expected text {SYNTAX}", option)
    name, eq, rest = text.strip().partition("=")
    name = ALIASES.get(name.strip().lower(), name.strip().lower())
    if not eq or not name:
        raise spec_error(text, f"expected {SYNTAX}", option)
    if name not in NAMES:
        raise spec_error(text, f"unknown re-ranker {name!r} (known: {', '.join(NAMES)})",
                         option)
    if name == "suitability":
        if not _SUITABILITY.match(rest):
            raise spec_error(text, "expected suitability=ITEMCOL<=USERCOL (operators "
                             f"{', '.join(OPERATORS)})", option)
        return RerankSpec(name, 1.0, rest.strip().replace(" ", ""))
    w, colon, arg = rest.partition(":")
    try:
        weight = float(w)
    except ValueError:
        raise spec_error(text, f"weight {w.strip()!r} is not a number (expected {SYNTAX})",
                         option) from None
    if not math.isfinite(weight) or not 0.0 <= weight <= 1.0:
        what = "target share P" if name == "fair" else "weight"
        raise spec_error(text, f"{what} must be in [0, 1], got {w.strip()}", option)
    if name == "fair" and weight >= 1.0:
        raise spec_error(text, "target share P must be below 1 (1 would protect every "
                         "position)", option)
    arg = arg.strip()
    if colon and not arg:
        raise spec_error(text, "empty argument after ':'", option)
    if name == "mmr" and arg:
        raise spec_error(text, "mmr takes no argument (its similarity comes from the data)",
                         option)
    return RerankSpec(name, weight, arg or None)
