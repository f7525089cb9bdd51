"""The catalogue API: add, change, hide and look up items while the server runs.

    PUT    /v1/items/{item}   {"attributes": {column: value}, "text": "..."}    write key
    PATCH  /v1/items/{item}   the same, merged into the item's changes          write key
    DELETE /v1/items/{item}   hide the item from every answer                   write key
    GET    /v1/items/{item}   the item as served                                read key

Every answer is the item as the server serves it after the request (`CatalogueItem`). An
attribute must be a column of the bundle's item table, with a value of that column's type
(400 naming the column otherwise); PATCH and DELETE of an item that neither the bundle nor the
catalogue holds are a 404. How new items get scores, and which models cannot score them until
a retrain: `lmrec.serve.catalogue_models`; how workers follow each other: `lmrec.serve.catalogue`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from lmrec.serve.catalogue import UnknownItem
from lmrec.serve.catalogue_items import MAX_TEXT
from lmrec.serve.deps import PathId, Svc, need
from lmrec.serve.service import Service

MAX_ATTRIBUTES = 256
T = TypeVar("T")


class ItemBody(BaseModel):
    """An item's attributes ({column: value}, columns of the bundle's item table; null: no
    value) and, optionally, its text for text encoders (content-text, the text two-tower),
    used instead of the sentence built from its attributes."""

    model_config = ConfigDict(extra="forbid")

    attributes: dict[str, Any] = Field(default_factory=dict, max_length=MAX_ATTRIBUTES)
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)


class CatalogueItem(BaseModel):
    item: str | int
    attributes: dict[str, Any] = Field(description="the bundle's row with the catalogue's "
                                       "changes (new items: their attributes alone)")
    text: str | None = Field(description="the text given through the API, if any")
    hidden: bool = Field(description="hidden: never recommended, nor given as a similar item")
    recommendable: bool = Field(description="the served model can recommend it now")
    reason: str | None = Field(description="why it cannot, when it cannot")
    in_model: bool = Field(description="the served model was trained on it (its scores "
                           "come from training; new items are scored from attributes or text)")
    version: int | None = Field(description="the catalogue version of its last change (null: "
                                "never changed through the API)")
    updated_at: float | None = Field(description="when it last changed through the API")
    model_version: str


def catalogue_router() -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["catalogue"])
    write = [Depends(need("write"))]
    errors: dict[int | str, dict[str, Any]] = {
        400: {"description": "an attribute that is no column of the item table, or a value "
                             "of the wrong type"},
        404: {"description": "an item neither the bundle nor the catalogue holds"}}

    @r.put("/items/{item}", response_model=CatalogueItem, dependencies=write, responses=errors)
    def put_item(item: PathId, body: ItemBody, svc: Svc) -> CatalogueItem:
        """Add an item, or replace the catalogue's changes to one: its attributes become the
        bundle's row (none for a new item) updated with the ones given, and a hidden item is
        shown again. A new item is recommended at once by models that score items from their
        attributes or text; others answer `recommendable: false` until a retrain."""
        eng = svc.engine
        return _written(svc, item, lambda: svc.catalogue.put(eng, item, body.attributes,
                                                             body.text))

    @r.patch("/items/{item}", response_model=CatalogueItem, dependencies=write,
             responses=errors)
    def patch_item(item: PathId, body: ItemBody, svc: Svc) -> CatalogueItem:
        """Merge attributes into the item's catalogue changes (null clears a value); the text
        is replaced when given (null removes it). The hidden flag stays as it is."""
        eng = svc.engine
        return _written(svc, item, lambda: svc.catalogue.patch(
            eng, item, body.attributes, body.text, "text" in body.model_fields_set))

    @r.delete("/items/{item}", response_model=CatalogueItem, dependencies=write,
              responses=errors)
    def hide_item(item: PathId, svc: Svc) -> CatalogueItem:
        """Hide the item: from the next answer on it is never recommended (users, visitors)
        nor given as a similar item, and its similar items are a 404, until a PUT shows it
        again. It stays in the catalogue and the model."""
        return _written(svc, item, lambda: svc.catalogue.hide(svc.engine, item))

    @r.get("/items/{item}", response_model=CatalogueItem,
           dependencies=[Depends(need("read"))], responses=errors)
    def get_item(item: PathId, svc: Svc) -> CatalogueItem:
        """The item as served: its attributes, hidden flag, and whether (and why not) the
        served model can recommend it."""
        svc.refresh_catalogue(wait=True)  # another worker's change of a second ago too
        return _found(lambda: CatalogueItem(**svc.catalogue.view(svc.engine, item)))

    return r


def _written(svc: Service, item: str, write: Callable[[], object]) -> CatalogueItem:
    """Run a catalogue write, serve it here at once, and answer the item as served now."""
    _found(write)
    svc.refresh_catalogue(wait=True)
    return _found(lambda: CatalogueItem(**svc.catalogue.view(svc.engine, item)))


def _found(call: Callable[[], T]) -> T:
    try:
        return call()
    except UnknownItem as exc:
        raise HTTPException(404, str(exc)) from None
