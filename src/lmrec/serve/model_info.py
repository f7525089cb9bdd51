"""What the dashboard reads besides the recommendation API: the served model and a user's
history (training and live), and item attributes from the bundle's item table.

    GET /v1/model                      the served bundle: name, version, sizes, config and the
                                       settings chosen from the data, the training curve
                                       (history.json), the auto search (auto.json) and offline
                                       metrics, each when the bundle folder holds it; in an
                                       experiment the first arm's, and `arms` lists them all
    GET /v1/users/{user}/history       ?limit=  the user's latest training events (from the
                                       bundle) and live events (from the store), with titles
    GET /v1/model/items                ?id=&id=  attributes and titles of items, from the
                                       bundle's item table (unknown ids: known=false)

Each needs the read key when read keys are configured. Nothing here names a server path: a
path in the model's config (a checkpoint folder) is shown relative to the bundle, or hidden.
Files next to the bundle are read only from inside the bundle folder.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from datetime import date, datetime, time
from pathlib import Path, PurePath
from typing import Annotated, Any

import numpy as np
import polars as pl
from fastapi import APIRouter, Depends
from fastapi import Query as QueryParam

from lmrec import columns as C
from lmrec.serve.bundle import Bundle
from lmrec.serve.deps import PathId, Svc, need
from lmrec.serve.engine import Engine

log = logging.getLogger("lmrec.serve")

MAX_EVENTS = 1_000  # events of each kind in one history answer
MAX_LOOKUP = 200  # items in one GET /v1/model/items
MAX_FILE_BYTES = 4 << 20  # history.json / auto.json larger than this are not served
HIDDEN_PATH = "(a path on the server)"
HISTORY_FILES = ("run/history.json", "history.json")  # `lmrec train` puts runs in run/
AUTO_FILE = "auto.json"
METRICS_FILES = ("metrics.json", "evaluation.json")
META_METRICS = ("offline_metrics", "metrics")  # bundle.json keys that may record them
LABEL_COLUMNS = ("title", "name")  # as `lmrec.serve.explain.item_labels`


def info_router() -> APIRouter:
    r = APIRouter(prefix="/v1", dependencies=[Depends(need("read"))], tags=["dashboard"])

    @r.get("/model")
    def model(svc: Svc) -> dict[str, Any]:
        """The served model: bundle metadata, config, settings, training curve, auto search
        and offline metrics (null when the bundle does not hold them)."""
        doc = model_summary(svc.engine)
        doc["arms"] = _arms(svc)
        return doc

    @r.get("/users/{user}/history")
    def user_history(user: PathId, svc: Svc, limit: Annotated[int, QueryParam(
            ge=1, le=MAX_EVENTS, description="latest events of each kind")] = 50
                     ) -> dict[str, Any]:
        """A user's latest training events (the served bundle) and live events (the store),
        oldest first, each with the item's title when the catalogue has one; `more` tells
        whether older events were left out."""
        eng = svc.engine
        key, public, u = eng.user_key(user)
        live = svc.store.history(key, limit=limit + 1)  # one more: are there older ones?
        return {"user": public, "known": u >= 0, "model_version": eng.model_version,
                "training": _training(eng, u, limit), "live": _live(eng, live, limit)}

    @r.get("/model/items")
    def items(svc: Svc, id: Annotated[list[str], QueryParam(
            min_length=1, max_length=MAX_LOOKUP, description="item id; repeatable")]
              ) -> dict[str, Any]:
        """Attributes of items from the bundle's item table (`known`: false for an id the
        served model does not know)."""
        eng = svc.engine
        idx = eng.item_indices(list(id))
        rows = [_item(eng, raw, int(i)) for raw, i in zip(id, idx, strict=True)]
        return {"items": rows, "model_version": eng.model_version}

    return r


# --- the model -------------------------------------------------------------------------------
def model_summary(eng: Engine) -> dict[str, Any]:
    b = eng.bundle
    meta = b.meta
    redacted = int(b.redacted.sum()) if b.redacted is not None else 0
    rec = eng.model
    config = rec.config.model_dump(mode="json")
    return {
        "model": rec.name,
        "model_version": eng.model_version,
        "lmrec_version": meta.get("lmrec_version"),
        "created_at": meta.get("created_at"),
        "loaded_at": eng.loaded_at,
        "n_users": meta.get("n_users"),
        "n_items": meta.get("n_items"),
        "n_events": meta.get("n_events"),
        "index": meta.get("index"),
        "embedding_scorer": bool(meta.get("embedding_scorer", False)),
        "item_roles": meta.get("item_roles", {}),
        "event_types": list(b.histories.event_types),
        "redacted_users": redacted,
        "config": _public(config, b.path),
        "settings": _public(dict(rec.settings_), b.path),
        "training": _training_record(b, config),
        "auto": _read_json(b.path, AUTO_FILE),
        "offline_metrics": _offline_metrics(b),
    }


def _arms(svc: Any) -> list[dict[str, Any]] | None:
    """An experiment's arms (the summary above is the first arm's); None outside one."""
    exp = getattr(svc, "experiment", None)
    if exp is None:
        return None
    return [{"arm": name, "model": exp.engines[name].model.name,
             "model_version": exp.engines[name].model_version, "share": share}
            for name, share in zip(exp.names, exp.shares, strict=True)]


def _training_record(b: Bundle, config: dict[str, Any]) -> dict[str, Any] | None:
    """history.json of the training run: in the model's checkpoint folder when that lies
    inside the bundle, else at one of the usual places in it."""
    names = list(HISTORY_FILES)
    ckpt = config.get("checkpoint_dir")
    if isinstance(ckpt, str) and ckpt:
        inside = _inside(b.path, Path(ckpt))
        if inside is not None:
            names.insert(0, (inside / "history.json").as_posix())
    for name in names:
        doc = _read_json(b.path, name)
        if isinstance(doc, dict) and isinstance(doc.get("history"), list):
            return doc
    return None


def _offline_metrics(b: Bundle) -> dict[str, Any] | None:
    for key in META_METRICS:
        if isinstance(b.meta.get(key), dict):
            return _public(b.meta[key], b.path)
    for name in METRICS_FILES:
        doc = _read_json(b.path, name)
        if isinstance(doc, dict):
            return doc
    return None


def _read_json(folder: Path, name: str) -> Any:
    """A JSON file inside `folder` (None when absent, unreadable, too large or outside)."""
    path = folder / name
    try:
        if not path.resolve().is_relative_to(folder.resolve()) or not path.is_file():
            return None
        if path.stat().st_size > MAX_FILE_BYTES:
            log.warning("%s: larger than %d bytes, not served", name, MAX_FILE_BYTES)
            return None
        return _finite(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:  # a bad side file must not break the panel
        log.warning("%s in the bundle folder cannot be read: %s", name, exc)
        return None


def _inside(folder: Path, path: Path) -> PurePath | None:
    """`path` (absolute, or relative to the working directory) relative to `folder`, or None
    when it lies outside."""
    try:
        return path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return None


def _public(value: Any, folder: Path) -> Any:
    """`value` with paths made safe to show: inside the bundle relative to it, else hidden."""
    if isinstance(value, dict):
        return {k: _public(v, folder) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_public(v, folder) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value) and _looks_like_path(value):
        inside = _inside(folder, Path(value))
        return HIDDEN_PATH if inside is None else inside.as_posix() or "."
    return _finite(value)


def _looks_like_path(s: str) -> bool:
    # "a/b" ratios or "T=0.5" specs are not paths; absolute and ./ ../ ~ forms are
    return s.startswith(("/", "./", "../", "~")) or (len(s) > 2 and s[1] == ":") \
        or Path(s).exists()


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# --- histories -------------------------------------------------------------------------------
def _training(eng: Engine, u: int, limit: int) -> dict[str, Any]:
    """The latest `limit` training events of internal user `u` (-1: none), oldest first."""
    if u < 0:
        return {"total": 0, "more": False, "events": []}
    h = eng.histories
    lo, hi = int(h.indptr[u]), int(h.indptr[u + 1])
    start = max(lo, hi - limit)
    items = h.items[start:hi]
    titles = _titles(eng.bundle.items, items)
    types = h.event_types
    events = [{"item": eng.external_item(int(i)),
               "type": types[int(e)] if types and 0 <= int(e) < len(types) else None,
               "timestamp": int(t), "title": title}
              for i, e, t, title in zip(items, h.events[start:hi], h.timestamps[start:hi],
                                        titles, strict=True)]
    return {"total": hi - lo, "more": start > lo, "events": events}


def _live(eng: Engine, live: Sequence[Any], limit: int) -> dict[str, Any]:
    """The store's events (asked for `limit` + 1), the latest `limit` of them, oldest first;
    `known_item` tells whether the served model knows the item."""
    more = len(live) > limit
    live = list(live)[-limit:]
    idx = eng.bundle.item_ids.index([e.item for e in live]) if live else np.empty(0, np.int64)
    titles = _titles(eng.bundle.items, idx)
    events = [{"seq": e.seq, "item": eng.external_item(int(i)) if i >= 0 else e.item,
               "type": e.type, "timestamp": e.timestamp, "value": e.value,
               "request_id": getattr(e, "request_id", None), "known_item": bool(i >= 0),
               "title": title}
              for e, i, title in zip(live, idx, titles, strict=True)]
    return {"more": more, "events": events}


def _label_column(items: pl.DataFrame) -> str | None:
    for c in LABEL_COLUMNS:
        if c in items.columns and items[c].dtype == pl.String:
            return c
    return None


def _titles(items: pl.DataFrame, idx: np.ndarray) -> list[str | None]:
    """The title of each internal item (None for -1 or without a title column)."""
    col = _label_column(items)
    if col is None or idx.size == 0:
        return [None] * int(idx.size)
    safe = np.where(idx >= 0, idx, 0).astype(np.int64)
    got = items[col].gather(safe).to_list()
    return [t if i >= 0 else None for t, i in zip(got, idx, strict=True)]


# --- items -----------------------------------------------------------------------------------
def _item(eng: Engine, raw: str, i: int) -> dict[str, Any]:
    items = eng.bundle.items
    if i < 0 or i >= items.height:  # unknown, or added through the catalogue API (no row)
        return {"item": raw, "known": False}
    row = items.row(i, named=True)
    col = _label_column(items)
    attrs = {k: _json_value(v) for k, v in row.items() if k != C.ITEM}
    return {"item": eng.external_item(i), "known": True,
            "title": row.get(col) if col else None, "attributes": attrs}


def _json_value(v: Any) -> Any:
    """An item attribute as JSON: lists as lists, dates as ISO text, NaN as None."""
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, str | int | float | bool):
        return v
    return str(v)
