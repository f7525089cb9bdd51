"""Run the `lmrec` CLI in process, as a user would, and capture what it prints; or as real
processes, several at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lmrec.cli import main


def one_error_line(code: int, err: str, needle: str, out: str = "") -> str:
    """The one line a refused command prints on stderr, after checking the rule every bad input
    follows: exit code 2, exactly one non-blank line naming `needle`, no traceback."""
    assert "Traceback" not in out + err, err
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert needle in lines[0], f"{needle!r} not named in: {lines[0]}"
    return lines[0]


def run_ok(args: list[str]) -> None:
    """`lmrec ARGS` in process, which must succeed; for module fixtures, which have no
    capsys (its output goes to the terminal)."""
    argv, sys.argv = sys.argv, ["lmrec", *args]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
    finally:
        sys.argv = argv


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `lmrec ARGS`."""
    old = sys.argv
    sys.argv = ["lmrec", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class CliProcess:
    """`python -m lmrec.cli ARGS` started now as a real process; `result()` waits for it.

    Several can run at once (their output goes to files, so no pipe fills up), and a module can
    start its real-process checks early so that they run on a second core while the in-process
    tests run; each check then only collects its own result."""

    def __init__(self, args: list[str], folder: Path, env: dict[str, str] | None = None,
                 timeout: float = 180.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.args = [sys.executable, "-m", "lmrec.cli", *args]
        self.timeout = timeout
        self._out, self._err = folder / "stdout.txt", folder / "stderr.txt"
        base = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1"}
        with self._out.open("wb") as out, self._err.open("wb") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err,
                                         env={**base, **(env or {})})
        self._started = time.monotonic()

    def result(self) -> subprocess.CompletedProcess[str]:
        left = max(1.0, self.timeout - (time.monotonic() - self._started))
        try:
            code = self.proc.wait(left)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return subprocess.CompletedProcess(self.args, code, self._out.read_text(),
                                           self._err.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def cli_processes(jobs: dict[str, tuple[list[str], Path, dict[str, str] | None]]
                  ) -> Iterator[dict[str, CliProcess]]:
    """Start every job at once; whatever is still running at the end is killed."""
    started: dict[str, CliProcess] = {}
    try:
        for key, (args, folder, env) in jobs.items():
            started[key] = CliProcess(args, folder, env)
        yield started
    finally:
        for p in started.values():
            p.kill()
