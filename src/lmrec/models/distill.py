"""Knowledge distillation of a fitted sequential model (the teacher) into another (the student).

    student = SASRec(hidden=32, layers=1)
    student.fit(train, TrainingOptions(rng=0, teacher=big_sasrec))

The student's loss gets, at every position it trains on (every target of its training windows),

    distill_weight * T^2 * KL(softmax(teacher_logits / T) || softmax(student_logits / T))

over the whole catalogue (Hinton et al. 2015; T = `distill_temperature`). The teacher reads the
same input prefix as the student (the same window, left-padded to its own `max_len`) under
torch.no_grad in eval mode, so it draws no randomness and gets no gradient. T^2 keeps the
term's gradient on the scale of the hard-label loss's as T changes. The teacher is only an
input of `fit`: nothing of it is saved with the student.

A teacher must be a fitted sequential model over the same item vocabulary (the same items in
the same order: logits are compared item by item) that reads at least as long a history
(`max_len`), so every prefix the student sees fits its position embeddings.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmrec.errors import ConfigError

if TYPE_CHECKING:
    from lmrec.data.dataset import Dataset
    from lmrec.models.base import Recommender
    from lmrec.models.sequential import Batch, SequentialRecommender


def distill_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * mean over rows of KL(softmax(teacher / T) || softmax(student / T)).

    student_logits, teacher_logits (N, n_items); a scalar, 0 when the two are equal (up to a
    per-row constant), with gradient to the student only.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0  # no position to distil: keep the graph
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * (t * t)


def check_teacher(teacher: Recommender, student: SequentialRecommender, dataset: Dataset,
                  option: str = "teacher", *, family: type) -> SequentialRecommender:
    """`teacher` if it can teach `student` on `dataset`, else a one-line ConfigError naming
    `option` (the CLI's `--teacher`). `family` is the class a teacher must be an instance of
    (`SequentialRecommender`, passed in: this module sits below it)."""
    if teacher is student:
        raise ConfigError(f"{option}: a model cannot be its own teacher")
    if not isinstance(teacher, family):
        raise ConfigError(f"{option}: a {teacher.name!r} model cannot teach {student.name!r}; "
                          f"the teacher must be a sequential model ({family_names(family)})")
    if not getattr(teacher, "_fitted", False):
        raise ConfigError(f"{option}: the teacher model is not fitted")
    if teacher.items_ != dataset.items:
        raise ConfigError(f"{option}: the teacher knows {len(teacher.items_)} items, the "
                          f"training data {dataset.n_items}, not the same items in the same "
                          "order; train the teacher on the same data")
    if teacher.config.max_len < student.config.max_len:
        raise ConfigError(f"{option}: the teacher reads max_len={teacher.config.max_len} items, "
                          f"shorter than the student's {student.config.max_len}")
    return teacher  # type: ignore[return-value]


def family_names(family: type) -> str:
    """The names of the models of a family (its subclasses with a `name`), for messages."""
    names: set[str] = set()
    todo = [family]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if isinstance(getattr(sub, "name", None), str):
                names.add(sub.name)
    return ", ".join(sorted(names))


class Distiller:
    """The distillation term of one fit: the teacher's network (a copy, moved to the
    training device on first use) and its logits for the student's batches."""

    def __init__(self, teacher: SequentialRecommender, student_event_types: tuple[str, ...],
                 weight: float, temperature: float) -> None:
        self.teacher = teacher
        self.weight = weight
        self.temperature = temperature
        self.max_len = teacher.config.max_len
        # student behaviour token -> the teacher's token for the same behaviour (0: unknown)
        self.events = torch.tensor(
            [0] + [teacher.event_types_.index(t) + 1 if t in teacher.event_types_ else 0
                   for t in student_event_types], dtype=torch.int64)
        self._net: nn.Module | None = None
        self._table: Tensor | None = None  # (n_items, d_teacher)

    def _ready(self, device: torch.device) -> tuple[nn.Module, Tensor]:
        if self._net is None:
            # a copy: moving the teacher's own network to the device would change the teacher
            net = copy.deepcopy(self.teacher.net_).to(device).eval()
            net.requires_grad_(False)
            with torch.no_grad():
                self._table = net.item_table()[1:]
            self._net = net
        assert self._table is not None
        return self._net, self._table

    def teacher_logits(self, batch: Batch, keep: Tensor) -> Tensor:
        """(N, n_items) teacher logits at the N positions `keep` (B, L) of the student's batch."""
        items = batch["items"]
        net, table = self._ready(items.device)
        length = items.shape[1]
        pad = self.max_len - length  # windows are right-aligned: pad on the left

        def widen(x: Tensor) -> Tensor:
            return F.pad(x, (pad, 0)) if pad > 0 else x

        inputs = {"items": widen(items),
                  "events": widen(self.events.to(items.device)[batch["events"]]),
                  "gaps": widen(batch["gaps"])}
        with torch.no_grad():
            hidden = net(inputs)[:, -length:]  # (B, L, d_teacher)
            return hidden[keep] @ table.T

    def loss(self, hidden: Tensor, batch: Batch, item_table: Tensor) -> Tensor:
        """distill_weight * T^2 * KL at the target positions; hidden (B, L, d) the student's
        outputs, item_table (n_items + 1, d) its output items (row 0 = padding)."""
        keep = batch["targets"] > 0
        student = hidden[keep] @ item_table[1:].T  # (N, n_items)
        teacher = self.teacher_logits(batch, keep)
        return self.weight * distill_kl(student, teacher, self.temperature)


def n_parameters(model: SequentialRecommender) -> int:
    """Trainable parameters of a fitted sequential model's network."""
    return int(sum(np.prod(p.shape) for p in model.net_.parameters()))
