"""Why an item is recommended, and why nothing is: the history item behind it, and the words.

Explanations: for each recommended item, the history item with the largest attribution in the
model's own explanation of its score (`Recommender.explain`, `lmrec.models.explanations`): the
exact linear term for EASE / SLIM / ItemKNN, implicit's decomposition for ALS, the history items
through which the neighbours were found for UserKNN, gradient x input for SASRec, GRU4Rec and
the two-tower, the exact score drop on removing the item (occlusion) for the other models. An
item whose score no history item raised names none. Items the model never saw (added through
the catalogue API after training), and histories made only of such items, have no attribution
in the model: for them the rule is the history item (of the latest 50 distinct ones) with the
largest affinity (`lmrec.serve.rerank.Similarity`). A ranking that is the same for everyone (a
model that ignores histories, such as popularity, or the most-popular fallback) is explained as
such, by no history item.

Reasons. A recommendation explained by a history item says what the user did with it
("because you bought X"; "because of X in your history" for a behaviour type without a verb
here, or one the model was not trained on). A model whose scores do not depend on the user's
history (`ignores_history`, e.g. popularity), and the most-popular fallback for users without a
history, rank the same items for everyone: their reason says so (`POPULAR_REASON`) and names no
history item, which played no part.

Whether a model ignores histories is not something it declares: the engine observes it once per
bundle (`ignores_history`): an unknown user's scores for the empty history and for one-item
histories of the most and of the least popular item are compared, and when all three are equal
exactly, nothing a history holds moves the ranking, which is then the same for everyone. A
model that uses histories at all changes its scores for at least one of these two items (the
most popular item co-occurs with others in any data worth training on).

Notes on filters. An empty answer to a filtered request says which filter left nothing: one
that matches no item at all, filters that no item matches together, business rules that
exclude every match, or a history that holds every match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec.data.dataset import Sequences
from lmrec.models.base import Recommender

POPULAR_REASON = "popular with other users"  # not personal: the same for everyone
# The behaviour-type name of live events whose type the bundle was not trained on; no type sent
# to the API can take it (types hold printable characters only: `lmrec.ids`).
UNKNOWN_EVENT = "\x1funknown"
EXPLAIN_HISTORY = 50  # distinct recent history items considered for an explanation
VERBS = {"view": "viewed", "pv": "viewed", "click": "clicked", "cart": "added to your cart",
         "add_to_cart": "added to your cart", "purchase": "bought", "buy": "bought",
         "order": "ordered", "favourite": "liked", "favorite": "liked", "fav": "liked",
         "like": "liked", "rating": "rated"}


def ignores_history(model: Recommender) -> bool:
    """Whether `model`'s scores are the same whatever the history (see the module docstring):
    an unknown user's scores for the empty history equal, exactly, those for the one-item
    histories of the most and of the least popular item."""
    pop = np.asarray(model.popularity_)
    probe = np.unique([int(np.argmax(pop)), int(np.argmin(pop))])
    if probe.size == 1 and pop.size > 1:  # every item equally popular: any two items
        probe = np.array([0, 1])
    empty = model.score(np.array([-1]))[0]
    one_item = model.score(np.full(probe.size, -1),
                           Sequences.from_lists([np.array([i]) for i in probe]))
    return all(np.array_equal(empty, row) for row in one_item)


def history_reason(label: str, event_type: str) -> str:
    """The reason naming the history item `label` the user acted on with `event_type`."""
    # an event of a type unseen in training has no verb we could vouch for
    verb = None if event_type == UNKNOWN_EVENT else VERBS.get(event_type.lower())
    return f"because you {verb} {label}" if verb else f"because of {label} in your history"


def empty_filter_note(filters: Sequence[str], mask: Callable[[str], np.ndarray],
                      rule_allowed: np.ndarray | None, exclude_seen: bool) -> str | None:
    """Why a request with `filters` got no item (None without filters). `mask(f)` is the
    (n_items,) bool of the items filter `f` matches; `rule_allowed` those the rules allow."""
    if not filters:
        return None
    both = None
    for f in filters:
        m = mask(f)
        if not m.any():
            return f"no item matches filter {f}"
        both = m if both is None else both & m
    named = ", ".join(filters)
    if both is None or not both.any():
        return f"no item matches all the filters {named} together"
    if rule_allowed is not None and not (both & rule_allowed).any():
        return f"the business rules exclude every item matching {named}"
    if exclude_seen:
        return f"every item matching {named} is in the history (exclude_seen=false keeps them)"
    return f"no item matching {named} could be recommended"


def explain(model: Recommender, user: int, hist: Sequences, rec: np.ndarray,
            affinity: Callable[[np.ndarray, np.ndarray], np.ndarray],
            external_item: Callable[[int], Any], labels: list[str] | None
            ) -> list[tuple[Any, str | None]]:
    """Per recommended item: (external id of the history item behind it, a sentence).

    The top-attributed history item of `model.explain(user, hist, rec)` (module docstring);
    for recommended items beyond the model's vocabulary, or a history without items it knows,
    `affinity(src, rec)`, the (len(src), len(rec)) affinity of history items to them."""
    n_model = model.n_items
    rec = np.asarray(rec, dtype=np.int64)
    known = hist.items < n_model
    out: list[tuple[Any, str | None]] = [(None, None)] * rec.size
    in_model = np.flatnonzero(rec < n_model) if known.any() else np.zeros(0, np.int64)
    if in_model.size:
        seqs = hist if known.all() else _take_events(hist, known)
        best, _ = model.explain(user, seqs, rec[in_model]).top()
        for j, item in zip(in_model, best, strict=True):
            if item >= 0:
                out[j] = _named(hist, int(item), external_item, labels)
    rest = np.setdiff1d(np.arange(rec.size), in_model)
    if rest.size:
        for j, named in zip(rest, _by_affinity(hist, rec[rest], affinity, external_item,
                                               labels), strict=True):
            out[j] = named
    return out


def _take_events(hist: Sequences, keep: np.ndarray) -> Sequences:
    """The one-row history `hist` with only the events `keep` (bool)."""
    return Sequences(np.array([0, int(keep.sum())], dtype=np.int64), hist.items[keep],
                     hist.events[keep], hist.timestamps[keep], hist.event_types)


def _named(hist: Sequences, item: int, external_item: Callable[[int], Any],
           labels: list[str] | None) -> tuple[Any, str]:
    """(external id, reason) for history item `item`, with the type of its latest event."""
    last = int(np.flatnonzero(hist.items == item)[-1])
    etype = hist.event_types[hist.events[last]] if hist.event_types else UNKNOWN_EVENT
    label = labels[item] if labels is not None else str(external_item(item))
    return external_item(item), history_reason(label, etype)


def _by_affinity(hist: Sequences, rec: np.ndarray,
                 affinity: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 external_item: Callable[[int], Any], labels: list[str] | None
                 ) -> list[tuple[Any, str | None]]:
    """The history item (of the latest EXPLAIN_HISTORY distinct ones) with the largest
    affinity to each of `rec`, where positive."""
    rev_items = hist.items[::-1]
    uniq, first = np.unique(rev_items, return_index=True)
    order = np.argsort(first)[:EXPLAIN_HISTORY]  # most recent first
    src = uniq[order].astype(np.int64)
    aff = affinity(src, rec)  # (n_src, k)
    best = aff.argmax(axis=0)
    return [(None, None) if not np.isfinite(aff[b, j]) or aff[b, j] <= 0
            else _named(hist, int(src[b]), external_item, labels)
            for j, b in enumerate(best)]


def item_labels(items: pl.DataFrame) -> list[str] | None:
    """A readable label per item: its title or name column, else none."""
    for c in ("title", "name"):
        if c in items.columns and items[c].dtype == pl.String:
            ids = items[C.ITEM].cast(pl.String)
            return [t if t else i for t, i in zip(items[c].to_list(), ids.to_list(),
                                                  strict=True)]
    return None
