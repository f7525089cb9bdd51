"""The data-quality report: every row dropped or changed, counted with its reason."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SourceRecord:
    """One input file or DataFrame."""

    source: str
    kind: str  # "events", "users" or "items"
    rows_read: int
    rows_kept: int = 0
    bad_rows: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # the first few bad-row messages
    ignored_columns: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # column -> what it became, and why


@dataclass
class Stage:
    """One step of the event pipeline."""

    name: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class TableRecord:
    """What happened to a user or item table."""

    kind: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)  # column -> missing values filled
    roles: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class QualityReport:
    sources: list[SourceRecord] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    tables: list[TableRecord] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # observations that changed nothing
    summary: dict[str, Any] = field(default_factory=dict)

    # --- derived totals -------------------------------------------------------------
    @property
    def rows_read(self) -> int:
        return sum(s.rows_read for s in self.sources if s.kind == "events")

    def dropped_by_reason(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for s in self.sources:
            if s.kind == "events":
                total.update(s.bad_rows)
        for st in self.stages:
            total.update(st.dropped)
        return dict(total)

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped_by_reason().values())

    # --- output ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["totals"] = {
            "rows_read": self.rows_read,
            "rows_dropped": self.rows_dropped,
            "dropped_by_reason": self.dropped_by_reason(),
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QualityReport:
        return cls(
            sources=[SourceRecord(**s) for s in d.get("sources", [])],
            stages=[Stage(**s) for s in d.get("stages", [])],
            tables=[TableRecord(**t) for t in d.get("tables", [])],
            flags=list(d.get("flags", [])),
            summary=dict(d.get("summary", {})),
        )

    def save(self, folder: Path) -> None:
        (folder / "quality_report.json").write_text(json.dumps(self.to_dict(), indent=2))
        (folder / "quality_report.md").write_text(self.to_markdown())

    @classmethod
    def load(cls, folder: Path) -> QualityReport:
        return cls.from_dict(json.loads((folder / "quality_report.json").read_text()))

    def to_markdown(self) -> str:
        lines = ["# Data-quality report", ""]
        if self.summary:
            lines += ["## Result", ""]
            lines += [f"- {k}: {v}" for k, v in self.summary.items()]
            lines.append("")
        lines += ["## Sources", "", "| source | kind | rows read | rows kept | bad rows |",
                  "|---|---|---:|---:|---|"]
        for s in self.sources:
            bad = ", ".join(f"{k}: {v}" for k, v in s.bad_rows.items()) or "none"
            lines.append(f"| {s.source} | {s.kind} | {s.rows_read} | {s.rows_kept} | {bad} |")
        for s in self.sources:
            if s.columns:
                lines += ["", f"Columns of {s.source}:", ""]
                lines += [f"- {c}: {role}" for c, role in s.columns.items()]
            if s.ignored_columns:
                lines += ["", f"**Ignored columns of {s.source}** (not in the dataset): "
                          + ", ".join(s.ignored_columns)]
        examples = [e for s in self.sources for e in s.examples]
        if examples:
            lines += ["", "Examples of bad rows:", ""] + [f"- {e}" for e in examples[:20]]
        lines += ["", "## Event pipeline", "", "| stage | rows in | rows out | dropped | changed |",
                  "|---|---:|---:|---|---|"]
        for st in self.stages:
            dropped = ", ".join(f"{k}: {v}" for k, v in st.dropped.items()) or "-"
            changed = ", ".join(f"{k}: {v}" for k, v in st.changed.items()) or "-"
            lines.append(f"| {st.name} | {st.rows_in} | {st.rows_out} | {dropped} | {changed} |")
        notes = [f"{st.name}: {n}" for st in self.stages for n in st.notes]
        if notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
        for t in self.tables:
            lines += ["", f"## {t.kind.capitalize()} table", "",
                      f"- rows: {t.rows_in} in, {t.rows_out} out"]
            for k, v in t.dropped.items():
                lines.append(f"- dropped, {k}: {v}")
            for k, v in t.filled.items():
                lines.append(f"- missing values filled in {k!r}: {v}")
            if t.roles:
                lines.append("- roles: " + ", ".join(f"{c}={r}" for c, r in t.roles.items()))
            lines += [f"- {n}" for n in t.notes]
        if self.flags:
            lines += ["", "## Flags (nothing changed)", ""] + [f"- {f}" for f in self.flags]
        lines += ["", "## Totals", "", f"- event rows read: {self.rows_read}",
                  f"- event rows dropped: {self.rows_dropped}"]
        for k, v in self.dropped_by_reason().items():
            lines.append(f"  - {k}: {v}")
        return "\n".join(lines) + "\n"
