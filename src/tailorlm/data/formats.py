"""Turn a row into segments of text, each marked trained or not.

    text            [(document + EOS, trained)]                  continued pre-training
    instruction     [(prompt, not trained), (response + end, trained)]
    classification  same as instruction, the response being the label word
    chat            the conversation rendered by the tokenizer's chat template; assistant turns
                    (with their terminator) trained, everything else not

Instruction and classification prompts go through the model's chat template when it has one (an
instruct model expects its own turn markers); otherwise an Alpaca-style template with EOS. The
trained part of a chat render is found by rendering prefixes: render(messages[:i]) with the
generation prompt must be a prefix of render(messages[:i+1]), and the difference is turn i.
"""
from __future__ import annotations

from collections import Counter

from .read import DataError

PLAIN_PROMPT = "### Instruction:\n{prompt}\n\n### Response:\n"
ROLES = {"system", "user", "assistant", "tool"}


def detect_format(rows: list[dict], dcfg) -> str:
    """The format the config names, or the one the fields of most of the first 100 rows imply (one row
    missing a field is then reported as that, with its line, not as an unknown format)."""
    if dcfg.format != "auto":
        return dcfg.format
    sample = rows[:100]
    seen = Counter(k for r in sample for k in r if k not in ("_file", "_line"))
    keys = {k for k, n in seen.items() if n > len(sample) / 2}
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
                        "data.format (text | instruction | chat | classification)")
    where = f"{rows[0]['_file']}:{rows[0]['_line']}"
    raise DataError(f"{where}: cannot tell the data format from fields {sorted(keys)}. Fix: set data.format "
                    "(text | instruction | chat | classification) and the field names (data.text_field, ...)")


class Formatter:
    """Renders rows of one format for one tokenizer. Built once per run; holds no data."""

    def __init__(self, fmt: str, tokenizer, dcfg, labels: list[str] | None = None):
        self.fmt, self.tok, self.dcfg, self.labels = fmt, tokenizer, dcfg, labels
        self.use_chat = dcfg.chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))
        if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
            raise DataError("data.format is chat but the model's tokenizer has no chat template. Fix: use a "
                            "model whose tokenizer_config.json or chat_template.jinja has one, or convert the "
                            "data to data.format: instruction (rendered with a plain template)")

    # ------------------------------------------------------------------ field access
    def _field(self, row: dict, name: str | None, default: str, label: bool = False) -> str:
        """A text field as a string. Anything else is a bad row (str() of a list or a number would be
        trained as if it were text); a label may also be a number or a boolean (label: 0)."""
        key = name or default
        v = row.get(key)
        if v is None or (isinstance(v, str) and not v.strip()):
            raise DataError(f"{row.get('_file')}:{row.get('_line')}: field {key!r} is missing or empty "
                            f"(the row has {sorted(k for k in row if not k.startswith('_'))})")
        ok = (str, int, bool) if label else str
        if not isinstance(v, ok):
            raise DataError(f"{row.get('_file')}:{row.get('_line')}: field {key!r} is a {type(v).__name__}, "
                            f"expected {'a string or an integer' if label else 'a string'}")
        return v if isinstance(v, str) else str(v)

    def content_response(self, row: dict) -> tuple[str, str]:
        """(user content, response) of an instruction or classification row: what the prompt template
        wraps, before it is wrapped. Truncation cuts the user content, never the template or the target."""
        d = self.dcfg
        if self.fmt == "classification":
            return self._field(row, d.text_field, "text"), self._field(row, d.label_field, "label", label=True)
        if d.prompt_field is None and "instruction" in row:  # Alpaca: instruction + optional input
            prompt = self._field(row, None, "instruction")
            extra = row.get("input")
            if extra is not None and (not isinstance(extra, str) or extra.strip()):
                prompt += "\n\n" + self._field(row, None, "input")
            return prompt, self._field(row, d.response_field, "output")
        return self._field(row, d.prompt_field, "prompt"), self._field(row, d.response_field, "response")

    def wrap(self, content: str) -> str:
        """The user prompt: data.prompt_template around the content."""
        labels = ", ".join(self.labels or []) if self.fmt == "classification" else ""
        return self.dcfg.prompt_template.format(text=content, labels=labels)

    def prompt_response(self, row: dict) -> tuple[str, str]:
        """(user prompt, response) for instruction and classification rows."""
        content, response = self.content_response(row)
        return self.wrap(content), response

    # ------------------------------------------------------------------ rendering
    def render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def prompt_text(self, prompt: str, shots: list[tuple[str, str]] = ()) -> str:
        """The untrained prefix that precedes a response (also what generation is given). `shots`
        are (prompt, response) examples placed before it as earlier turns: few-shot prompting."""
        if not self.use_chat:
            return "".join(PLAIN_PROMPT.format(prompt=p) + r + "\n\n" for p, r in shots) + PLAIN_PROMPT.format(prompt=prompt)
        msgs = ([{"role": "system", "content": self.dcfg.system}] if self.dcfg.system else [])
        for p, r in shots:
            msgs += [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
        return self.render(msgs + [{"role": "user", "content": prompt}], generation_prompt=True)

    def response_text(self, prompt: str, response: str) -> str:
        """The trained suffix: the response and whatever ends the turn (EOS, <|im_end|>, ...)."""
        if not self.use_chat:
            return response + (self.tok.eos_token or "")
        msgs = ([{"role": "system", "content": self.dcfg.system}] if self.dcfg.system else [])
        msgs.append({"role": "user", "content": prompt})
        head = self.render(msgs, generation_prompt=True)
        full = self.render(msgs + [{"role": "assistant", "content": response}], generation_prompt=False)
        if not full.startswith(head):
            raise DataError("the chat template does not render the prompt as a prefix of the conversation, "
                            "so the response cannot be located. Fix: set data.chat_template: never")
        return full[len(head):]

    def segments(self, row: dict) -> list[tuple[str, bool]]:
        if self.fmt == "text":
            return [(self._field(row, self.dcfg.text_field, "text") + (self.tok.eos_token or ""), True)]
        if self.fmt == "chat":
            return self._chat_segments(row)
        return self.pair_segments(*self.prompt_response(row))

    def pair_segments(self, prompt: str, response: str) -> list[tuple[str, bool]]:
        """The untrained prompt and the trained response of an instruction or classification row."""
        return [(self.prompt_text(prompt), False), (self.response_text(prompt, response), True)]

    def _chat_segments(self, row: dict) -> list[tuple[str, bool]]:
        where = f"{row.get('_file')}:{row.get('_line')}"
        msgs = row.get(self.dcfg.messages_field)
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: {self.dcfg.messages_field!r} must be a non-empty list of "
                            "{role, content} messages")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: message {i} needs a role in {sorted(ROLES)} and string content")
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(f"{where}: no assistant turn, so nothing would be trained")
        msgs = [{"role": m["role"], "content": m["content"]} for m in msgs]
        segs, done = [], ""
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            head = self.render(msgs[:i], generation_prompt=True)
            full = self.render(msgs[: i + 1], generation_prompt=False)
            if not (head.startswith(done) and full.startswith(head)):
                raise DataError(f"{where}: the chat template does not render turn {i} as an extension of the "
                                "turns before it, so its tokens cannot be labelled")
            segs += [(head[len(done):], False), (full[len(head):], True)]
            done = full
        rest = self.render(msgs, generation_prompt=False)[len(done):]
        if rest:
            segs.append((rest, False))
        return [s for s in segs if s[0]]
