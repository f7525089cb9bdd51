"""Errors with enough context to fix the input: the file, the row or line, the column."""

from __future__ import annotations

from dataclasses import dataclass


class LmrecError(Exception):
    """Base class: every error lmrec raises on purpose. The CLI prints these without a traceback."""


class ConfigError(LmrecError):
    """A configuration, parameter or option that cannot be used."""


class UnknownUserError(LmrecError):
    """A user id the model was not trained on, under a strict policy."""


@dataclass(frozen=True)
class Location:
    """Where in the input a problem is. Any field may be unknown."""

    source: str | None = None  # a file path, or a label such as "<DataFrame>"
    line: int | None = None  # 1-based physical line in a text file
    row: int | None = None  # 1-based data row (header excluded)
    column: str | None = None

    def describe(self) -> str:
        parts = []
        if self.source:
            parts.append(self.source)
        if self.line is not None:
            parts.append(f"line {self.line}")
        elif self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        return ", ".join(parts)


class InputError(LmrecError):
    """Input data that cannot be read as asked. The message names where and what was expected."""

    def __init__(
        self,
        problem: str,
        *,
        location: Location | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        self.problem = problem
        self.location = location or Location()
        self.expected = expected
        self.found = found
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.location.describe()
        msg = f"{where}: {self.problem}" if where else self.problem
        if self.expected is not None:
            msg += f"; expected {self.expected}"
        if self.found is not None:
            found = self.found if len(self.found) <= 80 else self.found[:77] + "..."
            msg += f", found {found!r}"
        return msg
