"""The catalogue API's state in one worker: the rows of the store's catalogue table, kept
current, and the engines that serve them.

    PUT    /v1/items/{id}     add an item, or replace the catalogue's changes to one (and show
                              it again when hidden)
    PATCH  /v1/items/{id}     merge attributes (and the text, when given) into them
    DELETE /v1/items/{id}     hide the item: never recommended again, until a PUT
    GET    /v1/items/{id}     the item as served (`lmrec.serve.catalogue_routes`)

Every worker (and every server) sharing the store follows the catalogue: it asks the store for
the latest catalogue version at most every `interval` seconds (one indexed query; the rows
changed since are read only when it moved), the way `lmrec.serve.sync` follows bundles, and
builds a `CatalogueEngine` over each bundle engine it serves (`with_catalogue`). A worker's own
write is served before its answer. A reload or an erasure builds a new bundle engine, and the
service puts the catalogue on it before serving it (`apply`), so a hidden item stays hidden
across reloads, erasures and restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

import polars as pl

from lmrec.columns import Role
from lmrec.errors import LmrecError
from lmrec.models.base import Recommender
from lmrec.models.content import Content
from lmrec.models.content_text import ContentText
from lmrec.models.two_tower import TwoTower
from lmrec.serve.catalogue_content import ContentProfiles
from lmrec.serve.catalogue_engine import CatalogueEngine, why_not, with_catalogue
from lmrec.serve.catalogue_items import (
    InvalidItem,
    check_attributes,
    check_text,
    item_rows,
    item_schema,
    public_attributes,
    roles_of,
)
from lmrec.serve.catalogue_models import ItemEncoder, TextVectors, TowerVectors
from lmrec.serve.engine import Engine
from lmrec.serve.store import EventStore, StoreError
from lmrec.serve.store.catalogue import (
    CatalogueRow,
    Change,
    changes,
    ensure_table,
    get_item,
    latest_version,
    supported,
    write_item,
)

log = logging.getLogger("lmrec.serve")

POLL_INTERVAL_S = 1.0  # how stale another worker's catalogue change may be in this one


class UnknownItem(LmrecError):
    """An item neither the bundle nor the catalogue has (a 404 in the routes)."""


class Catalogue:
    """The catalogue rows of one store as this worker knows them (see the module docstring).
    Thread-safe: the rows are replaced as a whole, never changed in place."""

    def __init__(self, store: EventStore, interval: float = POLL_INTERVAL_S) -> None:
        self.store = store
        self.interval = interval
        self.enabled = supported(store)  # SQL stores; others serve the bundle alone
        self._state: tuple[int, dict[str, CatalogueRow]] = (0, {})  # (version, key -> row)
        self._poll_lock = threading.Lock()
        self._next_poll = 0.0
        self._encoders: WeakKeyDictionary[Engine, ItemEncoder | str] = WeakKeyDictionary()
        self._encoders_lock = threading.Lock()
        if self.enabled:
            ensure_table(store)
            self.poll(force=True)

    @property
    def version(self) -> int:
        return self._state[0]

    # --- following the store ----------------------------------------------------------------
    def poll(self, *, force: bool = False) -> None:
        """Read the rows changed since the version held: at most every `interval` seconds
        (`force`: now, waiting for a poll in progress)."""
        if not self.enabled or (not force and time.monotonic() < self._next_poll):
            return
        if not self._poll_lock.acquire(blocking=force):
            return  # another request thread is polling right now
        try:
            self._next_poll = time.monotonic() + self.interval
            version, rows = self._state
            try:
                latest = latest_version(self.store)
                if latest == version:
                    return
                restart = latest < version  # the table was emptied or replaced: read all
                fresh = changes(self.store, 0 if restart else version)
            except StoreError as exc:
                if force:
                    raise
                # a read keeps its answer from the catalogue as held; the next poll retries
                log.warning("could not read the catalogue's changes: %s", exc)
                return
            merged = {} if restart else dict(rows)
            for row in fresh:
                merged[row.item] = row
            self._state = (max([r.version for r in fresh], default=latest), merged)
        finally:
            self._poll_lock.release()

    def current(self, engine: Engine) -> bool:
        """Whether `engine` serves the catalogue as held now."""
        version, rows = self._state
        if isinstance(engine, CatalogueEngine):
            return engine.catalogue.version == version
        return not rows

    def apply(self, engine: Engine) -> Engine:
        """`engine` (a bundle's engine, or one built by an earlier `apply`) serving the
        catalogue as held now; itself when it already does."""
        if self.current(engine):
            return engine
        base = engine.base if isinstance(engine, CatalogueEngine) else engine
        version, rows = self._state
        return with_catalogue(base, rows, version, roles_of(base.bundle.meta),
                              self._encoder(base))

    def _encoder(self, base: Engine) -> ItemEncoder | str:
        """How `base`'s model encodes new items (built once per bundle engine)."""
        with self._encoders_lock:
            found = self._encoders.get(base)
            if found is None:
                found = item_encoder(base.model, base.bundle.items, roles_of(base.bundle.meta))
                self._encoders[base] = found
            return found

    # --- the API ------------------------------------------------------------------------------
    def put(self, engine: Engine, raw: Any, attributes: dict[str, Any], text: str | None
            ) -> CatalogueRow:
        """Add `raw`, or replace the catalogue's changes to it (shown again if hidden)."""
        key, _ = self._key(engine, raw)
        attrs = check_attributes(engine.bundle.items, attributes)
        text = check_text(text)
        return write_item(self.store, key, lambda _: Change(attrs, text, False))

    def patch(self, engine: Engine, raw: Any, attributes: dict[str, Any],
              text: str | None, text_given: bool) -> CatalogueRow:
        """Merge `attributes` (and `text` when `text_given`) into the item's changes."""
        key, known = self._key(engine, raw)
        attrs = check_attributes(engine.bundle.items, attributes)
        text = check_text(text)

        def merge(row: CatalogueRow | None) -> Change:
            _found(row, known)
            old = row or CatalogueRow(key, {}, None, False, 0.0, 0)
            return Change({**old.attributes, **attrs}, text if text_given else old.text,
                          old.hidden)

        return write_item(self.store, key, merge)

    def hide(self, engine: Engine, raw: Any) -> CatalogueRow:
        key, known = self._key(engine, raw)

        def hidden(row: CatalogueRow | None) -> Change:
            _found(row, known)
            return Change(row.attributes, row.text, True) if row else Change({}, None, True)

        return write_item(self.store, key, hidden)

    def view(self, engine: Engine, raw: Any) -> dict[str, Any]:
        """The item as `engine` serves it: attributes (the bundle's row with the catalogue's
        changes), text, hidden, whether and why not it can be recommended."""
        key, known = self._key(engine, raw)
        row = get_item(self.store, key) if self.enabled else None
        if row is None and not known:
            raise UnknownItem(f"unknown item id {raw!r}")
        at = int(engine.bundle.item_ids.index([key])[0])
        public = engine.bundle.item_ids.canonical(key)[1]
        frame = item_rows(engine.bundle.items, roles_of(engine.bundle.meta), [public], [at],
                          [row.attributes if row else {}])
        idx = int(engine.item_indices([key])[0])
        reason = why_not(engine, idx) if idx >= 0 else \
            "not served by this worker yet: ask again in a second"
        return {"item": public, "attributes": public_attributes(frame, 0),
                "text": row.text if row else None, "hidden": bool(row and row.hidden),
                "recommendable": reason is None, "reason": reason, "in_model": known,
                "version": row.version if row else None,
                "updated_at": row.updated_at if row else None,
                "model_version": engine.model_version}

    def _key(self, engine: Engine, raw: Any) -> tuple[str, bool]:
        """(store key, whether the bundle has the item); InvalidItem for an id the bundle's
        id type cannot hold."""
        key, public = engine.bundle.item_ids.canonical(raw)
        known = bool(engine.bundle.item_ids.index([key])[0] >= 0)
        if not known and engine.bundle.item_ids.dtype.is_integer() and isinstance(public, str):
            raise InvalidItem(f"item: this catalogue's item ids are integers, got {raw!r}")
        return key, known


def _found(row: CatalogueRow | None, known: bool) -> None:
    if row is None and not known:
        raise UnknownItem("unknown item id (PUT adds an item)")


def item_encoder(model: Recommender, items: pl.DataFrame, roles: Mapping[str, Role]
                 ) -> ItemEncoder | str:
    """The encoder of new items for `model` (`lmrec.serve.catalogue_models`) over the
    bundle's item table, or why the model cannot score an item it was not trained on."""
    if isinstance(model, TwoTower) and model.config.text_item_id_dropout <= 0:
        return (f"this {model.name} model was trained without item-id dropout (text=false, "
                "item_id_dropout 0), so it cannot place an item by its attributes alone")
    kinds: dict[type, type[ItemEncoder]] = {ContentText: TextVectors, TwoTower: TowerVectors,
                                            Content: ContentProfiles}
    kind = next((k for m, k in kinds.items() if isinstance(model, m)), None)
    if kind is None:
        return f"the {model.name} model scores only the items it was trained on"
    return kind(model, items, item_schema(items, roles))
