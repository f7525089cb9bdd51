"""Prepare: validate, clean, filter, encode and index; a report of every change."""

from lmrec.prepare.config import Dedupe, Keep, PrepareConfig
from lmrec.prepare.kcore import kcore_mask
from lmrec.prepare.pipeline import Prepared, prepare
from lmrec.prepare.report import QualityReport

__all__ = ["Dedupe", "Keep", "PrepareConfig", "Prepared", "QualityReport", "kcore_mask", "prepare"]
