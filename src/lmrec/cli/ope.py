"""`lmrec ope`: how many clicks per slate a bundle would get, estimated from a served log.

The store's logged impressions (with the propensities the server recorded) are replayed
through the bundle's engine as a deterministic top-k policy (`lmrec.serve.replay`), and IPS,
SNIPS and doubly robust estimators (`lmrec.evaluate.ope`) give its expected clicks per slate
with 95% confidence intervals, beside `logged`: the logging policy's own observed clicks per
slate over the replayed impressions (what the target is to be compared with).

`offline`: the bundle's own offline ranking metric, where the bundle folder records one. Only
`lmrec train --model auto` does (auto.json: the winner's validation metric, NDCG@10 by
default); otherwise it is null.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from lmrec.cli.checks import check_range
from lmrec.console import err, out, print_json, table
from lmrec.errors import ConfigError, LmrecError

SQLITE = "sqlite:///"


def ope(
    bundle: Annotated[Path, typer.Option("--bundle", help="The bundle to evaluate (a folder "
                                         "written by `lmrec train`).")],
    store: Annotated[str, typer.Option(
        "--store", envvar="LMREC_STORE_URL",
        help="The event store the server logged to: sqlite:///PATH or "
             "postgresql://USER@HOST:PORT/DB ($LMREC_STORE_URL keeps a password off the "
             "command line).")] = "sqlite:///lmrec-events.db",
    k: Annotated[int, typer.Option("--k", help="Slate length evaluated.")] = 10,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only impressions from this time on: epoch seconds or an ISO 8601 "
                        "date/time (UTC unless it names a zone).")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="A prepared dataset: also report the bundle's model's offline "
                       "NDCG@k on it (its config fitted on a seeded 8:1:1 per-user split, "
                       "scored on the test part, as `lmrec evaluate` does).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Off-policy evaluation: the bundle's expected clicks per slate on the logged traffic
    (IPS, SNIPS, doubly robust, 95% CIs), from impressions logged with propensities."""
    from lmrec.evaluate.ope import evaluate_target
    from lmrec.serve.catalogue import Catalogue
    from lmrec.serve.replay import describe, replay

    check_range("--k", k, low=1)
    start = parse_since(since)
    engine = _engine(bundle)
    with _open_store(store) as events:
        try:
            # the catalogue as served now: hidden items are never a target's answer
            log = replay(Catalogue(events).apply(engine), events, k, since=start)
        except LmrecError as exc:  # StoreError: gone away while reading
            raise ConfigError(f"--store {events.url}: {_one_line(exc)}") from None
        url = events.url
    if log.impressions == 0:
        raise ConfigError(f"--store {url}: no impressions"
                          + (f" since {since}" if since else "")
                          + " (the server logs them while it answers)")
    if log.n == 0:
        raise ConfigError(f"--store {url}: all {log.impressions} impressions are from "
                          "visitors, whose context is not stored")
    if log.widest < k:
        raise ConfigError(f"--k {k}: the logged slates hold at most {log.widest} items, so "
                          f"positions past {log.widest} were never shown; use --k "
                          f"{log.widest} or less")
    report = evaluate_target(log.items, log.propensities, log.clicks, log.target)
    if report.unusable == report.impressions:
        raise ConfigError(f"--store {url}: none of the {log.n} impressions has known "
                          "propensities (interleaved slates have none); serve with --explore "
                          "or plain top-k to log them")
    shown = log.clicks.sum(axis=1).astype(np.float64)
    result: dict[str, Any] = {
        "bundle": str(bundle), "model_version": engine.model_version, "k": k, "since": start,
        **report.to_dict(), **describe(log),  # the store's count of impressions wins
        "logged": _mean_ci(shown),
        "offline": offline_ndcg(engine.model, data, k) if data else offline_metric(bundle)}
    if as_json:
        print_json(result)
        return
    rows = [(e["estimator"], e["value"], _interval(e["ci"]), e["n"], f"{e['ess']:.1f}")
            for e in result["estimates"]]
    rows.append(("logged (observed)", result["logged"]["value"],
                 _interval(result["logged"]["ci"]), log.n, ""))
    out.print(table(f"Expected clicks per slate of the bundle's top {k}",
                    ["estimator", "value", "95% CI", "n used", "ess"], rows))
    err.print(f"{engine.model_version}: {log.impressions} impressions, {log.n} replayed in "
              f"{log.contexts} contexts, "
              f"{log.visitors} from visitors skipped, {report.unusable} without known "
              f"propensities left out; {report.matched:.1%} of logged slots match the "
              "target's", highlight=False)
    if report.unsupported:
        err.print(f"[yellow]warning:[/] {report.unsupported} impressions were logged "
                  "deterministically where the target differs: the estimates miss those "
                  "slots' clicks (log with --explore to evaluate other policies)")
    offline = result["offline"]
    err.print("offline: " + (f"{offline['metric']} {offline['value']:.4f} ({offline['source']})"
                             if offline else "the bundle records no offline metric"),
              highlight=False)


def parse_since(value: str | None) -> float | None:
    """Epoch seconds of --since: a number, or an ISO 8601 date or date-time (UTC when naive)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"--since {value!r}: expected epoch seconds or an ISO 8601 "
                              "date/time such as 2024-05-01T12:00") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    if not math.isfinite(seconds):
        raise ConfigError(f"--since {value!r}: expected a finite time")
    return seconds


def offline_ndcg(model: Any, data: Path, k: int, seed: int = 0) -> dict[str, Any]:
    """{"metric", "value", "source"}: NDCG@k of a fresh model with `model`'s config, fitted on
    the training part of `data`'s seeded 8:1:1 per-user split and scored on its test part."""
    from lmrec.data import Dataset
    from lmrec.evaluate import fit_and_evaluate, split_random

    ds = Dataset.load(data)
    if k > ds.n_items:
        raise ConfigError(f"--k {k} is larger than the catalogue of --data ({ds.n_items} "
                          "items)")
    fresh = type(model)(model.config)
    res = fit_and_evaluate(fresh, split_random(ds, seed=seed), [k], rng=seed)
    return {"metric": f"ndcg@{k}", "value": float(res.metrics[f"ndcg@{k}"]),
            "source": f"test part of {ds.name} (random 8:1:1 split, seed {seed})"}


def offline_metric(bundle: Path) -> dict[str, Any] | None:
    """{"metric", "value", "source"} of the bundle's recorded offline metric, or None."""
    from lmrec.jsonfile import read_json

    path = bundle / "auto.json"
    if not path.is_file():
        return None
    try:
        found = read_json(path)
        metric = str(found["metric"])
        value = float(found["winner"][f"valid {metric}"])
    except (LmrecError, KeyError, TypeError, ValueError):
        return None  # an unreadable record is no reason to withhold the estimates
    return {"metric": metric, "value": value,
            "source": "auto.json: the search's validation split"}


def _engine(bundle: Path) -> Any:
    from lmrec.serve.service import build_engine

    if not bundle.is_dir():
        raise ConfigError(f"--bundle {bundle}: "
                          + ("is not a folder" if bundle.exists() else "does not exist"))
    try:
        return build_engine(bundle)
    except LmrecError as exc:
        raise ConfigError(f"--bundle {bundle}: {_one_line(exc)}") from None


def _open_store(url: str) -> Any:
    """The store at `url`, which must exist already: reading it must not create one."""
    from lmrec.serve.store import open_store
    from lmrec.serve.store.base import mask_url

    if url.startswith(SQLITE):
        path = url[len(SQLITE):].partition("?")[0]
        if path and path != ":memory:" and not Path(path).is_file():
            raise ConfigError(f"--store {url}: no database at {path}")
    try:
        return open_store(url)
    except LmrecError as exc:
        raise ConfigError(f"--store {mask_url(url)}: {_one_line(exc)}") from None


def _mean_ci(per: np.ndarray) -> dict[str, Any]:
    """Mean clicks per slate with its normal 95% CI."""
    value = float(per.mean())
    se = float(per.std(ddof=1) / np.sqrt(per.size)) if per.size > 1 else float("nan")
    return {"value": value, "ci": [value - 1.959964 * se, value + 1.959964 * se]}


def _interval(ci: list[float]) -> str:
    lo, hi = ci
    return "n/a" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.4f}, {hi:.4f}]"


def _one_line(exc: Exception) -> str:
    """A driver's message on one line (libpq adds a hint on a second one)."""
    return " ".join(str(exc).split())
