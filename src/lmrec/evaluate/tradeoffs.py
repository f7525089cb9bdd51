"""Accuracy against calibration and exposure as a re-ranker's weight grows (`lmrec compare
--rerank NAME=W`).

Each model of the comparison is evaluated again with the re-ranker at the weights
`sweep_weights(W)` (0, W/4, W/2, 3W/4, W; at 0 the list is the model's own, so its plain
result stands for that point). The report (`lmrec.evaluate.report`) gets one figure per
re-ranker, `tradeoff_<name>.png`: NDCG@k against miscalibration@k, against exposure_gini@k and
against tail_exposure@k, one curve per model, each point marked with its weight; and the table
of every point.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lmrec.evaluate.protocol import EvalResult
from lmrec.rerank import RerankSpec

SWEEP_POINTS = 5
# {re-ranker label: {model label: [(weight, result), ...] by weight}}
Tradeoffs = Mapping[str, Mapping[str, Sequence[tuple[float, EvalResult]]]]
_COLUMNS = ("ndcg", "recall", "miscalibration", "exposure_gini", "tail_exposure",
            "group_coverage", "diversity")
_PANELS = (("miscalibration", "miscalibration (KL; lower: closer to the user's history)"),
           ("exposure_gini", "exposure Gini (lower: exposure spread more evenly)"),
           ("tail_exposure", "long-tail share of exposure"))


def sweep_weights(weight: float, points: int = SWEEP_POINTS) -> list[float]:
    """The weights a comparison evaluates a re-ranker at: linspace(0, weight, points)."""
    return [float(w) for w in np.linspace(0.0, weight, points)]


def at_weight(spec: RerankSpec, weight: float) -> RerankSpec:
    """`spec` with another weight (its argument kept)."""
    return replace(spec, weight=float(weight))


def spec_label(spec: RerankSpec) -> str:
    """What a sweep is called in the report: the re-ranker's name and argument."""
    return spec.name if not spec.arg else f"{spec.name}:{spec.arg}"


def tradeoff_table(tradeoffs: Tradeoffs, k: int) -> pl.DataFrame:
    """One row per (re-ranker, model, weight): the accuracy and group metrics at k."""
    rows = []
    for label, per_model in tradeoffs.items():
        for model, points in per_model.items():
            for weight, r in points:
                row: dict[str, Any] = {"rerank": label, "model": model, "weight": weight}
                for m in _COLUMNS:
                    v = r.metrics.get(f"{m}@{k}")
                    row[f"{m}@{k}"] = None if v is None or np.isnan(v) else float(v)
                rows.append(row)
    schema: dict[str, Any] = {"rerank": pl.String, "model": pl.String, "weight": pl.Float64}
    schema.update({f"{m}@{k}": pl.Float64 for m in _COLUMNS})
    return pl.DataFrame(rows, schema=schema)


def tradeoff_plots(tradeoffs: Tradeoffs, k: int, out: Path) -> dict[str, Path]:
    """{"plot_tradeoff_<name>": path}: one PNG per re-ranker (module docstring)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}
    for label, per_model in tradeoffs.items():
        fig, axes = plt.subplots(1, len(_PANELS), figsize=(13, 4))
        for ax, (metric, xlabel) in zip(axes, _PANELS, strict=True):
            for model, points in per_model.items():
                xs = [r.metrics.get(f"{metric}@{k}", np.nan) for _, r in points]
                ys = [r.metrics.get(f"ndcg@{k}", np.nan) for _, r in points]
                ax.plot(xs, ys, marker="o", label=model)
                for (w, _), x, y in zip(points, xs, ys, strict=True):
                    if np.isfinite(x) and np.isfinite(y):
                        ax.annotate(f"{w:g}", (x, y), fontsize=7, textcoords="offset points",
                                    xytext=(3, 3))
            ax.set_xlabel(f"{xlabel} @{k}", fontsize=8)
            ax.set_ylabel(f"ndcg@{k}")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Accuracy vs calibration and exposure: {label} (points: its weight)")
        name = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-") or "rerank"
        fig.tight_layout()
        path = out / f"tradeoff_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths[f"plot_tradeoff_{name}"] = path
    return paths
