"""Run the `lmrec` CLI in process, as a user would, and capture what it prints."""

from __future__ import annotations

import sys

import pytest

from lmrec.cli import main


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
