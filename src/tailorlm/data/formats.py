"""Turn a row into segments of text, each marked trained or not.

    text            [(document + EOS, trained)]                  continued pre-training
    instruction     [(prompt, not trained), (response + end, trained)]
    classification  same as instruction, the response being the label word
    chat            the conversation rendered by the tokenizer's chat template; assistant turns
                    (with their terminator) trained, everything else not
    preference      two sequences per row, the prompt then the chosen (or the rejected) answer, each
                    rendered as an instruction row is (`preference_texts`); a message-list prompt
                    goes through the chat template with the answer as the next assistant turn

Instruction and classification prompts go through the model's chat template when it has one (an
instruct model expects its own turn markers); otherwise an Alpaca-style template with EOS. The
trained part of a chat render is found by rendering prefixes: render(messages[:i]) with the
generation prompt must be a prefix of render(messages[:i+1]), and the difference is turn i.
"""
from __future__ import annotations

from .read import DataError
from .validate import content_response, field_text, messages_of, preference_of, text_of

PLAIN_PROMPT = "### Instruction:\n{prompt}\n\n### Response:\n"
# data.prompt_template: auto for classification data: the answer's options named before the text, so the
# label words are in the prompt from the first step (a bare `{text}` leaves the model to guess what is asked).
LABELS_PROMPT = "Classify the text as one of: {labels}.\n\nText: {text}"


def prompt_template_for(template: str, fmt: str, head: bool = False) -> str:
    """data.prompt_template as rendered: `auto` is LABELS_PROMPT for classification data a language model
    answers in words, the bare `{text}` for instruction data and for a classifier head (HEAD: its labels
    are its outputs, never words it reads); anything else is the user's own template."""
    if template != "auto":
        return template
    return LABELS_PROMPT if fmt == "classification" and not head else "{text}"


class Formatter:
    """Renders rows of one format for one tokenizer. Built once per run; holds no data."""

    def __init__(self, fmt: str, tokenizer, dcfg, labels: list[str] | None = None, head: bool = False):
        self.fmt, self.tok, self.dcfg, self.labels, self.head = fmt, tokenizer, dcfg, labels, head
        self.use_chat = dcfg.chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))
        if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
            raise DataError("data.format is chat but the model's tokenizer has no chat template. Fix: use a "
                            "model whose tokenizer_config.json or chat_template.jinja has one, or convert the "
                            "data to data.format: instruction (rendered with a plain template)")

    # ------------------------------------------------------------------ field access
    def _field(self, row: dict, name: str | None, default: str, label: bool = False) -> str:
        """A text field as a string, or the validator's RowError (probes read single fields this way)."""
        return field_text(row, name or default, label)

    def content_response(self, row: dict) -> tuple[str, str]:
        """(user content, response) of an instruction or classification row: what the prompt template
        wraps, before it is wrapped. Truncation cuts the user content, never the template or the target.
        The fields are read (and a bad row refused) by the shared validator (validate.py)."""
        return content_response(row, self.fmt, self.dcfg)

    def wrap(self, content: str) -> str:
        """The user prompt: data.prompt_template around the content."""
        labels = ", ".join(self.labels or []) if self.fmt == "classification" else ""
        template = prompt_template_for(self.dcfg.prompt_template, self.fmt, head=self.head)
        return template.format(text=content, labels=labels)

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

    def preference_texts(self, row: dict) -> tuple[str, str, str]:
        """(untrained prompt, trained chosen answer, trained rejected answer) of a preference row: a
        prompt text wrapped in data.prompt_template and rendered as an instruction prompt is; a message
        list rendered by the chat template, each answer being the assistant turn that follows it."""
        prompt, chosen, rejected = preference_of(row, self.dcfg)
        if isinstance(prompt, str):
            prompt = self.wrap(prompt)
            return self.prompt_text(prompt), self.response_text(prompt, chosen), self.response_text(prompt, rejected)
        if not getattr(self.tok, "chat_template", None):
            raise DataError(f"{row.get('_file')}:{row.get('_line')}: a preference row with a message list needs the "
                            "model's chat template, and this tokenizer has none. Fix: give the prompt as text "
                            "(a `prompt` field), or use a model with a chat template")
        head = self.render(prompt, generation_prompt=True)
        answers = []
        for answer in (chosen, rejected):
            full = self.render(prompt + [{"role": "assistant", "content": answer}], generation_prompt=False)
            if not full.startswith(head):
                raise DataError(f"{row.get('_file')}:{row.get('_line')}: the chat template does not render the "
                                "conversation as a prefix of it with the answer, so the answer cannot be located")
            answers.append(full[len(head):])
        return head, answers[0], answers[1]

    def segments(self, row: dict) -> list[tuple[str, bool]]:
        """The row's segments; for a preference row, those of its prompt and chosen answer (the pair is
        tokenized by data/preference.py)."""
        if self.fmt == "preference":
            prompt, chosen, _ = self.preference_texts(row)
            return [(prompt, False), (chosen, True)]
        if self.fmt == "text":
            return [(text_of(row, self.dcfg) + (self.tok.eos_token or ""), True)]
        if self.fmt == "chat":
            return self._chat_segments(row)
        return self.pair_segments(*self.prompt_response(row))

    def pair_segments(self, prompt: str, response: str) -> list[tuple[str, bool]]:
        """The untrained prompt and the trained response of an instruction or classification row."""
        return [(self.prompt_text(prompt), False), (self.response_text(prompt, response), True)]

    def _chat_segments(self, row: dict) -> list[tuple[str, bool]]:
        where = f"{row.get('_file')}:{row.get('_line')}"
        msgs = messages_of(row, self.dcfg)   # the shared validator's checks: list, roles, content, an assistant
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
