"""`lmrec serve`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lmrec.cli.checks import check_choice, check_range
from lmrec.errors import ConfigError


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
