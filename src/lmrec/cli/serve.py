"""`lmrec serve`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lmrec.cli.checks import check_choice, check_range
from lmrec.cli.rerank import parse_rerank_options
from lmrec.errors import ConfigError


def serve(
    bundle: Annotated[Path | None, typer.Argument(
        help="A bundle folder written by `lmrec train` (none with --arm).")] = None,
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
    arm: Annotated[list[str] | None, typer.Option(
        help="An experiment arm NAME=BUNDLE_DIR; repeatable (users are split between the arms "
             "by a hash of their id).")] = None,
    split: Annotated[str | None, typer.Option(
        help="The arms' shares of the users, e.g. 50/50 or 90/10 (default: equal).")] = None,
    interleave: Annotated[str | None, typer.Option(
        help="A,B: answer every request with both arms' rankings interleaved by team draft, "
             "instead of splitting users.")] = None,
    salt: Annotated[str, typer.Option(
        help="Salt of the user-to-arm hash (a new salt reshuffles the users).")] = "lmrec",
    explore: Annotated[str | None, typer.Option(
        help="Draw slates with known propensities (for off-policy evaluation): "
             "plackett-luce:T (temperature T > 0) or epsilon-greedy:E (0 < E <= 1).")] = None,
    conversion_type: Annotated[list[str] | None, typer.Option(
        help="A feedback type counted as a conversion in GET /v1/experiments; repeatable "
             "(default: purchase).")] = None,
    log_impressions: Annotated[bool, typer.Option(
        help="Log every response's impression (request id, user, slate, propensities).")
                               ] = True,
    rerank: Annotated[list[str] | None, typer.Option(
        "--rerank", help="A default re-ranker of every request, NAME=WEIGHT[:ARG] "
                         "(repeatable; see `lmrec evaluate --rerank`): a request's `rerank` "
                         "stage of the same name replaces it, the others stay.")] = None,
    log_level: Annotated[str, typer.Option(help="critical | error | warning | info | debug")
                         ] = "info",
    access_log: Annotated[bool, typer.Option(
        help="Log every request line (they hold user ids: personal data).")] = False,
) -> None:
    """Serve real-time recommendations over HTTP (OpenAPI docs at /docs); --rerank sets
    re-rankers every request goes through."""
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
    specs = parse_rerank_options(rerank)  # checked against the bundles by create_app
    arms = _arms(bundle, arm or [], split, interleave)
    bundle = arms[0].bundle if arms else bundle
    if bundle is None:
        raise ConfigError("give a BUNDLE folder, or experiment arms with --arm NAME=DIR")
    for folder in [bundle, *(a.bundle for a in arms)]:
        read_bundle_meta(folder)  # a clear error before any worker starts
    if explore is not None:
        from lmrec.serve.explore import Explorer

        Explorer.parse(explore)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    settings = ServeSettings(rules=rules, keys_file=keys_file, max_body_bytes=max_body_bytes,
                             max_batch=max_batch, cors_origins=tuple(cors_origin or ()),
                             bundle_root=bundle_root.resolve() if bundle_root else None,
                             # other workers, or other servers, may share the store
                             # (create_app turns this off for a store no one else can open)
                             sync_workers=True,
                             started_at=time.time(), arms=tuple(arms),
                             interleave=_pair(interleave), assignment_salt=salt,
                             explore=explore, log_impressions=log_impressions,
                             conversion_types=tuple(conversion_type or ("purchase",)),
                             rerank=tuple(str(s) for s in specs))
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


def _arms(bundle: Path | None, raw: list[str], split: str | None,
          interleave: str | None) -> list[Any]:
    """The --arm options as ArmSpecs (checked: names, shares, the interleaved pair)."""
    from lmrec.serve.arms import parse_arm, parse_split

    if not raw:
        for name, given in (("--split", split), ("--interleave", interleave)):
            if given is not None:
                raise ConfigError(f"{name} needs experiment arms (--arm NAME=DIR, twice)")
        return []
    if bundle is not None:
        raise ConfigError("give either a BUNDLE folder or --arm options, not both")
    if len(raw) < 2:
        raise ConfigError("--arm: an experiment needs at least two arms")
    shares = parse_split(split, len(raw))
    arms = [parse_arm(r, s) for r, s in zip(raw, shares, strict=True)]
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ConfigError("--arm: give each arm a different name")
    pair = _pair(interleave)
    if pair is not None and (pair[0] == pair[1] or not set(pair) <= set(names)):
        raise ConfigError(f"--interleave must name two different arms among "
                          f"{', '.join(names)}, got {interleave!r}")
    return arms


def _pair(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 2:
        raise ConfigError(f"--interleave must be two arm names A,B, got {raw!r}")
    return parts[0], parts[1]
