"""Shared pieces of the sequential (next-item) models: windows, batches, losses, scoring.

A user's history is a time-ordered item sequence (`Dataset.sequences()`, CSR layout). The
networks read fixed-length, right-aligned windows: the last `max_len` items, oldest first,
left-padded with 0, so the most recent item is always in the last column. Items are shifted
by one (item i -> token i + 1) so that token 0 is padding.

Training (as RecBole's augmentation, "every prefix predicts its next item", but without
copying prefixes): each training sequence is cut from its end into chunks of `max_len`
targets; a chunk's input is the items one step earlier, so every target position t of the
window predicts item t + 1 from the items up to t (a causal network sees exactly that
prefix). Every training target appears in exactly one chunk per epoch.

Optional per-position side inputs, added to the item embedding by the networks:
behaviour type (`Sequences.events`, token 0 = padding/unknown) and the time gap since the
previous event, bucketed on a log2 scale (token 0 = padding/unknown/first event).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from lmrec.data.dataset import Dataset, Sequences
from lmrec.errors import ConfigError
from lmrec.models.artifacts import pack_sequences, unpack_sequences
from lmrec.models.base import Recommender
from lmrec.models.distill import Distiller, check_teacher
from lmrec.models.explanations import Explanation, history_items
from lmrec.models.explanations_neural import sequential as explain_sequential
from lmrec.models.hyperparams import ModelConfig
from lmrec.models.redaction import UserRows
from lmrec.models.sequence_losses import next_item_loss
from lmrec.train import TrainConfig, train
from lmrec.train.options import TrainingOptions
from lmrec.train.validation import ranking_ndcg

PAD = 0  # token of padding positions (items, behaviour types and time gaps alike)
GAP_BUCKETS = 24  # log2 buckets of the time gap in seconds (2^22 s is about 7 weeks) + pad


def time_gap_tokens(seqs: Sequences, n_buckets: int = GAP_BUCKETS) -> np.ndarray:
    """(n_events,) int64 token of the gap to the previous event of the same user.

    0 for a user's first event or an unknown timestamp; else 1 + floor(log2(1 + seconds)),
    capped at n_buckets - 1, so that minutes, hours, days and weeks fall in different buckets.
    """
    ts = seqs.timestamps.astype(np.int64)
    tok = np.zeros(ts.size, dtype=np.int64)
    if ts.size < 2:
        return tok
    gap = np.diff(ts)  # (n - 1,) gap of event j + 1 to event j
    first = np.zeros(ts.size, dtype=bool)
    first[seqs.indptr[:-1][seqs.indptr[:-1] < ts.size]] = True
    ok = ~first[1:] & (ts[1:] >= 0) & (ts[:-1] >= 0)
    buckets = 1 + np.floor(np.log2(1.0 + np.maximum(gap, 0))).astype(np.int64)
    tok[1:] = np.where(ok, np.minimum(buckets, n_buckets - 1), 0)
    return tok


def gather_windows(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int,
                   offset: int = 0) -> np.ndarray:
    """(B, max_len) int64 right-aligned windows of `values`, padded with PAD on the left.

    Row b holds values[max(starts[b], ends[b] - max_len) : ends[b]] + offset in its last
    columns. `starts`/`ends` (B,) are absolute positions into the flat `values` array.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    idx = ends[:, None] - max_len + np.arange(max_len)[None, :]  # (B, L) source positions
    valid = idx >= starts[:, None]
    out = np.full(idx.shape, PAD, dtype=np.int64)
    out[valid] = values[idx[valid]].astype(np.int64) + offset
    return out


Batch = dict[str, Tensor]
"""Model inputs of B windows of L positions, int64 (B, L) tensors, token 0 = padding:
"items" (item index + 1), "events" (behaviour), "gaps" (time gap), "times" (raw timestamp in
seconds, -1 unknown, 0 padding; when the SeqData has them) and, for training,
"targets" (next-item tokens to predict, 0 = no target) and, for gBCE and the sampled softmax,
"negatives" (B, K) sampled item tokens, shared by the positions of a window, or
"shared_negatives" (K,), shared by the whole batch."""


@dataclass
class SeqData:
    """A set of sequences made ready for the networks: flat tokens and CSR row bounds."""

    indptr: np.ndarray  # (n_rows + 1,) int64
    items: np.ndarray  # (n_events,) int64 item indices (not shifted)
    events: np.ndarray  # (n_events,) int64 behaviour tokens (1.. or 0 unknown)
    gaps: np.ndarray  # (n_events,) int64 time-gap tokens
    # (n_events,) int64 raw timestamps in seconds (-1 unknown), batches' "times" (B, L);
    # None: batches carry no "times"
    times: np.ndarray | None = None

    @classmethod
    def from_sequences(cls, seqs: Sequences, event_types: tuple[str, ...]) -> SeqData:
        """Map the behaviour names of `seqs` onto `event_types` (the model's; unknown -> 0)."""
        lookup = np.array([event_types.index(t) + 1 if t in event_types else PAD
                           for t in seqs.event_types] or [PAD], dtype=np.int64)
        events = lookup[seqs.events] if seqs.items.size else np.zeros(0, np.int64)
        return cls(np.asarray(seqs.indptr, dtype=np.int64), seqs.items.astype(np.int64),
                   events, time_gap_tokens(seqs), seqs.timestamps.astype(np.int64))

    def take(self, rows: np.ndarray) -> SeqData:
        """The rows `rows` (B,), in that order (vectorised gather)."""
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        src = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SeqData(indptr, self.items[src], self.events[src], self.gaps[src],
                       None if self.times is None else self.times[src])

    def last_windows(self, max_len: int) -> Batch:
        """The last `max_len` events of every row: the input for scoring what comes next."""
        s, e = self.indptr[:-1], self.indptr[1:]
        return {name: torch.from_numpy(gather_windows(v, s, e, max_len, off))
                for name, v, off in self._inputs()}

    def _inputs(self) -> tuple[tuple[str, np.ndarray, int], ...]:
        out = (("items", self.items, 1), ("events", self.events, 0), ("gaps", self.gaps, 0))
        return out if self.times is None else (*out, ("times", self.times, 0))

    def training_chunks(self, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, ends) of every training chunk: rows (C,), ends (C,) exclusive target end.

        Row u with n events has n - 1 targets (positions 1..n-1), cut from the end into
        ceil((n - 1) / max_len) chunks; chunk k ends at indptr[u + 1] - k * max_len.
        """
        n_targets = np.maximum(np.diff(self.indptr) - 1, 0)
        n_chunks = -(-n_targets // max_len)  # ceil
        rows = np.repeat(np.arange(n_targets.size, dtype=np.int64), n_chunks)
        first = np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
        k = np.arange(rows.size, dtype=np.int64) - first  # chunk number from the end
        return rows, self.indptr[rows + 1] - k * max_len

    def chunk_batch(self, rows: np.ndarray, ends: np.ndarray, max_len: int) -> Batch:
        """Inputs (events up to ends - 1) and next-item targets of the chunks (rows, ends)."""
        s = self.indptr[rows]
        # inputs are the window ending one step before the targets' end; a target exists
        # where its input does (input position >= row start), so both share one padding
        batch = {name: torch.from_numpy(gather_windows(v, s, ends - 1, max_len, off))
                 for name, v, off in self._inputs()}
        batch["targets"] = torch.from_numpy(gather_windows(self.items, s + 1, ends, max_len, 1))
        return batch

    def chunk_lengths(self, rows: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray:
        """(C,) true length of each chunk's window: its positions that hold an item (and a
        target), at most `max_len`."""
        return np.minimum(ends - 1 - self.indptr[rows], max_len)

    def epoch_batches(self, max_len: int, batch_size: int, rng: np.random.Generator, *,
                      n_items: int = 0, n_negatives: int = 0, shared_negatives: int = 0,
                      length_buckets: bool = False) -> Iterator[Batch]:
        """One epoch of training chunks in a random order, `batch_size` chunks per batch.

        With `n_negatives` > 0, each batch also gets "negatives" (B, K) item tokens drawn
        uniformly from the `n_items` items, shared by the L positions of a window: K
        negatives per position at the memory of one (B, K, d) gather instead of (B, L, K, d).
        A draw of the positive itself is rare and kept, as gSASRec does.
        With `shared_negatives` K > 0, each batch gets "shared_negatives" (K,) item tokens
        drawn uniformly (with replacement) for all its positions (the "sampled" loss).

        `length_buckets`: the chunks, shuffled, are sorted by true length (ties stay in
        random order), cut into batches, and the batches are shuffled; each batch is trimmed
        to its longest window (width W <= max_len, still right-aligned), so a batch of short
        histories costs what they need. Every chunk is still trained exactly once an epoch;
        the network must count positions from the most recent item (the last column). A step
        averages its loss over its own positions, so a position of a short-window batch
        weighs more than one of a long-window batch (unbucketed batches mix the lengths).
        """
        rows, ends = self.training_chunks(max_len)
        order = rng.permutation(rows.size)
        starts = np.arange(0, rows.size, batch_size)
        widths = np.full(starts.size, max_len, dtype=np.int64)
        if length_buckets and rows.size:
            lengths = self.chunk_lengths(rows, ends, max_len)
            order = order[np.argsort(lengths[order], kind="stable")]  # by length, random ties
            starts = starts[rng.permutation(starts.size)]
            ends_of = np.minimum(starts + batch_size, rows.size) - 1
            widths = lengths[order[ends_of]]  # sorted ascending: the last is the longest
        for start, width in zip(starts, widths, strict=True):
            sel = order[start : start + batch_size]
            batch = self.chunk_batch(rows[sel], ends[sel], int(width))
            if n_negatives > 0:
                batch["negatives"] = torch.from_numpy(rng.integers(
                    1, n_items + 1, (sel.size, n_negatives), dtype=np.int64))
            if shared_negatives > 0:
                batch["shared_negatives"] = torch.from_numpy(rng.integers(
                    1, n_items + 1, shared_negatives, dtype=np.int64))
            yield batch


# --- configs and the shared Recommender -----------------------------------------------------
class SequentialConfig(TrainConfig, ModelConfig):
    """Fields shared by the sequential models; the training loop's knobs (TrainConfig) are
    embedded flat, with defaults for next-item training here."""

    max_len: int = Field(50, ge=1, description="history length: the most recent items read")
    loss: Literal["ce", "gbce", "sampled"] = Field(
        "ce", description="ce: full softmax over the catalogue (small catalogues); gbce: "
                          "gSASRec's calibrated BCE against `negatives` sampled items; "
                          "sampled: softmax over the positive and `negatives` uniformly "
                          "sampled items shared by the batch (large catalogues)")
    negatives: int = Field(256, ge=1, description="gbce: sampled negatives per window; "
                                                  "sampled: per batch")
    sampled_per: Literal["window", "batch"] = Field(
        "window", description="sampled: draw the `negatives` per window (every position of a "
                              "window shares them, as gbce) or once per batch")
    sampled_logq: bool = Field(
        True, description="sampled: logQ correction log((n_items - 1) / K) on the negatives")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="training forward and loss under bf16 autocast (weights, optimizer "
                            "state and scoring stay fp32)")
    length_buckets: bool = Field(
        False, description="sort training windows by true length into batches trimmed to "
                           "their longest window (no compute on padding; sasrec)")
    gbce_t: float = Field(0.75, ge=0, le=1, description="gbce calibration t (0: plain BCE)")
    use_event_types: bool = Field(False, description="add a behaviour-type embedding")
    use_time_gaps: bool = Field(False, description="add a log2 time-gap embedding")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout of embeddings and layers")
    # knowledge distillation, used only when fit gets TrainingOptions(teacher=...)
    distill_weight: float = Field(
        1.0, ge=0, description="with a teacher: weight alpha of the T^2 KL term to its softmax")
    # T = 1 and weight 1 were the better of (1, 1), (.5, 1), (1, 2) on the validation parts
    # of ML-100K and ML-latest-small together (benchmarks/distill.py)
    distill_temperature: float = Field(
        1.0, gt=0, description="with a teacher: softmax temperature T of the distillation term")
    # the loop's knobs, re-defaulted (see TrainConfig for the others)
    epochs: int = Field(200, ge=1, description="maximum passes over the training targets")
    batch_size: int = Field(128, ge=1, description="training windows per step")
    grad_clip: float | None = Field(5.0, gt=0, description="clip the global gradient norm")
    patience: int | None = Field(
        10, ge=1, description="early stopping after this many validations without a better "
                              "NDCG@10 (only when fit gets `valid`; both models' grids chose 10)")


class SequenceNet(nn.Module):
    """What the shared code needs of a network: tied item embeddings and hidden states."""

    item_emb: nn.Embedding  # (n_items + 1, d), row 0 = padding

    def forward(self, batch: Batch) -> Tensor:  # (B, L, d) hidden state per position
        raise NotImplementedError

    def hidden_last(self, batch: Batch) -> Tensor:
        """(B, d) hidden state at the last position, what scoring reads; a network may
        compute it with less work than `forward`."""
        return self(batch)[:, -1]

    def item_table(self) -> Tensor:
        """(n_items + 1, d) output item representations (row 0 = padding): the id embedding
        table by default; networks with item side inputs (text) add them here."""
        return self.item_emb.weight


class SequentialRecommender(Recommender):
    """Base of next-item models: scores a user from the last `max_len` items of a history.

    State: the network's weights, the training sequences (`history_`, what `score(users)`
    reads, and the per-user state `redact_users` empties) and the per-item arrays the network
    reads (`_item_arrays`, e.g. text vectors); `score(users, histories)` scores any other
    history. With `TrainingOptions(valid=...)` fit early-stops on NDCG@10 of the valid
    Dataset's items ranked from the training histories, training items masked.
    """

    config: SequentialConfig
    # True where the network counts positions from the most recent item (the last column),
    # so that a batch trimmed of left padding computes what the full-width one does
    trims_padding: ClassVar[bool] = False

    @abstractmethod
    def _build_net(self, n_items: int, n_event_types: int) -> SequenceNet: ...

    def _item_arrays(self, dataset: Dataset) -> dict[str, np.ndarray]:
        """Per-item arrays for the network (`self.item_arrays_`, saved with the model), computed
        from the training Dataset; none by default."""
        return {}

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        seqs = dataset.sequences()
        # an object of its own: erasure empties its rows in place, never the Dataset's cache
        self.history_ = replace(seqs)
        self.item_arrays_ = self._item_arrays(dataset)
        self.event_types_ = seqs.event_types
        data = SeqData.from_sequences(seqs, self.event_types_)
        if self.config.length_buckets and not self.trims_padding:
            raise ConfigError(f"{self.name}: length_buckets needs a network that counts "
                              "positions from the most recent item (sasrec)")
        distiller = None
        if options.teacher is not None:  # lmrec.models.distill: the KL term to its softmax
            teacher = check_teacher(options.teacher, self, dataset,
                                    family=SequentialRecommender)
            distiller = Distiller(teacher,
                                  self.event_types_, self.config.distill_weight,
                                  self.config.distill_temperature)
        task = _NextItemTask(self, data, options.check_valid(dataset), distiller)
        result = train(task, TrainConfig.of(self.config), options.generator, title=self.name,
                       time_budget_s=options.time_budget_s, device=options.device)
        self.net_ = result.module.cpu().eval()
        self.train_result_ = result
        self.training_log_ = result.history

    def _new_net(self) -> SequenceNet:
        return self._build_net(len(self.items_), len(self.event_types_))

    def _hidden_last(self, data: SeqData) -> Tensor:
        """(B, d) hidden state after each row's last item."""
        out = []
        net = self.net_
        device = next(net.parameters()).device
        with torch.no_grad():
            for start in range(0, data.indptr.size - 1, _SCORE_BATCH):
                rows = np.arange(start, min(start + _SCORE_BATCH, data.indptr.size - 1))
                part = data.take(rows)
                batch = part.last_windows(self._score_width(part))
                out.append(net.hidden_last({k: v.to(device) for k, v in batch.items()}))
        return torch.cat(out) if out else torch.zeros(0, net.item_table().shape[1])

    def _score_width(self, data: SeqData) -> int:
        """Window width to score `data` at: max_len, or, for a network that counts positions
        from the most recent item, the longest of its histories (at least 1): the same
        scores, and one short history (a served request) costs its length, not max_len."""
        if not self.trims_padding or data.indptr.size < 2:
            return self.config.max_len
        return int(min(self.config.max_len, max(1, np.diff(data.indptr).max())))

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        """Scores of the next item after each history: the users' training histories when
        `histories` is None, else the given ones (`users` is then not used)."""
        seqs = self.history_.take(users) if histories is None else histories
        data = SeqData.from_sequences(seqs, self.event_types_)
        h = self._hidden_last(data)  # (B, d)
        with torch.no_grad():
            return (h @ self.net_.item_table()[1:].T).cpu().numpy()  # (B, n_items)

    def _explain(self, user: int, seqs: Sequences, items: np.ndarray) -> Explanation:
        # gradient x input over the window's positions (lmrec.models.explanations_neural)
        window = SeqData.from_sequences(seqs, self.event_types_).last_windows(self.config.max_len)
        return explain_sequential(self.net_, window, history_items(seqs), items)

    def user_state(self) -> tuple[UserRows, ...]:
        return (UserRows(self.history_),)

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
        out.update(pack_sequences(self.history_, "history"))
        out["event_types"] = np.asarray(self.event_types_, dtype=np.str_)
        out.update({f"items.{k}": v for k, v in self.item_arrays_.items()})
        return out

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.event_types_ = tuple(str(t) for t in arrays["event_types"])
        self.history_ = unpack_sequences(arrays, "history", self.event_types_)
        self.item_arrays_ = {k.removeprefix("items."): v for k, v in arrays.items()
                             if k.startswith("items.")}
        net = self._new_net()
        net.load_state_dict({k.removeprefix("net."): torch.from_numpy(np.array(v))
                             for k, v in arrays.items() if k.startswith("net.")})
        self.net_ = net.eval()


_SCORE_BATCH = 1024  # histories per forward pass when scoring


class _NextItemTask:
    """The lmrec.train task of a sequential model: windows in, next-item loss out."""

    def __init__(self, model: SequentialRecommender, data: SeqData, valid: Dataset | None,
                 distiller: Distiller | None = None):
        self.model = model
        self.distiller = distiller
        self.cfg = model.config
        self.data = data
        self.n_items = len(model.items_)
        self.valid_users = np.zeros(0, np.int64)
        if valid is not None:
            self.truth = valid.matrix("binary").tocsr()  # (n_users, n_items) valid items
            self.valid_users = np.flatnonzero(np.diff(self.truth.indptr) > 0)

    def build_module(self) -> nn.Module:
        return self.model._new_net()

    def batches(self, epoch: int, rng: np.random.Generator) -> Iterator[Batch]:
        cfg = self.cfg
        return self.data.epoch_batches(
            cfg.max_len, cfg.batch_size, rng, n_items=self.n_items,
            n_negatives=cfg.negatives if cfg.loss == "gbce" or (
                cfg.loss == "sampled" and cfg.sampled_per == "window") else 0,
            shared_negatives=cfg.negatives if cfg.loss == "sampled"
            and cfg.sampled_per == "batch" else 0,
            length_buckets=cfg.length_buckets)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        # bf16: the forward pass and the loss under autocast; the weights (and so the
        # optimizer state and the gradients) stay fp32, and the loss is returned in fp32
        device = batch["items"].device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
            hidden = model(batch)  # (B, L, d)
            net = getattr(model, "module", model)  # the bare network under DDP
            table = net.item_table()
            loss = next_item_loss(hidden, batch, table, loss=self.cfg.loss,
                                  gbce_t=self.cfg.gbce_t, logq=self.cfg.sampled_logq)
            if self.distiller is not None and self.distiller.weight > 0:
                loss = loss + self.distiller.loss(hidden, batch, table)
        return loss.float()

    def validate(self, module: nn.Module) -> float | None:
        """NDCG@10 of the validation items ranked from the training histories, full ranking
        with training items masked (`lmrec.train.validation.ranking_ndcg`)."""
        if self.valid_users.size == 0:
            return None
        device = next(module.parameters()).device
        items = module.item_table()[1:]  # (n_items, d)

        def score_rows(users: np.ndarray) -> Tensor:  # (B,) -> (B, n_items)
            batch = self.data.take(users).last_windows(self.cfg.max_len)
            h = module({k: v.to(device) for k, v in batch.items()})[:, -1]  # (B, d)
            return h @ items.T

        return ranking_ndcg(score_rows, self.valid_users, self.model.seen_, self.truth, k=10,
                            batch=_SCORE_BATCH)
