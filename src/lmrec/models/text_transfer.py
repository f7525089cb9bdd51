"""Zero-shot transfer: a sequential model trained on one dataset, applied to another's catalogue
and users without any further training.

Only items made of text transfer. A `text_only` network has no weight that belongs to an item:
its item representation is a trained MLP of each item's frozen sentence vector, so the same
weights score any catalogue once its items' texts are encoded (with the model's encoder and
text template, so that equal texts get equal vectors). An id + text network (`text=true`) keeps
its text projection and its learned "unknown item" row, which then stands in for every item's
id, as it did for the items without training events and for the dropped ids while training
(`item_id_dropout`). An id-only model is refused: its ids mean nothing in another catalogue.

The transferred model is a fitted model of the same class and config: it scores the new
dataset's users from their histories there, masks their seen items, saves and loads as any
other. Its network weights are the source model's, bit for bit.

    ml100k = SASRec(text_only=True, text_template="{title}. Genres: {genres}.").fit(a)
    on_small = ml100k.transfer(latest_small)      # same weights, latest-small's catalogue
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np

from lmrec.data.dataset import Dataset
from lmrec.errors import ConfigError, InputError
from lmrec.models.artifacts import pack_sequences
from lmrec.models.sequential import SequenceNet, SequentialRecommender
from lmrec.models.text_items import item_arrays, item_text_matrix

M = TypeVar("M", bound=SequentialRecommender)


def transfer(model: M, dataset: Dataset, *, progress: bool = False) -> M:
    """A new fitted `type(model)` with `model`'s network weights and `dataset`'s items, users
    and histories (see the module docstring). `model` is left as it is."""
    model._check_fitted()
    cfg = model.config
    kind = getattr(cfg, "item_repr", "id")
    if kind == "id":
        raise ConfigError(f"{model.name}: only a model whose items are made of text transfers "
                          "to another catalogue (text_only=true, or text=true); this one "
                          "represents items by ids learned on its own catalogue")
    if dataset.n_events == 0:
        raise InputError("cannot transfer to a dataset without events")
    seqs = dataset.sequences()
    if cfg.use_event_types and seqs.event_types != model.event_types_:
        raise ConfigError(f"{model.name}: the model embeds behaviour types "
                          f"{model.event_types_}; the dataset has {seqs.event_types}")
    text = item_text_matrix(dataset, cfg, progress=progress)  # (n_items_B, T)
    trained = model.item_arrays_["item_text"]
    if text.shape[1] != trained.shape[1]:
        raise ConfigError(f"{model.name}: text vectors of {text.shape[1]} dimensions, the model "
                          f"was trained on {trained.shape[1]} (another encoder?)")
    net = {f"net.{k}": v.detach().cpu().numpy() for k, v in model.net_.state_dict().items()}
    # text alone: no item is cold (the mask only matters while training, which is over);
    # id + text: every id is unknown, so the gate replaces each by the learned "unknown item"
    # row and the id table (sized for the new catalogue) is never read: zeros, not random rows
    items = {"items.item_text": text,
             "items.item_cold": np.full(dataset.n_items, kind == "id+text")}
    if kind == "id+text":
        key = "net.items.id_emb.weight"
        net[key] = np.zeros((dataset.n_items + 1, net[key].shape[1]), dtype=np.float32)
    new = type(model)(cfg)
    # what `fit` records of its dataset, then the state `load` restores from a bundle
    new.users_, new.items_ = dataset.users, dataset.items
    new.seen_ = dataset.matrix("binary").tocsr().astype(np.float32)
    new.popularity_ = np.asarray(new.seen_.sum(axis=0)).ravel().astype(np.float32)
    new.behaviour_weights_ = dict(dataset.behaviour_weights)
    new.settings_ = dict(model.settings_)
    new._load_arrays({**net, **items, **pack_sequences(seqs, "history"),
                      "event_types": np.asarray(seqs.event_types, dtype=np.str_)})
    new._fitted = True
    return new


class TextItemsRecommender(SequentialRecommender):
    """A sequential model whose items are ids, ids + text or text alone (`item_repr` of its
    config, `lmrec.models.text_items.SequentialTextFields`): sasrec and hstu. The text arrays
    are computed in `fit` and saved with the model; `net_class` is built from them."""

    # (n_items, n_event_types, config, item_text | None, item_cold | None) -> the network
    net_class: ClassVar[type[SequenceNet]]
    config: Any  # a SequentialConfig with SequentialTextFields

    def _item_arrays(self, dataset: Dataset) -> dict[str, np.ndarray]:
        return item_arrays(dataset, self.config, progress=self.config.progress)

    def _build_net(self, n_items: int, n_event_types: int) -> SequenceNet:
        return self.net_class(n_items, n_event_types, self.config,  # type: ignore[call-arg]
                              self.item_arrays_.get("item_text"),
                              self.item_arrays_.get("item_cold"))

    def transfer(self: M, dataset: Dataset) -> M:
        """This model, untrained further, on `dataset`'s catalogue and users (zero-shot; needs
        text items: see `transfer` above)."""
        return transfer(self, dataset)
