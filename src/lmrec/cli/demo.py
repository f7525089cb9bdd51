"""`lmrec demo`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from lmrec.cli.checks import check_out, check_range
from lmrec.cli.options import SEED_MAX
from lmrec.errors import ConfigError


def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the demo writes its files.")
                       ] = Path("demo-output"),
    users: Annotated[int, typer.Option(help="Shop users.")] = 1000,
    items: Annotated[int, typer.Option(help="Shop items.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """The whole flow on the built-in shop data: data, training, evaluation, recommendations."""
    from lmrec.demo import DEMO_FOLDERS, run_demo

    check_out(out_dir, "--out")
    check_range("--users", users, low=1)
    check_range("--items", items, low=1)
    check_range("--seed", seed, low=0, high=SEED_MAX)
    if out_dir.exists():
        # the folder is replaced: only ever one that holds nothing but an earlier demo's output
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in DEMO_FOLDERS)
        if foreign:
            raise ConfigError(f"--out {out_dir}: holds files the demo did not write "
                              f"({', '.join(foreign[:3])}); give a new folder")
        shutil.rmtree(out_dir)
    run_demo(out_dir, n_users=users, n_items=items, seed=seed)
