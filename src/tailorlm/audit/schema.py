"""Schema check: does every row have the fields its format needs, with the right types?

Formats are the pipeline's four: `text` (a "text" field), `instruction` (prompt/response, or the
Alpaca layout instruction/input/output), `chat` (a "messages" list of {role, content}) and
`classification` (text + label). `fields` maps these roles to other column names, e.g.
{"text": "tweet", "label": "sentiment"}, for data sets that name their columns differently.

A `RowSchema` (format + column names) is what the other checks use to get a row's content, its
trained target and its conversation, so that every check agrees on what a row means.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

from .report import WARNING, Collector

CHECK = "schema"
FORMATS = ("text", "instruction", "chat", "classification")
ROLES = ("text", "label", "prompt", "response", "instruction", "input", "output", "messages")
CHAT_ROLES = ("system", "user", "assistant", "tool")


@dataclass
class RowSchema:
    fmt: str
    cols: dict[str, str] = field(default_factory=lambda: {r: r for r in ROLES})
    alpaca: bool = False          # instruction format with instruction/input/output columns

    def required(self) -> list[str]:
        if self.fmt == "text":
            return ["text"]
        if self.fmt == "classification":
            return ["text", "label"]
        if self.fmt == "chat":
            return ["messages"]
        return ["instruction", "output"] if self.alpaca else ["prompt", "response"]

    def get(self, row: dict, role: str):
        return row.get(self.cols[role])

    def messages(self, row: dict) -> list[dict]:
        """The row as a conversation; what a chat template would render."""
        if self.fmt == "chat":
            msgs = self.get(row, "messages")
            return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []
        if self.fmt == "text":
            return []
        return [{"role": "user", "content": self.prompt(row)},
                {"role": "assistant", "content": self.target(row)}]

    def prompt(self, row: dict) -> str:
        if self.fmt in ("text",):
            return ""
        if self.fmt == "classification":
            return _s(self.get(row, "text"))
        if self.fmt == "chat":
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
        return (self.prompt(row) + "\n" + self.target(row)).strip("\n")


def _s(v) -> str:
    return v if isinstance(v, str) else "" if v is None else str(v)


def _last_assistant(msgs: list[dict]) -> int:
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].get("role") == "assistant":
            return i
    return -1


# pipeline config keys for the roles; DataConfig names columns this way (None = the default name)
FIELD_KEYS = {"text": "text_field", "prompt": "prompt_field", "response": "response_field",
              "label": "label_field", "messages": "messages_field"}
# the pipeline's DataConfig defaults, for when tailorlm.config cannot build one
_DCFG_DEFAULTS = dict(train="(audit)", val=None, test=None, format="auto", max_length=512,
                      too_long="truncate", on_error="skip", text_field=None, prompt_field=None,
                      response_field=None, label_field=None, messages_field="messages", labels=None,
                      prompt_template="{text}", system=None, chat_template="auto", packing=True,
                      limit=None)


def pipeline_dcfg(fmt: str = "auto", fields: dict | None = None, labels: list | None = None,
                  options: dict | None = None, **over):
    """A data config for the pipeline's own functions, built from the audit's arguments; the real
    `tailorlm.config.DataConfig` when it accepts them, else a namespace with its defaults."""
    kw: dict = {"format": fmt, "on_error": "skip", "labels": [str(x) for x in labels] if labels else None}
    for role, key in FIELD_KEYS.items():
        if fields and role in fields:
            kw[key] = fields[role]
    if fields and "output" in fields and "response" not in fields:
        kw["response_field"] = fields["output"]   # the pipeline reads Alpaca output via response_field
    kw |= dict(options or {}) | over
    try:
        from tailorlm.config import DataConfig  # type: ignore
        return DataConfig(**(dict(train="(audit)") | kw))
    except Exception:   # absent, or stricter than these arguments: mirror its defaults
        return SimpleNamespace(**(_DCFG_DEFAULTS | kw))


def _pipeline_detect(rows: list[dict], fields: dict | None, options: dict | None) -> str | None:
    """Use the pipeline's own detector when it exists, so audit and training agree."""
    try:
        from tailorlm.data.formats import detect_format as pipeline_detect  # type: ignore
    except ImportError:
        return None
    try:
        got = pipeline_detect(rows, pipeline_dcfg("auto", fields, None, options))
    except Exception:  # it cannot tell either (DataError), or its signature changed: ours decides
        return None
    name = str(getattr(got, "value", None) or got).lower()
    return name if name in FORMATS else None


def make_layout(rows: list[dict], fmt: str = "auto", fields: dict[str, str] | None = None,
                options: dict | None = None) -> RowSchema | None:
    """Decide format and columns. Returns None when no format fits (the caller makes it fatal)."""
    unknown = set(fields or {}) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown field roles {sorted(unknown)}; use {ROLES}")
    cols = {r: r for r in ROLES} | dict(fields or {})
    if fmt == "auto":
        fmt = _pipeline_detect(rows, fields, options) or "auto"
    keys = Counter(k for r in rows[:500] for k in r if not k.startswith("_"))
    n = max(1, min(len(rows), 500))
    has = {role: keys[col] > n / 2 for role, col in cols.items()}
    if fmt == "auto":
        if has["messages"]:
            fmt = "chat"
        elif (has["prompt"] and has["response"]) or (has["instruction"] and has["output"]):
            fmt = "instruction"
        elif has["text"] and (has["label"] or "label" in (fields or {})):
            fmt = "classification"
        elif has["text"]:
            fmt = "text"
        else:
            return None
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use auto or one of {FORMATS}")
    alpaca = fmt == "instruction" and not has["prompt"] and has["instruction"]
    return RowSchema(fmt, cols, alpaca)


def check_schema(rows: list[dict], layout: RowSchema, labels: list | None = None) -> tuple[list, list[dict]]:
    """Return (findings, usable rows). A row is usable when every required field is present,
    non-empty and of the right type; unknown labels also make a row unusable."""
    col = Collector()
    usable = []
    label_set = {str(x) for x in labels} if labels else None
    for row in rows:
        before = col.total()
        for role in layout.required():
            name = layout.cols[role]
            v = row.get(name)
            if name not in row:
                col.add(WARNING, CHECK, f"missing field '{name}'", row)
            elif v is None or v == "" or v == []:
                col.add(WARNING, CHECK, f"empty field '{name}'", row)
            elif role == "messages":
                if not isinstance(v, list):
                    col.add(WARNING, CHECK, f"'{name}' should be a list of messages, "
                            f"got {type(v).__name__}", row)
                else:
                    _check_messages(v, row, col)
            elif role == "label":
                if not isinstance(v, (str, int, bool)):
                    col.add(WARNING, CHECK, f"label '{name}' should be a string or integer, "
                            f"got {type(v).__name__}", row)
                elif label_set is not None and str(v) not in label_set:
                    col.add(WARNING, CHECK, f"unknown label (not in {sorted(label_set)})", row, str(v))
            elif not isinstance(v, str):
                col.add(WARNING, CHECK, f"field '{name}' should be a string, got {type(v).__name__}", row)
        if layout.alpaca and layout.cols["input"] in row:
            v = row[layout.cols["input"]]
            if v is not None and not isinstance(v, str):
                col.add(WARNING, CHECK, f"field '{layout.cols['input']}' should be a string, "
                        f"got {type(v).__name__}", row)
        if col.total() == before:
            usable.append(row)
    return col.findings(), usable


def _check_messages(msgs: list, row: dict, col: Collector) -> None:
    roles = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            col.add(WARNING, CHECK, "message is not an object with role and content", row, f"message {i}")
            continue
        role = m.get("role")
        roles.append(role)
        if role not in CHAT_ROLES:
            col.add(WARNING, CHECK, f"bad chat role (allowed: {', '.join(CHAT_ROLES)})", row,
                    f"message {i} role={role!r}")
        content = m.get("content")
        if not isinstance(content, str):
            col.add(WARNING, CHECK, "message content should be a string", row,
                    f"message {i} content={type(content).__name__}")
        elif not content.strip():
            col.add(WARNING, CHECK, "empty message content", row, f"message {i} role={role!r}")
    if "assistant" not in roles:
        col.add(WARNING, CHECK, "no assistant turn: nothing to train on", row, f"roles={roles}")
