"""Business rules: items never recommended and boosts, from a JSON or TOML file.

A bundle may carry its rules (`rules.json` / `rules.toml`, copied in by `lmrec train --rules`);
`lmrec serve --rules` overrides them. The engine turns them into a mask of allowed items and a
per-item score offset (`lmrec.serve.rerank`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lmrec.errors import ConfigError, InputError, Location
from lmrec.jsonfile import read_json


class Boost(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    filter: str = Field(description="items matching this `column:value` filter are boosted")
    weight: float = Field(allow_inf_nan=False, description="added to their scores (the "
                          "model's score units)")


class Rules(BaseModel):
    """Business rules from a JSON or TOML file in the bundle (`rules.json` / `rules.toml`) or
    given to `lmrec serve --rules`.

        exclude_items = ["B3", "B7"]          never recommended
        exclude = ["genres:Horror"]           items matching any of these filters, neither
        [[boost]]
        filter = "genres:Comedy"
        weight = 0.5
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    exclude_items: list[str | int] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    boost: list[Boost] = Field(default_factory=list)

    @classmethod
    def from_file(cls, path: str | Path) -> Rules:
        path = Path(path)
        if path.suffix not in (".json", ".toml"):  # the only formats read below
            raise ConfigError(f"{path}: a rules file must be .json or .toml")
        if not path.is_file():
            raise ConfigError(f"rules file not found: {path}")
        try:
            doc = tomllib.loads(path.read_text()) if path.suffix == ".toml" else read_json(path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        except InputError as exc:  # a configuration file, so a configuration error
            raise ConfigError(str(exc)) from exc
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigError(f"{Location(str(path)).describe()}: {problems}") from None
