"""The Dataset: id vocabularies, interactions and feature tables, immutable once built."""

from lmrec.data.dataset import Dataset, FeatureSpec, Sequences
from lmrec.data.vocab import IdVocabulary

__all__ = ["Dataset", "FeatureSpec", "IdVocabulary", "Sequences"]
