"""The `lmrec` command line: a thin Typer layer over the library.

One module per command group; this one holds the Typer apps, registers every command on them
(in the order `lmrec --help` lists them) and runs them with `main()`. Heavy imports (torch,
models, the server) stay inside the command functions, so `lmrec --help` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from lmrec.cli import batch, data, datasets, demo, evaluate, ope, serve, simulate, train
from lmrec.cli.options import _validation_message, parse_params, parse_variant
from lmrec.console import fail, out
from lmrec.errors import LmrecError
from lmrec.version import __version__

__all__ = ["app", "data_app", "datasets_app", "main", "parse_params", "parse_variant"]

app = typer.Typer(help="lmrec: recommendations from your event log and catalogue.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect and prepare data.", no_args_is_help=True)
datasets_app = typer.Typer(help="Public datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(datasets_app, name="datasets")

# the commands, in the order `lmrec --help` lists them (the sub-apps come after them)
data_app.command("prepare")(data.data_prepare)
data_app.command("inspect")(data.data_inspect)
datasets_app.command("list")(datasets.datasets_list)
datasets_app.command("get")(datasets.datasets_get)
app.command("train")(train.train)
app.command("recommend")(train.recommend)
app.command("similar")(batch.similar)
app.command("embed")(train.embed)
app.command("evaluate")(evaluate.evaluate_cmd)
app.command("compare")(evaluate.compare_cmd)
app.command("serve")(serve.serve)
app.command("ope")(ope.ope)
app.command("simulate")(simulate.simulate)
app.command("demo")(demo.demo)


def main() -> None:
    """Entry point: library errors and bad options become one clear line and exit code 2,
    never a traceback (nor click's usage box)."""
    try:
        code = app(standalone_mode=False)  # click's errors come here, to be shown as one line
    except typer.TyperException as exc:  # a usage error: a bad, missing or unknown option
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is printed already
            raise SystemExit(exc.exit_code) from None
        fail(" ".join(exc.format_message().split()), code=exc.exit_code)
    except typer.Abort:
        fail("aborted", code=1)
    except LmrecError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(_validation_message(exc))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    else:
        if isinstance(code, int) and code:  # typer.Exit(code), --help, --version: 0
            raise SystemExit(code)


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False
          ) -> None:
    if version:
        out.print(f"lmrec {__version__}")
        raise typer.Exit()
