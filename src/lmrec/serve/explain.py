"""The words of the service's answers: why an item is recommended, and why nothing is.

Reasons. A recommendation explained by a history item says what the user did with it
("because you bought X"; "because of X in your history" for a behaviour type without a verb
here, or one the model was not trained on). A model whose scores do not depend on the user's
history (`Recommender.history_independent`, e.g. popularity), and the most-popular fallback
for users without a history, rank the same items for everyone: their reason says so
(`POPULAR_REASON`) and names no history item, which played no part.

Notes on filters. An empty answer to a filtered request says which filter left nothing: one
that matches no item at all, filters that no item matches together, business rules that
exclude every match, or a history that holds every match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

POPULAR_REASON = "popular with other users"  # not personal: the same for everyone
# The behaviour-type name of live events whose type the bundle was not trained on; no type sent
# to the API can take it (types hold printable characters only: `lmrec.ids`).
UNKNOWN_EVENT = "\x1funknown"
VERBS = {"view": "viewed", "pv": "viewed", "click": "clicked", "cart": "added to your cart",
         "add_to_cart": "added to your cart", "purchase": "bought", "buy": "bought",
         "order": "ordered", "favourite": "liked", "favorite": "liked", "fav": "liked",
         "like": "liked", "rating": "rated"}


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
