"""Blend: two to four models fused into one, with weights learned on held-out data.

    kind="score"  each member's scores are z-normalised per user over the items the user has not
                  seen (so members on different scales, and the seen items a member scores
                  highest, do not dominate), then summed with the weights
    kind="rank"   weighted reciprocal-rank fusion: a member ranks the unseen items (tied scores
                  share a rank) and an item gets w / (rank_constant + rank), summed over members

Weights lie on the simplex and maximise NDCG@`search_k` (lmrec.metrics, full ranking, the
training items masked) on:

  1. the validation part, `options.valid` (never the test part): the members are fitted once on
     the training data, and the search scores the validation items;
  2. without one, an internal holdout: per user (with >= 3 pairs) a seeded `holdout_share` of
     the training pairs (at least one) is held out, the members are fitted on the rest, the
     weights are searched on the held-out pairs, and the members are then refitted on every
     training pair. This costs two fits per member; the alternative, silently equal weights,
     would hide that nothing was learned. A dataset too small to hold anything out raises
     ConfigError naming both ways out (a validation part, or `weights`).

With `weights` set, nothing is searched and the members are fitted once: the way to refit a
blend on train + valid and test once (`refit_with_weights`). Search (`search`): the full
simplex grid at `weight_step` for up to three members; for four, coordinate ascent from equal
weights (each member's weight over the grid's values, the others rescaled in proportion).
The search scores the members' fitted state (the "trained" history policy).

Members come from `lmrec.models.registry.create_model`; this module imports the registry, so
the registry must not import this module (register Blend from `lmrec.models` instead).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any, Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from lmrec.data.dataset import Dataset, Sequences
from lmrec.models.base import Recommender
from lmrec.models.blend_search import (
    NdcgOfWeights,
    combine,
    coordinate_ascent,
    holdout,
    search_users,
    simplex_grid,
)
from lmrec.models.hyperparams import ModelConfig
from lmrec.models.redaction import UserRows
from lmrec.models.registry import create_model, model_class
from lmrec.train.options import TrainingOptions


def _names(value: Any) -> Any:
    """CLI strings "ease,als" -> ("ease", "als")."""
    if isinstance(value, str):
        return tuple(v for v in value.replace(" ", "").split(",") if v)
    return value


def _floats(value: Any) -> Any:
    """CLI strings "0.7,0.3" -> (0.7, 0.3); "" -> None (search the weights)."""
    if isinstance(value, str):
        parts = [v for v in value.replace(" ", "").split(",") if v]
        return tuple(float(v) for v in parts) if parts else None
    return value


def _json(value: Any) -> Any:
    """CLI strings '{"ease": {"l2": 300}}' -> a dict."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object ({exc.msg})") from None
    return value


class BlendConfig(ModelConfig):
    members: Annotated[tuple[str, ...], BeforeValidator(_names)] = Field(
        ("ease", "als"), description="member model names, two to four, each at most once")
    member_params: Annotated[dict[str, dict[str, Any]], BeforeValidator(_json)] = Field(
        default_factory=dict, description="hyperparameters per member name (JSON on the CLI)")
    kind: Literal["score", "rank"] = Field(
        "score", description="score: per-user z-scores summed; rank: reciprocal-rank fusion")
    weights: Annotated[tuple[float, ...] | None, BeforeValidator(_floats)] = Field(
        None, description="fixed member weights (normalised to sum 1): no search")
    weight_step: float = Field(0.1, gt=0, le=0.5, description="grid step of the search; "
                               "1/step must be a whole number")
    search: Literal["auto", "grid", "ascent"] = Field(
        "auto", description="auto: grid for up to 3 members, coordinate ascent for 4")
    ascent_rounds: int = Field(4, ge=1, description="coordinate-ascent sweeps at most")
    search_k: int = Field(10, ge=1, description="the search maximises NDCG at this cutoff")
    search_users: int = Field(10_000, ge=1, description="users the search scores at most "
                              "(a seeded sample of them beyond that)")
    holdout_share: float = Field(0.1, gt=0, lt=1, description="share of each user's training "
                                 "pairs held out for the search when there is no valid part")
    rank_constant: float = Field(60.0, gt=0, description="c in w / (c + rank) for kind=rank")

    @field_validator("members")
    @classmethod
    def _check_members(cls, members: tuple[str, ...]) -> tuple[str, ...]:
        if not 2 <= len(members) <= 4:
            raise ValueError(f"a blend has two to four members, got {len(members)}")
        if len(set(members)) != len(members):
            raise ValueError("each member model may appear once (members are named by model)")
        for name in members:
            if model_class(name) is Blend:  # an unknown name raises ConfigError here
                raise ValueError("a blend cannot be a member of a blend")
        return members

    @field_validator("member_params")
    @classmethod
    def _check_params(cls, params: dict[str, dict[str, Any]], info: ValidationInfo
                      ) -> dict[str, dict[str, Any]]:
        members = info.data.get("members", ())
        out = {}
        for name, p in params.items():
            if name not in members:
                raise ValueError(f"parameters for {name!r}, which is not a member")
            # checked by the member's own config now, and stored as JSON values, so that a
            # saved blend's config loads equal to the fitted one
            dumped = model_class(name).Config.from_params(p).model_dump(mode="json")
            out[name] = {k: dumped[k] for k in p}
        return out

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, weights: tuple[float, ...] | None, info: ValidationInfo
                       ) -> tuple[float, ...] | None:
        if weights is None:
            return None
        members = info.data.get("members", ())
        w = np.asarray(weights, dtype=np.float64)
        if w.size != len(members) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights needs {len(members)} non-negative numbers, not all 0")
        return tuple(float(v) for v in w / w.sum())

    @field_validator("weight_step")
    @classmethod
    def _check_step(cls, step: float) -> float:
        if abs(1 / step - round(1 / step)) > 1e-6:
            raise ValueError(f"1/weight_step must be a whole number, got 1/{step}")
        return step


class Blend(Recommender):
    """A weighted fusion of 2-4 fitted models. State: the members and `weights_`."""

    name = "blend"
    Config = BlendConfig
    config: BlendConfig

    # --- fitting ----------------------------------------------------------------------
    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        rng = options.generator
        n = len(cfg.members)
        # one seed per member, drawn first, so a member's fit does not depend on the others
        seeds = [int(s) for s in rng.integers(0, 2**63 - 1, size=n)]
        valid = options.check_valid(dataset)
        refit = cfg.weights is None and valid is None
        budget = options.time_budget_s
        share = None if budget is None else budget / (n * (2 if refit else 1))

        def fit_all(data: Dataset, opts: TrainingOptions) -> list[Recommender]:
            return [create_model(name, cfg.member_params.get(name)).fit(
                data, replace(opts, rng=seed, time_budget_s=share))
                for name, seed in zip(cfg.members, seeds, strict=True)]

        trials = np.zeros((0, n + 1))
        if cfg.weights is not None:
            self.members_ = fit_all(dataset, options)
            weights = np.asarray(cfg.weights)
        elif valid is not None:
            self.members_ = fit_all(dataset, options)
            weights, trials = self._search(self.members_, self.seen_,
                                           valid.matrix("binary").tocsr(), rng)
        else:
            fit_part, held = holdout(dataset, cfg.holdout_share, rng)
            members = fit_all(fit_part, replace(options, valid=None))
            weights, trials = self._search(members, fit_part.matrix("binary").tocsr().astype(
                np.float32), held, rng)
            self.members_ = fit_all(dataset, options)
        self.weights_ = np.asarray(weights, dtype=np.float64)
        # every weight vector tried and its NDCG@search_k: (tried, n_members + 1)
        self.weight_search_ = trials

    def refit_with_weights(self, dataset: Dataset, weights: Mapping[str, float] | tuple[
            float, ...] | np.ndarray | None = None, options: TrainingOptions | None = None
                           ) -> Self:
        """Fit the members on `dataset` (e.g. train + valid) with fixed weights, the learned
        ones by default, without a search; the config then holds those weights."""
        if weights is None:
            self._check_fitted()
            weights = tuple(self.weights_)
        elif isinstance(weights, Mapping):
            weights = tuple(float(weights.get(m, 0.0)) for m in self.config.members)
        self.config = self.Config.from_params(
            {**self.config.model_dump(mode="json"), "weights": tuple(weights)})
        return self.fit(dataset, options)

    @property
    def learned_weights(self) -> dict[str, float]:
        """{member name: weight} in use."""
        self._check_fitted()
        return {m: float(w) for m, w in zip(self.config.members, self.weights_, strict=True)}

    def named_members(self) -> dict[str, Recommender]:
        """{member name: the fitted member}, e.g. to evaluate each one on the blend's split."""
        self._check_fitted()
        return dict(zip(self.config.members, self.members_, strict=True))

    # --- the weight search --------------------------------------------------------------
    def _search(self, members: list[Recommender], seen: sp.csr_matrix, truth: sp.csr_matrix,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The best weights for `members` (fitted on the rows `seen`) at ranking `truth`, and
        every (weights..., ndcg) tried, (tried, n_members + 1)."""
        cfg = self.config
        users = search_users(seen, truth, cfg.search_users, rng)
        n, steps = len(members), round(1 / cfg.weight_step)
        evaluate = NdcgOfWeights(members, self._normalised, users, seen, truth, cfg.search_k)
        if cfg.search == "grid" or (cfg.search == "auto" and n <= 3):
            grid = simplex_grid(n, steps)
            values = evaluate(grid)
            best = grid[int(np.argmax(values))]  # the grid is ordered most even first
        else:
            best = coordinate_ascent(evaluate, n, steps, cfg.ascent_rounds)
        return np.asarray(best), np.array([[*w, v] for w, v in evaluate.tried.items()])

    # --- scoring ------------------------------------------------------------------------
    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        known = (self.seen_[users] if histories is None
                 else self._history_rows(histories, "binary"))
        stack = self._normalised([m.score(users, histories) for m in self.members_], known)
        return combine(stack, self.weights_)

    def _normalised(self, scores: list[np.ndarray], known: sp.csr_matrix) -> np.ndarray:
        """(n_members, B, n_items) member scores on one scale, per user: z-scores or reciprocal
        ranks computed over the items outside `known` (B, n_items), the ones a list can hold."""
        mask = np.zeros(known.shape, dtype=bool)
        coo = known.tocoo()
        mask[coo.row, coo.col] = True
        fn = _zscores if self.config.kind == "score" else _reciprocal_ranks
        return np.stack([fn(s, mask, self.config.rank_constant) for s in scores])

    def item_similarity(self, src: np.ndarray, targets: np.ndarray | None = None
                        ) -> np.ndarray:
        """The notion of the member with the largest weight (similarities do not add up
        across models the way scores do)."""
        self._check_fitted()
        return self.members_[int(np.argmax(self.weights_))].item_similarity(src, targets)

    # --- erasure and persistence ---------------------------------------------------------
    def user_state(self) -> tuple[UserRows, ...]:
        # the members' own per-user state, by reference
        return tuple(s for m in self.members_ for s in m.user_state())

    def _redact_users(self, user_idx: np.ndarray) -> None:
        # a member forgets in full (its seen items, its columns) only through its own method
        for member in self.members_:
            member.redact_users(user_idx)

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {"weights": self.weights_, "weight_search": self.weight_search_}
        for i, member in enumerate(self.members_):
            out.update({f"m{i}.{k}": v for k, v in member._arrays().items()})
        return out

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.weights_ = np.asarray(arrays["weights"], dtype=np.float64)
        self.weight_search_ = np.asarray(arrays["weight_search"])
        members = []
        for i, name in enumerate(self.config.members):
            member = create_model(name, self.config.member_params.get(name))
            # a member was fitted on the blend's data: it shares the blend's common state
            member.users_, member.items_ = self.users_, self.items_
            member.seen_, member.popularity_ = self.seen_, self.popularity_
            member.behaviour_weights_ = dict(self.behaviour_weights_)
            prefix = f"m{i}."
            member._load_arrays({k.removeprefix(prefix): v for k, v in arrays.items()
                                 if k.startswith(prefix)})
            member._fitted = True
            members.append(member)
        self.members_ = members


# --- per-user normalisation and fusion ------------------------------------------------------
def _zscores(s: np.ndarray, mask: np.ndarray, _c: float) -> np.ndarray:
    """(B, n) z-scores with the mean and spread of each row's unmasked entries."""
    free = ~mask
    count = np.maximum(free.sum(axis=1, keepdims=True), 1)
    mean = np.where(free, s, 0).sum(axis=1, keepdims=True, dtype=np.float64) / count
    dev = s - mean
    std = np.sqrt(np.where(free, dev * dev, 0).sum(axis=1, keepdims=True) / count)
    # a member that does not tell the free items apart contributes 0, not noise
    return (dev / np.where(std > 1e-12, std, np.inf)).astype(np.float32)


def _reciprocal_ranks(s: np.ndarray, mask: np.ndarray, c: float) -> np.ndarray:
    """(B, n) 1 / (c + rank): rank 1 is the best unmasked item, tied scores share their best
    rank, and the masked items rank after every unmasked one (finite, in score order)."""
    # scores equal to 6 digits of the row's scale are a tie: float noise of ~1e-7 (a batch
    # computed in another order) must not reorder near-equal items and move their ranks
    scale = np.where(mask, 0, np.abs(s)).max(axis=1, keepdims=True).astype(np.float64)
    s = np.round(s / np.where(scale > 0, scale, 1.0), 6)
    order = np.lexsort((-s, mask), axis=-1)  # unmasked first, then by score, best first
    ordered = np.take_along_axis(s, order, axis=1)
    ordered_mask = np.take_along_axis(mask, order, axis=1)
    starts = np.ones(s.shape, dtype=bool)
    starts[:, 1:] = (ordered[:, 1:] != ordered[:, :-1]) | (ordered_mask[:, 1:]
                                                            != ordered_mask[:, :-1])
    pos = np.arange(s.shape[1])
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)  # a tie's first position
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, first + 1, axis=1)
    return (1.0 / (c + ranks)).astype(np.float32)
