"""lmrec: personalised recommendations from an event log and a catalogue."""

__version__ = "0.1.0"

from lmrec.data import Dataset, IdVocabulary
from lmrec.prepare import PrepareConfig, QualityReport, prepare

__all__ = ["Dataset", "IdVocabulary", "PrepareConfig", "QualityReport", "__version__", "prepare"]
