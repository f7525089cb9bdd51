"""Option helpers shared by the `lmrec` commands: parameter pairs and files, model variants,
cutoffs, durations, the seed bound, the options of event files and of `--model auto`, and
one-line validation messages."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from lmrec.errors import ConfigError, InputError
from lmrec.serve.security import split_list as _split_list

SEED_MAX = 2**63 - 1  # torch takes seeds below 2**64; numpy any non-negative integer


def _validation_message(exc: ValidationError, options: dict[str, str] | None = None) -> str:
    """One line for a config's validation error; `options` maps a field to the CLI option that
    sets it (default: `--field-name`), so the message names what the user typed."""
    parts = []
    for e in exc.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        loc = ".".join(str(p) for p in e["loc"])
        if options is not None and field:
            loc = options.get(field, "--" + field.replace("_", "-"))
        parts.append(f"{loc}: {e['msg']}")
    return "invalid option: " + "; ".join(parts)


def parse_params(pairs: list[str] | None, config_file: Path | None = None) -> dict[str, Any]:
    """`k=v` pairs (and an optional TOML file, overridden by the pairs) as a dict."""
    params: dict[str, Any] = {}
    if config_file is not None:
        if not config_file.is_file():
            raise InputError(f"{config_file}: is a folder; expected a TOML file"
                             if config_file.is_dir() else
                             f"config file not found: {config_file}")
        try:
            doc = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: invalid TOML ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{config_file}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise InputError(f"{config_file}: cannot be read ({exc.strerror})") from None
        section = doc.get("params", doc)
        if not isinstance(section, dict):
            raise ConfigError(f"{config_file}: params must be a table of key = value, "
                              f"found {type(section).__name__}")
        params.update(section)
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {p!r} is not KEY=VALUE")
        params[key.strip()] = value.strip()
    return params


def parse_variant(spec: str) -> tuple[str, str, dict[str, Any]]:
    """`LABEL=MODEL:key=value,key=value` -> (label, model, params). A comma starts a new pair
    only before `key=`, so `layers=128,64` stays one value."""
    label, sep, rest = spec.partition("=")
    model, _, body = rest.partition(":")
    if not sep or not label.strip() or not model.strip():
        raise ConfigError(f"--variant {spec!r} is not LABEL=MODEL[:key=value,...]")
    pairs = [p for p in re.split(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*=)", body) if p.strip()]
    return label.strip(), model.strip(), parse_params(pairs)


def _parse_ks(value: str) -> list[int]:
    try:
        ks = sorted({int(v) for v in _split_list(value)})
    except ValueError:
        raise ConfigError(f"--k {value!r} is not a comma-separated list of integers") from None
    if not ks or ks[0] < 1:
        raise ConfigError(f"--k {value!r}: cutoffs must be positive integers")
    return ks


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str, option: str = "--budget") -> float:
    """A positive duration with a unit, "90s", "15m" or "1.5h", in seconds."""
    m = _DURATION.fullmatch(value.strip().lower())
    seconds = float(m[1]) * _UNIT_S[m[2]] if m else math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{option} {value!r}: expected a positive duration with a unit, "
                          "such as 90s, 15m or 1.5h")
    return seconds


# `--model auto` (evaluate, compare, train)
_BudgetOption = Annotated[str | None, typer.Option(
    "--budget", help="Wall-clock time for --model auto (search, refit and test), e.g. 90s, "
                     "15m, 1.5h.")]
_FamiliesOption = Annotated[str | None, typer.Option(
    "--families", help="Models --model auto searches, comma-separated (default: every "
                       "registered model the data can feed).")]
_MaxTrialsOption = Annotated[int | None, typer.Option(
    "--max-trials", help="Stop --model auto after this many trials; without --budget nothing "
                         "depends on the clock, so a seeded run repeats exactly.")]


# How event files are read, and which column is which: one definition for prepare and inspect.
_UserColOption = Annotated[str | None, typer.Option(help="Column with user ids.")]
_ItemColOption = Annotated[str | None, typer.Option(help="Column with item ids.")]
_EventColOption = Annotated[str | None, typer.Option(help="Column with the behaviour type.")]
_TimeColOption = Annotated[str | None, typer.Option(help="Column with the timestamp.")]
_ValueColOption = Annotated[str | None, typer.Option(help="Column with a value (rating).")]
_DelimiterOption = Annotated[str | None, typer.Option(
    help="Field delimiter (sniffed if unset).")]
_EncodingOption = Annotated[str, typer.Option(help="Text encoding of the files.")]
_NoHeaderOption = Annotated[bool, typer.Option(
    "--no-header", help="Event files have no header (name the columns with --columns).")]
_ColumnsOption = Annotated[str | None, typer.Option(
    help="Column names, comma-separated: of a file without a header, or replacing the "
         "header's.")]
_TimeFormatOption = Annotated[str | None, typer.Option(
    help="strptime format of text timestamps, e.g. '%d/%m/%Y %H:%M'. Without it only Unix "
         "numbers and ISO-8601 are read: 03/01/2024 could be March or January.")]
_AllowNegativeTimeOption = Annotated[bool, typer.Option(
    "--allow-negative-time", help="Accept negative Unix timestamps (before 1970).")]
