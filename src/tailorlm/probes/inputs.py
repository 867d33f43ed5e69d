"""What `tailorlm explain` looks at: a user's text rendered exactly as the run renders it, cut into
the template around it and the user's own tokens.

A run's prompt is `head + content + tail`: for a classification or instruction run, data.prompt_template
and the chat template (system message, turn markers) around the user text; for a text run the text
alone. Attributions fall on the content's tokens only (the template is the same for every input),
and `Rendered.pieces` are those tokens as slices of the user's own string, so the highlighted text
reads exactly as typed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data.tokenize import bos_prefix
from ..errors import DataError

MARK = "\x00"   # stands in for the content while the template is rendered, to find where it goes


@dataclass
class Rendered:
    head: str                     # template text before the user content
    content: str                  # the user's text
    tail: str                     # template text after it (turn end, assistant header)
    ids: list[int]                # the whole prompt's token ids, as the run tokenizes it (BOS included)
    span: tuple[int, int]         # [start, end) of the content's tokens in ids
    pieces: list[str]             # each content token as a slice of `content` (they join to it)

    @property
    def prompt(self) -> str:
        return self.head + self.content + self.tail


def template_parts(formatter, fmt: str, encoder: bool = False) -> tuple[str, str]:
    """(head, tail) around the user content, for this run's format and tokenizer."""
    if fmt == "text":
        return "", ""
    if encoder:   # a classification head reads the wrapped text alone
        rendered = formatter.wrap(MARK)
    elif fmt == "chat":
        rendered = formatter.prompt_text(MARK)
    else:
        rendered = formatter.prompt_text(formatter.wrap(MARK))
    if rendered.count(MARK) != 1:
        raise DataError("the prompt template does not place the text exactly once, so its tokens cannot be "
                        "located. Fix: data.prompt_template needs one {text}")
    head, tail = rendered.split(MARK)
    return head, tail


def render(formatter, fmt: str, content: str, *, encoder: bool = False) -> Rendered:
    """The prompt around `content` and its token ids: `bos + tok(prompt)` for a decoder, as eval
    scores labels (data.tokenize.bos_prefix), or the tokenizer's own framing ([CLS] ... [SEP]) for an
    encoder's classification head. The content's tokens are found by character offsets."""
    tok = formatter.tok
    head, tail = template_parts(formatter, fmt, encoder)
    prompt = head + content + tail
    enc = tok(prompt, add_special_tokens=encoder, return_offsets_mapping=True)
    prefix = [] if encoder else bos_prefix(tok)
    lo, hi = len(head), len(head) + len(content)
    inside = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s >= lo and e <= hi]
    if not inside:
        raise DataError(f"the text {content[:40]!r} has no tokens of its own. Fix: give a non-empty text")
    first, last = inside[0], inside[-1]
    starts = [enc["offset_mapping"][i][0] - lo for i in range(first, last + 1)]
    ends = starts[1:] + [len(content)]
    starts[0] = 0   # leading characters merged into the template's token belong to the first piece
    pieces = [content[s:e] for s, e in zip(starts, ends)]
    return Rendered(head, content, tail, prefix + enc["input_ids"],
                    (len(prefix) + first, len(prefix) + last + 1), pieces)


def read_inputs(path: str | Path, formatter, fmt: str, limit: int | None = None) -> list[tuple[str, str | None]]:
    """(content, reference answer or None) per input of a file: JSONL rows carrying the run's text
    (or prompt) field, with its label or response when present; any other file, one text per line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file. Fix: give --file a JSONL file of the run's rows or plain text lines")
    lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    out: list[tuple[str, str | None]] = []
    for n, line in enumerate(lines[:limit] if limit else lines, 1):
        row = _json_row(line)
        if row is None:
            out.append((line, None))
            continue
        row.setdefault("_file", str(p))
        row.setdefault("_line", n)
        out.append(_content_answer(formatter, fmt, row))
    if not out:
        raise DataError(f"{p}: no inputs. Fix: one JSON row or one line of text per input")
    return out


def _json_row(line: str) -> dict | None:
    if not line.lstrip().startswith("{"):
        return None
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _content_answer(formatter, fmt: str, row: dict) -> tuple[str, str | None]:
    """A row's user text and its answer, by the run's field names; an absent answer is None."""
    d = formatter.dcfg
    if fmt == "text":
        return formatter._field(row, d.text_field, "text"), None
    if fmt == "classification":
        key = d.label_field or "label"
        return formatter._field(row, d.text_field, "text"), (str(row[key]) if row.get(key) is not None else None)
    key = d.response_field or ("output" if "instruction" in row else "response")
    text_key = d.prompt_field or ("instruction" if "instruction" in row else "prompt")
    if text_key not in row and "text" in row:
        text_key = "text"
    return formatter._field(row, text_key, text_key), (row.get(key) if isinstance(row.get(key), str) else None)
