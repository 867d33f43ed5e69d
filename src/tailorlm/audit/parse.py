"""Parsing check: read every split with the pipeline's own reader and report each bad line.

The audit must see the data exactly as training will, so it reads through
`tailorlm.data.read.read_rows`: every line that reader skips (bad JSON, bad CSV quoting, a field
count that does not match the header, invalid UTF-8) becomes a finding naming file and line, in
training's words (fatal under data.on_error: stop, where training stops at the first).

Lines that fail only because of their encoding are also *salvaged* for the content checks: they
are decoded with U+FFFD replacement characters and parsed again, marked `_salvaged`. Training
drops them, but they are still part of the data set the user handed us - often thousands of rows
in scraped corpora - and leaving them out would hide their duplicates, PII and label skew. The
stats keep both counts (`rows` read by the pipeline, `salvaged` on top).
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tailorlm.data.read import DataError, Problem, files_label, read_rows

from .report import FATAL, WARNING, Finding

CHECK = "parse"
ENCODING_PREFIX = "not valid UTF-8"


@dataclass
class SplitData:
    """The rows of one split as the audit sees them."""
    split: str
    path: str
    rows: list[dict] = field(default_factory=list)       # readable + salvaged, each with _split
    skipped: list[Problem] = field(default_factory=list)
    salvaged: int = 0
    readable: int = 0                                      # rows the training reader keeps
    unreadable: bool = False                               # the file itself cannot be read (fatal)


def read_split(split: str, path: str | os.PathLike, on_error: str = "skip",
               salvage: bool = True) -> tuple[SplitData, list[Finding]]:
    """Read one split; return its rows and the parse findings (fatal when unusable)."""
    data = SplitData(split, files_label(path))
    findings: list[Finding] = []
    try:
        # always read everything; with on_error="stop" each bad line is fatal instead of skipped,
        # because training would stop there - but the user still gets the whole list at once
        result = read_rows(path, on_error="skip")
    except DataError as e:
        # a missing file or an unknown suffix: training would not start, hence fatal
        data.unreadable = True
        findings.append(Finding(FATAL, CHECK, str(e).splitlines()[0], data.path))
        return data, findings
    except (OSError, ValueError) as e:   # unreadable file, corrupt Parquet, ...
        data.unreadable = True
        findings.append(Finding(FATAL, CHECK, f"cannot read: {e}", data.path))
        return data, findings

    data.skipped = result.skipped
    data.readable = len(result.rows)
    for p in result.skipped:   # worded as training words it (a CSV quoting error: every line it loses)
        findings.append(Finding(FATAL if on_error == "stop" else WARNING, CHECK, p.text, p.file, p.line))
    rows = result.rows
    bad_enc = {p.file for p in result.skipped if p.message.startswith(ENCODING_PREFIX)}
    if salvage and bad_enc:   # per file (data.train may list several)
        extra = [r for f in sorted(bad_enc) for r in _salvage(Path(f), [x for x in rows if x["_file"] == f])]
        data.salvaged = len(extra)
        rows = sorted(rows + extra, key=lambda r: r["_line"])
    for r in rows:
        r["_split"] = split
    data.rows = rows
    return data, findings


def _salvage(path: Path, readable: list[dict]) -> list[dict]:
    """Rows on undecodable lines, re-read with bad bytes replaced by U+FFFD.

    The replaced copy goes through the same reader (so CSV quoting and headers behave the same).
    Rows are matched to the first read by content, not line number: a salvaged row is one that
    contains U+FFFD and is not among the readable rows (which hold U+FFFD only where the file
    spelled it out as valid UTF-8). Line numbers are not reliable for this: the reader's CSV
    numbering drifts past bare carriage returns inside fields, and differently in the two reads."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    fd, tmp = tempfile.mkstemp(suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        rows = read_rows(tmp, on_error="skip").rows
    finally:
        os.unlink(tmp)
    known = Counter(_signature(r) for r in readable if _has_fffd(r))
    out = []
    for r in rows:
        if not _has_fffd(r):
            continue
        sig = _signature(r)
        if known[sig]:
            known[sig] -= 1
            continue
        r.update(_file=str(path), _salvaged=True)
        out.append(r)
    return out


def _has_fffd(row: dict) -> bool:
    return "\ufffd" in repr([v for k, v in row.items() if not k.startswith("_")])


def _signature(row: dict) -> str:
    return repr(sorted((k, repr(v)) for k, v in row.items() if not k.startswith("_")))


def parse_stats(splits: list[SplitData]) -> dict:
    """Per split: the file, rows read as training reads them, lines skipped (a CSV quoting error counts
    every line it loses, as training counts it: data/counts.py), rows salvaged on top."""
    return {s.split: {"file": s.path, "rows": s.readable, "skipped_lines": sum(p.lines for p in s.skipped),
                      "salvaged": s.salvaged} for s in splits}
