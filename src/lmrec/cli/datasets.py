"""`lmrec datasets list` and `lmrec datasets get`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from lmrec.cli.checks import check_out, check_range
from lmrec.cli.data import _print_summary
from lmrec.console import download_bar, out, steps, table


def datasets_list() -> None:
    """List the public datasets lmrec can load."""
    from lmrec.datasets import list_datasets

    out.print(table("Datasets", ["name", "description", "local folder"],
                    [(s.name, s.description, ", ".join(s.folders) or "-")
                     for s in list_datasets()]))


def datasets_get(
    name: Annotated[str, typer.Argument(help="Dataset name (see `lmrec datasets list`).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the prepared dataset.")],
    source: Annotated[Path | None, typer.Option("--from", help="A local copy (folder or file).")
                      ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Download cache folder.")] = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download.")
                           ] = False,
    min_rating: Annotated[float | None, typer.Option()] = None,
    core: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Load a public dataset (local copy, cache or official download) into a dataset folder."""
    from lmrec.datasets import load_dataset
    from lmrec.prepare import PrepareConfig

    check_out(out_dir, "--out")
    check_out(cache_dir, "--cache-dir")
    check_range("--min-rating", min_rating)
    check_range("--core", core, low=1)
    # only the options given are set, so the dataset's own defaults (e.g. dedupe) stay
    given = {k: v for k, v in {"min_rating": min_rating, "core": core}.items() if v is not None}
    t0 = time.perf_counter()
    # the byte bar shows only when a download happens; preparing shows a spinner
    with download_bar(f"downloading {name}") as progress:
        result = load_dataset(name, source, cache_dir=cache_dir, download=not no_download,
                              config=PrepareConfig(**given) if given else None,
                              progress=progress)
    with steps(f"writing {name}"):
        result.save(out_dir)
    _print_summary(result.dataset, result.report, time.perf_counter() - t0, out_dir)
