"""The text rule every stored id and name follows, apart so that the contract (`base`) and the
impression records (`impressions`, which `base` imports) share it."""

from __future__ import annotations

from typing import Any

from lmrec.errors import InputError


def check_text(value: Any, field: str) -> str:
    """A non-empty string without NUL characters (PostgreSQL TEXT cannot hold them)."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{field} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise InputError(f"{field} must not contain NUL characters")
    return value
