"""The small thread-safe connection pool the SQL stores share, and its `pool_size` setting."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Generic, TypeVar

from lmrec.errors import ConfigError, InputError
from lmrec.serve.store.errors import StoreError

POOL_TIMEOUT_S = 30.0  # how long a caller waits for a free connection before StoreError
C = TypeVar("C")


def parse_pool_size(raw: str | None, default: int) -> int:
    """The `pool_size` store-URL parameter: a positive decimal integer (`default` when
    absent)."""
    if raw is None:
        return default
    value = int(raw) if re.fullmatch(r"[0-9]+", raw) else 0
    if value < 1:
        raise ConfigError(f"store url parameter pool_size must be a positive integer, "
                          f"got {raw!r}")
    return value


class ConnectionPool(Generic[C]):
    """At most `max_size` connections, each used by one thread at a time, opened on demand.

    `healthy(conn)` decides whether a connection handed back can be reused (a broken one is
    closed and replaced by a fresh one on the next demand).
    """

    def __init__(self, connect: Callable[[], C], close: Callable[[C], None],
                 healthy: Callable[[C], bool], max_size: int, what: str) -> None:
        if max_size < 1:
            raise InputError(f"pool_size must be at least 1, got {max_size}")
        self._connect, self._close, self._healthy = connect, close, healthy
        self._max = max_size
        self._what = what
        self._idle: list[C] = []
        self._open = 0
        self._closed = False
        self._cond = threading.Condition()

    @contextmanager
    def connection(self) -> Iterator[C]:
        conn = self._acquire()
        try:
            yield conn
        finally:
            self._release(conn)

    def _acquire(self) -> C:
        deadline = time.monotonic() + POOL_TIMEOUT_S
        with self._cond:
            while True:
                if self._closed:
                    raise StoreError(f"the store {self._what} is closed")
                if self._idle:
                    return self._idle.pop()
                if self._open < self._max:
                    self._open += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    raise StoreError(f"no free connection to {self._what} after "
                                     f"{POOL_TIMEOUT_S:g} s ({self._max} in use)")
        try:  # connect outside the lock: it may take a network round trip
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _release(self, conn: C) -> None:
        keep = self._healthy(conn)
        with self._cond:
            if keep and not self._closed:
                self._idle.append(conn)
                conn = None  # type: ignore[assignment]
            else:
                self._open -= 1
            self._cond.notify()
        if conn is not None:
            self._close_quietly(conn)

    def close(self) -> None:
        """Close idle connections now and busy ones when they are handed back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            self._close_quietly(conn)

    def _close_quietly(self, conn: C) -> None:
        with suppress(Exception):  # a connection that fails to close is gone anyway
            self._close(conn)
