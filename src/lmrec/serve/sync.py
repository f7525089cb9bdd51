"""Several workers, one bundle: a reload in one worker is followed by the others.

A reload (or an erasure) publishes the bundle's (path, version) under a reserved key of the
shared event store (`BundleSync`); every worker checks it at most every `BundleSync.interval`
seconds and, when it names a bundle the worker does not serve, reloads it in the background
(`Follower`). A bundle that fails to load is not tried again at every check but after
`FOLLOW_RETRY_S`; the worker keeps serving the bundle it has.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmrec.errors import LmrecError
from lmrec.serve.store import EventStore

log = logging.getLogger("lmrec.serve")

SYSTEM_USER = "\x1flmrec"  # a store key no client id can take: ids refuse control characters
POINTER_KEY = "bundle"
FOLLOW_RETRY_S = 60.0  # after a failed follow, the next try waits this long


class BundleSync:
    """Keeps the workers of one server on the same bundle through the store.

    A reload publishes (path, version) under a reserved store key; the other workers follow.
    Pointers older than this server's start (`started_at`, shared by its workers) are ignored,
    so a restart serves the bundle it was started with.
    """

    def __init__(self, store: EventStore, started_at: float, interval: float = 2.0) -> None:
        self.store = store
        self.started_at = started_at
        self.interval = interval

    def publish(self, path: Path, version: str) -> None:
        self.store.put_state(SYSTEM_USER, POINTER_KEY, self.pointer(path, version))

    @staticmethod
    def pointer(path: Path, version: str) -> bytes:
        """The value `publish` stores (an erasure writes it in its own transaction)."""
        # resolved: another server process may run in another working directory
        return json.dumps({"path": str(Path(path).resolve()), "model_version": version,
                           "set_at": time.time()}).encode()

    def wanted(self) -> tuple[str, str] | None:
        raw = self.store.get_state(SYSTEM_USER, POINTER_KEY)
        if raw is None:
            return None
        doc = json.loads(raw)
        if doc.get("set_at", 0) < self.started_at:
            return None
        return str(doc["path"]), str(doc["model_version"])


class Follower:
    """One worker's side of `BundleSync`: starts a background reload when another worker has
    swapped in a bundle this one does not serve.

    `served()` is the version served now, `lock` the worker's reload lock (no follow starts
    while it is held), `reload(path)` loads and serves a bundle without publishing it.
    """

    def __init__(self, sync: BundleSync, served: Callable[[], str], lock: threading.Lock,
                 reload: Callable[[str], Any]) -> None:
        self.sync = sync
        self._served = served
        self._lock = lock
        self._reload = reload
        self._next_sync = 0.0

    def check(self) -> None:
        """Follow the published bundle if it is time to look and it is not the one served."""
        if time.monotonic() < self._next_sync:
            return
        self._next_sync = time.monotonic() + self.sync.interval
        try:
            wanted = self.sync.wanted()
        except LmrecError:
            return
        if wanted is None or wanted[1] == self._served():
            return
        if self._lock.locked():
            return
        threading.Thread(target=self._follow, args=(wanted[0],), daemon=True).start()

    def _follow(self, path: str) -> None:
        try:
            self._reload(path)
        except Exception:  # a bad bundle must not take the worker down; the old one stays
            log.exception("could not follow the bundle another worker loaded")
            # not again at every check: each try reads (and hashes) the whole bundle
            self._next_sync = time.monotonic() + FOLLOW_RETRY_S
