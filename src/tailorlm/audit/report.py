"""Findings and the audit report: what every check produces and how it is shown.

A check never prints; it returns `Finding`s. Keeping them as plain data lets the same audit feed
a terminal summary, a JSON file for CI, and the training command (which only needs the exit
code), and lets the JSON report load back into the same objects (`AuditReport.from_json`).

Severities, most serious first:
  fatal   - the data cannot be used as given (unreadable file, no usable rows, a parse error when
            on_error="stop", a chat template that does not render). Exit code 2.
  warning - training will run but on damaged or misleading data (skipped lines, schema problems,
            mangled text, duplicates, train/val/test leakage, PII, truncated targets, untrained
            assistant turns or EOS). Exit code 1 with --strict, else 0.
  info    - facts worth knowing that are not faults (length outliers, label distribution,
            user handles, token length statistics). Never changes the exit code.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FATAL, WARNING, INFO = "fatal", "warning", "info"
SEVERITIES = (FATAL, WARNING, INFO)
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
MAX_EXAMPLES = 5          # examples kept per aggregated finding: enough to find the rows, not a dump


@dataclass
class Finding:
    """One problem (or fact). `file`/`line` locate the first occurrence; `count` says how many rows
    it covers; `examples` are dicts with at least file and line, often text (masked where PII)."""
    severity: str
    check: str
    message: str
    file: str | None = None
    line: int | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    count: int = 1

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ValueError(f"unknown severity {self.severity!r}; use one of {SEVERITIES}")

    def where(self) -> str:
        if self.file is None:
            return ""
        return f"{self.file}:{self.line}" if self.line is not None else self.file


def example(row: dict, text: str | None = None, limit: int = 160, **extra: Any) -> dict[str, Any]:
    """An example entry pointing at a row; text is shortened so a report stays readable."""
    out: dict[str, Any] = {"file": row.get("_file"), "line": row.get("_line")}
    if text is not None:
        out["text"] = shorten(text, limit)
    out.update(extra)
    return out


def shorten(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Collector:
    """Groups per-row hits into one Finding per (check, key, file), keeping the first examples.

    Per-row findings would bury a 38k-row report; one finding per kind and file with a count and
    a few located examples says the same thing and still points at real lines."""

    def __init__(self) -> None:
        self._groups: dict[tuple, Finding] = {}

    def add(self, severity: str, check: str, message: str, row: dict, text: str | None = None,
            **extra: Any) -> None:
        key = (severity, check, message, row.get("_file"))
        f = self._groups.get(key)
        if f is None:
            self._groups[key] = Finding(severity, check, message, row.get("_file"), row.get("_line"),
                                        [example(row, text, **extra)], 1)
            return
        f.count += 1
        if len(f.examples) < MAX_EXAMPLES:
            f.examples.append(example(row, text, **extra))

    def total(self) -> int:
        """Rows recorded so far, over all groups."""
        return sum(f.count for f in self._groups.values())

    def findings(self) -> list[Finding]:
        out = list(self._groups.values())
        for f in out:
            f.message = f"{f.message} ({f.count} row{'s' if f.count != 1 else ''})"
        return out


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def sorted_findings(self) -> list[Finding]:
        # stable sort: within a severity, checks keep the order they ran in (parse before schema ...)
        return sorted(self.findings, key=lambda f: _RANK[f.severity])

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def exit_code(self, strict: bool = False) -> int:
        """2 when anything is fatal, 1 for warnings only under strict, else 0."""
        c = self.counts()
        if c[FATAL]:
            return 2
        if strict and c[WARNING]:
            return 1
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts(), "findings": [asdict(f) for f in self.sorted_findings()],
                "stats": self.stats}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, default=_jsonable)

    @classmethod
    def from_json(cls, text: str) -> "AuditReport":
        data = json.loads(text)
        return cls([Finding(**f) for f in data["findings"]], data.get("stats", {}))

    def summary(self, per_check: int = 10) -> str:
        """Terminal text, most serious first. Per-line findings of one check (parse errors can
        number thousands) are capped at `per_check`, with the rest counted."""
        lines: list[str] = []
        c = self.counts()
        for sev in SEVERITIES:
            group = [f for f in self.sorted_findings() if f.severity == sev]
            if not group:
                continue
            lines.append(f"== {sev.upper()} ({len(group)}) ==")
            by_check: dict[str, list[Finding]] = {}
            for f in group:
                by_check.setdefault(f.check, []).append(f)
            for check, fs in by_check.items():
                for f in fs[:per_check]:
                    # located as training locates its errors (FILE:LINE: MESSAGE), so both read alike
                    where = f"{f.where()}: " if f.where() else ""
                    lines.append(f"- {f.check}: {where}{f.message}")
                    for ex in f.examples[:3]:
                        lines.append("    " + _format_example(ex))
                if len(fs) > per_check:
                    lines.append(f"  ... and {len(fs) - per_check} more {check} findings (see --json)")
        lines.append(_format_stats(self.stats))
        verdict = ("FATAL: the data cannot be used as is" if c[FATAL] else
                   "warnings found" if c[WARNING] else "clean")
        lines.append(f"audit: {c[FATAL]} fatal, {c[WARNING]} warning, {c[INFO]} info -> {verdict}")
        return "\n".join(lines)


def _format_example(ex: dict[str, Any]) -> str:
    loc = f"{ex.get('file')}:{ex.get('line')}" if ex.get("file") else ""
    rest = {k: v for k, v in ex.items() if k not in ("file", "line", "text")}
    extra = " ".join(f"{k}={v}" for k, v in rest.items())
    text = f' "{ex["text"]}"' if "text" in ex else ""
    return " ".join(p for p in (loc, extra) if p) + text


def _format_stats(stats: dict[str, Any]) -> str:
    keys = ("format", "rows", "labels", "majority_baseline", "exact_duplicates", "near_duplicates",
            "pii", "tokens")
    parts = ["== STATS =="]
    for k in keys:
        if k in stats:
            parts.append(f"{k}: {json.dumps(stats[k], ensure_ascii=False, default=_jsonable)}")
    return "\n".join(parts)


def _jsonable(obj: Any) -> Any:
    # numpy scalars and sets sneak into stats; make them plain JSON values
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)
