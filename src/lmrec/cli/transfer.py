"""`lmrec evaluate --transfer-from BUNDLE`: zero-shot transfer of a trained text-native
sequential model (a bundle of `lmrec train`) to the split's training part, evaluated as usual.

No fitting: the bundle's network weights score the new dataset's catalogue and users from their
texts and histories (`lmrec.models.text_transfer.transfer`). Only models whose items are made of
text transfer (sasrec or hstu with text_only=true, or text=true); any other bundle is refused
with the ConfigError of `transfer`, as one line.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmrec.errors import ConfigError, InputError


def check_transfer_options(given: Mapping[str, bool]) -> None:
    """Refuse an option that `--transfer-from` replaces or cannot serve (`given` maps an option
    to whether it was given)."""
    for option, is_given in given.items():
        if is_given:
            raise ConfigError(f"{option} does not go with --transfer-from (the bundle's model "
                              "is transferred as trained, without fitting or tuning)")


def load_source(bundle: Path) -> Any:
    """The model of the bundle `bundle`; an InputError naming --transfer-from when it is not a
    readable bundle."""
    from lmrec.models import load_model
    from lmrec.serve.bundle import read_bundle_meta

    try:
        read_bundle_meta(bundle)
        return load_model(bundle)
    except InputError as exc:
        raise InputError(f"--transfer-from: {exc}") from None


def transfer_and_evaluate(source: Any, bundle: Path, split: Any, ks: list[int], *, part: str,
                          history: Any, rerank: Sequence[Any]) -> Any:
    """`source` transferred to `split.train` (timed as seconds["transfer"]) and evaluated on
    `part` with the `history` policy and the `rerank` re-rankers: an `EvalResult`."""
    from lmrec.evaluate import evaluate
    from lmrec.models.text_transfer import transfer

    t0 = time.perf_counter()
    try:
        moved = transfer(source, split.train)
    except ConfigError as exc:
        raise ConfigError(f"--transfer-from {bundle}: {exc}") from None
    transfer_s = time.perf_counter() - t0
    result = evaluate(moved, split, ks, part=part, history=history, rerank=rerank)
    result.seconds = {"transfer": transfer_s, **result.seconds}
    return result
