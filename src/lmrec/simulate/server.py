"""The real lmrec app, served by uvicorn on a free loopback port in a background thread.

The simulator talks HTTP to it like any client would, so the experiment loop it checks is the
served one: assignment, impression logging, feedback linking and the experiment report.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from lmrec.errors import LmrecError

START_TIMEOUT_S = 120.0  # a busy 2-core machine can take a while to load bundles


class ServerError(LmrecError):
    """The simulated shop's server did not start or stopped answering as expected."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveApp:
    """`create_app(bundle, store_url, settings)` under uvicorn on 127.0.0.1, with one API key
    (write + admin + read) of its own. Use as a context manager; `client()` is an httpx client
    with the key set."""

    def __init__(self, bundle: Path, store_url: str, settings: Any) -> None:
        self.bundle = bundle
        self.store_url = store_url
        self.settings = settings
        self.key = "sim-" + secrets.token_hex(16)
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, connections: int = 8, timeout: float = 60.0) -> httpx.Client:
        limits = httpx.Limits(max_connections=connections,
                              max_keepalive_connections=connections)
        return httpx.Client(base_url=self.url, timeout=timeout, limits=limits,
                            headers={"Authorization": f"Bearer {self.key}"})

    def start(self) -> LiveApp:
        import uvicorn

        from lmrec.serve.app import create_app
        from lmrec.serve.security import KeyRing

        keys = KeyRing.from_keys({"write": [self.key], "admin": [self.key],
                                  "read": [self.key]})
        app = create_app(self.bundle, self.store_url, self.settings, keys=keys)
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, server_header=False, lifespan="on")
        # run outside the main thread, uvicorn leaves the process's signal handlers alone
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="lmrec-sim-server",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise ServerError("the simulated shop's server stopped while starting")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError("the simulated shop's server did not start in "
                                  f"{START_TIMEOUT_S:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def __enter__(self) -> LiveApp:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def check_answer(resp: httpx.Response, what: str) -> Any:
    """The JSON of a 2xx answer; ServerError with the status and detail otherwise."""
    if resp.status_code // 100 != 2:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        raise ServerError(f"{what}: HTTP {resp.status_code}: {str(detail)[:300]}")
    return resp.json()
