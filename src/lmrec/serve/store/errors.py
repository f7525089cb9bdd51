"""The store's error, apart so that the contract (`base`) and the pool both import it."""

from __future__ import annotations

from lmrec.errors import LmrecError


class StoreError(LmrecError):
    """The store cannot serve the request now: unreachable, closed, or its pool exhausted."""
