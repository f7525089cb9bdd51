"""Re-ranking after scoring: diversity, calibration, exposure fairness, freshness and hard
suitability constraints, as one stage shared by evaluate, compare, recommend and serve.

    pipeline = RerankPipeline.build(["calibration=0.5", "fair=0.3"], RerankData.from_dataset(ds))
    items, scores = pipeline.rerank(candidates, candidate_scores, k, data.user_context(u, hist))

Specs are `NAME=WEIGHT[:ARG]` (`lmrec.rerank.spec`); the metrics that measure what the stages
change live in `lmrec.group_metrics`.
"""

from lmrec.rerank.data import LONG_TAIL, RerankData, UserContext
from lmrec.rerank.fair import adjusted_mtable
from lmrec.rerank.pipeline import RerankPipeline, mmr
from lmrec.rerank.spec import RerankSpec, parse_rerank

__all__ = ["LONG_TAIL", "RerankData", "RerankPipeline", "RerankSpec", "UserContext",
           "adjusted_mtable", "mmr", "parse_rerank"]
