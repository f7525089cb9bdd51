"""From collected events and tables to a Dataset, with a report of every change."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lmrec import columns as C
from lmrec.collect.events import ColumnMapping, EventTable, to_events, unify_id_dtypes
from lmrec.collect.readers import BadRowPolicy, Table, read_table
from lmrec.columns import Role
from lmrec.data.dataset import Dataset
from lmrec.data.vocab import IdVocabulary
from lmrec.errors import InputError
from lmrec.prepare.config import Dedupe, Keep, MissingEvent, MissingOptional, PrepareConfig
from lmrec.prepare.features import align_and_encode, derived_attributes, type_table
from lmrec.prepare.kcore import kcore_mask
from lmrec.prepare.report import QualityReport, SourceRecord, Stage

Source = str | Path | Table | EventTable | Any  # a path, a DataFrame, or an already read table
_POS = "__pos"
_KEY = "__source_key"  # a hash of the source columns outside the five canonical ones


@dataclass
class Prepared:
    dataset: Dataset
    report: QualityReport

    def save(self, folder: str | Path) -> Path:
        path = self.dataset.save(folder)
        self.report.save(path)
        return path


def prepare(
    events: Source | Sequence[Source],
    users: Source | None = None,
    items: Source | None = None,
    *,
    mapping: ColumnMapping | None = None,
    user_id_col: str | None = None,
    item_id_col: str | None = None,
    config: PrepareConfig | None = None,
    on_bad_rows: BadRowPolicy | str = BadRowPolicy.FAIL,
    name: str = "dataset",
    now: float | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Prepared:
    """Validate, clean, filter and index events; type and encode attribute tables.

    `events` is one source or several (merged). Paths are read with `read_table` defaults;
    read files yourself (`read_table`, `to_events`) for custom delimiters or encodings.
    `user_id_col`/`item_id_col` name the id column of the user/item tables (default: the
    event mapping's user/item column). Every dropped row is counted in the report.
    """
    mapping = mapping or ColumnMapping()
    config = config or PrepareConfig()
    policy = BadRowPolicy(on_bad_rows)
    step = on_step or (lambda _msg: None)
    report = QualityReport()

    # --- collect ----------------------------------------------------------------------
    sources = list(events) if isinstance(events, list | tuple) else [events]
    if not sources:
        raise InputError("no event source given")
    tables: list[EventTable] = []
    for src in sources:
        step(f"reading {_label(src)}")
        et = src if isinstance(src, EventTable) else to_events(
            _as_table(src, policy), mapping, on_bad_rows=policy,
            time_format=config.time_format, allow_negative_time=config.allow_negative_time)
        tables.append(et)
        bad: dict[str, int] = {}
        for b in et.bad_rows:
            bad[b.reason] = bad.get(b.reason, 0) + 1
        report.sources.append(SourceRecord(
            source=et.source, kind="events", rows_read=et.rows_read, rows_kept=et.frame.height,
            bad_rows=bad, examples=[b.detail for b in et.bad_rows[:5]],
            ignored_columns=et.ignored_columns, columns=dict(et.columns)))
    frames = unify_id_dtypes([t.frame for t in tables], [C.USER, C.ITEM])
    if any(t.source_key is not None for t in tables):  # columns beyond the five canonical ones
        frames = [f.with_columns(t.source_key.alias(_KEY) if t.source_key is not None
                                 else pl.lit(None, pl.UInt64).alias(_KEY))
                  for f, t in zip(frames, tables, strict=True)]
    ev = pl.concat(frames, how="vertical_relaxed").with_row_index(_POS)
    for kind, found in (("user", derived_attributes(tables, "user")),
                        ("item", derived_attributes(tables, "item"))):
        if found is not None and (users if kind == "user" else items) is not None:
            report.flags.append(f"{found.source} not used: a {kind} table is given")
        elif found is not None and kind == "user":
            users, user_id_col = found, C.USER
        elif found is not None:
            items, item_id_col = found, C.ITEM

    step("cleaning events")
    ev = _missing(ev, config, report)
    ev = _time_range(ev, config, report, time.time() if now is None else now)
    ev = _dedupe(ev, config, report)
    ev, bots = _noise(ev, config, report)
    ev = _min_rating(ev, config, report)

    # --- attribute tables (read before k-core so that id types can be unified) --------
    user_frame = user_roles = item_frame = item_roles = None
    user_rec = item_rec = None
    if users is not None:
        step(f"reading {_label(users)}")
        user_frame, user_roles, user_rec = type_table(
            _as_table(users, policy), user_id_col or mapping.user, C.USER, config.user_roles,
            separator=config.multi_separator, on_bad_rows=policy, kind="user")
        report.sources.append(SourceRecord(_label(users), "users", user_rec.rows_in,
                                           user_rec.rows_out))
    if items is not None:
        step(f"reading {_label(items)}")
        item_frame, item_roles, item_rec = type_table(
            _as_table(items, policy), item_id_col or mapping.item, C.ITEM, config.item_roles,
            separator=config.multi_separator, on_bad_rows=policy, kind="item")
        report.sources.append(SourceRecord(_label(items), "items", item_rec.rows_in,
                                           item_rec.rows_out))
    if user_frame is not None and bots is not None:
        # a bot's attribute row must not bring it back as a user without events
        n_before = user_frame.height
        user_frame = user_frame.filter(~pl.col(C.USER).cast(pl.String).is_in(
            bots.cast(pl.String).implode()))
        if user_rec is not None and user_frame.height < n_before:
            user_rec.dropped["user removed as a bot"] = n_before - user_frame.height
            user_rec.rows_out = user_frame.height
    ev, user_frame = _unify(ev, user_frame, C.USER)
    ev, item_frame = _unify(ev, item_frame, C.ITEM)

    step("filtering")
    ev = _kcore(ev, config, report)
    ev = _weights(ev, config, report)

    # --- vocabularies: event ids, plus catalogue-only ids unless a core filter is set ----
    step("indexing")
    user_ids = ev[C.USER]
    if user_frame is not None and not config.user_k:
        user_ids = pl.concat([user_ids, user_frame[C.USER]])
    item_ids = ev[C.ITEM]
    if item_frame is not None and not config.item_k:
        item_ids = pl.concat([item_ids, item_frame[C.ITEM]])
    user_vocab = IdVocabulary.from_values(user_ids)
    item_vocab = IdVocabulary.from_values(item_ids)
    del user_ids, item_ids
    if len(user_vocab) == 0 or len(item_vocab) == 0:
        raise InputError("no events left after cleaning and filtering; see the quality report "
                         "(try a smaller --core or --min-rating)")
    # external ids are dropped before the sort so that it copies as few columns as possible
    user_idx = pl.Series(C.USER_IDX, user_vocab.index(ev[C.USER]), dtype=pl.Int32)
    item_idx = pl.Series(C.ITEM_IDX, item_vocab.index(ev[C.ITEM]), dtype=pl.Int32)
    ev = ev.select(user_idx, item_idx, C.EVENT, C.TIME, C.VALUE, C.WEIGHT, _POS)
    del user_idx, item_idx
    events_out = ev.sort([C.USER_IDX, C.TIME, _POS], nulls_last=False).drop(_POS)
    del ev

    user_table, user_schema = align_and_encode(user_frame, user_roles or {}, user_vocab.ids,
                                               C.USER, user_rec)
    item_table, item_schema = align_and_encode(item_frame, item_roles or {}, item_vocab.ids,
                                               C.ITEM, item_rec)
    for rec in (user_rec, item_rec):
        if rec is not None:
            report.tables.append(rec)

    kept = events_out.height
    if report.rows_read - report.rows_dropped != kept:  # the report must account for every row
        raise AssertionError(
            f"quality report out of balance: {report.rows_read} read, "
            f"{report.rows_dropped} dropped, {kept} kept")
    report.summary = {
        "users": len(user_vocab),
        "items": len(item_vocab),
        "events": kept,
        "users_without_events": len(user_vocab) - events_out[C.USER_IDX].n_unique(),
        "items_without_events": len(item_vocab) - events_out[C.ITEM_IDX].n_unique(),
        "density": round(_distinct_pairs(events_out, len(item_vocab))
                         / (len(user_vocab) * len(item_vocab)), 6),
        "behaviours": dict(sorted(
            (str(k), int(v)) for k, v in events_out[C.EVENT].value_counts().iter_rows())),
    }
    dataset = Dataset(
        users=user_vocab, items=item_vocab, events=events_out,
        user_table=user_table, item_table=item_table,
        user_schema=user_schema, item_schema=item_schema,
        behaviour_weights=_used_weights(events_out, config), name=name,
        metadata={"prepare_config": config.model_dump(mode="json"),
                  "sources": [s.source for s in report.sources]},
    )
    return Prepared(dataset, report)


# --- helpers ------------------------------------------------------------------------------
def _distinct_pairs(events: pl.DataFrame, n_items: int) -> int:
    """Distinct (user, item) pairs, hashed as one int64 key rather than a two-column struct."""
    key = events[C.USER_IDX].cast(pl.Int64) * n_items + events[C.ITEM_IDX].cast(pl.Int64)
    return key.n_unique()


def _label(src: Any) -> str:
    if isinstance(src, Table | EventTable):
        return src.source
    if isinstance(src, str | Path):
        return str(src)
    return "<DataFrame>"


def _as_table(src: Any, policy: BadRowPolicy) -> Table:
    if isinstance(src, Table):
        return src
    return read_table(src, on_bad_rows=policy)


def _unify(ev: pl.DataFrame, frame: pl.DataFrame | None, col: str):
    if frame is None:
        return ev, frame
    a, b = unify_id_dtypes([ev, frame], [col])
    return a, b


def _stage(report: QualityReport, name: str, rows_in: int) -> Stage:
    st = Stage(name=name, rows_in=rows_in, rows_out=rows_in)
    report.stages.append(st)
    return st


def _drop(ev: pl.DataFrame, mask: pl.Series | pl.Expr, st: Stage, reason: str) -> pl.DataFrame:
    """Drop rows where `mask` is true, counting them under `reason`."""
    m = ev.select(mask).to_series() if isinstance(mask, pl.Expr) else mask
    n = int(m.fill_null(False).sum())
    st.rows_out = ev.height - n
    if n == 0:  # no copy of a frame that may hold tens of millions of rows
        return ev
    st.dropped[reason] = st.dropped.get(reason, 0) + n
    return ev.filter(~m.fill_null(False))


def _missing(ev: pl.DataFrame, cfg: PrepareConfig, report: QualityReport) -> pl.DataFrame:
    st = _stage(report, "missing values", ev.height)
    n_event = ev[C.EVENT].null_count()
    if n_event:
        if cfg.missing_event is MissingEvent.FILL:
            ev = ev.with_columns(pl.col(C.EVENT).fill_null(cfg.default_event))
            st.changed[f"missing behaviour type set to {cfg.default_event!r}"] = n_event
        else:
            ev = _drop(ev, pl.col(C.EVENT).is_null(), st, "missing behaviour type")
    if cfg.missing_timestamp is MissingOptional.DROP:
        ev = _drop(ev, pl.col(C.TIME).is_null(), st, "missing timestamp")
    elif (n := ev[C.TIME].null_count()) and n < ev.height:
        st.notes.append(f"{n} events have no timestamp (kept)")
    if cfg.missing_value is MissingOptional.DROP:
        ev = _drop(ev, pl.col(C.VALUE).is_null(), st, "missing value")
    elif (n := ev[C.VALUE].null_count()) and n < ev.height:
        st.notes.append(f"{n} events have no value (kept)")
    st.rows_out = ev.height
    return ev


def _time_range(ev: pl.DataFrame, cfg: PrepareConfig, report: QualityReport,
                now: float) -> pl.DataFrame:
    st = _stage(report, "time range", ev.height)
    t = pl.col(C.TIME)
    if cfg.time_min is not None:
        ev = _drop(ev, t.is_not_null() & (t < cfg.time_min), st,
                   f"timestamp before time_min ({cfg.time_min})")
    if cfg.time_max is not None:
        ev = _drop(ev, t.is_not_null() & (t > cfg.time_max), st,
                   f"timestamp after time_max ({cfg.time_max})")
    if cfg.future_tolerance_s is not None:
        limit = int(now + cfg.future_tolerance_s)
        ev = _drop(ev, t.is_not_null() & (t > limit), st, "timestamp in the future")
    return ev


def _order_for_keep(ev: pl.DataFrame) -> pl.DataFrame:
    return ev.sort([C.TIME, _POS], nulls_last=False)


def _dedupe(ev: pl.DataFrame, cfg: PrepareConfig, report: QualityReport) -> pl.DataFrame:
    st = _stage(report, "deduplicate", ev.height)
    if cfg.dedupe is Dedupe.NONE:
        return ev.drop(_KEY, strict=False)
    # Hash rows first and compare in full only rows whose hash repeats: far less memory
    # than a multi-column unique over every row. The first copy in file order is kept.
    # Every source column counts: the other columns by their hash (`_KEY`).
    cols = [*C.EVENT_COLUMNS, *([_KEY] if _KEY in ev.columns else [])]
    row_hash = ev.select(cols).hash_rows()
    candidates = ev.filter(row_hash.is_duplicated())
    ev = ev.drop(_KEY, strict=False)
    if candidates.height:
        first = candidates.select(pl.struct(cols).is_first_distinct()).to_series()
        dup_pos = candidates.filter(~first)[_POS]
        ev = _drop(ev, pl.col(_POS).is_in(dup_pos.implode()), st, "exact duplicate")
    key = {Dedupe.USER_ITEM: [C.USER, C.ITEM],
           Dedupe.USER_ITEM_EVENT: [C.USER, C.ITEM, C.EVENT]}.get(cfg.dedupe)
    if key is not None:
        n = ev.height
        if cfg.dedupe_keep is Keep.MAX_VALUE:
            ordered = ev.sort([C.VALUE, C.TIME, _POS], nulls_last=False)
            ev = ordered.unique(subset=key, keep="last").sort(_POS)
        else:
            ordered = _order_for_keep(ev)
            keep = "first" if cfg.dedupe_keep is Keep.FIRST else "last"
            ev = ordered.unique(subset=key, keep=keep).sort(_POS)
        if n - ev.height:
            st.dropped[f"duplicate ({', '.join(key)}), {cfg.dedupe_keep} kept"] = n - ev.height
    st.rows_out = ev.height
    return ev


def _noise(ev: pl.DataFrame, cfg: PrepareConfig,
           report: QualityReport) -> tuple[pl.DataFrame, pl.Series | None]:
    """Drop bots, then bursts; returns the events and the ids of the users removed as bots."""
    st = _stage(report, "noise", ev.height)
    counts = ev.group_by(C.USER).len()
    bots: pl.Series | None = None
    if cfg.max_user_events is not None:
        bots = counts.filter(pl.col("len") > cfg.max_user_events)[C.USER]
        if bots.len():
            ev = _drop(ev, pl.col(C.USER).is_in(bots.implode()), st,
                       f"user with more than {cfg.max_user_events} events (bot)")
            st.notes.append(f"{bots.len()} users removed as bots")
    elif counts.height >= 20:
        c = counts["len"].cast(pl.Float64)
        med = float(c.median() or 0.0)
        mad = float((c - med).abs().median() or 0.0) or 1.0
        limit = med + 20 * 1.4826 * mad
        heavy = counts.filter(pl.col("len") > limit)
        if heavy.height:
            report.flags.append(
                f"{heavy.height} users have more than {limit:.0f} events (median {med:.0f}); "
                f"the busiest has {int(heavy['len'].max() or 0)}. Possible bots: set "
                "max_user_events (--max-user-events) to drop them")
    # bursts after bots, so that a bot is recognised by its whole activity
    if cfg.burst_max is not None:
        # an event is part of a burst when the event burst_max places earlier (same user)
        # is less than burst_window_s old: more than burst_max events in the window
        ordered = ev.sort([C.USER, C.TIME, _POS], nulls_last=False)
        prev = pl.col(C.TIME).shift(cfg.burst_max).over(C.USER)
        ordered = ordered.with_columns(
            ((pl.col(C.TIME) - prev) < cfg.burst_window_s).fill_null(False).alias("__burst"))
        ev = _drop(ordered, pl.col("__burst"), st,
                   f"burst (> {cfg.burst_max} events in {cfg.burst_window_s:g} s)")
        ev = ev.drop("__burst").sort(_POS)
    st.rows_out = ev.height
    return ev, bots


def _min_rating(ev: pl.DataFrame, cfg: PrepareConfig, report: QualityReport) -> pl.DataFrame:
    st = _stage(report, "minimum rating", ev.height)
    if cfg.min_rating is None:
        return ev
    if ev[C.VALUE].null_count() == ev.height:
        st.notes.append("min_rating ignored: the events have no value column")
        return ev
    return _drop(ev, pl.col(C.VALUE).is_not_null() & (pl.col(C.VALUE) < cfg.min_rating), st,
                 f"value below min_rating ({cfg.min_rating:g})")


def _kcore(ev: pl.DataFrame, cfg: PrepareConfig, report: QualityReport) -> pl.DataFrame:
    st = _stage(report, "k-core", ev.height)
    if not (cfg.user_k or cfg.item_k):
        return ev
    u = ev[C.USER].rank("dense").to_numpy().astype(np.int64) - 1
    i = ev[C.ITEM].rank("dense").to_numpy().astype(np.int64) - 1
    keep = kcore_mask(u, i, cfg.user_k, cfg.item_k)
    return _drop(ev, pl.Series(~keep), st,
                 f"k-core (users >= {cfg.user_k or 1}, items >= {cfg.item_k or 1} events)")


def _weights(ev: pl.DataFrame, cfg: PrepareConfig, report: QualityReport) -> pl.DataFrame:
    st = _stage(report, "behaviour weights", ev.height)
    types = ev[C.EVENT].unique().to_list()
    unknown = sorted(t for t in types if t not in cfg.behaviour_weights)
    if unknown:
        st.notes.append(f"behaviour types without a configured weight, given "
                        f"{cfg.unknown_behaviour_weight:g}: {unknown}")
    weights = {t: cfg.behaviour_weights.get(t, cfg.unknown_behaviour_weight) for t in types}
    return ev.with_columns(
        pl.col(C.EVENT).replace_strict(weights, return_dtype=pl.Float32).alias(C.WEIGHT))


def _used_weights(ev: pl.DataFrame, cfg: PrepareConfig) -> dict[str, float]:
    return {t: cfg.behaviour_weights.get(t, cfg.unknown_behaviour_weight)
            for t in sorted(ev[C.EVENT].unique().to_list())}


def role_overrides(pairs: Sequence[str]) -> dict[str, Role]:
    """Parse ["title=text", "genres=multi"] into a role mapping."""
    out: dict[str, Role] = {}
    for p in pairs:
        col, sep, role = p.partition("=")
        if not sep:
            raise InputError(f"role override {p!r} is not COLUMN=ROLE")
        try:
            out[col.strip()] = Role(role.strip())
        except ValueError:
            raise InputError(f"unknown role {role!r} in {p!r}; expected one of "
                             f"{[r.value for r in Role]}") from None
    return out


def weights_from_pairs(pairs: Mapping[str, float] | Sequence[str]) -> dict[str, float]:
    if isinstance(pairs, Mapping):
        return dict(pairs)
    out: dict[str, float] = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise InputError(f"behaviour weight {p!r} is not TYPE=NUMBER") from None
        if not sep:
            raise InputError(f"behaviour weight {p!r} is not TYPE=NUMBER")
    return out
