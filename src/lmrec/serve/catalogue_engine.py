"""An engine serving the bundle's items with the catalogue's changes: new items, changed
attributes, hidden items (`CatalogueEngine`, built by `with_catalogue`).

Like `Engine` it is immutable: a catalogue change builds a new one over the same bundle
engine (sharing its model, index, histories and caches) and the service swaps it in.

    new items        internal indices n..n+m-1 after the bundle's n items, mapped to their ids
                     at the boundary like any other; scored by the model where it can score
                     items from attributes or text (`lmrec.serve.catalogue_models`): vectors
                     beside the item index (searched exactly), or content profiles beside the
                     model's scores; a history's new items are left out of what the model
                     reads (it knows none of them) but stay seen
    changed rows     filters and rules read the new values; the model keeps the item's trained
                     vector until a retrain
    hidden items     out of `rule_allowed`, the mask every answer already honours (filters,
                     candidates, similar items, the index's `allowed`), so that no path can
                     return them; `is_hidden` makes GET /v1/items/{id}/similar a 404
    re-ranking       the re-rankers (`Engine.rerank_data`) read the item table with the
                     changed rows' values and the new items (training popularity 0: long tail)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec import columns as C
from lmrec.columns import Role
from lmrec.data.dataset import Sequences
from lmrec.errors import LmrecError
from lmrec.serve.catalogue_items import item_rows
from lmrec.serve.catalogue_models import ItemEncoder
from lmrec.serve.catalogue_parts import (
    OverlayFilters,
    OverlayIndex,
    OverlaySimilarity,
    unit_rows,
)
from lmrec.serve.engine import Engine, Scored
from lmrec.serve.store.catalogue import CatalogueRow

HIDDEN = "hidden (DELETE /v1/items/{item}); PUT the item again to show it"
EXCLUDED = "excluded by the business rules"


@dataclass(frozen=True)
class Overlay:
    """The catalogue as one engine serves it."""

    version: int  # the catalogue version it holds
    keys: tuple[str, ...]  # new items' keys; internal index n_base + j
    ids: tuple[Any, ...]  # their public ids
    index_of: dict[str, int]  # key -> internal index
    hidden: np.ndarray  # (n_total,) bool
    why: dict[int, str]  # new items that cannot be recommended: internal index -> reason
    rows: Any  # (m, d) vectors, (m, f) CSR profiles, or None (the model cannot score them)


class CatalogueEngine(Engine):
    """The bundle engine `base` with the catalogue's `overlay` (see the module docstring)."""

    def __init__(self, base: Engine, overlay: Overlay, filters: OverlayFilters,
                 encoder: ItemEncoder | None) -> None:
        # not Engine.__init__: everything derived from the bundle is shared with `base`
        self.__dict__.update(base.__dict__)
        # but not the re-rankers' view of the catalogue: this one has other items
        self.__dict__.pop("rerank_data", None)
        self._pipelines = {}
        self.base, self.catalogue, self.n_base = base, overlay, base.n_items
        self.n_items = base.n_items + len(overlay.keys)
        self._encoder = encoder
        self._filters = filters
        vectors = overlay.rows if encoder is not None and encoder.vectors else None
        unit = None
        if base.embedding:
            extra = vectors if vectors is not None else np.zeros(
                (len(overlay.keys), base.index.dim), np.float32)
            self.index = OverlayIndex(base.index, extra)
            if vectors is not None:
                unit = unit_rows(self.index.item_vectors)
        elif encoder is not None and not encoder.vectors:  # profiles beside the model's
            unit = unit_rows(sp.vstack([base.model.F_, overlay.rows], format="csr"))
        self._similarity = OverlaySimilarity(base._similarity, self.n_base, self.n_items, unit)
        self._labels = _labels(base, filters, overlay)

    # --- ids --------------------------------------------------------------------------------
    def item_indices(self, raw: Sequence[Any]) -> np.ndarray:
        idx = self.base.item_indices(raw)
        for j in np.flatnonzero(idx < 0):
            idx[j] = self.catalogue.index_of.get(self.item_key(raw[j]), -1)
        return idx

    def external_item(self, idx: int) -> Any:
        idx = int(idx)
        return self.base.external_item(idx) if idx < self.n_base \
            else self.catalogue.ids[idx - self.n_base]

    def is_hidden(self, idx: int) -> bool:
        return bool(self.catalogue.hidden[idx])

    # --- scoring: the model reads the bundle's items, the catalogue adds the new ones -----------
    def _user_vectors(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        return self.base._user_vectors(users, _known(histories, self.n_base))

    def _scores(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        hist = _known(histories, self.n_base)
        base = self.base._scores(users, hist)
        extra = np.full(self.n_items - self.n_base, -np.inf, dtype=np.float32)
        rows = self.catalogue.rows
        if rows is not None and self._encoder is not None and not self._encoder.vectors:
            extra = self._encoder.scores(users, hist, rows)[0]
        return np.concatenate([np.asarray(base, dtype=np.float32), extra])

    def _rerank_items(self) -> pl.DataFrame:
        """The bundle's item table with the changed rows' new values and the new items after
        it (row i = internal item i)."""
        base, frame, rows = self.base._rerank_items(), self._filters.frame, self._filters.rows
        if not frame.height:
            return base
        at = np.arange(self.n_items)  # row of base + frame, stacked, that item i comes from
        at[rows] = base.height + np.arange(rows.size)
        stacked = pl.concat([base, frame.select(base.columns)], how="vertical_relaxed")
        return stacked[at]

    def similar(self, item: int, k: int) -> list[Scored]:
        if item >= self.n_base and item in self.catalogue.why:
            return []  # a new item the model cannot place: nothing is like it yet
        return super().similar(item, k)

    def why_not(self, idx: int) -> str | None:
        """Why item `idx` is never recommended now (None: it may be)."""
        if self.catalogue.hidden[idx]:
            return HIDDEN
        if idx in self.catalogue.why:
            return self.catalogue.why[idx]
        allowed = self._filters.rule_allowed
        return EXCLUDED if allowed is not None and not allowed[idx] else None


def why_not(engine: Engine, idx: int) -> str | None:
    """Why item `idx` of `engine` is never recommended now (None: it may be)."""
    if isinstance(engine, CatalogueEngine):
        return engine.why_not(idx)
    allowed = engine._filters.rule_allowed
    return EXCLUDED if allowed is not None and not allowed[idx] else None


def with_catalogue(base: Engine, rows: Mapping[str, CatalogueRow], version: int,
                   roles: Mapping[str, Role], encoder: ItemEncoder | str) -> Engine:
    """`base` (a bundle's engine) serving the catalogue `rows` (key -> row), or `base`
    itself when there are none. `encoder`: how the model encodes new items, or why it
    cannot."""
    if not rows:
        return base
    n = base.n_items
    keys = sorted(rows)  # the same indices in every worker holding the same rows
    at = base.bundle.item_ids.index(keys)
    new = [k for k, i in zip(keys, at, strict=True) if i < 0]
    index_of = {k: n + j for j, k in enumerate(new)}
    idx = np.array([i if i >= 0 else index_of[k] for k, i in zip(keys, at, strict=True)],
                   dtype=np.int64)
    ids = tuple(base.bundle.item_ids.canonical(k)[1] for k in new)
    changed = [j for j, k in enumerate(keys) if at[j] < 0 or rows[k].attributes]
    frame = item_rows(base.bundle.items, roles,
                      [base.bundle.item_ids.canonical(keys[j])[1] for j in changed],
                      [int(at[j]) for j in changed], [rows[keys[j]].attributes for j in changed])
    hidden = np.zeros(n + len(new), dtype=bool)
    hidden[idx[[rows[k].hidden for k in keys]]] = True
    new_rows = [p for p, j in enumerate(changed) if at[j] < 0]  # in the order of `new`
    encoded, why = _encode(frame.select(pl.all().gather(new_rows)), [rows[k] for k in new], n,
                           encoder)
    scorer = encoder if isinstance(encoder, ItemEncoder) and encoded is not None else None
    overlay = Overlay(version, tuple(new), ids, index_of, hidden, why, encoded)
    filters = OverlayFilters(base._filters, n + len(new), frame, idx[changed])
    _set_rules(filters, base, overlay)
    return CatalogueEngine(base, overlay, filters, scorer)


def _encode(frame: pl.DataFrame, new: list[CatalogueRow], n: int, encoder: ItemEncoder | str
            ) -> tuple[Any, dict[int, str]]:
    """The new items' vectors or profiles (rows of `frame`, in order) and, per internal
    index, why an item cannot be recommended. Items encoded by an earlier build (the same
    row version) are not encoded again (`ItemEncoder.memo`), so that a change costs one
    encoding, not one per item of the catalogue."""
    if not new:
        return None, {}
    reason = encoder if isinstance(encoder, str) else encoder.reason()
    if reason is None:
        assert isinstance(encoder, ItemEncoder)
        memo = encoder.memo
        todo = [j for j, r in enumerate(new) if memo.get(r.item, (-1,))[0] != r.version]
        try:
            done = encoder.encode(frame.select(pl.all().gather(todo)),
                                  [new[j].text for j in todo]) if todo else None
        except LmrecError as exc:  # e.g. a template the new rows cannot fill
            reason = f"its text could not be built ({exc})"
        else:
            for t, j in enumerate(todo):
                assert done is not None
                memo[new[j].item] = (new[j].version, done.rows[t : t + 1], done.why[t])
            parts = [memo[r.item] for r in new]
            rows = [p[1] for p in parts]
            stacked = sp.vstack(rows, format="csr") if sp.issparse(rows[0]) else np.vstack(rows)
            return stacked, {n + j: p[2] for j, p in enumerate(parts) if p[2] is not None}
    return None, {n + j: f"not recommendable until the model is retrained: {reason}"
                  for j in range(len(new))}


def _set_rules(filters: OverlayFilters, base: Engine, overlay: Overlay) -> None:
    """The rules over every item: the bundle's items as the bundle engine has them, the
    changed and new rows evaluated on their values; hidden items and new items that cannot be
    scored left out of `rule_allowed`."""
    rules, n, rows = base.rules, base.n_items, filters.rows
    allowed = np.ones(filters.n_items, dtype=bool)
    if base._filters.rule_allowed is not None:
        allowed[:n] = base._filters.rule_allowed
    allowed[rows] = True  # the changed rows: the rules again, on their new values
    for f in rules.exclude:
        allowed[rows] &= ~filters.filter_mask(f)[rows]
    ids = list(rules.exclude_items)  # by id: the bundle's items and new ones
    by_id = [*base.item_indices(ids).tolist(),
             *(overlay.index_of.get(base.item_key(r), -1) for r in ids)]
    allowed[[i for i in by_id if i >= 0]] = False
    allowed &= ~overlay.hidden
    allowed[list(overlay.why)] = False
    allowed.flags.writeable = False
    filters.rule_allowed = allowed
    if rules.boost:
        boosts = np.zeros(filters.n_items, dtype=np.float32)
        if base._filters.boosts is not None:
            boosts[:n] = base._filters.boosts
        boosts[rows] = 0.0
        for b in rules.boost:
            boosts[rows] += np.float32(b.weight) * filters.filter_mask(b.filter)[rows]
        filters.boosts = boosts


def _labels(base: Engine, filters: OverlayFilters, overlay: Overlay) -> list[str] | None:
    """Item labels for explanations: the bundle's, the new and changed rows' titles."""
    if base._labels is None:
        return None
    labels = list(base._labels) + [str(i) for i in overlay.ids]
    col = next((c for c in ("title", "name") if c in filters.frame.columns), None)
    if col is not None:
        for i, title, item in zip(filters.rows, filters.frame[col], filters.frame[C.ITEM],
                                  strict=True):
            labels[int(i)] = title if title else str(item)
    return labels


def _known(histories: Sequences | None, n: int) -> Sequences | None:
    """The histories without items the model does not know (index >= n)."""
    if histories is None or not (histories.items >= n).any():
        return histories
    keep = histories.items < n
    rows = np.repeat(np.arange(histories.indptr.size - 1), np.diff(histories.indptr))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep],
                                                        minlength=histories.indptr.size - 1))])
    return Sequences(indptr.astype(histories.indptr.dtype), histories.items[keep],
                     histories.events[keep], histories.timestamps[keep], histories.event_types)
