"""The FastAPI app: HTTP in, `Service` calls, JSON out.

    create_app(bundle_path, store_url, settings) -> FastAPI

Endpoints (OpenAPI docs at /docs, schema at /openapi.json):

    GET    /v1/users/{user}/recommendations   ?k=&exclude_seen=&filter=&diversity=&rerank=
                                              &explain= (rerank=NAME=WEIGHT[:ARG], repeatable:
                                              lmrec.rerank; on top of `serve --rerank`)
    POST   /v1/recommendations                an anonymous visitor's history in the body (and
                                              the same options, rerank a list)
    GET    /v1/items/{item}/similar           ?k=
    POST   /v1/events                         a batch; write key; durable before the answer
    POST   /v1/feedback                       a click, cart or purchase on a response, linked by
                                              its request_id; write key
    GET    /v1/experiments                    the arms' impressions, CTR and conversion with
                                              95% intervals and p-values (lmrec.serve.arms)
    PUT    /v1/items/{item}                   add or change an item; PATCH merges, DELETE
                                              hides; write key (lmrec.serve.catalogue_routes)
    GET    /v1/items/{item}                   the item as served
    GET    /v1/model, /v1/users/{user}/history   what the dashboard shows (lmrec.serve.model_info)
    GET    /dashboard                         the dashboard (lmrec.serve.dashboard)
    DELETE /v1/users/{user}                   forget a user; write key
    POST   /v1/admin/reload                   swap in a (new) bundle under the bundle root; admin
                                              key
    GET    /v1/health, /v1/ready, /v1/metrics

Every recommendation response carries a `request_id`, and its impression (user, time, model
version, arm, policy, the slate with each item's propensity) is committed to the store before
the answer (group commit: `lmrec.serve.store.impressions`); feedback links back by that id.

Handlers that touch the store or score are plain `def`: FastAPI runs them in its threadpool, so
blocking database calls and CPU-bound scoring never stall the event loop. The body limit and
the metrics are pure ASGI middleware (`lmrec.serve.middleware`). Errors: 400 for requests the
engine cannot answer, 401/403 for keys, 404 for unknown items, 413 for oversized bodies and
batches, 422 for invalid bodies, 503 when the store is unavailable or an erasure failed (and
erased nothing), and a generic 500 that says nothing about the internals.

With several workers (`lmrec serve --workers N`) uvicorn imports `app_from_env`, which rebuilds
the same app in each worker from the settings the CLI put in the environment (the store URL
from $LMREC_STORE_URL when it came from there, so that a password appears in one place only).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi import Query as QueryParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from lmrec.errors import ConfigError, LmrecError
from lmrec.integrity import IntegrityError
from lmrec.serve import schemas as S
from lmrec.serve.arms import ArmSpec, Experiment
from lmrec.serve.catalogue_routes import catalogue_router
from lmrec.serve.dashboard import dashboard_router
from lmrec.serve.deps import K, PathId, Svc, need
from lmrec.serve.docs import add_docs
from lmrec.serve.engine import Query, Scored
from lmrec.serve.erasure import ErasureFailed
from lmrec.serve.explore import Explorer
from lmrec.serve.metrics import ServiceMetrics
from lmrec.serve.middleware import BodyLimit, Metrics
from lmrec.serve.model_info import info_router
from lmrec.serve.rerank import QueryError
from lmrec.serve.security import KeyRing
from lmrec.serve.service import NotFoundError, Result, Service, build_engine
from lmrec.serve.stages import check_defaults
from lmrec.serve.store import EventIn, EventStore, ImpressionWriter, StoreError, open_store
from lmrec.serve.sync import BundleSync

log = logging.getLogger("lmrec.serve")

APP_ENV = "LMREC_SERVE_APP"  # JSON {"bundle", "store", "settings"} for worker processes
STORE_ENV = "LMREC_STORE_URL"  # the store URL, kept out of command lines (it may hold a password)
LOAD_FAILED = "the bundle could not be loaded"
EXPERIMENT_RELOAD = ("reload: not available while an experiment runs (restart the server with "
                     "the new arms: changing an arm would mix two models in its figures)")



class ServeSettings(BaseModel):
    """Server settings besides the bundle and the store (all have safe defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: Path | None = Field(None, description="business rules file (overrides the bundle's)")
    keys_file: Path | None = Field(None, description="API keys file (see lmrec.serve.security)")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body")
    max_batch: int = Field(10_000, ge=1, description="most events in one POST /v1/events")
    max_live_events: int = Field(1_000, ge=1, description="latest live events used per user")
    cors_origins: tuple[str, ...] = Field((), description="origins allowed by CORS (off when "
                                                          "empty)")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per process")
    sync_workers: bool = Field(False, description="follow reloads made by other workers or "
                               "servers sharing the store (off for an in-memory store)")
    bundle_root: Path | None = Field(None, description="POST /v1/admin/reload loads only bundles "
                                     "under this folder (default: the served bundle's parent)")
    started_at: float | None = Field(None, description="server start, shared by its workers")
    docs: bool = Field(True, description="serve /docs and /openapi.json")
    arms: tuple[ArmSpec, ...] = Field((), description="experiment arms (none: one model)")
    interleave: tuple[str, str] | None = Field(None, description="two arms to interleave "
                                               "(team draft) instead of splitting users")
    assignment_salt: str = Field("lmrec", min_length=1, description="salt of the sticky "
                                 "user-to-arm hash (a new salt reshuffles the users)")
    explore: str | None = Field(None, description="a stochastic ranker with known "
                                "propensities: plackett-luce:T or epsilon-greedy:E")
    log_impressions: bool = Field(True, description="log every response's impression")
    conversion_types: tuple[str, ...] = Field(("purchase",), description="feedback types "
                                              "counted as conversions")
    rerank: tuple[str, ...] = Field((), description="default re-rankers of every request "
                                    "(NAME=WEIGHT[:ARG]; a request's stage of the same name "
                                    "replaces one)")


def create_app(bundle_path: str | Path, store_url: str,
               settings: ServeSettings | None = None, *, keys: KeyRing | None = None) -> FastAPI:
    """Load the bundle, open the store and build the app (ready to serve when it returns)."""
    settings = settings or ServeSettings()
    keys = keys if keys is not None else KeyRing.from_env(keys_file=settings.keys_file)
    _limit_threads(settings.torch_threads)
    store = open_store(store_url)
    # an in-memory store: nobody to follow; an experiment: its arms are fixed while it runs
    if settings.sync_workers and (not store.shared or settings.arms):
        settings = settings.model_copy(update={"sync_workers": False})
    try:
        sync = (BundleSync(store, settings.started_at or time.time())
                if settings.sync_workers else None)
        service = _service(bundle_path, store, settings, sync)
    except BaseException:
        store.close()
        raise
    if not keys.has("write"):
        log.warning("no API keys configured (LMREC_API_KEYS): every write is refused")
    metrics = ServiceMetrics()
    eng = service.engine
    metrics.set_model(eng.model.name, eng.model_version, eng.loaded_at)
    root = Path(settings.bundle_root or Path(bundle_path).resolve().parent).resolve()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if service.impressions is not None:
            service.impressions.close()
        service.close()

    app = FastAPI(
        title="lmrec", version=eng.bundle.meta.get("lmrec_version", "0"), lifespan=lifespan,
        summary="Real-time recommendations from an lmrec model bundle.",
        docs_url=None, redoc_url=None,  # /docs from local assets: add_docs below
        openapi_url="/openapi.json" if settings.docs else None)
    if settings.docs:
        add_docs(app, "/openapi.json")
    app.state.service = service
    app.state.keys = keys
    app.state.settings = settings
    _add_error_handlers(app)
    app.include_router(_router(service, metrics, settings, root))
    app.include_router(catalogue_router())
    app.include_router(info_router())
    app.include_router(dashboard_router())
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Metrics, metrics=metrics)
    return app


def _service(bundle_path: str | Path, store: EventStore, settings: ServeSettings,
             sync: BundleSync | None) -> Service:
    """The service of `settings`: one bundle, or an experiment's arms (the first arm's bundle
    then stands for the service: ids, similar items, health)."""
    explorer = Explorer.parse(settings.explore) if settings.explore else None
    writer = ImpressionWriter(store) if settings.log_impressions else None
    if not settings.arms:
        service = Service.open(bundle_path, store, rules_path=settings.rules,
                               max_live_events=settings.max_live_events, sync=sync)
        service.explorer, service.impressions = explorer, writer
        service.rerank = check_defaults(settings.rerank, [service.engine], explorer is not None)
        return service
    if explorer is not None and settings.interleave:
        raise ConfigError("--explore and --interleave cannot be combined: an interleaved "
                          "slate's propensities are not logged")
    engines = {a.name: build_engine(a.bundle, settings.rules) for a in settings.arms}
    experiment = Experiment(tuple(engines), engines, tuple(a.share for a in settings.arms),
                            settings.assignment_salt, settings.interleave)
    first = engines[settings.arms[0].name]
    # no worker sync: the arms are fixed while the experiment runs (reloads are refused)
    return Service(first, store, rules_path=settings.rules,
                   max_live_events=settings.max_live_events, experiment=experiment,
                   explorer=explorer, impressions=writer,
                   rerank=check_defaults(settings.rerank, engines.values(), explorer is not None))


def app_from_env() -> FastAPI:
    """The app of one worker process, from the settings `lmrec serve` put in $LMREC_SERVE_APP."""
    doc = json.loads(os.environ[APP_ENV])
    store = doc["store"] if doc.get("store") is not None else os.environ[STORE_ENV]
    return create_app(doc["bundle"], store, ServeSettings.model_validate(doc["settings"]))


# --- routes --------------------------------------------------------------------------------
def _router(service: Service, metrics: ServiceMetrics, settings: ServeSettings,
            bundle_root: Path) -> APIRouter:
    r = APIRouter(prefix="/v1")
    read = [Depends(need("read"))]

    @r.get("/users/{user}/recommendations", response_model=S.Recommendations,
           response_model_exclude_none=True, dependencies=read, tags=["recommendations"])
    def user_recommendations(
        user: PathId, svc: Svc, k: K = 10,
        exclude_seen: Annotated[bool, QueryParam(
            description="leave out items in the user's history")] = True,
        filter: Annotated[list[str] | None, QueryParam(
            max_length=16, description="column:value (column:a|b for either, "
            "column:lo..hi a range, column<x, <=, >, >= a comparison; text ignores case); "
            "repeatable, all must match")] = None,
        diversity: Annotated[float, QueryParam(ge=0.0, le=1.0, allow_inf_nan=False,
                                               description="0: by score; 1: most diverse")
                             ] = 0.0,
        explain: Annotated[bool, QueryParam(description="add the history item behind each")
                           ] = False,
        candidates: Annotated[list[str] | None, QueryParam(
            max_length=S.MAX_CANDIDATES, description="item id; repeatable: only these items "
            "may be recommended")] = None,
        rerank: Annotated[list[str] | None, QueryParam(
            max_length=S.MAX_RERANK, description=S.RERANK_HELP)] = None,
        log: Annotated[bool, QueryParam(
            description="false: a preview (dashboard, debugging): the arm's top-k, with no "
            "impression logged and no exploration")] = True,
    ) -> S.Recommendations:
        """Top-k items for a user: their training history plus every event accepted so far."""
        q = Query(k, exclude_seen, tuple(filter or ()), diversity, explain,
                  tuple(candidates or ()), tuple(rerank or ()))
        return _recommendations(svc.recommend_user(user, q, log=log), metrics)

    @r.post("/recommendations", response_model=S.Recommendations,
            response_model_exclude_none=True, dependencies=read, tags=["recommendations"])
    def visitor_recommendations(body: S.VisitorRequest, svc: Svc) -> S.Recommendations:
        """Top-k items for an anonymous visitor from the history in the body (nothing is
        stored)."""
        q = Query(body.k, body.exclude_seen, tuple(body.filter), body.diversity, body.explain,
                  tuple(body.candidates), tuple(body.rerank))
        return _recommendations(svc.recommend_visitor(body.history, q), metrics)

    @r.get("/items/{item}/similar", response_model=S.SimilarItems,
           response_model_exclude_none=True, dependencies=read, tags=["recommendations"],
           responses={404: {"description": "unknown item"}})
    def similar_items(item: PathId, svc: Svc, k: K = 10) -> S.SimilarItems:
        """The k items most similar to an item."""
        found, items, version = svc.similar(item, k)
        return S.SimilarItems(item=found, items=[_scored(s) for s in items],
                              model_version=version)

    @r.post("/events", response_model=S.IngestResponse, tags=["events"],
            dependencies=[Depends(need("write"))],
            responses={401: {"description": "no valid API key"},
                       413: {"description": "body or batch too large"}})
    def post_events(batch: S.EventBatch, svc: Svc) -> S.IngestResponse:
        """Store a batch of events; answered once they are durable. Events with an event_id
        already stored are acknowledged as duplicates and not stored again. Events of items
        the served model does not know are stored too, and counted in `unknown_items`."""
        if len(batch.events) > settings.max_batch:
            raise HTTPException(413, f"at most {settings.max_batch} events per request")
        events = [EventIn(str(e.user), str(e.item), e.type, e.timestamp, e.event_id, e.value,
                          e.request_id) for e in batch.events]
        res = svc.ingest(events)
        metrics.events_ingested.inc(res.accepted)
        metrics.events_duplicate.inc(res.duplicates)
        return S.IngestResponse(accepted=res.accepted, duplicates=res.duplicates,
                                unknown_items=res.counted)

    @r.post("/feedback", response_model=S.FeedbackResponse, tags=["experiments"],
            dependencies=[Depends(need("write"))],
            responses={401: {"description": "no valid API key"},
                       404: {"description": "unknown request_id"}})
    def post_feedback(body: S.FeedbackBody, svc: Svc) -> S.FeedbackResponse:
        """What a user did with a recommended item (type click by default; cart, purchase,
        ...), linked to the response by its request_id: stored, durable before the answer, as
        an event of that response's user. A repeated event_id is acknowledged, not stored
        twice."""
        res, user = svc.feedback(body.request_id, body.item, body.type, body.timestamp,
                                 body.event_id, body.value)
        metrics.events_ingested.inc(res.accepted)
        return S.FeedbackResponse(accepted=res.accepted, user=user)

    @r.get("/experiments", response_model=S.Experiments, dependencies=read,
           tags=["experiments"])
    def experiments(
        svc: Svc,
        since: Annotated[float | None, QueryParam(
            ge=0, le=1e11, description="only impressions from this Unix time on")] = None,
        bucket: Annotated[float, QueryParam(
            ge=60, le=86_400 * 31, description="seconds per point of the timeline")] = 3600,
    ) -> Any:
        """Per arm: impressions, clicks, CTR and conversion with 95% confidence intervals; the
        difference between the first two arms with its interval and p-value; for interleaving,
        the preference with its interval; and CTR over time."""
        return svc.experiment_report(since, bucket, settings.conversion_types)

    @r.delete("/users/{user}", response_model=S.ForgetResponse, tags=["events"],
              dependencies=[Depends(need("write"))],
              responses={503: {"description": "the erasure failed: nothing was erased"}})
    def forget_user(user: PathId, svc: Svc) -> S.ForgetResponse:
        """Forget a user: their events and cached state are deleted and, for a training user,
        their history, seen items and per-user learned rows are redacted from the served
        bundle (memory and disk); an audit record without personal data is kept. All or
        nothing: a 503 means nothing was erased (ask again)."""
        done = svc.forget(user)
        metrics.users_forgotten.inc()
        return S.ForgetResponse(user=done.user, events_deleted=done.events_deleted,
                                audit_id=done.audit_id, in_training_data=done.in_training_data,
                                redacted_from_model=done.redacted_from_model,
                                model_version=done.model_version)

    @r.post("/admin/reload", response_model=S.ReloadResponse, tags=["admin"],
            dependencies=[Depends(need("admin"))])
    def reload(svc: Svc, body: S.ReloadRequest | None = None) -> S.ReloadResponse:
        """Load a bundle (the current folder again when none is given; else a folder under
        the server's bundle root: absolute, or relative to the server's working directory or
        to the bundle root) in the background of this request, then swap it in; requests in
        flight finish on the old one, and a bundle that fails to load leaves the served one
        in place. Errors name no server path, and tell whether a folder exists only under the
        bundle root; the details go to the server's log."""
        if svc.experiment is not None:
            raise HTTPException(400, EXPERIMENT_RELOAD)
        path = _under_root(bundle_root, body.bundle) if body and body.bundle else None
        try:
            new, old = svc.reload(path)
        except Exception as exc:  # whatever a bad or half-written bundle raises: not a 500
            metrics.reloads.labels(outcome="failed").inc()
            log.exception("reload of bundle %s failed", path or "(the served one)")
            # a damaged file is named relative to the bundle folder, never by its path
            detail = f"{LOAD_FAILED}: {exc.public}" if isinstance(exc, IntegrityError) \
                else LOAD_FAILED
            raise HTTPException(400, detail) from None
        metrics.reloads.labels(outcome="ok").inc()
        return S.ReloadResponse(model_version=new, previous_version=old)

    @r.get("/health", response_model=S.Health, tags=["operations"])
    def health() -> S.Health:
        """Liveness: the process answers."""
        return S.Health(status="ok", model_version=service.engine.model_version)

    @r.get("/ready", response_model=S.Health, tags=["operations"],
           responses={503: {"model": S.Health, "description": "not ready"}})
    def ready() -> Any:
        """Readiness: a bundle is loaded and the store answers."""
        try:
            ok = service.store.ping()
        except LmrecError:
            ok = False
        if not ok:
            return JSONResponse(S.Health(status="unavailable", detail="the event store does "
                                         "not answer").model_dump(exclude_none=True),
                                status_code=503)
        return S.Health(status="ready", model_version=service.engine.model_version)

    @r.get("/metrics", tags=["operations"], response_class=Response,
           responses={200: {"content": {"text/plain": {}}}})
    def prometheus() -> Response:
        """Prometheus metrics of this process."""
        eng = service.engine  # also after a background follow or a redaction
        metrics.set_model(eng.model.name, eng.model_version, eng.loaded_at)
        return Response(metrics.render(), media_type=metrics.content_type)

    return r


def _scored(s: Scored) -> S.ScoredItem:
    return S.ScoredItem(item=s.item, score=s.score, because=s.because, reason=s.reason)


def _recommendations(res: Result, metrics: ServiceMetrics) -> S.Recommendations:
    if res.request_id is not None:
        metrics.impressions.inc()
    return S.Recommendations(user=res.user, items=[_scored(s) for s in res.items],
                             model_version=res.model_version, note=res.note,
                             request_id=res.request_id, arm=res.arm)


def _under_root(root: Path, raw: str) -> Path:
    """The folder `raw` names under `root` (a resolved folder), resolved: `raw` is absolute,
    or relative to the working directory or else to `root`. A 400 when it lies outside `root`
    (saying neither the path nor whether it exists), or when it does not exist under `root`
    (naming it as given when relative: an absolute path would show the server's layout)."""
    given = Path(raw)
    tried = [given.resolve()] if given.is_absolute() else [given.resolve(),
                                                          (root / given).resolve()]
    inside = [p for p in tried if p.is_relative_to(root)]
    if not inside:
        raise HTTPException(400, "the bundle must be a folder under the server's bundle root")
    for path in inside:
        if path.exists():
            return path
    name = "the bundle folder" if given.is_absolute() else f"the bundle folder {raw!r}"
    raise HTTPException(400, f"{name} does not exist under the server's bundle root")


# --- errors --------------------------------------------------------------------------------
def _add_error_handlers(app: FastAPI) -> None:
    def detail(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    async def query_error(_: Request, exc: Exception) -> JSONResponse:
        return detail(400, str(exc))

    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return detail(404, str(exc))

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.error("event store unavailable: %s", exc)
        return detail(503, "the event store is unavailable; try again")

    async def erasure_failed(_: Request, exc: Exception) -> JSONResponse:
        return detail(503, str(exc))  # logged, with the cause, where it was rolled back

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # location, message and type only: echoing the input back could reflect anything
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                   "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return detail(500, "internal server error")

    app.add_exception_handler(QueryError, query_error)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(StoreError, unavailable)
    app.add_exception_handler(ErasureFailed, erasure_failed)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(Exception, internal)


def _limit_threads(n: int) -> None:
    """One intra-op thread per scoring call: requests already run in parallel threads, and
    more threads than cores make every request slower."""
    import torch

    torch.set_num_threads(n)
