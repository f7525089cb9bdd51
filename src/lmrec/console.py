"""Terminal output shared by the CLI and the demo: progress, tables, errors (all on Rich)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

# Human output goes to stderr when stdout must stay machine-readable (--json).
# Rich assumes 80 columns when output is not a terminal (logs, CI); metric tables need more.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


@contextmanager
def steps(title: str, console: Console | None = None) -> Iterator[Any]:
    """A spinner with elapsed time; call the yielded function with each step's description."""
    console = console or err
    progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                        TimeElapsedColumn(), console=console, transient=True,
                        disable=not console.is_terminal)
    with progress:
        task = progress.add_task(title, total=None)

        def update(message: str) -> None:
            progress.update(task, description=f"{title}: {message}")

        yield update


@contextmanager
def bar(title: str, total: int, console: Console | None = None) -> Iterator[Any]:
    """A progress bar; call the yielded function with the number of units done."""
    console = console or err
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    with progress:
        task = progress.add_task(title, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance


@contextmanager
def download_bar(title: str, console: Console | None = None) -> Iterator[Any]:
    """A byte-progress bar; the yielded function takes (bytes done, total bytes or None)."""
    console = console or err
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    with progress:
        task = progress.add_task(title, total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, justify="right" if c in ("score", "rank", "events", "price") else "left")
    for r in rows:
        t.add_row(*[_fmt(v, c) for v, c in zip(r, columns, strict=False)])
    return t


def _fmt(v: Any, column: str = "") -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if column == "price" else f"{v:.4f}"
    return str(v)


def print_json(value: Any, indent: int | None = None) -> None:
    """Valid JSON (`lmrec.jsonfile.dumps`: NaN as null) on stdout, one line unless `indent`,
    encoded as UTF-8 whatever the locale, for --json output that other programs read."""
    from lmrec.jsonfile import dumps

    text = dumps(value, indent=indent) + "\n"
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(text)
        return
    stream.flush()
    buffer.write(text.encode("utf-8"))
    buffer.flush()


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


COMPACT_METRICS = ("ndcg", "recall", "precision", "hit", "mrr", "coverage", "novelty", "gini")


def metrics_summary(frame: Any, k: int) -> Table:
    """A compact Rich table of a `metrics_table` frame: one row per model, metrics at one k."""
    cols = [f"{m}@{k}" for m in COMPACT_METRICS if f"{m}@{k}" in frame.columns]
    extra = [c for c in ("fit_s",) if c in frame.columns]
    rows = [(r["model"], *[float(r[c]) for c in cols], *[float(r[c]) for c in extra])
            for r in frame.iter_rows(named=True)]
    return table(None, ["model", *cols, *["fit (s)" for _ in extra]], rows)
