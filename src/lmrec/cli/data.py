"""`lmrec data prepare` and `lmrec data inspect`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markdown import Markdown

from lmrec import columns as C
from lmrec.cli.checks import check_choice, check_out
from lmrec.cli.options import (
    _AllowNegativeTimeOption,
    _ColumnsOption,
    _DelimiterOption,
    _EncodingOption,
    _EventColOption,
    _ItemColOption,
    _NoHeaderOption,
    _TimeColOption,
    _TimeFormatOption,
    _UserColOption,
    _validation_message,
    _ValueColOption,
)
from lmrec.console import err, out, print_json, steps, table
from lmrec.errors import ConfigError
from lmrec.serve.security import split_list as _split_list

# PrepareConfig fields whose option is not simply `--field-name`
_PREPARE_OPTIONS = {"dedupe_keep": "--keep", "multi_separator": "--multi-sep",
                    "burst_window_s": "--burst-window", "item_roles": "--item-role",
                    "user_roles": "--user-role", "behaviour_weights": "--weights"}


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
