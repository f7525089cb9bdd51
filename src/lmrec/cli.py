"""The `lmrec` command line: a thin Typer layer over the library."""

from __future__ import annotations

import json
import re
import shutil
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from pydantic import ValidationError
from rich.markdown import Markdown

from lmrec import __version__
from lmrec import columns as C
from lmrec.cli_checks import check_choice, check_out, check_range
from lmrec.console import (
    download_bar,
    err,
    fail,
    metrics_summary,
    out,
    print_json,
    steps,
    table,
)
from lmrec.errors import ConfigError, InputError, LmrecError
from lmrec.serve.retrieval import DEFAULT_ANN_THRESHOLD
from lmrec.serve.security import split_list as _split_list

app = typer.Typer(help="lmrec: recommendations from your event log and catalogue.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect and prepare data.", no_args_is_help=True)
datasets_app = typer.Typer(help="Public datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(datasets_app, name="datasets")


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


def _validation_message(exc: ValidationError, options: dict[str, str] | None = None) -> str:
    """One line for a config's validation error; `options` maps a field to the CLI option that
    sets it (default: `--field-name`), so the message names what the user typed."""
    parts = []
    for e in exc.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        loc = ".".join(str(p) for p in e["loc"])
        if options is not None and field:
            loc = options.get(field, "--" + field.replace("_", "-"))
        parts.append(f"{loc}: {e['msg']}")
    return "invalid option: " + "; ".join(parts)


# PrepareConfig fields whose option is not simply `--field-name`
_PREPARE_OPTIONS = {"dedupe_keep": "--keep", "multi_separator": "--multi-sep",
                    "burst_window_s": "--burst-window", "item_roles": "--item-role",
                    "user_roles": "--user-role", "behaviour_weights": "--weights"}


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False
          ) -> None:
    if version:
        out.print(f"lmrec {__version__}")
        raise typer.Exit()


# --- shared option helpers ---------------------------------------------------------------
def parse_params(pairs: list[str] | None, config_file: Path | None = None) -> dict[str, Any]:
    """`k=v` pairs (and an optional TOML file, overridden by the pairs) as a dict."""
    params: dict[str, Any] = {}
    if config_file is not None:
        if not config_file.is_file():
            raise InputError(f"{config_file}: is a folder; expected a TOML file"
                             if config_file.is_dir() else
                             f"config file not found: {config_file}")
        try:
            doc = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: invalid TOML ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{config_file}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise InputError(f"{config_file}: cannot be read ({exc.strerror})") from None
        section = doc.get("params", doc)
        if not isinstance(section, dict):
            raise ConfigError(f"{config_file}: params must be a table of key = value, "
                              f"found {type(section).__name__}")
        params.update(section)
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {p!r} is not KEY=VALUE")
        params[key.strip()] = value.strip()
    return params


def parse_variant(spec: str) -> tuple[str, str, dict[str, Any]]:
    """`LABEL=MODEL:key=value,key=value` -> (label, model, params). A comma starts a new pair
    only before `key=`, so `layers=128,64` stays one value."""
    label, sep, rest = spec.partition("=")
    model, _, body = rest.partition(":")
    if not sep or not label.strip() or not model.strip():
        raise ConfigError(f"--variant {spec!r} is not LABEL=MODEL[:key=value,...]")
    pairs = [p for p in re.split(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*=)", body) if p.strip()]
    return label.strip(), model.strip(), parse_params(pairs)


def _parse_ks(value: str) -> list[int]:
    try:
        ks = sorted({int(v) for v in _split_list(value)})
    except ValueError:
        raise ConfigError(f"--k {value!r} is not a comma-separated list of integers") from None
    if not ks or ks[0] < 1:
        raise ConfigError(f"--k {value!r}: cutoffs must be positive integers")
    return ks


SEED_MAX = 2**63 - 1  # torch takes seeds below 2**64; numpy any non-negative integer


def _check_split_options(ratios: str, test_share: float, holdout_share: float,
                         max_train_events: int, seed: int, folds: int | None = None
                         ) -> tuple[float, ...]:
    """The split options of evaluate and compare, checked whatever the split kind (a value
    that no split can use is a mistake even where this split ignores it); the ratios parsed."""
    from lmrec.evaluate.splits import check_ratios

    try:
        r = tuple(float(x) for x in _split_list(ratios))
    except ValueError:
        raise ConfigError(f"--ratios {ratios!r} is not a list of numbers") from None
    try:
        check_ratios(r)
    except ConfigError as exc:
        raise ConfigError(f"--ratios {ratios!r}: {exc}") from None
    check_range("--test-share", test_share, low=0, high=1, low_open=True, high_open=True)
    check_range("--holdout-share", holdout_share, low=0, high=1, low_open=True,
                high_open=True)
    # 0 would leave every test user with no training event: nobody could be scored
    check_range("--max-train-events", max_train_events, low=1)
    check_range("--seed", seed, low=0, high=SEED_MAX)
    check_range("--folds", folds, low=2)
    return r


# --- data ----------------------------------------------------------------------------------
# How event files are read, and which column is which: one definition for prepare and inspect.
_UserColOption = Annotated[str | None, typer.Option(help="Column with user ids.")]
_ItemColOption = Annotated[str | None, typer.Option(help="Column with item ids.")]
_EventColOption = Annotated[str | None, typer.Option(help="Column with the behaviour type.")]
_TimeColOption = Annotated[str | None, typer.Option(help="Column with the timestamp.")]
_ValueColOption = Annotated[str | None, typer.Option(help="Column with a value (rating).")]
_DelimiterOption = Annotated[str | None, typer.Option(
    help="Field delimiter (sniffed if unset).")]
_EncodingOption = Annotated[str, typer.Option(help="Text encoding of the files.")]
_NoHeaderOption = Annotated[bool, typer.Option(
    "--no-header", help="Event files have no header (name the columns with --columns).")]
_ColumnsOption = Annotated[str | None, typer.Option(
    help="Column names, comma-separated: of a file without a header, or replacing the "
         "header's.")]
_TimeFormatOption = Annotated[str | None, typer.Option(
    help="strptime format of text timestamps, e.g. '%d/%m/%Y %H:%M'. Without it only Unix "
         "numbers and ISO-8601 are read: 03/01/2024 could be March or January.")]
_AllowNegativeTimeOption = Annotated[bool, typer.Option(
    "--allow-negative-time", help="Accept negative Unix timestamps (before 1970).")]


def _read_event_files(paths: list[Path], *, delimiter: str | None, encoding: str,
                      no_header: bool, columns: str | None, user_col: str | None,
                      item_col: str | None, event_col: str | None, time_col: str | None,
                      value_col: str | None, time_format: str | None,
                      allow_negative_time: bool, on_bad_rows: str, step: Any,
                      default_event: str = C.DEFAULT_EVENT) -> Any:
    """The event files of `data prepare` and `data inspect`, read and typed the same way."""
    from lmrec.collect.eventfiles import EventFileOptions, read_event_files

    options = EventFileOptions(
        delimiter=delimiter, encoding=encoding, header=not no_header,
        column_names=_split_list(columns) or None, user=user_col, item=item_col,
        event=event_col, time=time_col, value=value_col, default_event=default_event,
        time_format=time_format, allow_negative_time=allow_negative_time)
    return read_event_files(paths, options, on_bad_rows=on_bad_rows, on_step=step)


def _check_time_format(time_format: str | None) -> None:
    """A --time-format with a directive strptime does not know, refused before any work."""
    if time_format is not None:
        from lmrec.collect.timeparse import check_time_format

        check_time_format(time_format)


def _print_columns(files: Any) -> None:
    """What every column of the event files became, and why: nothing is guessed silently."""
    for line in files.describe():
        err.print(line, markup=False, highlight=False, soft_wrap=True)


@data_app.command("prepare")
def data_prepare(
    events: Annotated[list[Path], typer.Option("--events", help="Event file(s); repeat to merge.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the prepared dataset.")],
    users: Annotated[Path | None, typer.Option(help="User attribute table.")] = None,
    items: Annotated[Path | None, typer.Option(help="Item attribute table.")] = None,
    users_columns: Annotated[str | None, typer.Option(
        help="Column names of a --users file without a header.")] = None,
    items_columns: Annotated[str | None, typer.Option(
        help="Column names of an --items file without a header.")] = None,
    users_delimiter: Annotated[str | None, typer.Option(help="Delimiter of --users.")] = None,
    items_delimiter: Annotated[str | None, typer.Option(help="Delimiter of --items.")] = None,
    users_encoding: Annotated[str | None, typer.Option(help="Encoding of --users.")] = None,
    items_encoding: Annotated[str | None, typer.Option(help="Encoding of --items.")] = None,
    user_col: _UserColOption = None,
    item_col: _ItemColOption = None,
    event_col: _EventColOption = None,
    time_col: _TimeColOption = None,
    value_col: _ValueColOption = None,
    users_id_col: Annotated[str | None, typer.Option(help="Id column of --users.")] = None,
    items_id_col: Annotated[str | None, typer.Option(help="Id column of --items.")] = None,
    delimiter: _DelimiterOption = None,
    encoding: _EncodingOption = "utf-8",
    no_header: _NoHeaderOption = False,
    columns: _ColumnsOption = None,
    time_format: _TimeFormatOption = None,
    allow_negative_time: _AllowNegativeTimeOption = False,
    default_event: Annotated[str, typer.Option(help="Behaviour type without --event-col.")
                             ] = C.DEFAULT_EVENT,
    min_rating: Annotated[float | None, typer.Option(help="Drop events with value below.")
                          ] = None,
    core: Annotated[int | None, typer.Option(help="k-core filter on users and items.")] = None,
    user_core: Annotated[int | None, typer.Option(help="Minimum events per user.")] = None,
    item_core: Annotated[int | None, typer.Option(help="Minimum events per item.")] = None,
    dedupe: Annotated[str, typer.Option(help="none | exact | user-item | user-item-event")
                      ] = "exact",
    keep: Annotated[str, typer.Option(help="Duplicate kept: first | last | max-value")] = "last",
    weights: Annotated[str | None, typer.Option(help="Behaviour weights, e.g. view=1,cart=3")
                       ] = None,
    item_role: Annotated[list[str] | None, typer.Option(help="COLUMN=ROLE for items.")] = None,
    user_role: Annotated[list[str] | None, typer.Option(help="COLUMN=ROLE for users.")] = None,
    multi_sep: Annotated[str, typer.Option(help="Separator of multi-valued cells.")] = "|",
    max_user_events: Annotated[int | None, typer.Option(help="Drop users above (bots).")
                               ] = None,
    burst_max: Annotated[int | None, typer.Option(help="Max events of a user per window.")
                         ] = None,
    burst_window: Annotated[float, typer.Option(help="Burst window in seconds.")] = 1.0,
    time_min: Annotated[int | None, typer.Option(help="Drop events before (Unix s).")] = None,
    time_max: Annotated[int | None, typer.Option(help="Drop events after (Unix s).")] = None,
    on_bad_rows: Annotated[str, typer.Option(help="fail | skip (skipped rows are counted)")
                           ] = "fail",
    name: Annotated[str | None, typer.Option(help="Dataset name.")] = None,
) -> None:
    """Validate, clean, filter and index events (+ user/item tables) into a dataset folder."""
    check_out(out_dir, "--out")
    check_choice("--on-bad-rows", on_bad_rows, ("fail", "skip"))
    _check_time_format(time_format)
    from lmrec.prepare import PrepareConfig, prepare
    from lmrec.prepare.pipeline import role_overrides, weights_from_pairs

    cfg_kwargs: dict[str, Any] = {
        "dedupe": dedupe, "dedupe_keep": keep, "default_event": default_event,
        "min_rating": min_rating, "core": core, "user_core": user_core, "item_core": item_core,
        "multi_separator": multi_sep, "max_user_events": max_user_events,
        "burst_max": burst_max, "burst_window_s": burst_window,
        "time_min": time_min, "time_max": time_max,
        "time_format": time_format, "allow_negative_time": allow_negative_time,
        "item_roles": role_overrides(item_role or []),
        "user_roles": role_overrides(user_role or []),
    }
    if weights:
        from lmrec.prepare.config import DEFAULT_BEHAVIOUR_WEIGHTS

        cfg_kwargs["behaviour_weights"] = {**DEFAULT_BEHAVIOUR_WEIGHTS,
                                           **weights_from_pairs(_split_list(weights))}
    try:
        config = PrepareConfig(**cfg_kwargs)
    except ValidationError as exc:  # name the option a user typed, not the config field
        raise ConfigError(_validation_message(exc, _PREPARE_OPTIONS)) from None
    t0 = time.perf_counter()
    with steps("preparing") as step:
        files = _read_event_files(
            events, delimiter=delimiter, encoding=encoding, no_header=no_header,
            columns=columns, user_col=user_col, item_col=item_col, event_col=event_col,
            time_col=time_col, value_col=value_col, time_format=time_format,
            allow_negative_time=allow_negative_time, on_bad_rows=on_bad_rows, step=step,
            default_event=default_event)
        user_t = item_t = None
        if users:
            step(f"reading {users}")
            user_t = _read_attributes(users, users_columns, users_delimiter or delimiter,
                                      users_encoding or encoding, on_bad_rows)
        if items:
            step(f"reading {items}")
            item_t = _read_attributes(items, items_columns, items_delimiter or delimiter,
                                      items_encoding or encoding, on_bad_rows)
        result = prepare(files.tables, user_t, item_t, mapping=files.mapping,
                         user_id_col=users_id_col, item_id_col=items_id_col, config=config,
                         on_bad_rows=on_bad_rows, name=name or out_dir.name, on_step=step)
        step("writing")
        result.save(out_dir)
    _print_columns(files)
    _print_summary(result.dataset, result.report, time.perf_counter() - t0, out_dir)


def _read_attributes(path: Path, columns: str | None, delimiter: str | None, encoding: str,
                     on_bad_rows: str) -> Any:
    """A user or item table; given column names mean the file has no header."""
    from lmrec.collect.readers import read_table

    names = _split_list(columns) or None
    return read_table(path, delimiter=delimiter, encoding=encoding, header=names is None,
                      column_names=names, on_bad_rows=on_bad_rows)


def _print_summary(dataset: Any, report: Any, seconds: float | None, folder: Path | None) -> None:
    s = report.summary
    rows = [("users", s.get("users")), ("items", s.get("items")), ("events", s.get("events")),
            ("event rows read", report.rows_read), ("event rows dropped", report.rows_dropped)]
    for reason, n in report.dropped_by_reason().items():
        rows.append((f"  dropped: {reason}", n))
    err.print(table(f"Dataset {dataset.name!r}", ["", "count"], rows))
    for flag in report.flags:
        err.print(f"[yellow]flag:[/] {flag}")
    if folder is not None:
        where = f" in {seconds:.2f} s" if seconds is not None else ""
        err.print(f"Prepared{where}: {folder} (quality report: {folder / 'quality_report.md'})")


@data_app.command("inspect")
def data_inspect(
    paths: Annotated[list[Path], typer.Argument(help="A prepared dataset folder, or files.")],
    user_col: _UserColOption = None,
    item_col: _ItemColOption = None,
    event_col: _EventColOption = None,
    time_col: _TimeColOption = None,
    value_col: _ValueColOption = None,
    delimiter: _DelimiterOption = None,
    encoding: _EncodingOption = "utf-8",
    no_header: _NoHeaderOption = False,
    columns: _ColumnsOption = None,
    time_format: _TimeFormatOption = None,
    allow_negative_time: _AllowNegativeTimeOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print users, items, events and the quality report of a dataset folder or raw files."""
    from lmrec.collect.readers import BadRowPolicy
    from lmrec.data import Dataset
    from lmrec.prepare import PrepareConfig, QualityReport, prepare

    if len(paths) == 1 and paths[0].is_dir():
        ds = Dataset.load(paths[0])
        report_path = paths[0] / "quality_report.json"
        report = QualityReport.load(paths[0]) if report_path.exists() else None
        info = {"name": ds.name, "users": ds.n_users, "items": ds.n_items, "events": ds.n_events,
                "behaviours": dict(ds.events[C.EVENT].value_counts().iter_rows()),
                "user_features": {k: str(v.role) for k, v in ds.user_schema.items()},
                "item_features": {k: str(v.role) for k, v in ds.item_schema.items()}}
        if as_json:
            print_json({**info, "quality_report": report.to_dict() if report else None},
                       indent=2)
            return
        out.print(table(f"Dataset {ds.name!r}", ["", "value"],
                        [(k, v) for k, v in info.items()]))
        if report is not None:
            out.print(Markdown(report.to_markdown()))
        return
    _check_time_format(time_format)
    config = PrepareConfig(time_format=time_format, allow_negative_time=allow_negative_time)
    with steps("inspecting") as step:
        files = _read_event_files(
            paths, delimiter=delimiter, encoding=encoding, no_header=no_header, columns=columns,
            user_col=user_col, item_col=item_col, event_col=event_col, time_col=time_col,
            value_col=value_col, time_format=time_format,
            allow_negative_time=allow_negative_time, on_bad_rows=BadRowPolicy.SKIP, step=step)
        result = prepare(files.tables, mapping=files.mapping, config=config,
                         on_bad_rows=BadRowPolicy.SKIP, name=paths[0].stem, on_step=step)
    if as_json:
        print_json(result.report.to_dict(), indent=2)
        return
    out.print(Markdown(result.report.to_markdown()))


# --- datasets --------------------------------------------------------------------------------
@datasets_app.command("list")
def datasets_list() -> None:
    """List the public datasets lmrec can load."""
    from lmrec.datasets import list_datasets

    out.print(table("Datasets", ["name", "description", "local folder"],
                    [(s.name, s.description, ", ".join(s.folders) or "-")
                     for s in list_datasets()]))


@datasets_app.command("get")
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


# --- models --------------------------------------------------------------------------------
@app.command("train")
def train(
    data: Annotated[Path, typer.Option("--data", help="A prepared dataset folder.")],
    model: Annotated[str, typer.Option("--model", help="Model name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the trained model.")],
    param: Annotated[list[str] | None, typer.Option("--param", help="KEY=VALUE, repeatable.")
                     ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with model parameters.")
                      ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    rules: Annotated[Path | None, typer.Option(
        help="Business rules (JSON or TOML) to ship in the bundle.")] = None,
    ann_threshold: Annotated[int, typer.Option(
        help="Catalogue size from which embedding models get an ANN index.")
    ] = DEFAULT_ANN_THRESHOLD,
) -> None:
    """Train a model on a dataset folder and save it as a servable bundle (model, items,
    training histories, version; see `lmrec serve`)."""
    from lmrec.data import Dataset
    from lmrec.models import create_model, model_class
    from lmrec.serve.bundle import write_bundle

    check_out(out_dir, "--out")
    check_range("--seed", seed, low=0, high=SEED_MAX)
    check_range("--ann-threshold", ann_threshold, low=0)
    if rules is not None:  # a bad rules file is refused before training, not after it
        from lmrec.serve.service import Rules

        if rules.suffix not in (".json", ".toml"):
            raise ConfigError(f"--rules {rules}: expected a .json or .toml file")
        Rules.from_file(rules)
    params = parse_params(param, config)
    if "checkpoint_dir" in model_class(model).Config.model_fields:
        # neural models keep checkpoints, history.json and the training curve with the model
        params.setdefault("checkpoint_dir", str(out_dir / "run"))
    rec = create_model(model, params)
    ds = Dataset.load(data)
    t0 = time.perf_counter()
    with steps(f"training {model} on {ds.name}"):
        rec.fit(ds, rng=seed)
    seconds = time.perf_counter() - t0
    from lmrec.train.distributed import dist_env

    if not dist_env().is_main:  # under torchrun every rank trains; rank 0 alone writes
        return
    write_bundle(rec, ds, out_dir, ann_threshold=ann_threshold, rules=rules)
    err.print(f"Trained {rec!r} on {ds.n_users} users, {ds.n_items} items, {ds.n_events} "
              f"events in {seconds:.2f} s; saved to {out_dir}")


@app.command("recommend")
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="A folder written by `lmrec train`.")],
    user: Annotated[list[str] | None, typer.Option("--user", help="User id; repeatable.")
                    ] = None,
    text: Annotated[str | None, typer.Option(
        "--text", help="Describe a taste in words instead of naming a user (zero-shot; "
                       "text models such as content-text).")] = None,
    k: Annotated[int, typer.Option("--k", help="How many items.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    strict: Annotated[bool, typer.Option(help="Unknown users are an error.")] = False,
    include_seen: Annotated[bool, typer.Option(help="Allow items the user already has.")
                            ] = False,
) -> None:
    """Top-k recommendations for users of a trained model, or for a text (--text)."""
    from lmrec.models import Recommender

    if (text is None) == (not user):
        raise ConfigError("give --user (one or more) or --text, not both")
    check_range("--k", k, low=1)
    rec = Recommender.load(model_dir)
    if text is not None:
        _recommend_for_text(rec, model_dir, text, k, as_json)
        return
    result = rec.recommend(user, k, exclude_seen=not include_seen, strict=strict)
    records = result.to_records()
    if as_json:
        for r in records:
            print_json(r)
        return
    titles = _item_titles(model_dir)
    for r in records:
        if "note" in r:
            err.print(f"[yellow]note:[/] user {r['user']}: {r['note']}")
        rows = [(i, it["item"], titles.get(it["item"], ""), it["score"])
                for i, it in enumerate(r["items"], start=1)]
        out.print(table(f"Top {k} for user {r['user']} ({rec.name})",
                        ["rank", "item", "title", "score"], rows))


def _recommend_for_text(rec: Any, model_dir: Path, text: str, k: int, as_json: bool) -> None:
    from lmrec.models import MODELS

    check_range("--k", k, low=1)
    if not hasattr(rec, "recommend_for_text"):
        able = sorted(n for n, klass in MODELS.items() if hasattr(klass, "recommend_for_text"))
        raise ConfigError(f"model {rec.name!r} cannot recommend from a text; models that can: "
                          f"{', '.join(able)}")
    with steps("encoding the text"):
        ranked = rec.recommend_for_text(text, k)
    if as_json:
        print_json({"text": text, "items": [{"item": i, "score": round(s, 6)}
                                            for i, s in ranked]})
        return
    titles = _item_titles(model_dir)
    rows = [(r, i, titles.get(i, ""), s) for r, (i, s) in enumerate(ranked, start=1)]
    out.print(table(f"Top {k} for {text!r} ({rec.name})", ["rank", "item", "title", "score"],
                    rows))


def _item_titles(model_dir: Path) -> dict[Any, str]:
    """A readable label per item from the bundle's item table (first text-like column)."""
    path = model_dir / "items.parquet"
    if not path.exists():
        return {}
    items = pl.read_parquet(path)
    labels = [c for c in ("title", "name") if c in items.columns]
    if not labels:
        labels = [c for c in items.columns if c != C.ITEM and items[c].dtype == pl.String][:1]
    if not labels:
        return {}
    extra = [c for c in ("category", "brand", "genres") if c in items.columns]
    rows = items.select(C.ITEM, *labels[:1], *extra).iter_rows()
    out_map: dict[Any, str] = {}
    for row in rows:
        parts = [str(row[1])]
        for v in row[2:]:
            if v is not None and v != "":
                parts.append("|".join(v) if isinstance(v, list) else str(v))
        out_map[row[0]] = " · ".join(parts)
    return out_map


# --- text embeddings ------------------------------------------------------------------------
@app.command("embed")
def embed(
    data: Annotated[Path, typer.Option("--data", help="A prepared dataset folder.")],
    encoder: Annotated[str | None, typer.Option(
        help="'default' (all-MiniLM-L6-v2) or a local sentence-transformers model folder.")
                       ] = None,
    template: Annotated[str | None, typer.Option(
        help="Item text: a format string such as '{title}. Genres: {genres}.' or columns "
             "'title,genres'; default: title/genres/tags/... as available.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Embedding cache (default $LMREC_CACHE_DIR or ~/.cache/lmrec/embeddings).")
                         ] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Texts encoded per batch.")] = 64,
    show: Annotated[int, typer.Option(help="Print the texts of this many items.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Encode the item texts of a dataset into the embedding cache (new or changed texts only)."""
    from lmrec.data import Dataset
    from lmrec.features import EmbeddingCache, encode_cached, get_encoder, item_texts

    check_choice("--device", device, ("cpu", "cuda", "auto"))
    check_range("--batch-size", batch_size, low=1)
    check_range("--show", show, low=0)
    check_out(cache_dir, "--cache-dir")
    ds = Dataset.load(data)
    enc = get_encoder(encoder, device=device)  # type: ignore[arg-type]
    texts = item_texts(ds, template)
    res = encode_cached(texts, enc, cache_dir=cache_dir, batch_size=batch_size,
                        progress=not as_json)
    summary = {"dataset": ds.name, "items": ds.n_items, "encoder": res.encoder,
               "dim": int(res.vectors.shape[1]), "newly_encoded": res.n_encoded,
               "from_cache": res.n_cached, "empty_texts": sum(1 for t in texts if not t),
               "seconds": round(res.seconds, 3),
               "items_per_s": round(ds.n_items / res.seconds, 1) if res.seconds > 0 else None,
               "cache": str(EmbeddingCache(res.encoder, cache_dir).folder)}
    if as_json:
        print_json(summary)
        return
    for i, t in enumerate(texts[:show]):
        out.print(f"{ds.items.to_python(i)}: {t}", highlight=False)
    out.print(table(f"Embedded {ds.name!r}", ["", "value"],
                    [(key, f"{v:g}" if isinstance(v, float) else v) for key, v in summary.items()]))


# --- evaluation -----------------------------------------------------------------------------
def _splits(ds: Any, split: str, ratios: tuple[float, ...], test_share: float, folds: int,
            seed: int, holdout_share: float = 0.2, max_train_events: int = 5) -> list:
    """The splits asked for (options checked by `_check_split_options`); notes to stderr."""
    from lmrec.evaluate import make_splits

    splits = make_splits(ds, split, ratios=ratios, test_share=test_share, folds=folds, seed=seed,
                         holdout_share=holdout_share, max_train_events=max_train_events)
    for note in dict.fromkeys(n for s in splits for n in s.notes):
        err.print(f"[yellow]note:[/] {note}")
    return splits


@app.command("evaluate")
def evaluate_cmd(
    data: Annotated[Path, typer.Option("--data", help="A prepared dataset folder.")],
    model: Annotated[str, typer.Option("--model", help="Model name.")],
    param: Annotated[list[str] | None, typer.Option("--param", help="KEY=VALUE, repeatable.")
                     ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with model parameters.")
                      ] = None,
    split: Annotated[str, typer.Option(
        help="random | loo | temporal | kfold | cold-items | cold-users")] = "random",
    ratios: Annotated[str, typer.Option(help="train,valid,test shares for --split random")
                      ] = "0.8,0.1,0.1",
    test_share: Annotated[float, typer.Option(help="Test share for --split temporal")] = 0.2,
    holdout_share: Annotated[float, typer.Option(
        help="Share of items (cold-items) or users (cold-users) held out for test")] = 0.2,
    max_train_events: Annotated[int, typer.Option(
        help="Items a test user keeps in training for --split cold-users")] = 5,
    folds: Annotated[int, typer.Option(help="Folds for --split kfold")] = 5,
    k: Annotated[str, typer.Option("--k", help="Cutoffs, e.g. 10,20")] = "10",
    seed: Annotated[int, typer.Option(help="Random seed (split and model).")] = 0,
    part: Annotated[str, typer.Option(help="test | valid")] = "test",
    tune: Annotated[bool, typer.Option(
        "--tune", help="Search hyperparameters on the validation part first.")] = False,
    trials: Annotated[int, typer.Option(help="Trials for --tune.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object of metrics.")
                       ] = False,
) -> None:
    """Fit a model on a split's training part and print full-ranking metrics."""
    from lmrec.data import Dataset
    from lmrec.evaluate import SPLIT_KINDS, cross_validate, fit_and_evaluate
    from lmrec.models import create_model

    params = parse_params(param, config)
    create_model(model, params)  # refuse unknown models and parameters before any work
    ks = _parse_ks(k)
    r = _check_split_options(ratios, test_share, holdout_share, max_train_events, seed, folds)
    check_choice("--split", split, SPLIT_KINDS)
    check_choice("--part", part, ("test", "valid"))
    check_range("--trials", trials, low=1)
    if tune and split == "kfold":
        raise ConfigError("--tune takes a single split (random with a validation part, or "
                          "loo), not --split kfold")
    ds = Dataset.load(data)
    if ks[-1] > ds.n_items:
        raise ConfigError(f"--k {ks[-1]} is larger than the catalogue ({ds.n_items} items)")
    with steps(f"evaluating {model}") as step:
        step("splitting")
        splits = _splits(ds, split, r, test_share, folds, seed, holdout_share, max_train_events)
        if tune:
            params = _tune(model, params, splits[0], ks, trials, seed, step)
        if len(splits) > 1:
            step(f"{len(splits)} folds")
            summary = cross_validate(lambda: create_model(model, params), splits, ks)
            metrics = {key: v["mean"] for key, v in summary.items()}
            extra = {f"{key}_std": v["std"] for key, v in summary.items()}
        else:
            step("fitting and scoring")
            res = fit_and_evaluate(create_model(model, params), splits[0], ks, rng=seed,
                                   part=part)
            metrics, extra = dict(res.metrics), {}
    if as_json:
        print_json({**metrics, **extra})
        return
    rows = [(key, v) for key, v in metrics.items()]
    out.print(table(f"{model} on {ds.name} ({split} split, {part})", ["metric", "value"], rows))


def _tune(model: str, params: dict[str, Any], split: Any, ks: list[int], trials: int,
          seed: int, step: Any) -> dict[str, Any]:
    """Best parameters on the validation part (`--param` values stay fixed)."""
    from lmrec.evaluate import tune
    from lmrec.models import create_model, model_class

    metric = f"ndcg@{10 if 10 in ks else ks[0]}"
    best = {"value": float("-inf")}

    def on_trial(i: int, trial_params: dict[str, Any], value: float) -> None:
        best["value"] = max(best["value"], value)
        step(f"tuning: trial {i}/{trials}, best valid {metric} {best['value']:.4f}")

    result = tune(lambda p: create_model(model, p), model_class(model).Config.search_space,
                  split, metric=metric, trials=trials, seed=seed, fixed=params,
                  on_trial=on_trial)
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in result.best_params.items())
    err.print(f"tuned on the validation part ({trials} trials, {result.seconds:.1f} s): "
              f"valid {metric} {result.best_value:.4f} with {shown}")
    return result.best_params


@app.command("compare")
def compare_cmd(
    data: Annotated[Path, typer.Option("--data", help="A prepared dataset folder.")],
    report: Annotated[Path, typer.Option("--report", help="Folder for the report.")],
    models: Annotated[str, typer.Option("--models", help="Comma-separated model names.")] = "",
    variant: Annotated[list[str] | None, typer.Option(
        "--variant", help="A model with parameters, LABEL=MODEL:key=value,key=value "
                          "(repeatable), e.g. tt-text=two-tower:text=true")] = None,
    split: Annotated[str, typer.Option(
        help="random | loo | temporal | cold-items | cold-users")] = "random",
    ratios: Annotated[str, typer.Option()] = "0.8,0.1,0.1",
    test_share: Annotated[float, typer.Option()] = 0.2,
    holdout_share: Annotated[float, typer.Option(
        help="Share of items (cold-items) or users (cold-users) held out for test")] = 0.2,
    max_train_events: Annotated[int, typer.Option(
        help="Items a test user keeps in training for --split cold-users")] = 5,
    k: Annotated[str, typer.Option("--k", help="Cutoffs, e.g. 5,10,20")] = "5,10,20",
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run several models on one split; write a Markdown/HTML report with plots."""
    from lmrec.data import Dataset
    from lmrec.evaluate import SPLIT_KINDS, fit_and_evaluate, metrics_table, write_report
    from lmrec.models import create_model

    check_out(report, "--report")
    recs = {n: create_model(n) for n in _split_list(models)}
    for spec in variant or []:
        label, model_name, params = parse_variant(spec)
        if label in recs:
            raise ConfigError(f"--variant {spec!r}: the label {label!r} is already taken")
        recs[label] = create_model(model_name, params)
    if not recs:
        raise ConfigError("give --models and/or --variant")
    ks = _parse_ks(k)
    r = _check_split_options(ratios, test_share, holdout_share, max_train_events, seed)
    check_choice("--split", split, tuple(s for s in SPLIT_KINDS if s != "kfold"))
    ds = Dataset.load(data)
    if ks[-1] > ds.n_items:
        raise ConfigError(f"--k {ks[-1]} is larger than the catalogue ({ds.n_items} items)")
    splits = _splits(ds, split, r, test_share, 2, seed, holdout_share, max_train_events)
    results = {}
    with steps("comparing") as step:
        for n, rec in recs.items():
            step(n)
            results[n] = fit_and_evaluate(rec, splits[0], ks, rng=seed)
        step("writing the report")
        paths = write_report(results, report, title=f"lmrec compare on {ds.name}",
                             split_info=splits[0].sizes())
    if as_json:
        print_json({n: r.to_dict()["metrics"] for n, r in results.items()})
        return
    out.print(metrics_summary(metrics_table(results, ks), 10 if 10 in ks else ks[0]))
    err.print(f"Report: {paths.get('html')} (also {paths.get('markdown')}, "
              f"{paths.get('json')})")


# --- serving ---------------------------------------------------------------------------------
@app.command("serve")
def serve(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `lmrec train`.")],
    store: Annotated[str, typer.Option(
        envvar="LMREC_STORE_URL",
        help="Event store: sqlite:///PATH (WAL) or postgresql://USER@HOST:PORT/DB. Give a URL "
             "with a password in $LMREC_STORE_URL: options are visible to every local user.")
                     ] = "sqlite:///lmrec-events.db",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    rules: Annotated[Path | None, typer.Option(
        help="Business rules (JSON or TOML), instead of the bundle's.")] = None,
    bundle_root: Annotated[Path | None, typer.Option(
        help="POST /v1/admin/reload loads only bundles under this folder (default: the "
             "bundle's parent folder).")] = None,
    keys_file: Annotated[Path | None, typer.Option(
        help="API keys file (besides $LMREC_API_KEYS).")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(
        help="Allow browser calls from this origin; repeatable (CORS is off by default).")
                           ] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")] = 1 << 20,
    max_batch: Annotated[int, typer.Option(help="Most events per POST /v1/events.")] = 10_000,
    log_level: Annotated[str, typer.Option(help="critical | error | warning | info | debug")
                         ] = "info",
    access_log: Annotated[bool, typer.Option(
        help="Log every request line (they hold user ids: personal data).")] = False,
) -> None:
    """Serve real-time recommendations over HTTP (OpenAPI docs at /docs)."""
    import os

    # before torch is imported: idle OpenMP threads must sleep, not spin, next to the server
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from lmrec.serve.app import APP_ENV, STORE_ENV, ServeSettings, create_app
    from lmrec.serve.bundle import read_bundle_meta

    check_range("--port", port, low=0, high=65535)
    check_choice("--log-level", log_level, ("critical", "error", "warning", "info", "debug"))
    check_range("--max-body-bytes", max_body_bytes, low=1024)
    check_range("--max-batch", max_batch, low=1)
    read_bundle_meta(bundle)  # a clear error before any worker starts
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    settings = ServeSettings(rules=rules, keys_file=keys_file, max_body_bytes=max_body_bytes,
                             max_batch=max_batch, cors_origins=tuple(cors_origin or ()),
                             bundle_root=bundle_root.resolve() if bundle_root else None,
                             # other workers, or other servers, may share the store
                             # (create_app turns this off for a store no one else can open)
                             sync_workers=True,
                             started_at=time.time())
    options: dict[str, Any] = {"host": host, "port": port, "log_level": log_level,
                               "server_header": False, "access_log": access_log}
    if workers == 1:
        uvicorn.run(create_app(bundle, store, settings), **options)
        return
    # the app built once here: a damaged bundle, a bad store, rules or keys file stop the
    # start with one line, rather than every worker with a traceback
    create_app(bundle, store, settings).state.service.close()
    # each worker process builds its own app from these settings (uvicorn imports a factory)
    # a URL from $LMREC_STORE_URL (workers inherit it) is not copied into a second variable
    shared_url = None if store == os.environ.get(STORE_ENV) else store
    os.environ[APP_ENV] = json.dumps({"bundle": str(bundle.resolve()), "store": shared_url,
                                      "settings": settings.model_dump(mode="json")})
    uvicorn.run("lmrec.serve.app:app_from_env", factory=True, workers=workers, **options)


# --- demo ------------------------------------------------------------------------------------
@app.command("demo")
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


if __name__ == "__main__":
    main()
