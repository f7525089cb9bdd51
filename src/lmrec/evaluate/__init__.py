"""Evaluation: leak-free splits, vectorised top-k metrics, the full-ranking protocol, reports.

Typical use::

    from lmrec.evaluate import split_random, fit_and_evaluate, write_report
    split = split_random(dataset, seed=0)
    result = fit_and_evaluate(model, split, ks=(5, 10, 20))  # history="observed"
    calibrated = evaluate(model, split, ks=(10,), rerank=["calibration=0.5"])  # lmrec.rerank
    found = auto_search(split, budget_s=300, seed=0)  # models and parameters; found.test
    write_report({"model": result}, "out/", title="...", split_info=split.sizes())
"""

from lmrec.evaluate.auto import auto_search, auto_train, default_families
from lmrec.evaluate.auto_result import AutoResult, AutoTrial
from lmrec.evaluate.cold_splits import split_cold_items, split_cold_users
from lmrec.evaluate.protocol import (
    HISTORY_POLICIES,
    EvalResult,
    HistoryPolicy,
    cross_validate,
    evaluate,
    fit_and_evaluate,
)
from lmrec.evaluate.report import metrics_table, write_report
from lmrec.evaluate.split_kinds import SPLIT_KINDS, make_splits
from lmrec.evaluate.splits import (
    Split,
    recbole_split_counts,
    split_from_pairs,
    split_kfold,
    split_loo,
    split_random,
    split_temporal,
)
from lmrec.evaluate.tuning import TuneResult, tune
from lmrec.metrics import (
    ACCURACY_METRICS,
    ALL_METRICS,
    BEYOND_METRICS,
    accuracy_from_hits,
    cooccurrence_features,
    cosine_gram,
    coverage,
    exposure,
    gini,
    hit_matrix,
    intra_list_diversity,
    intra_list_diversity_at,
    mean_metrics,
    mean_popularity,
    novelty,
    ranking_metrics,
)

__all__ = [
    "ACCURACY_METRICS",
    "ALL_METRICS",
    "BEYOND_METRICS",
    "HISTORY_POLICIES",
    "SPLIT_KINDS",
    "AutoResult",
    "AutoTrial",
    "EvalResult",
    "HistoryPolicy",
    "Split",
    "TuneResult",
    "accuracy_from_hits",
    "auto_search",
    "auto_train",
    "cooccurrence_features",
    "cosine_gram",
    "coverage",
    "cross_validate",
    "default_families",
    "evaluate",
    "exposure",
    "fit_and_evaluate",
    "gini",
    "hit_matrix",
    "intra_list_diversity",
    "intra_list_diversity_at",
    "make_splits",
    "mean_metrics",
    "mean_popularity",
    "metrics_table",
    "novelty",
    "ranking_metrics",
    "recbole_split_counts",
    "split_cold_items",
    "split_cold_users",
    "split_from_pairs",
    "split_kfold",
    "split_loo",
    "split_random",
    "split_temporal",
    "tune",
    "write_report",
]
