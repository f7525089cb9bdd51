"""New items for the content model (`lmrec.models.content`): attribute profiles in the column
space of the trained items' profiles, and their scores.

`Content` fits its profile blocks and transforms the items in one go (`item_profiles`); here
the two are split: the blocks are fitted on the bundle's item table (word vocabulary with the
same `min_df`, idf of words and labels over the trained items) and then transform any rows,
so that a new item's profile lies in the same columns, weighted by the same idf, as the
trained items'. The fit is checked once: transforming the trained items must give the
profiles the model saved (`F_`), else new items are not scored.

A `text` given through the API is not read: the content model reads the item's attribute
columns (its text columns among them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from lmrec.columns import Role
from lmrec.data.dataset import Dataset, Sequences

# the model's own word pattern, one-hot and row normalisation: profiles must match exactly
from lmrec.models.content import _WORD, Content, _l2_rows, _one_hot
from lmrec.serve.catalogue_models import VECTOR_ATOL, Encoded, ItemEncoder


@dataclass(frozen=True)
class _Block:
    """One column's block: its word vocabulary (text) and idf per feature (None: none)."""

    col: str
    role: Role
    words: pl.DataFrame | None  # text: tok, code, idf
    idf: np.ndarray | None  # categorical/multi with idf: (n_labels,) float32


class ContentProfiles(ItemEncoder):
    """Profiles of new items for a `Content` model, and their scores for a history."""

    vectors = False
    model: Content

    def _check(self) -> str | None:
        self._fit()
        f = self.model.F_
        again = self._transform(self._base())
        if again.shape != f.shape or (abs(again - f).max() if f.nnz else 0.0) > VECTOR_ATOL:
            return "its item profiles could not be rebuilt from the item table"
        return None

    def _fit(self) -> None:
        """The blocks as `lmrec.models.content.item_profiles` builds them on the bundle's
        items, and which of them it kept (it drops blocks empty for every trained item)."""
        cfg = self.model.config
        ds = self._base()
        wanted = [c for c in ds.item_schema if cfg.columns is None or c in cfg.columns]
        feats = ds.encoded_features("item") if wanted else {}
        n = ds.n_items
        self._blocks: list[_Block] = []
        self._numeric: list[str] = []
        for col in wanted:
            role, value = ds.item_schema[col].role, feats.get(col)
            if value is None:
                continue
            if role == Role.TEXT:
                df = (_tokens(value).group_by("tok").len("df")
                      .filter(pl.col("df") >= cfg.min_df).sort("tok").with_row_index("code"))
                idf = np.log((1.0 + n) / (1.0 + df["df"].to_numpy().astype(np.float64))) + 1.0
                words = df.select("tok", pl.col("code").cast(pl.Int64), pl.Series("idf", idf))
                self._blocks.append(_Block(col, role, words, None))
            elif role in (Role.CATEGORICAL, Role.MULTI):
                labels = self._labels(ds, col, value)
                dfl = np.bincount(labels.indices, minlength=labels.shape[1]).astype(np.float64)
                idf = (np.log((1.0 + n) / (1.0 + dfl)) + 1.0).astype(np.float32)
                self._blocks.append(_Block(col, role, None, idf if cfg.idf else None))
            elif role == Role.VECTOR:
                self._blocks.append(_Block(col, role, None, None))
            elif role in (Role.NUMERIC, Role.TIME) and cfg.numeric:
                self._numeric.append(col)
        self._kept: list[bool] | None = None
        self._kept = [b.nnz > 0 for b in self._raw_blocks(ds)]

    def _raw_blocks(self, ds: Dataset) -> list[sp.csr_matrix]:
        """Every block (kept or not) of the rows of `ds`, each row L2-normalised."""
        feats = ds.encoded_features("item")
        out = []
        for b in self._blocks:
            value = feats[b.col]
            if b.role == Role.TEXT:
                assert b.words is not None
                block = _tfidf(value, b.words)
            elif b.role == Role.VECTOR:
                block = sp.csr_matrix(np.asarray(value, dtype=np.float32))
            else:
                block = self._labels(ds, b.col, value)
                if b.idf is not None:
                    block = (block @ sp.diags(b.idf)).tocsr().astype(np.float32)
            out.append(_l2_rows(block))
        if self._numeric:
            out.append(_l2_rows(sp.csr_matrix(np.stack(
                [np.asarray(feats[c], dtype=np.float32) for c in self._numeric], axis=1))))
        return out

    @staticmethod
    def _labels(ds: Dataset, col: str, value: object) -> sp.csr_matrix:
        spec = ds.item_schema[col]
        if spec.role == Role.CATEGORICAL:
            return _one_hot(np.asarray(value), len(spec.vocabulary or ()))
        assert isinstance(value, sp.spmatrix)
        return value.tocsr().astype(np.float32)

    def _transform(self, ds: Dataset) -> sp.csr_matrix:
        assert self._kept is not None
        blocks = [b for b, keep in zip(self._raw_blocks(ds), self._kept, strict=True) if keep]
        if not blocks:
            return sp.csr_matrix((ds.n_items, 0), dtype=np.float32)
        out = sp.hstack(blocks, format="csr", dtype=np.float32)
        out.sort_indices()
        return out

    def _encode(self, ds: Dataset, texts: list[str | None]) -> Encoded:
        profiles = self._transform(ds)
        ok = np.diff(profiles.indptr) > 0
        why = (None if o else f"it has none of the attributes the {self.model.name} model "
               "reads (or only words and labels its trained items never had)" for o in ok)
        return Encoded(profiles, tuple(why))

    def scores(self, users: np.ndarray, histories: Sequences | None, profiles: sp.csr_matrix
               ) -> np.ndarray:
        """(B, m) cosine of the users' profiles (as `Content._score` builds them: trained
        rows without histories, else the histories) with the new items' `profiles`."""
        model = self.model
        if histories is None:
            x = model.seen_ if model.X_ is None else model.X_
            rows = x[users]
        else:
            rows = model._history_rows(histories, model.config.weighting)
        prof = (rows @ model.F_).tocsr()
        prof = sp.diags(_inverse(np.sqrt(np.asarray(prof.multiply(prof).sum(axis=1)).ravel()))
                        ) @ prof
        norms = np.sqrt(np.asarray(profiles.multiply(profiles).sum(axis=1)).ravel())
        return ((prof @ profiles.T).toarray() * _inverse(norms)[None, :]).astype(np.float32)


def _tokens(texts: list[str]) -> pl.DataFrame:
    """(row, tok, len): how often each lower-cased word occurs in each text."""
    return (pl.DataFrame({"row": np.arange(len(texts), dtype=np.int64),
                          "tok": pl.Series(texts, dtype=pl.String).fill_null("")})
            .with_columns(pl.col("tok").str.to_lowercase().str.extract_all(_WORD))
            .explode("tok").drop_nulls("tok").group_by("row", "tok").len())


def _tfidf(texts: list[str], words: pl.DataFrame) -> sp.csr_matrix:
    """(n, n_words) sublinear tf times the fitted idf, over the fitted words only."""
    tok = _tokens(texts).join(words, on="tok", how="inner")
    tf = 1.0 + np.log(tok["len"].to_numpy().astype(np.float64))
    m = sp.csr_matrix(((tf * tok["idf"].to_numpy()).astype(np.float32),
                       (tok["row"].to_numpy(), tok["code"].to_numpy())),
                      shape=(len(texts), words.height), dtype=np.float32)
    m.sort_indices()
    return m


def _inverse(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.divide(1.0, x, out=np.zeros_like(x), where=x > 0)
