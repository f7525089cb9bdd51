"""lmrec: personalised recommendations from an event log and a catalogue."""

from lmrec.data import Dataset, IdVocabulary
from lmrec.prepare import PrepareConfig, QualityReport, prepare
from lmrec.version import __version__

__all__ = ["Dataset", "IdVocabulary", "PrepareConfig", "QualityReport", "__version__", "prepare"]
