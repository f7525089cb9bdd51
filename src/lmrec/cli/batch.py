"""`lmrec similar`, `lmrec recommend --all-users` (a trained model's answers in bulk) and
`lmrec recommend --user U --rerank ... --explain` (the serving engine's answers).

All read a folder written by `lmrec train` (or any saved model) and never retrain. Batch
scoring writes one Parquet row per (user, rank): `user`, `rank` (1 = best), `item`, `score`,
users in the model's order, scored `BATCH_USERS` at a time so memory stays bounded.

With --rerank or --explain, `recommend` answers through `lmrec.serve.engine.Engine` over the
bundle, the code behind `GET /v1/users/{user}/recommendations` (the training history, no live
events): the re-rankers read the bundle's item and user tables, and each item comes with the
engine's `because` (the history item that explains it) and `reason`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
import typer

from lmrec import columns as C
from lmrec.cli.checks import check_out, check_range
from lmrec.console import err, out, print_json, steps, table
from lmrec.errors import ConfigError

BATCH_USERS = 4096  # users scored at once by --all-users


def similar(
    model_dir: Annotated[Path, typer.Argument(help="A folder written by `lmrec train`.")],
    item: Annotated[list[str], typer.Option("--item", help="Item id; repeatable.")],
    k: Annotated[int, typer.Option("--k", help="How many similar items.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per item.")] = False,
) -> None:
    """The items most similar to each --item, by the model's own notion of similarity."""
    from lmrec.models import load_model

    check_range("--k", k, low=1)
    rec = load_model(model_dir)
    idx = rec.item_indices(item, "given to --item")
    top, vals = rec.similar_items(idx, k)
    records = [{"item": rec.items_.to_python(int(i)),
                "similar": [{"item": rec.items_.to_python(int(j)), "score": round(float(v), 6)}
                            for j, v in zip(row, row_vals, strict=True)
                            if j >= 0 and np.isfinite(v)]}
               for i, row, row_vals in zip(idx, top, vals, strict=True)]
    if as_json:
        for r in records:
            print_json(r)
        return
    titles = item_titles(model_dir)
    for r in records:
        rows = ranked_rows(r["similar"], titles)
        label = titles.get(r["item"], "")
        out.print(table(f"Similar to {r['item']} {label} ({rec.name})".replace("  ", " "),
                        ["rank", "item", "title", "score"], rows))


def recommend_all_users(rec: Any, path: Path, k: int, include_seen: bool) -> None:
    """Top-k of every training user of `rec` to the Parquet file `path` (module docstring)."""
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a folder; expected a Parquet file to write")
    check_out(path.parent, "--out")
    n = len(rec.users_)
    parts = []
    with steps(f"scoring {n} users") as step:
        for start in range(0, n, BATCH_USERS):
            users = np.arange(start, min(start + BATCH_USERS, n))
            step(f"users {start + 1}-{users[-1] + 1}")
            top, vals = rec.recommend_idx(users, k, exclude_seen=not include_seen)  # (B, k)
            keep = (top >= 0) & np.isfinite(vals)
            rows, ranks = np.nonzero(keep)
            parts.append(pl.DataFrame({
                "user": rec.users_.ids.gather(users[rows]),
                "rank": (ranks + 1).astype(np.int32),
                "item": rec.items_.ids.gather(top[rows, ranks]),
                "score": vals[rows, ranks].astype(np.float32)}))
    frame = pl.concat(parts) if parts else pl.DataFrame()
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    err.print(f"Wrote {frame.height} recommendations for {n} users to {path}")


def recommend_served(model_dir: Path, users: list[str], k: int, include_seen: bool,
                     strict: bool, specs: list[Any], explain: bool, as_json: bool) -> None:
    """Each user's top-k from the serving engine over the bundle (module docstring)."""
    from lmrec.cli.rerank import named
    from lmrec.errors import UnknownUserError
    from lmrec.serve.engine import Query
    from lmrec.serve.service import build_engine

    engine = build_engine(model_dir)
    if specs:
        named(lambda: engine.rerank_pipeline(specs))  # one line naming --rerank, before any
    query = Query(k=k, exclude_seen=not include_seen, explain=explain,
                  rerank=tuple(str(s) for s in specs))
    records = []
    for raw in users:
        _, public, idx = engine.user_key(raw)
        if idx < 0 and strict:
            raise UnknownUserError(f"unknown user id {raw!r} (the model was not trained on it)")
        hist, n_live = engine.history(idx, [])
        items, note = engine.recommend(idx, hist, n_live, query)
        record: dict[str, Any] = {"user": public, "items": [
            {"item": s.item, "score": s.score,
             **({"because": s.because, "reason": s.reason} if explain else {})}
            for s in items]}
        if note:
            record["note"] = note
        records.append(record)
    if as_json:
        for r in records:
            print_json(r)
        return
    titles = item_titles(model_dir)
    described = engine.rerank_pipeline(specs).describe() if specs else ""
    by = f", re-ranked by {described}" if described else ""
    columns = ["rank", "item", "title", "score", *(("because", "reason") if explain else ())]
    for r in records:
        if "note" in r:
            err.print(f"[yellow]note:[/] user {r['user']}: {r['note']}")
        rows = [(n, e["item"], titles.get(e["item"], ""), e["score"],
                 *((_text(e["because"]), _text(e["reason"])) if explain else ()))
                for n, e in enumerate(r["items"], start=1)]
        out.print(table(f"Top {k} for user {r['user']} ({engine.model.name}{by})", columns,
                        rows))


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def ranked_rows(entries: list[dict[str, Any]], titles: dict[Any, str]
                ) -> list[tuple[int, Any, str, float]]:
    """(rank, item, title, score) table rows of ranked {"item", "score"} entries."""
    return [(n, e["item"], titles.get(e["item"], ""), e["score"])
            for n, e in enumerate(entries, start=1)]


def item_titles(model_dir: Path) -> dict[Any, str]:
    """A readable label per item from the bundle's item table (first text-like column)."""
    path = model_dir / "items.parquet"
    if not path.exists():
        return {}
    items = pl.read_parquet(path)
    labels = [c for c in ("title", "name") if c in items.columns]
    if not labels:
        labels = [c for c in items.columns if c != C.ITEM and items[c].dtype == pl.String][:1]
    if not labels:
        return {}
    extra = [c for c in ("category", "brand", "genres") if c in items.columns]
    rows = items.select(C.ITEM, *labels[:1], *extra).iter_rows()
    out_map: dict[Any, str] = {}
    for row in rows:
        parts = [str(row[1])]
        for v in row[2:]:
            if v is not None and v != "":
                parts.append("|".join(v) if isinstance(v, list) else str(v))
        out_map[row[0]] = " · ".join(parts)
    return out_map
