"""Shared pieces of the serve tests: tiny bundles, a real server process, PostgreSQL schemas."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from lmrec.models import create_model
from lmrec.serve.bundle import write_bundle
from lmrec.testing import planted_dataset
from lmrec.train.options import TrainingOptions

API_KEY = "test-key-" + "0123456789abcdef"  # write + admin
READ_KEY = "read-key-" + "0123456789abcdef"
PG_ENV = "LMREC_TEST_POSTGRES_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
START_TIMEOUT_S = 90.0  # a contended 2-core machine can take a while to import torch


def planted_bundle(folder: Path, model: str = "ease", params: dict[str, Any] | None = None,
                   **kwargs: Any) -> Path:
    """A bundle of `model` trained on the planted two-group dataset (users a*/b*, items A*/B*
    with genres alpha/beta; group B's items are the most popular)."""
    ds = planted_dataset()
    rec = create_model(model, params or {}).fit(ds, TrainingOptions(rng=0))
    return write_bundle(rec, ds, folder, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """`python -m lmrec.cli serve BUNDLE --store URL` in a subprocess on a free local port."""

    def __init__(self, bundle: Path | None, store_url: str, log_dir: Path, *extra: str,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.bundle = bundle
        self.cwd = cwd
        self.store_url = store_url
        self.log_dir = log_dir
        self.extra = extra
        self.env = {**os.environ, "LMREC_API_KEYS": API_KEY, "OMP_WAIT_POLICY": "PASSIVE",
                    "OPENBLAS_NUM_THREADS": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.port = free_port()
        self._starts += 1
        self.log = self.log_dir / f"server-{self.port}-{self._starts}.log"
        bundle = [str(self.bundle)] if self.bundle is not None else []  # none with --arm
        cmd = [sys.executable, "-m", "lmrec.cli", "serve", *bundle, "--store",
               self.store_url, "--host", "127.0.0.1", "--port", str(self.port),
               "--log-level", "warning", *self.extra]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=self.cwd)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/v1/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the server did not get ready:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- PostgreSQL --------------------------------------------------------------------------------
def postgres_base_url() -> str:
    """A reachable PostgreSQL server, or a skip that says why."""
    url = os.environ.get(PG_ENV, PG_DEFAULT)
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'lmrec[serve]')")
    try:
        with psycopg.connect(url, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        pytest.skip(f"no PostgreSQL answers at {url.split('@')[-1]} ({first}); set ${PG_ENV}")
    return url


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A store URL on a fresh schema of its own (dropped afterwards)."""
    import psycopg

    schema = f"lmrec_serve_test_{secrets.token_hex(6)}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    parts = urlsplit(base_url)
    query = dict(parse_qsl(parts.query))
    query["options"] = (query.get("options", "") + f" -csearch_path={schema}").strip()
    try:
        yield urlunsplit(parts._replace(query=urlencode(query)))
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
