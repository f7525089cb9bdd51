"""The re-ranking stage after scoring: hard constraints, then one greedy pass.

Suitability (`ITEMCOL<=USERCOL`, also <, >=, >, ==) is a hard per-user mask: an item whose
value fails the comparison with the user's value is never shown, nor is an item without a
value. A user without the attribute (unknown user, empty cell) is treated as the most cautious
user: with <= or < only the items at the column's minimum are shown, with >= or > only those at
its maximum, with == none. Showing less is the safe side of a suitability rule (a risk level
above an unknown tolerance must not be shown).

The soft stages (mmr, calibration, exposure, freshness) and FA*IR share one greedy pass
(`lmrec.rerank.greedy`); their weights must sum to at most 1.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec import columns as C
from lmrec.errors import ConfigError
from lmrec.group_metrics import ALPHA as CALIBRATION_ALPHA
from lmrec.rerank.data import LONG_TAIL, RerankData, UserContext
from lmrec.rerank.fair import adjusted_mtable
from lmrec.rerank.greedy import (
    CalibrationObjective,
    ExposureObjective,
    MMRObjective,
    Objective,
    StaticObjective,
    greedy,
)
from lmrec.rerank.spec import SOFT, RerankSpec, parse_rerank, spec_error

POOL_MIN = 50  # at least this many candidates for the soft stages and FA*IR
POOL_FACTOR = 4  # ... or this many times k
HALF_LIFE_DAYS = 7.0
DAY = 86_400

Factory = Callable[[np.ndarray, UserContext], Objective | None]
_COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
            "==": operator.eq}


class _Suitability:
    """One hard constraint: items[ITEMCOL] OP user[USERCOL]."""

    def __init__(self, spec: RerankSpec, data: RerankData) -> None:
        item_col, self.op, self.user_col = spec.suitability_parts()
        if data.users is None:
            raise ConfigError("no user table (a model bundle from before user tables)")
        if self.user_col not in data.users.columns:
            raise ConfigError(f"no user column {self.user_col!r}")
        if item_col not in data.items.columns or item_col == C.ITEM:
            raise ConfigError(f"no item column {item_col!r}")
        numeric = self.op != "==" or data.items[item_col].dtype.is_numeric()
        if numeric:
            data.numeric(self.user_col, table="user")  # refuses a column that is not numeric
        self.values: np.ndarray = (data.numeric(item_col) if numeric else
                                   data.items[item_col].cast(pl.String).to_numpy())
        self.numeric = numeric
        known = self.values[~_missing(self.values)] if self.values.size else self.values
        self.low = known.min() if numeric and known.size else None
        self.high = known.max() if numeric and known.size else None
        self._cache: dict[Any, np.ndarray] = {}

    def mask(self, user: UserContext) -> np.ndarray:
        value = _user_value(user.attributes.get(self.user_col), self.numeric)
        if value not in self._cache:
            if len(self._cache) > 4096:  # a bounded cache: few distinct user values in practice
                self._cache.clear()
            mask = self._mask(value)
            mask.flags.writeable = False  # shared by every user with this value
            self._cache[value] = mask
        return self._cache[value]

    def _mask(self, value: Any) -> np.ndarray:
        v, op = self.values, self.op
        ok = ~_missing(v)
        if value is None:  # the safe side: the most cautious user
            if op in ("<=", "<") and self.low is not None:
                return ok & (v == self.low)
            if op in (">=", ">") and self.high is not None:
                return ok & (v == self.high)
            return np.zeros(v.size, dtype=bool)
        with np.errstate(invalid="ignore"):  # NaN (no value) compares False, as wanted
            hit = np.asarray(_COMPARE[op](v, value), dtype=bool)
        return ok & hit


class RerankPipeline:
    """Re-ranking stages built from specs against a catalogue (`RerankPipeline.build`)."""

    def __init__(self, specs: Sequence[RerankSpec], data: RerankData,
                 soft: Sequence[tuple[float, Factory]], fair: tuple[float, np.ndarray] | None,
                 suitability: Sequence[_Suitability]) -> None:
        self.specs = tuple(specs)  # arguments resolved (defaults filled in)
        self.data = data
        self._soft = [(w, f) for w, f in soft if w > 0]
        self._soft_weight = sum(w for w, _ in soft)
        self._fair = fair if fair is not None and fair[0] > 0 else None
        self._suitability = list(suitability)

    @classmethod
    def build(cls, specs: Sequence[str | RerankSpec], data: RerankData, *,
              option: str = "--rerank") -> RerankPipeline:
        """Parse and check specs against the data; ConfigError (one line naming `option` and
        the spec) for a spec that cannot be used."""
        parsed = [parse_rerank(s, option=option) for s in specs]
        texts = [s.strip() if isinstance(s, str) else str(s) for s in specs]  # as given
        seen: set[str] = set()
        for p, text in zip(parsed, texts, strict=True):
            if p.name in seen and p.name != "suitability":
                raise spec_error(text, f"{p.name} given twice", option)
            seen.add(p.name)
        total = sum(p.weight for p in parsed if p.name in SOFT)
        if total > 1.0 + 1e-9:
            joined = ", ".join(t for p, t in zip(parsed, texts, strict=True) if p.name in SOFT)
            raise spec_error(joined, f"the weights of {', '.join(SOFT)} sum to {total:g}; "
                             "they share the decision with relevance and must sum to at most 1",
                             option)
        resolved: list[RerankSpec] = []
        soft: list[tuple[float, Factory]] = []
        fair: tuple[float, np.ndarray] | None = None
        suitability: list[_Suitability] = []
        for p, text in zip(parsed, texts, strict=True):
            try:
                if p.name == "suitability":
                    suitability.append(_Suitability(p, data))
                    resolved.append(p)
                elif p.name == "fair":
                    arg = p.arg or LONG_TAIL
                    fair = (p.weight, data.protected(arg))
                    resolved.append(RerankSpec(p.name, p.weight, arg))
                else:
                    arg, factory = _SOFT_BUILDERS[p.name](p.arg, data)
                    soft.append((p.weight, factory))
                    resolved.append(RerankSpec(p.name, p.weight, arg))
            except ConfigError as exc:
                raise spec_error(text, str(exc), option) from None
        return cls(resolved, data, soft, fair, suitability)

    def __bool__(self) -> bool:
        return bool(self._soft or self._fair or self._suitability)

    def describe(self) -> str:
        """The stages with their arguments, e.g. "calibration=0.5:genres, fair=0.3:long-tail"."""
        return ", ".join(str(s) for s in self.specs)

    def pool(self, k: int) -> int:
        """How many candidates to fetch before re-ranking to k (k when nothing reorders)."""
        if not (self._soft or self._fair):
            return k
        return max(k, min(self.data.n_items, max(POOL_MIN, POOL_FACTOR * k)))

    def allowed(self, user: UserContext) -> np.ndarray | None:
        """(n_items,) bool: the items the hard constraints let this user see (None: all)."""
        mask: np.ndarray | None = None
        for s in self._suitability:
            m = s.mask(user)
            mask = m if mask is None else mask & m
        return mask

    def rerank(self, idx: np.ndarray, scores: np.ndarray, k: int, user: UserContext
               ) -> tuple[np.ndarray, np.ndarray]:
        """Best-first candidates (n,) with their model scores -> the final (<= k,) items and
        their model scores. Padding (-1), -inf scores and items the hard constraints refuse
        are dropped first."""
        idx = np.asarray(idx, dtype=np.int64).ravel()
        scores = np.asarray(scores).ravel()
        keep = (idx >= 0) & np.isfinite(scores)
        allowed = self.allowed(user)
        if allowed is not None:
            keep &= allowed[np.where(idx >= 0, idx, 0)]
        if not keep.all():
            idx, scores = idx[keep], scores[keep]
        if not (self._soft or self._fair) or idx.size <= 1:
            return idx[:k], scores[:k]
        objectives = [(w, obj) for w, f in self._soft if (obj := f(idx, user)) is not None]
        protected = table = None
        if self._fair is not None:
            p, mask = self._fair
            protected = mask[idx]
            table = adjusted_mtable(min(int(k), idx.size), float(p))
        order = greedy(scores, k, objectives, relevance_weight=1.0 - self._soft_weight,
                       protected=protected, table=table)
        return idx[order], scores[order]


def mmr(idx: np.ndarray, scores: np.ndarray, k: int, lam: float,
        pairwise: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Maximal marginal relevance re-ranking of the candidates (best first) down to k:
    the largest (1 - lam) * relevance - lam * (max similarity to those picked)."""
    if idx.size <= 1:
        return idx, scores
    order = greedy(scores, k, [(lam, MMRObjective(pairwise(idx)))])
    return idx[order], scores[order]


# --- soft stage builders: (arg, data) -> (resolved arg, per-user objective factory) -------------
def _mmr(arg: str | None, data: RerankData) -> tuple[str | None, Factory]:
    sim = data.similarity
    if sim is None:
        raise ConfigError("no item similarity (no model embeddings and no categorical or "
                          "multi-valued item column)")
    return None, lambda idx, user: MMRObjective(sim(idx))


def _calibration(arg: str | None, data: RerankData) -> tuple[str | None, Factory]:
    column = data.category_column(arg)
    dist, _ = data.item_distribution(column)
    categorised = np.asarray(dist.sum(axis=1)).ravel() > 0

    def factory(idx: np.ndarray, user: UserContext) -> Objective | None:
        h = user.history[(user.history >= 0) & (user.history < data.n_items)]
        seen = _dense_rows(dist, h)
        n_cat = int(categorised[h].sum())
        if n_cat == 0:  # nothing to calibrate to
            return None
        p = seen.sum(axis=0) / n_cat  # the mean of p(g|i) over categorised history items
        return CalibrationObjective(p, _dense_rows(dist, idx), categorised[idx],
                                    CALIBRATION_ALPHA)

    return column, factory


def _exposure(arg: str | None, data: RerankData) -> tuple[str | None, Factory]:
    arg = arg or LONG_TAIL
    codes, names = data.groups(arg)
    target = np.bincount(codes, minlength=len(names)) / max(data.n_items, 1)
    return arg, lambda idx, user: ExposureObjective(codes[idx], target)


def _freshness(arg: str | None, data: RerankData) -> tuple[str | None, Factory]:
    col, _, hl = (arg or "").partition(":")
    column = data.time_column(col or None)
    try:
        half_life = float(hl) if hl else HALF_LIFE_DAYS
    except ValueError:
        raise ConfigError(f"half-life {hl!r} is not a number of days") from None
    if not np.isfinite(half_life) or half_life <= 0:
        raise ConfigError(f"half-life must be a positive number of days, got {hl}")
    times = data.numeric(column)
    fallback = float(np.nanmax(times)) if np.isfinite(times).any() else 0.0

    def factory(idx: np.ndarray, user: UserContext) -> Objective | None:
        now = float(user.now) if user.now is not None else (
            float(data.now) if data.now is not None else fallback)
        age = np.maximum(now - times[idx], 0.0) / DAY
        return StaticObjective(np.nan_to_num(0.5 ** (age / half_life), nan=0.0))

    return f"{column}:{half_life:g}", factory


_SOFT_BUILDERS: dict[str, Callable[[str | None, RerankData], tuple[str | None, Factory]]] = {
    "mmr": _mmr, "calibration": _calibration, "exposure": _exposure, "freshness": _freshness}


# --- helpers ------------------------------------------------------------------------------------
def _dense_rows(m: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """(len(rows), n_cols) dense copy of some CSR rows (a gather, cheaper than slicing)."""
    starts, ends = m.indptr[rows], m.indptr[rows + 1]
    lengths = ends - starts
    pos = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    out = np.zeros((rows.size, m.shape[1]))
    out[np.repeat(np.arange(rows.size), lengths), m.indices[pos]] = m.data[pos]
    return out


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.array([v is None for v in values], dtype=bool)


def _user_value(value: Any, numeric: bool) -> Any:
    """The user's attribute as compared (None = unknown: the safe side)."""
    if value is None:
        return None
    if not numeric:
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(v) else v
