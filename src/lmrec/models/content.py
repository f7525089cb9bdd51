"""Content-based recommendations from item attributes.

Every item gets a sparse profile built from its attribute columns, one block per column:

    text         TF-IDF over lower-cased words (sublinear tf, smoothed idf, min_df)
    categorical  one-hot of the label (optionally idf-weighted)
    multi        multi-hot of the labels, e.g. genres (optionally idf-weighted)
    vector       the vector itself (e.g. an image or text embedding)
    numeric/time all numeric columns of the table together, standardised (optional)

Each block is L2-normalised per item, so every column counts the same however many labels or
words it has. A user's profile is the (weighted) sum of the profiles of the items they
interacted with, and the score of an item is the cosine between the user and item profiles.
Any item history gets its profile the same way (`score(users, histories)`); a training user's
own history gives exactly `score(user)`, an empty one (an unknown or forgotten user) scores 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import BeforeValidator, Field

from lmrec.columns import Role
from lmrec.data.dataset import Dataset, Sequences
from lmrec.errors import ConfigError
from lmrec.models.artifacts import pack_csr, unpack_csr
from lmrec.models.base import Recommender
from lmrec.models.hyperparams import Choice, IntRange, ModelConfig, SearchSpace
from lmrec.models.redaction import UserRows
from lmrec.train.options import TrainingOptions

_WORD = r"[\p{L}\p{N}]+"


def _str_list(value: Any) -> Any:
    """CLI strings "title,genres" -> ("title", "genres")."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


# column names: a tuple of strings, also from a comma-separated string (`--param columns=a,b`)
StrTuple = Annotated[tuple[str, ...], BeforeValidator(_str_list)]


class ContentConfig(ModelConfig):
    # Checked on the ML100K validation part (title + genres; ratings >= 3, 10-core, 8:1:1):
    # all columns .0375 NDCG@10, min_df 1 .0376, genres only .0249 (no idf .0230), title only
    # .0220. Pure content is far below collaborative models (and popularity, .1092) on
    # MovieLens; it is here for cold catalogues and as a feature-driven baseline.
    columns: StrTuple | None = Field(
        None, description="item attribute columns to use; None: every usable column")
    numeric: bool = Field(False, description="also use numeric and time columns (standardised)")
    idf: bool = Field(True, description="idf-weight categorical and multi-valued labels too, "
                                        "so that rare labels count more than common ones")
    min_df: int = Field(2, ge=1, description="drop words found in fewer items than this")
    weighting: Literal["binary", "weight"] = Field(
        "binary", description="user profile: plain sum of item profiles, or weighted by events")

    search_space: ClassVar[SearchSpace] = {
        "min_df": IntRange(1, 5), "idf": Choice((True, False)),
        "weighting": Choice(("binary", "weight"))}


class Content(Recommender):
    """Cosine between user and item attribute profiles.

    State: the item profile matrix F (n_items, n_features) CSR float32 (blocks L2-normalised)
    and the item profile norms (n_items,).
    """

    name = "content"
    Config = ContentConfig
    config: ContentConfig

    def _fit(self, dataset: Dataset, options: TrainingOptions) -> None:
        cfg = self.config
        f = item_profiles(dataset, cfg)
        self.F_ = f
        self.item_norm_ = np.sqrt(np.asarray(f.multiply(f).sum(axis=1)).ravel()).astype(
            np.float32)
        self.X_ = (dataset.matrix("weight").tocsr().astype(np.float32)
                   if cfg.weighting == "weight" else None)

    def user_state(self) -> tuple[UserRows, ...]:
        # the weighted user-item matrix (weighting "weight"); binary input is `seen_`, which
        # the base class empties itself
        return () if self.X_ is None else (UserRows(self.X_),)

    def _score(self, users: np.ndarray, histories: Sequences | None) -> np.ndarray:
        if histories is None:
            x = self.seen_ if self.X_ is None else self.X_
            return self._score_rows(x[users])
        return self._score_rows(self._history_rows(histories, self.config.weighting))

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """(B, n_items) user rows -> (B, n_items) cosine scores."""
        prof = (rows @ self.F_).tocsr()  # (B, n_features) sparse
        norm = np.sqrt(np.asarray(prof.multiply(prof).sum(axis=1)).ravel())
        prof = sp.diags(_safe_inverse(norm)) @ prof
        scores = (prof @ self.F_.T).toarray()  # (B, n_items)
        return (scores * _safe_inverse(self.item_norm_)[None, :]).astype(np.float32)

    def _arrays(self) -> dict[str, np.ndarray]:
        out = pack_csr(self.F_, "F")
        out["item_norm"] = self.item_norm_
        if self.X_ is not None:
            out.update(pack_csr(self.X_, "X"))
        return out

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.F_ = unpack_csr(arrays, "F")
        self.item_norm_ = arrays["item_norm"]
        self.X_ = unpack_csr(arrays, "X") if "X.data" in arrays else None


def item_profiles(dataset: Dataset, cfg: ContentConfig) -> sp.csr_matrix:
    """(n_items, n_features) float32 CSR: one L2-normalised block per usable attribute column.

    Raises ConfigError when the dataset has no usable item attributes.
    """
    schema = dataset.item_schema
    if cfg.columns is not None:
        missing = [c for c in cfg.columns if c not in schema]
        if missing:
            raise ConfigError(f"content: unknown item attribute column(s) {missing}; the "
                              f"dataset has {sorted(schema) or 'none'}")
    wanted = [c for c in schema if cfg.columns is None or c in cfg.columns]
    feats = dataset.encoded_features("item") if wanted else {}
    blocks: list[sp.csr_matrix] = []
    numeric: list[np.ndarray] = []
    for col in wanted:
        role, value = schema[col].role, feats.get(col)
        if value is None:
            continue
        if role == Role.TEXT:
            block = _tfidf(value, cfg.min_df)
        elif role == Role.CATEGORICAL:
            block = _one_hot(np.asarray(value), len(schema[col].vocabulary or ()))
            block = _idf_weight(block) if cfg.idf else block
        elif role == Role.MULTI:
            block = value.tocsr().astype(np.float32)
            block = _idf_weight(block) if cfg.idf else block
        elif role == Role.VECTOR:
            block = sp.csr_matrix(np.asarray(value, dtype=np.float32))
        elif role in (Role.NUMERIC, Role.TIME) and cfg.numeric:
            numeric.append(np.asarray(value, dtype=np.float32))
            continue
        else:
            continue
        blocks.append(_l2_rows(block))
    if numeric:
        blocks.append(_l2_rows(sp.csr_matrix(np.stack(numeric, axis=1))))
    blocks = [b for b in blocks if b.nnz > 0]
    if not blocks:
        raise ConfigError(
            "content: the dataset has no item attributes to build profiles from (give an item "
            "table with text, categorical, multi-valued or vector columns when preparing the "
            "data, or choose a collaborative model)")
    out = sp.hstack(blocks, format="csr", dtype=np.float32)
    out.sort_indices()
    return out


def _tfidf(texts: list[str], min_df: int) -> sp.csr_matrix:
    """(n, n_words) TF-IDF with sublinear tf and smoothed idf; words sorted for determinism."""
    n = len(texts)
    tok = (pl.DataFrame({"row": np.arange(n, dtype=np.int64),
                         "tok": pl.Series(texts, dtype=pl.String).fill_null("")})
           .with_columns(pl.col("tok").str.to_lowercase().str.extract_all(_WORD))
           .explode("tok").drop_nulls("tok")
           .group_by("row", "tok").len())
    df = tok.group_by("tok").len("df").filter(pl.col("df") >= min_df).sort("tok")
    if df.height == 0:
        return sp.csr_matrix((n, 0), dtype=np.float32)
    df = df.with_row_index("code")
    tok = tok.join(df, on="tok", how="inner")
    tf = 1.0 + np.log(tok["len"].to_numpy().astype(np.float64))
    idf = np.log((1.0 + n) / (1.0 + tok["df"].to_numpy().astype(np.float64))) + 1.0
    m = sp.csr_matrix(((tf * idf).astype(np.float32),
                       (tok["row"].to_numpy(), tok["code"].to_numpy().astype(np.int64))),
                      shape=(n, df.height), dtype=np.float32)
    m.sort_indices()
    return m


def _one_hot(codes: np.ndarray, n_labels: int) -> sp.csr_matrix:
    """Codes (n,) with 0 = unknown -> (n, n_labels) one-hot; unknown rows stay empty."""
    ok = codes > 0
    rows = np.flatnonzero(ok)
    return sp.csr_matrix((np.ones(rows.size, np.float32), (rows, codes[ok] - 1)),
                         shape=(codes.size, n_labels), dtype=np.float32)


def _idf_weight(m: sp.csr_matrix) -> sp.csr_matrix:
    """Columns scaled by log((1 + n) / (1 + df)) + 1, the smoothed idf of each label."""
    n = m.shape[0]
    df = np.bincount(m.indices, minlength=m.shape[1]).astype(np.float64)
    idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
    return (m @ sp.diags(idf)).tocsr().astype(np.float32)


def _l2_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32)
    norm = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return (sp.diags(_safe_inverse(norm)) @ m).tocsr().astype(np.float32)


def _safe_inverse(x: np.ndarray) -> np.ndarray:
    """1 / x where x > 0, else 0 (empty profiles score 0 instead of NaN)."""
    x = np.asarray(x, dtype=np.float32)
    return np.divide(1.0, x, out=np.zeros_like(x), where=x > 0)

