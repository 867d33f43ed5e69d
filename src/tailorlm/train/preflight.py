"""Checks that run before a single step: the data audit, and whether the run can be saved.

Fatal audit findings (unreadable files, no usable rows, malformed lines under on_error: stop) stop
the run before the model loads; the rest are written to the run directory and summarised in one line.
"""
from __future__ import annotations

from pathlib import Path

from ..atomic import write_text
from ..data.read import DataError


def audit_data(cfg, run: Path, say) -> dict:
    from ..audit import run_audit

    d = cfg.data
    fields = {role: col for role, col in (("text", d.text_field), ("label", d.label_field), ("prompt", d.prompt_field),
                                          ("response", d.response_field), ("messages", d.messages_field)) if col}
    report = run_audit(d.train, d.val, d.test, fmt=d.format, fields=fields, labels=d.labels, on_error=d.on_error)
    write_text(run / "audit.json", report.to_json())   # (renamed into place: a kill never truncates it)
    counts = report.counts()
    if report.exit_code() == 2:
        raise DataError("the data audit found fatal problems; nothing was trained:\n" + report.summary(per_check=3))
    say(f"[tailorlm] data audit: " + ", ".join(f"{n} {k}" for k, n in counts.items())
        + f" (details: {run / 'audit.json'}; tailorlm audit {d.train} for the full report)")
    return counts
