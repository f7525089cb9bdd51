"""Loading any saved model by the name in its config.json (`load_model`).

The base class saves and loads one class's arrays; choosing the class from the saved name
needs the registry of every model, which imports every model module, so it lives here, above
them, instead of inside the base class they all import.
"""

from __future__ import annotations

from pathlib import Path

from lmrec.models.artifacts import read_artifact_meta
from lmrec.models.base import Recommender
from lmrec.models.registry import model_class


def load_model(folder: str | Path, *, verify: bool = True) -> Recommender:
    """The model saved in `folder`, of whatever class saved it (see `Recommender.load`)."""
    meta = read_artifact_meta(Path(folder))
    return model_class(meta["model"]).load(folder, verify=verify)
