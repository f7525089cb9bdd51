"""Checks of command-line option values, shared by every `lmrec` command.

Each check raises `ConfigError` with one line that names the option and the value, so the CLI
prints it without a traceback and exits with code 2. Commands call them before any work, so a
refused option never leaves a half-written output behind.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from lmrec.errors import ConfigError


def check_out(path: Path | None, option: str = "--out") -> None:
    """Refuse an output folder that cannot be one: an existing file, a path below a file, or a
    place the process may not write to (the nearest existing folder is not writable)."""
    if path is None:
        return
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{option} {path}: is a file; expected a folder (a new one, or "
                              "one to write into)")
        existing = path.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as exc:  # e.g. a path too long, or a folder that cannot be searched
        raise ConfigError(f"{option} {path}: cannot be used ({exc.strerror or exc})") from None
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, so no folder can be made "
                          "below it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {existing} is not writable")


def check_range(option: str, value: float | int | None, *, low: float | None = None,
                high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> None:
    """Refuse a number outside [low, high] (an open end excludes the bound) or not finite."""
    if value is None:
        return
    integer = isinstance(value, int) and not isinstance(value, bool)
    ok = integer or math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        expected = _describe(integer, low, high, low_open, high_open)
        raise ConfigError(f"{option} {value}: expected {expected}")


def check_choice(option: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    """Refuse a value that is not one of `choices`."""
    if value not in choices:
        raise ConfigError(f"{option} {value!r}: expected one of {', '.join(choices)}")


def _describe(integer: bool, low: float | None, high: float | None, low_open: bool,
              high_open: bool) -> str:
    kind = "an integer" if integer else "a finite number"
    if low is not None and high is not None:
        return (f"{kind} in {'(' if low_open else '['}{_num(low)}, {_num(high)}"
                f"{')' if high_open else ']'}")
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {_num(low)}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {_num(high)}"
    return kind


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"
