"""Evaluation reports: results.json, report.md, a self-contained report.html and PNG plots.

With re-ranker sweeps (`lmrec compare --rerank NAME=W`, `lmrec.evaluate.tradeoffs`) the
report also draws accuracy against miscalibration and against exposure over the weight, and
tabulates every point."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lmrec.evaluate.lists import GROUP_METRICS
from lmrec.evaluate.protocol import HISTORY_BUCKETS, POPULARITY_BINS, EvalResult
from lmrec.evaluate.tradeoffs import Tradeoffs, tradeoff_plots, tradeoff_table
from lmrec.jsonfile import write_json
from lmrec.metrics import ALL_METRICS
from lmrec.version import __version__

_BAR_METRICS = ("ndcg", "recall", "precision", "hit", "mrr", "map")


def metrics_table(results: Mapping[str, EvalResult], ks: Iterable[int] | None = None
                  ) -> pl.DataFrame:
    """One row per model: "model", then every metric at every k (those present), "users",
    "fit_s" and "eval_s"."""
    rows = []
    for name, r in results.items():
        use_ks = sorted(set(ks)) if ks is not None else list(r.ks)
        row: dict[str, Any] = {"model": name}
        for k in use_ks:
            for m in (*ALL_METRICS, *GROUP_METRICS):
                key = f"{m}@{k}"
                if key in r.metrics:
                    row[key] = _num(r.metrics[key])
        row["users"] = r.n_users
        row["fit_s"] = _num(r.seconds.get("fit", math.nan))
        row["eval_s"] = _num(r.eval_seconds)
        rows.append(row)
    if not rows:
        return pl.DataFrame({"model": []}, schema={"model": pl.String})
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return pl.DataFrame([{c: row.get(c) for c in columns} for row in rows],
                        schema={c: (pl.String if c == "model" else
                                    pl.Int64 if c == "users" else pl.Float64)
                                for c in columns})


def slice_winners(results: Mapping[str, EvalResult], k: int = 10) -> pl.DataFrame:
    """Which model has the best mean NDCG@k on each user slice, and by how much.

    Slices: all warm users, then the training-history buckets (`HISTORY_BUCKETS`: a user's
    activity) and the cold users, where the results have them. One row per slice: "slice",
    "users", "best", f"ndcg@{k}" (the best's), "runner-up", "ahead by" (absolute) and "ahead
    by %" (relative to the runner-up). Empty with fewer than two results: e.g. a blend and its
    members, evaluated on one split, to see where each member wins.
    """
    key = f"ndcg@{k}"
    labels = ["all users", *(b[0] for b in HISTORY_BUCKETS), "cold users"]
    rows = []
    for label in labels if len(results) > 1 else ():
        values, users = {}, 0
        for name, r in results.items():
            entry = ({"users": r.n_users, key: r.metrics.get(key, math.nan)}
                     if label == "all users" else r.slices.get(label, {}))
            v = entry.get(key)
            if v is not None and not _isnan(v):
                values[name], users = float(v), int(entry.get("users", 0))
        if len(values) < 2:
            continue
        ranked = sorted(values.items(), key=lambda kv: -kv[1])  # stable: first listed wins ties
        (best, v1), (second, v2) = ranked[0], ranked[1]
        rows.append({"slice": label, "users": users, "best": best, key: v1,
                     "runner-up": second, "ahead by": v1 - v2,
                     "ahead by %": 100 * (v1 - v2) / v2 if v2 > 0 else None})
    return pl.DataFrame(rows, schema={"slice": pl.String, "users": pl.Int64, "best": pl.String,
                                      key: pl.Float64, "runner-up": pl.String,
                                      "ahead by": pl.Float64, "ahead by %": pl.Float64})


def write_report(
    results: Mapping[str, EvalResult],
    out_dir: str | Path,
    *,
    title: str = "lmrec evaluation",
    split_info: Mapping[str, Any] | None = None,
    sections: Sequence[tuple[str, pl.DataFrame]] = (),
    tradeoffs: Tradeoffs | None = None,
) -> dict[str, Path]:
    """Write results.json, report.md, report.html and the PNG plots to `out_dir`.

    `results` maps a model label to its EvalResult (all on the same split and ks).
    `split_info` describes the split (e.g. {"name": ..., **split.sizes()}).
    `sections`: more (title, table) sections for the documents, before the timing (e.g. the
    trials of `--model auto`).
    `tradeoffs`: re-ranker sweeps (`lmrec.evaluate.tradeoffs`): their figures and table.
    Returns {"json", "markdown", "html", "plot_metrics", "plot_recall", "plot_popularity",
    "plot_slices", "plot_tradeoff_<name>"...} -> path (plots only when there is something
    to draw).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = dict(split_info or {})
    paths: dict[str, Path] = {}
    payload = {
        "title": title,
        "lmrec_version": __version__,
        "split": info,
        "results": {name: r.to_dict() for name, r in results.items()},
    }
    all_ks = sorted({k for r in results.values() for k in r.ks})
    main_k = 10 if 10 in all_ks else (all_ks[0] if all_ks else 10)
    trade = tradeoff_table(tradeoffs, main_k) if tradeoffs else pl.DataFrame()
    if tradeoffs:
        payload["tradeoffs"] = {label: {m: [{"weight": w, "metrics": r.to_dict()["metrics"]}
                                            for w, r in points]
                                        for m, points in per_model.items()}
                                for label, per_model in tradeoffs.items()}
    paths["json"] = write_json(out / "results.json", payload)  # NaN -> null, UTF-8
    paths.update(_plots(results, out))
    if tradeoffs:
        paths.update(tradeoff_plots(tradeoffs, main_k, out))
    table = metrics_table(results, [main_k])
    full = metrics_table(results, all_ks)
    curve = full.select(["model"] + [f"{m}@{k}" for m in ("recall", "ndcg") for k in all_ks
                                     if f"{m}@{k}" in full.columns])
    slices = _slice_table(results, main_k)
    scoring = pl.DataFrame(
        [{"model": n, "part": r.part, "history": r.history, "rerank": r.rerank or "-"}
         for n, r in results.items()]
    ) if results else pl.DataFrame()
    timing = pl.DataFrame(
        [{"model": n, "users": r.n_users, "cold users": r.n_cold_users,
          **{f"{k} s": round(v, 4) for k, v in r.seconds.items()}} for n, r in results.items()]
    ) if results else pl.DataFrame()
    plots = [(key, paths[key]) for key in ("plot_metrics", "plot_recall", "plot_popularity",
                                           "plot_slices") if key in paths]
    plots += [(key, p) for key, p in paths.items() if key.startswith("plot_tradeoff_")]
    sections = [
        ("Split", _info_frame(info)),
        ("Scoring (history policy)", scoring),
        (f"Metrics at k={main_k}", table),
        ("Recall and NDCG at every k", curve),
        (f"Slices (ndcg@{main_k} / recall@{main_k}; users per slice)", slices),
        (f"Who wins which slice (mean ndcg@{main_k})", slice_winners(results, main_k)),
        (f"Re-ranking trade-offs (@{main_k}: each re-ranker's weight swept from 0)", trade),
        *sections,
        ("Timing (seconds)", timing),
    ]
    notes = _notes(main_k, sorted({r.history for r in results.values()}))
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(_markdown(title, sections, plots, notes), encoding="utf-8")
    paths["html"] = out / "report.html"
    paths["html"].write_text(_html(title, sections, plots, notes), encoding="utf-8")
    return paths


# --- plots ---------------------------------------------------------------------------------
def _plots(results: Mapping[str, EvalResult], out: Path) -> dict[str, Path]:
    if not results:
        return {}
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(results)
    all_ks = sorted({k for r in results.values() for k in r.ks})
    main_k = 10 if 10 in all_ks else all_ks[0]
    paths: dict[str, Path] = {}
    width = 0.8 / len(names)

    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(_BAR_METRICS))
    for j, n in enumerate(names):
        vals = [results[n].metrics.get(f"{m}@{main_k}", np.nan) for m in _BAR_METRICS]
        ax.bar(x + j * width - 0.4 + width / 2, vals, width, label=n)
    ax.set_xticks(x, [f"{m}@{main_k}" for m in _BAR_METRICS])
    ax.set_ylabel("mean over test users")
    ax.set_title("Accuracy per model")
    ax.legend(fontsize=8)
    paths["plot_metrics"] = _save(fig, out / "metrics.png")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for n in names:
        r = results[n]
        ks = list(r.ks)
        for ax, m in zip(axes, ("recall", "ndcg"), strict=True):
            ax.plot(ks, [r.metrics.get(f"{m}@{k}", np.nan) for k in ks], marker="o", label=n)
    for ax, m in zip(axes, ("recall", "ndcg"), strict=True):
        ax.set_xlabel("k")
        ax.set_ylabel(f"{m}@k")
        ax.set_title(f"{m} vs k")
    axes[0].legend(fontsize=8)
    paths["plot_recall"] = _save(fig, out / "recall_at_k.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].bar(names, [results[n].metrics.get(f"popularity@{main_k}", np.nan) for n in names])
    axes[0].set_ylabel("training users per item")
    axes[0].set_title(f"Mean popularity of recommended items (@{main_k})")
    axes[0].tick_params(axis="x", labelrotation=30)
    deciles = np.arange(1, POPULARITY_BINS + 1)
    for n in names:
        axes[1].plot(deciles, results[n].popularity_profile(), marker="o", label=n)
    axes[1].axhline(1.0 / POPULARITY_BINS, color="grey", linestyle=":", label="uniform")
    axes[1].set_xlabel("item popularity decile (1 = most popular)")
    axes[1].set_ylabel("share of recommendations")
    axes[1].set_title(f"Exposure by item popularity (@{max(all_ks)})")
    axes[1].legend(fontsize=8)
    paths["plot_popularity"] = _save(fig, out / "popularity.png")

    labels = [s for s in ("history 1-5", "history 6-20", "history 21-100", "history >100",
                          "cold users")
              if any(f"ndcg@{main_k}" in r.slices.get(s, {}) for r in results.values())]
    if labels:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        x = np.arange(len(labels))
        for j, n in enumerate(names):
            vals = [results[n].slices.get(s, {}).get(f"ndcg@{main_k}", np.nan) for s in labels]
            ax.bar(x + j * width - 0.4 + width / 2, vals, width, label=n)
        ax.set_xticks(x, labels)
        ax.set_ylabel(f"ndcg@{main_k}")
        ax.set_title("Accuracy by training-history length")
        ax.legend(fontsize=8)
        paths["plot_slices"] = _save(fig, out / "slices.png")
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- tables and documents ------------------------------------------------------------------
def _slice_table(results: Mapping[str, EvalResult], k: int) -> pl.DataFrame:
    names = []
    for r in results.values():
        names += [s for s in r.slices if s not in names]
    rows = []
    for n, r in results.items():
        row: dict[str, Any] = {"model": n}
        for s in names:
            d = r.slices.get(s, {})
            metric = d.get(f"ndcg@{k}", d.get(f"recall@{k}"))
            kind = "ndcg" if f"ndcg@{k}" in d else "recall"
            val = "-" if metric is None or _isnan(metric) else f"{kind} {metric:.4f}"
            row[s] = f"{val} ({int(d.get('users', 0))})"
        rows.append(row)
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def _info_frame(info: Mapping[str, Any]) -> pl.DataFrame:
    return pl.DataFrame({"field": [str(k) for k in info],
                         "value": [_text(v) for v in info.values()]},
                        schema={"field": pl.String, "value": pl.String})


_HISTORY_NOTES = {
    "observed": "History 'observed': each user is scored from their time-ordered events as of "
                "the evaluated part (training, plus validation when testing), as a served "
                "model sees them; each model decides how to use them.",
    "trained": "History 'trained': each user is scored from the model's fitted state, as in "
               "RecBole's general protocol.",
}


def _notes(k: int, policies: Iterable[str] = ()) -> list[str]:
    return [
        "Full ranking over all items; the user's training items (and, when testing, "
        "validation items) are excluded, as in RecBole's general protocol.",
        *(_HISTORY_NOTES.get(p, f"History {p!r}.") for p in policies),
        "Accuracy metrics use RecBole's definitions (binary relevance; NDCG and MAP normalised "
        "over min(|test items|, k)); averages are over users with test items and training "
        "history. Users without training history are reported only in the 'cold users' slice.",
        f"Beyond accuracy (@{k}): coverage = share of items recommended at least once; "
        "novelty = mean -log2(share of training users who know the item); diversity = mean "
        "pairwise 1 - cosine (item co-occurrence unless item features were given); gini = Gini "
        "index of item exposure.",
        "Long-tail items: recall restricted to test items outside the 20% most popular "
        "training items.",
        f"Groups (@{k}): miscalibration = Steck's KL divergence between the category "
        "distribution of the user's history and of the list (categories: genres, genre, "
        "category or categories, else the first categorical item column); exposure_gini = "
        "Gini index of rank-weighted (1/log2(rank+1)) item exposure (LensKit's ExposureGini); "
        "tail_exposure = the long tail's share of that exposure; group_coverage = share of "
        "the categories present in a list.",
        "Re-ranking (rerank column): the lists went through those re-rankers (lmrec.rerank) "
        "before being scored; trade-off curves plot ndcg against the group metrics as a "
        "re-ranker's weight grows from 0 (the model's own list).",
    ]


def _markdown(title: str, sections: list[tuple[str, pl.DataFrame]],
              plots: list[tuple[str, Path]], notes: list[str]) -> str:
    lines = [f"# {title}", ""]
    for head, frame in sections:
        if frame.height == 0:
            continue
        lines += [f"## {head}", "", _md_table(frame), ""]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{key}]({p.name})" for key, p in plots]
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _md_table(frame: pl.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    sep = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_text(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([head, sep, *body])


def _html(title: str, sections: list[tuple[str, pl.DataFrame]],
          plots: list[tuple[str, Path]], notes: list[str]) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin-bottom:1.5em;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}th{background:#f0f0f0}"
        "img{max-width:100%;margin:0.5em 0}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for head, frame in sections:
        if frame.height == 0:
            continue
        parts.append(f"<h2>{esc(head)}</h2><table><tr>"
                     + "".join(f"<th>{esc(c)}</th>" for c in frame.columns) + "</tr>")
        for row in frame.iter_rows():
            parts.append("<tr>" + "".join(f"<td>{esc(_text(v))}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    if plots:
        parts.append("<h2>Plots</h2>")
        for key, p in plots:
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            parts.append(f"<div><img alt='{esc(key)}' src='data:image/png;base64,{data}'></div>")
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes)
                 + "</ul></body></html>")
    return "\n".join(parts)


def _text(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if _isnan(v):
            return "-"
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"
    if isinstance(v, list | tuple):
        return ", ".join(_text(x) for x in v)
    return str(v)


def _num(v: float) -> float | None:
    return None if _isnan(v) else float(v)


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and (math.isnan(v) or math.isinf(v))

