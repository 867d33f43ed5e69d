"""The one validator of data rows, shared by training (`build_data`) and `tailorlm audit`.

It owns the data format (named by data.format, else read off the fields), what a row of each
format must hold (and of which types), and the checks on whole splits (no usable rows, one row
and no validation file). The audit promises never to pass a file that training rejects; with two
copies of these rules that promise broke as soon as one changed, so both call these functions and
word every problem the same way: `FILE:LINE: KIND (DETAIL)`. KIND is what the audit groups rows by
(one finding per kind, with a count); DETAIL is the row's own particulars.

The Formatter (formats.py) reads fields through `field_text`, `content_response`, `text_of` and
`messages_of`, so a row that passes `check_row` is one the Formatter can render, template aside.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .read import DataError, Problem, files_label

FORMATS = ("text", "instruction", "chat", "classification", "preference")
ROLES = ("assistant", "system", "tool", "user")
ROW_FIX = "Fix: correct the row, or set data.on_error: skip (skipped rows are counted)"
# The column each field role is read from while its data.*_field is unset: the one copy of these defaults
# (the audit's row layout reads them too). Alpaca rows (instruction, optional input, output) are read when
# data.prompt_field is unset and the row has an instruction field; their output goes through response_field.
DEFAULT_FIELDS = {"text": "text", "label": "label", "prompt": "prompt", "response": "response",
                  "instruction": "instruction", "input": "input", "output": "output", "messages": "messages"}
FIELD_KEYS = {"text": "text_field", "prompt": "prompt_field", "response": "response_field",
              "label": "label_field", "messages": "messages_field"}   # role -> the DataConfig key naming its column


def configured_fields(dcfg) -> dict[str, str]:
    """The columns the config names (role -> column), for the roles whose data.*_field is set; Alpaca's
    output is read through response_field too."""
    cols = {role: getattr(dcfg, key) for role, key in FIELD_KEYS.items() if getattr(dcfg, key)}
    if dcfg.response_field:
        cols["output"] = dcfg.response_field
    return cols


class RowError(DataError):
    """A problem located at a row: `file:line: kind (detail)`; `kind` is the same for every row with
    this problem, `detail` names what this row holds."""

    def __init__(self, file, line, kind: str, detail: str = ""):
        self.file, self.line, self.kind, self.detail = file, line, kind, detail
        super().__init__(f"{self.where}: {self.text}")

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def text(self) -> str:
        """The message without its location."""
        return self.kind + (f" ({self.detail})" if self.detail else "")


def _at(row: dict, kind: str, detail: str = "") -> RowError:
    return RowError(row.get("_file"), row.get("_line"), kind, detail)


def _fields(row: dict) -> list[str]:
    return sorted(k for k in row if not k.startswith("_"))


# ------------------------------------------------------------------ format

def detect_format(rows: list[dict], dcfg) -> str:
    """The format the config names, or the one the fields of most of the first 100 rows imply (one row
    missing a field is then reported as that, with its line, not as an unknown format)."""
    if dcfg.format != "auto":
        return dcfg.format
    sample = rows[:100]
    seen = Counter(k for r in sample for k in r if not k.startswith("_"))
    keys = {k for k, n in seen.items() if n > len(sample) / 2}
    if {"chosen", "rejected"} <= keys:   # (before chat: a preference row's prompt may be a message list)
        return "preference"
    if dcfg.messages_field in keys:
        return "chat"
    if dcfg.label_field or "label" in keys:
        return "classification"
    if dcfg.prompt_field or {"prompt", "response"} <= keys or {"instruction", "output"} <= keys:
        return "instruction"
    if dcfg.text_field or "text" in keys:
        return "text"
    if not rows:
        raise DataError("data.train: no rows to tell the data format from. Fix: give data.train rows, or set "
                        "data.format (text | instruction | chat | classification | preference)")
    raise _at(rows[0], f"cannot tell the data format from fields {sorted(keys)}. Fix: set data.format (text | "
              "instruction | chat | classification | preference) and the field names (data.text_field, ...)")


def resolve_format(rows: list[dict], dcfg) -> str:
    """detect_format, and a refusal of chat data whose rows hold no message list: every row would be
    rejected, so say which format their fields make them instead."""
    fmt = detect_format(rows, dcfg)
    if fmt == "chat" and not any(isinstance(r.get(dcfg.messages_field), list) for r in rows[:100]):
        seen = _auto_format(rows, dcfg)
        raise DataError(f"{files_label(dcfg.train)}: data.format is chat, but the rows have no "
                        f"{dcfg.messages_field!r} list: they are not chat rows (their fields make them {seen} "
                        f"rows). Fix: data.format: {seen}")
    return fmt


def _auto_format(rows: list[dict], dcfg) -> str | None:
    try:
        return detect_format(rows, dcfg.model_copy(update={"format": "auto"}))
    except DataError:
        return None


# ------------------------------------------------------------------ rows

def field_text(row: dict, key: str, label: bool = False) -> str:
    """A text field as a string. Anything else is a bad row (str() of a list or a number would be
    trained as if it were text); a label may also be a number or a boolean (label: 0)."""
    v = row.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        raise _at(row, f"field {key!r} is missing or empty", f"the row has {_fields(row)}")
    ok = (str, int, bool) if label else str
    if not isinstance(v, ok):
        raise _at(row, f"field {key!r} is a {type(v).__name__}, "
                  f"expected {'a string or an integer' if label else 'a string'}")
    return v if isinstance(v, str) else str(v)


def content_response(row: dict, fmt: str, dcfg) -> tuple[str, str]:
    """(user content, response) of an instruction or classification row: what the prompt template
    wraps, before it is wrapped, and the trained target."""
    if fmt == "classification":
        return field_text(row, dcfg.text_field or DEFAULT_FIELDS["text"]), field_text(
            row, dcfg.label_field or DEFAULT_FIELDS["label"], label=True)
    if dcfg.prompt_field is None and "instruction" in row:  # Alpaca: instruction + optional input
        prompt = field_text(row, "instruction")
        extra = row.get("input")
        if extra is not None and (not isinstance(extra, str) or extra.strip()):
            prompt += "\n\n" + field_text(row, "input")
        return prompt, field_text(row, dcfg.response_field or DEFAULT_FIELDS["output"])
    return (field_text(row, dcfg.prompt_field or DEFAULT_FIELDS["prompt"]),
            field_text(row, dcfg.response_field or DEFAULT_FIELDS["response"]))


def text_of(row: dict, dcfg) -> str:
    return field_text(row, dcfg.text_field or DEFAULT_FIELDS["text"])


def messages_of(row: dict, dcfg, answered: bool = True) -> list[dict]:
    """The conversation of a chat row as [{role, content}], or the first thing wrong with it. A
    preference row's conversation comes before the answers, so it needs no assistant turn (`answered`)."""
    name = dcfg.messages_field
    msgs = row.get(name)
    if msgs is None or msgs == []:
        raise _at(row, f"field {name!r} is missing or empty", f"the row has {_fields(row)}")
    if not isinstance(msgs, list):
        raise _at(row, f"field {name!r} is a {type(msgs).__name__}, expected a list of {{role, content}} messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _at(row, "message is not an object with role and content", f"message {i} is a {type(m).__name__}")
        if m.get("role") not in ROLES:
            raise _at(row, "bad chat role", f"message {i} has role {m.get('role')!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise _at(row, "message content is not a string",
                      f"message {i} content is a {type(m.get('content')).__name__}")
    if answered and not any(m["role"] == "assistant" for m in msgs):
        raise _at(row, "no assistant turn: nothing to train on", f"roles {[m['role'] for m in msgs]}")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def preference_of(row: dict, dcfg) -> tuple[str | list[dict], str, str]:
    """(prompt, chosen, rejected) of a preference row: the prompt is the row's prompt text, or, where
    the row has a message list (data.messages_field), the conversation before the answers. Both
    answers must be non-empty strings, and differ: a pair whose answers are the same teaches nothing."""
    if dcfg.messages_field in row and dcfg.prompt_field is None:
        prompt: str | list[dict] = messages_of(row, dcfg, answered=False)
    else:
        prompt = field_text(row, dcfg.prompt_field or DEFAULT_FIELDS["prompt"])
    chosen, rejected = field_text(row, "chosen"), field_text(row, "rejected")
    if chosen.strip() == rejected.strip():
        raise _at(row, "chosen and rejected answers are identical: the pair teaches nothing",
                  "give the rejected field a worse answer than the chosen one, or remove the row")
    return prompt, chosen, rejected


def check_row(row: dict, fmt: str, dcfg) -> None:
    """Raise the RowError training would raise for this row (template rendering aside)."""
    if fmt == "text":
        text_of(row, dcfg)
    elif fmt == "chat":
        messages_of(row, dcfg)
    elif fmt == "preference":
        preference_of(row, dcfg)
    else:
        content_response(row, fmt, dcfg)


def check_rows(rows: list[dict], fmt: str, dcfg) -> tuple[list[dict], list[RowError]]:
    """(rows that pass, the problem of each one that does not), in order."""
    ok, bad = [], []
    for row in rows:
        try:
            check_row(row, fmt, dcfg)
            ok.append(row)
        except RowError as e:
            bad.append(e)
    return ok, bad


def label_set(rows: list[dict], dcfg) -> list[str]:
    """Classification labels: data.labels, else every label the rows hold, sorted."""
    if dcfg.labels:
        return list(dcfg.labels)
    key = dcfg.label_field or "label"
    return sorted({str(r[key]) for r in rows if r.get(key) not in (None, "")})


# ------------------------------------------------------------------ splits

@dataclass
class Checked:
    """Every split checked against one format: the rows that pass, the problem of each row that does
    not, and the whole-split problem (if any) that stops training whatever data.on_error says."""
    fmt: str
    rows: dict[str, list[dict]]
    rejected: dict[str, list[RowError]]
    fatal: DataError | None = None

    def first_rejected(self) -> RowError | None:
        """The row training stops at under data.on_error: stop (splits in order train, val, test)."""
        return next((e for bad in self.rejected.values() for e in bad), None)


def split_label(dcfg, split: str) -> str:
    """How messages name a split's file(s)."""
    return files_label(dcfg.train) if split == "train" else str(getattr(dcfg, split))


def no_usable_rows(label: str, problems: list, hint: str = "") -> DataError:
    n = len(problems)
    first = f" ({n} problem{'s' if n != 1 else ''}, first: {problems[0]})" if problems else ""
    return DataError(f"{label}: no usable rows{first}{hint}")


def check_splits(rows: dict[str, list[dict]], dcfg, problems: dict[str, list[Problem]] | None = None) -> Checked:
    """Check the rows read from each split (train first; val and test when given): the format is the
    training rows', every row is checked against it, and a split left without a row (or training
    left with one row and no validation file) is `fatal`. Raises DataError when no format fits."""
    fmt = resolve_format(rows["train"], dcfg)
    ok, bad = {}, {}
    for split, part in rows.items():
        ok[split], bad[split] = check_rows(part, fmt, dcfg)
    return Checked(fmt, ok, bad, _split_error(rows, ok, bad, problems or {}, dcfg, fmt))


def _split_error(rows, ok, bad, problems, dcfg, fmt) -> DataError | None:
    for split in ok:
        if not ok[split]:
            hint = _format_hint(rows[split], dcfg, fmt) if split == "train" else ""
            return no_usable_rows(split_label(dcfg, split), list(problems.get(split, [])) + bad[split], hint)
    if "val" not in ok and len(ok["train"]) < 2:
        return DataError(f"{ok['train'][0]['_file']}: one usable row, so nothing is left to train on once the "
                         "validation split is carved out of it. Fix: more rows, or a separate data.val file")
    return None


def _format_hint(rows: list[dict], dcfg, fmt: str) -> str:
    """When the format was given and every row is of another (instruction rows trained as chat),
    say which: skipping the bad rows, the other way out, drops every one of them."""
    seen = _auto_format(rows, dcfg) if dcfg.format != "auto" else None
    if seen is None or seen == fmt:
        return ""
    return f"; the rows are {seen} rows, not {fmt} rows. Fix: data.format: {seen}"
