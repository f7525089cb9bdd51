"""`lmrec serve` refuses bad options and a bad store or bundle before it starts: exit code 2 and
one line on stderr naming the option, the folder or the file (no traceback, no usage box), and
nothing created on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers_cli import CliProcess, cli_processes, one_error_line, run
from helpers_serve import planted_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_bundle(tmp_path_factory.mktemp("startup") / "ease")


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """What reached uvicorn.run (the server is never started)."""
    import uvicorn

    calls: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    yield calls
    for app in calls:
        if not isinstance(app, str):
            app.state.service.close()


@pytest.mark.parametrize(("option", "value"), [
    ("--port", "80000"), ("--port", "-5"), ("--port", "65536"), ("--port", "http"),
    ("--log-level", "loud"), ("--max-batch", "0"), ("--max-body-bytes", "10"),
])
def test_bad_options_are_one_line_naming_the_option(
        option: str, value: str, bundle: Path, tmp_path: Path, started: list[Any],
        capsys: pytest.CaptureFixture[str], real_runs: list[CliProcess]) -> None:
    code, out, err = run(["serve", str(bundle), "--store", f"sqlite:///{tmp_path / 'e.db'}",
                          option, value], capsys)
    one_error_line(code, err, option)
    assert started == [] and out == ""
    assert not (tmp_path / "e.db").exists()  # refused before the store was opened


def test_good_edge_values_are_accepted(bundle: Path, tmp_path: Path, started: list[Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    for port, level in (("0", "debug"), ("65535", "critical")):
        code, _, err = run(["serve", str(bundle), "--store", f"sqlite:///{tmp_path / 'e.db'}",
                            "--port", port, "--log-level", level], capsys)
        assert code == 0, err
    assert len(started) == 2


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_store_in_a_missing_folder_is_refused_not_created(
        workers: str, bundle: Path, tmp_path: Path, started: list[Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    code, _, err = run(["serve", str(bundle), "--store", f"sqlite:///{missing}/s.db",
                        "--workers", workers], capsys)
    line = one_error_line(code, err, f"'{missing}' does not exist")
    assert "--store" in line or "store url" in line
    assert not (tmp_path / "no").exists() and started == []


def test_a_damaged_bundle_stops_a_multi_worker_start(bundle: Path, tmp_path: Path,
                                                     started: list[Any],
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    import shutil

    folder = tmp_path / "b"
    shutil.copytree(bundle, folder)
    (folder / "histories.npz").write_bytes(b"PK\x03\x04 not an archive")
    code, _, err = run(["serve", str(folder), "--store", f"sqlite:///{tmp_path / 'e.db'}",
                        "--workers", "2"], capsys)
    one_error_line(code, err, str(folder / "histories.npz"))
    assert started == []  # no worker was launched


# --- as a real process: started with the first test above (see `real_runs`), they run on the
# other core while the in-process tests run, all three at once ---------------------------------
REAL = [(["--port", "80000"], "--port"), (["--log-level", "loud"], "--log-level"),
        (["--port", "http"], "--port")]


@pytest.fixture(scope="module")
def real_runs(bundle: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[list[CliProcess]]:
    tmp = tmp_path_factory.mktemp("real")
    jobs = {str(i): (["serve", str(bundle), "--store", f"sqlite:///{tmp / 'e.db'}", *args],
                     tmp / f"run-{i}", {"COLUMNS": "80"})
            for i, (args, _) in enumerate(REAL)}
    with cli_processes(jobs) as started:
        yield list(started.values())


def test_as_a_user_sees_it(real_runs: list[CliProcess]) -> None:
    for run_, (_, needle) in zip(real_runs, REAL, strict=True):
        proc = run_.result()
        one_error_line(proc.returncode, proc.stderr, needle)
        assert proc.stdout == ""
