"""Schema check: does every row have the fields its format needs, with the right types?

The rules are training's own: format detection and the per-row checks live in one place,
`tailorlm.data.validate`, which training calls too, so the audit never passes a row (or a file)
that training rejects and words each problem as training does. This module turns the validator's
verdicts into findings and adds the few warnings only the audit gives.

Formats are the pipeline's four: `text` (a "text" field), `instruction` (prompt/response, or the
Alpaca layout instruction/input/output), `chat` (a "messages" list of {role, content}) and
`classification` (text + label). `fields` maps these roles to other column names, e.g.
{"text": "tweet", "label": "sentiment"}, for data sets that name their columns differently.

A `RowSchema` (format + column names) is what the other checks use to get a row's content, its
trained target and its conversation, so that every check agrees on what a row means.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tailorlm.data.validate import (DEFAULT_FIELDS, FIELD_KEYS, FORMATS, Checked, DataError, check_rows,
                                    configured_fields, detect_format)

from .report import FATAL, WARNING, Collector

CHECK = "schema"
ROLES = tuple(DEFAULT_FIELDS)   # the field roles, with data's default column names (data/validate.py)


@dataclass
class RowSchema:
    fmt: str
    cols: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FIELDS))
    alpaca: bool = False          # instruction format with instruction/input/output columns

    def get(self, row: dict, role: str):
        return row.get(self.cols[role])

    def messages(self, row: dict) -> list[dict]:
        """The row as a conversation; what a chat template would render."""
        if self.fmt == "chat":
            msgs = self.get(row, "messages")
            return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []
        if self.fmt == "text":
            return []
        if self.fmt == "preference" and isinstance(self.get(row, "messages"), list):   # the chosen answer after it
            msgs = [m for m in self.get(row, "messages") if isinstance(m, dict)]
            return msgs + [{"role": "assistant", "content": self.target(row)}]
        return [{"role": "user", "content": self.prompt(row)},
                {"role": "assistant", "content": self.target(row)}]

    def prompt(self, row: dict) -> str:
        if self.fmt in ("text",):
            return ""
        if self.fmt == "classification":
            return _s(self.get(row, "text"))
        if self.fmt == "chat" or (self.fmt == "preference" and isinstance(self.get(row, "messages"), list)):
            msgs = self.messages(row)
            last = _last_assistant(msgs)
            return "\n".join(_s(m.get("content")) for m in msgs[:last if last >= 0 else len(msgs)])
        if self.alpaca:
            inp = _s(self.get(row, "input"))
            return _s(self.get(row, "instruction")) + (f"\n\n{inp}" if inp.strip() else "")
        return _s(self.get(row, "prompt"))

    def target(self, row: dict) -> str:
        """The text training learns to produce (the label for classification)."""
        if self.fmt == "text":
            return _s(self.get(row, "text"))
        if self.fmt == "classification":
            return _s(self.get(row, "label"))
        if self.fmt == "preference":
            return _s(row.get("chosen"))
        if self.fmt == "chat":
            msgs = self.messages(row)
            last = _last_assistant(msgs)
            return _s(msgs[last].get("content")) if last >= 0 else ""
        return _s(self.get(row, "output" if self.alpaca else "response"))

    def content(self, row: dict) -> str:
        """All the text of a row, used by the duplicate, quality and PII checks. Classification
        leaves the label out so that one text with two labels still counts as a duplicate."""
        if self.fmt in ("text", "classification"):
            return _s(self.get(row, "text"))
        if self.fmt == "chat":
            return "\n".join(_s(m.get("content")) for m in self.messages(row))
        if self.fmt == "preference":   # both answers: a pair is a duplicate only when all three agree
            return "\n".join((self.prompt(row), self.target(row), _s(row.get("rejected")))).strip("\n")
        return (self.prompt(row) + "\n" + self.target(row)).strip("\n")


def _s(v) -> str:
    return v if isinstance(v, str) else "" if v is None else str(v)


def _last_assistant(msgs: list[dict]) -> int:
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].get("role") == "assistant":
            return i
    return -1


def pipeline_dcfg(fmt: str = "auto", fields: dict | None = None, labels: list | None = None,
                  options: dict | None = None, **over):
    """The training DataConfig the audit's arguments describe (format, the --field columns, labels, the
    rendering options, on_error, the files): the validator and the tokenizer pass read it as training
    reads its own. Arguments it refuses raise (a ValueError: the command reports them as such)."""
    from tailorlm.config import DataConfig

    kw: dict = {"format": fmt, "on_error": "skip", "labels": [str(x) for x in labels] if labels else None}
    for role, key in FIELD_KEYS.items():
        if fields and role in fields:
            kw[key] = fields[role]
    if fields and "output" in fields and "response" not in fields:
        kw["response_field"] = fields["output"]   # the pipeline reads Alpaca output via response_field
    return DataConfig(**(dict(train="(audit)") | kw | dict(options or {}) | over))


def make_layout(rows: list[dict], fmt: str = "auto", fields: dict[str, str] | None = None,
                options: dict | None = None) -> RowSchema | None:
    """Format (by the training pipeline's own detector, data/validate.py) and columns. None when no
    format fits (the caller makes it fatal)."""
    unknown = set(fields or {}) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown field roles {sorted(unknown)}; use {ROLES}")
    if fmt not in ("auto",) + FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use auto or one of {FORMATS}")
    dcfg = pipeline_dcfg(fmt, fields, None, options)
    try:
        return layout_for(detect_format(rows, dcfg), rows, dcfg, fields)
    except DataError:
        return None


def layout_for(fmt: str, rows: list[dict], dcfg, fields: dict[str, str] | None = None) -> RowSchema:
    """The columns the content checks read, named as the training config names them: data's defaults,
    the --field columns, then the config's own (data/validate.py: DEFAULT_FIELDS, configured_fields)."""
    cols = DEFAULT_FIELDS | dict(fields or {}) | configured_fields(dcfg)
    sample = rows[:500]
    alpaca = (fmt == "instruction" and dcfg.prompt_field is None
              and sum(cols["instruction"] in r for r in sample) > len(sample) / 2)
    return RowSchema(fmt, cols, alpaca)


def check_schema(checked: Checked, extra: list[dict], layout: RowSchema, dcfg, labels: list | None = None,
                 on_error: str = "skip") -> tuple[list, list[dict]]:
    """Return (findings, usable rows). Every row the shared validator rejected is a finding, fatal
    under data.on_error: stop (training stops at the first), grouped by kind with its line; the
    training rows it accepts are usable, less those with a problem only the audit looks for (a
    label outside --labels, an empty chat message). `extra` are rows training never reads (salvaged
    from undecodable lines): usable for the content checks when valid, never findings."""
    col = Collector()
    severity = FATAL if on_error == "stop" else WARNING
    for bad in checked.rejected.values():
        for e in bad:
            col.add(severity, CHECK, e.kind, {"_file": e.file, "_line": e.line}, e.detail or None)
    salvaged, _ = check_rows(extra, checked.fmt, dcfg)
    usable = []
    label_set = {str(x) for x in labels} if labels else None
    for split, rows in checked.rows.items():
        part = sorted(rows + [r for r in salvaged if r.get("_split") == split], key=lambda r: r["_line"])
        usable += [r for r in part if _audit_only(r, layout, label_set, col)]
    return col.findings(), usable


def _audit_only(row: dict, layout: RowSchema, label_set: set | None, col: Collector) -> bool:
    """False (and a warning) for a row training accepts that the audit still flags."""
    if layout.fmt == "classification" and label_set is not None:
        v = layout.get(row, "label")
        if str(v) not in label_set:
            col.add(WARNING, CHECK, f"unknown label (not in {sorted(label_set)})", row, str(v))
            return False
    if layout.fmt == "chat":
        empty = [i for i, m in enumerate(layout.messages(row)) if not m.get("content", "").strip()]
        if empty:
            col.add(WARNING, CHECK, "empty message content", row, f"message {empty[0]}")
            return False
    return True
