"""Configuration of the two-tower model (`lmrec.models.two_tower`), with its tuning log."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmrec.models.neural import IntTuple, NeuralConfig
from lmrec.models.text_items import TextItemFields


class TwoTowerConfig(TextItemFields, NeuralConfig):
    # Defaults chosen once on the ML100K validation part (RecBole protocol: ratings >= 3,
    # 10-core, random per-user 8:1:1, seed 0; fit on train, valid NDCG@10), dim 64, layers
    # (256,), mean history of 100, in-batch softmax + log-Q, batch 1024, lr 1e-3:
    # temperature .05, dropout .1: 10 epochs .2151, 20 epochs .2157 (with temperature .1),
    # full softmax 10 epochs .2105; temperature .1: 10 epochs .2191; at 20 epochs, temperature
    # .1: + 512 uniform negatives .2155, id dropout .5 .2176, dropout .3/.5 .2276/.2233,
    # dropout .3 + wd 1e-6 .2281, dropout .3 + shared embeddings .2292, dropout .3 + batch
    # 2048 lr 2e-3 .2291 (+ shared + wd 1e-6 .2241); from the chosen setting: history
    # dropout .2 .2213, id dropout .3 .2263, dim 128 .2218 -> temperature .1, dropout .3,
    # shared embeddings, 20 epochs (test .2724; fit about 60 s on one core).
    # Re-checked after the text changes (same protocol, valid NDCG@10 / recall@10): the
    # setting above .2253 (test .2691, the training trajectory had moved); 30 epochs .2245,
    # 15 epochs .2284, lr 2e-3 .2287, temperature .07 .2293 / .2466, dropout .4 .2293 / .2483,
    # dropout .4 + temperature .07 .2287, dropout .4 + lr 2e-3 + 15 epochs .2246 -> dropout .4
    # for the id-only tower. With text the validation parts prefer .3 (ML100K .2259 vs .2220
    # at .4; latest-small .1957 vs .1917), so the default depends on `text`.
    # Text (text=true, MiniLM vectors of "title. Genres: ..."), chosen on the validation parts
    # of ML100K (benchmarks/cold_start.py): cold-items (20% of items held out, 10% more for
    # validation, seed 0; valid recall@20 / ndcg@20) and the warm protocol above (valid
    # NDCG@10; id-only .2253). item_id_dropout .3: cold .1200/.1001, warm .2230; .5:
    # .1556/.1150, warm .2259; .8: .1500/.1080, warm .2266; 1.0 (no ids): .1679/.1169 but
    # warm .2177; fusion sum (.5): .1433/.1089, warm .2287 -> .5, concat: the best cold
    # validation that keeps warm at least id-only. ML latest-small (title, genres, tags) at
    # .5: cold .0516/.0519 (1.0: .0737/.0716), warm .1957 vs id-only .1900.
    dim: int = Field(64, ge=1, description="output embedding size of both towers")
    id_dim: int = Field(64, ge=1, description="id and history item embedding size")
    feature_dim: int = Field(16, ge=1, description="embedding size of each attribute column")
    layers: IntTuple = Field((256,), description="hidden layers of each tower's MLP")
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout in the towers; None: "
                                  ".4 id-only, .3 with text (chosen on validation)")
    history: Literal["mean", "gru", "transformer"] = Field("mean", description="history "
                                                           "encoder")
    history_len: int = Field(100, ge=1, description="most recent training items per user")
    history_dropout: float = Field(0.0, ge=0, lt=1, description="drop history items while "
                                                                "training")
    id_dropout: float = Field(0.1, ge=0, le=1, description="replace the user id by 'unknown' "
                                                           "while training")
    similarity: Literal["cosine", "dot"] = "cosine"
    temperature: float = Field(0.1, gt=0, description="initial temperature (learned)")
    loss: Literal["sampled", "full"] = Field("sampled", description="in-batch sampled softmax "
                                             "with log-Q correction, or full softmax")
    uniform_negatives: int = Field(0, ge=0, description="extra shared uniform negatives per "
                                                        "batch (sampled loss)")
    share_embeddings: bool = Field(True, description="the item tower's id embedding is the "
                                   "history's item embedding (one table)")
    user_features: bool = Field(True, description="use user attribute columns")
    item_features: bool = Field(True, description="use item attribute columns")
    fusion: Literal["concat", "sum"] = Field(
        "concat", description="item tower: concatenate the id, attribute, vector-column and "
        "text blocks, or project each to id_dim and sum them")
    # the loop's knobs, re-defaulted (see TrainConfig for the others). Batch size and epochs
    # from the data (TwoTower.data_settings): 20 epochs of 32 to 128 steps, more as histories
    # grow (32 up to 22 items per user, 128 from 87, log-linear between); 64 is the schedule
    # chosen above on ML100K (1024 of its 65k pairs per step). Validation parts
    # (benchmarks/data_defaults.py, batch_steps 32/64/128 x 20 epochs): ML100K .2259/.2270/
    # .2240, latest-small (87 per user) .1902/.1922/.1973, shop-100k (22) .1805/.1741/.1665. The
    # batch is also the number of in-batch negatives, so the short-history shop data gains from
    # larger ones.
    epochs: int | None = Field(None, ge=1, description="passes over the training pairs; "
                               "None: 20")
    batch_size: int | None = Field(None, ge=1, description="positive pairs per step (and "
                                   "in-batch negatives per positive, minus one); None: the "
                                   "training pairs / 32-128 steps (more for longer histories)")

    @property
    def tower_dropout(self) -> float:
        """`dropout` as configured, else the default of this mode (see the comment above)."""
        if self.dropout is not None:
            return self.dropout
        return 0.3 if self.text else 0.4
