"""Tokenised view: what the model will actually be trained on, checked against the data.

Runs only when a tokenizer is available. Each usable row goes through a *producer*, a callable
row -> (input_ids, labels) with -100 marking untrained tokens. The pipeline's
`tailorlm.data.tokenize.tokenize_rows` is used when importable and callable, so the audit checks
the real thing; otherwise a fallback renders the chat template the usual way: for every assistant
turn, the conversation up to it with add_generation_prompt=True is the prompt, and what the
conversation up to and including the turn adds to that is the trained part. The full rendering is
tokenised once and tokens are labelled by their character offsets.

Reported: token length distribution; rows over max_length under the pipeline's data.too_long
(truncate: the target tokens lost, and rows whose targets are cut off completely, dropped in
effect; drop: every such row; stop: fatal; text documents are split into blocks, losing nothing);
rows with zero trainable tokens, and the pipeline's reason for each row it skips; assistant
turns (or responses, labels) whose text gets no labels - a template that drops the last
assistant message or is not prefix-consistent shows up here; prompt text that does get labels;
trained spans that do not end in EOS or a turn terminator (the model never learns to stop); and
whether the chat template exists and renders.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np

from .report import FATAL, INFO, WARNING, Collector, Finding
from .schema import RowSchema, pipeline_dcfg

CHECK = "tokens"
IGNORE = -100
Producer = Callable[[dict], tuple[list[int], list[int]]]
TERMINATOR_NAMES = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>",
                    "</s>", "<|end_of_text|>", "<eos>", "<|eom_id|>")
_WS = re.compile(r"\s+")


def _render(tok, msgs, gen: bool) -> str:
    if not msgs:
        return ""                  # transformers refuses empty conversations; nothing precedes
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)


def template_producer(tokenizer, layout: RowSchema) -> Producer:
    """Fallback producer (see module docstring). Without a chat template, non-chat formats are
    tokenised as prompt + newline + target + EOS, prompt untrained, as plain pipelines do."""
    eos = tokenizer.eos_token_id

    def plain(row: dict):
        prompt, target = layout.prompt(row), layout.target(row)
        p = tokenizer(prompt + "\n", add_special_tokens=True)["input_ids"] if prompt else []
        t = tokenizer(target, add_special_tokens=not p)["input_ids"] + ([eos] if eos is not None else [])
        return p + t, [IGNORE] * len(p) + t

    def chat(row: dict):
        msgs = layout.messages(row)
        full = _render(tokenizer, msgs, False)
        spans = []
        for i, m in enumerate(msgs):
            if m.get("role") != "assistant":
                continue
            prefix = _render(tokenizer, msgs[:i], True)
            upto = _render(tokenizer, msgs[:i + 1], False)
            # only a prefix-consistent rendering defines which characters are this turn's answer
            if full.startswith(upto) and upto.startswith(prefix) and len(upto) > len(prefix):
                spans.append((len(prefix), len(upto)))
        if getattr(tokenizer, "is_fast", False):
            enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(enc["input_ids"])
            labels = [t if any(s < e1 and e > s1 for s1, e1 in spans) else IGNORE
                      for t, (s, e) in zip(ids, enc["offset_mapping"])]
            return ids, labels
        ids, labels, pos = [], [], 0       # slow tokenizers: tokenise segment by segment
        for s1, e1 in spans + [(len(full), len(full))]:
            for seg, trained in ((full[pos:s1], False), (full[s1:e1], True)):
                if seg:
                    part = tokenizer(seg, add_special_tokens=False)["input_ids"]
                    ids += part
                    labels += part if trained else [IGNORE] * len(part)
            pos = e1
        return ids, labels

    def text(row: dict):
        ids = tokenizer(layout.target(row), add_special_tokens=True)["input_ids"]
        if eos is not None and (not ids or ids[-1] != eos):
            ids = ids + [eos]
        return ids, list(ids)

    if layout.fmt == "text":
        return text
    if getattr(tokenizer, "chat_template", None):
        return chat
    return plain


class RowSkipped(Exception):
    """The pipeline skipped the row; the message is its reason."""


_WHERE = re.compile(r"^(.*):(\d+): (.*)$", re.S)


def pipeline_producer(tokenizer, layout: RowSchema, rows: list[dict], labels: list | None = None,
                      options: dict | None = None) -> Producer | None:
    """Wrap the pipeline's tokenize_rows when it exists and accepts our call; None otherwise.

    It runs once per file with max_length huge, so that it neither truncates nor splits: the
    audit measures truncation itself. Rows it skips raise RowSkipped with its own reason."""
    try:
        from tailorlm.data.tokenize import tokenize_rows  # type: ignore
    except ImportError:
        return None
    dcfg = pipeline_dcfg(layout.fmt, _user_fields(layout), labels, options, max_length=10 ** 9,
                         too_long="truncate", on_error="skip")
    if layout.fmt == "classification" and not labels:
        labels = sorted({str(layout.get(r, "label")) for r in rows})  # as the pipeline detects them
    by_row: dict[tuple, object] = {}
    problems: dict[tuple, str] = {}
    try:
        for file in dict.fromkeys(r["_file"] for r in rows):
            part = [r for r in rows if r["_file"] == file]
            examples, rep = tokenize_rows(part, layout.fmt, tokenizer, dcfg, labels)
            by_row.update({(str(getattr(ex, "file", file)), int(ex.line)): ex for ex in examples})
            for msg in getattr(rep, "problems", []):
                m = _WHERE.match(str(msg))
                if m:
                    problems.setdefault((m.group(1), int(m.group(2))), m.group(3))
    except Exception:   # the pipeline refuses the whole call (no chat template, ...): fall back
        return None

    def produce(row: dict):
        key = (row["_file"], row["_line"])
        if key in problems:
            raise RowSkipped(f"the pipeline skips it: {problems[key]}")
        ex = by_row.get(key)
        if ex is None:
            return [], []           # dropped without a reason given: nothing trainable
        return [int(x) for x in ex.input_ids], [int(x) for x in ex.labels]
    return produce


def _user_fields(layout: RowSchema) -> dict:
    # only the columns the user renamed: the pipeline's own detection handles default names
    return {role: col for role, col in layout.cols.items() if col != role}


def terminators(tokenizer) -> set[int]:
    vocab = tokenizer.get_vocab()
    ids = {vocab[n] for n in TERMINATOR_NAMES if n in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _runs(labels: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for k, l in enumerate(labels + [IGNORE]):
        if l != IGNORE and start is None:
            start = k
        elif l == IGNORE and start is not None:
            runs.append((start, k))
            start = None
    return runs


def _squash(s: str) -> str:
    return _WS.sub("", s)


def _expected_targets(row: dict, layout: RowSchema) -> list[tuple[str, str]]:
    """(what, text) pairs that must be trained; text format trains everything."""
    if layout.fmt == "chat":
        return [(f"assistant turn {i}", m["content"]) for i, m in enumerate(layout.messages(row))
                if m.get("role") == "assistant" and isinstance(m.get("content"), str) and m["content"].strip()]
    what = {"instruction": "response", "classification": "label", "text": "text",
            "preference": "chosen answer"}[layout.fmt]   # (a preference row's segments: prompt and chosen answer)
    return [(what, layout.target(row))]


def _prompts(row: dict, layout: RowSchema) -> list[str]:
    return [m["content"] for m in layout.messages(row)
            if m.get("role") in ("user", "system") and isinstance(m.get("content"), str)
            and len(m["content"].split()) >= 3]


def check_tokens(rows: list[dict], layout: RowSchema, tokenizer, max_length: int | None = None,
                 producer: Producer | None = None, labels: list | None = None,
                 options: dict | None = None, outcome: dict | None = None) -> tuple[list[Finding], dict]:
    """options are the pipeline's data settings (prompt_template, system, chat_template, too_long);
    too_long decides whether an over-long row is truncated, dropped or fatal. outcome: the trained
    tokens training's own pass keeps of each row (audit/trained.py), so over-long rows count as
    training cuts them (the prompt before the target), not as cutting their end would."""
    too_long = (options or {}).get("too_long", "truncate")
    if layout.fmt == "chat" and not getattr(tokenizer, "chat_template", None) and producer is None:
        return [Finding(FATAL, CHECK, "chat data but the tokenizer has no chat_template: the "
                        "conversations cannot be rendered")], {"producer": None}
    findings: list[Finding] = []
    source = "custom"
    if producer is None:
        producer, source, findings = _producer(tokenizer, layout, rows, labels, options)
    term = terminators(tokenizer)
    col = Collector()
    lengths, trainable = [], []
    stats = {"producer": source, "rows": 0, "render_errors": 0, "zero_trainable": 0,
             "untrained_targets": 0, "trained_prompt": 0, "no_terminator_trained": 0}
    if max_length:
        stats |= {"max_length": max_length, "too_long": too_long, "truncated": 0, "dropped": 0,
                  "target_tokens_lost": 0, "split_into_blocks": 0}
    for row in rows:
        try:
            ids, labels = producer(row)
        except Exception as e:   # the template raised (unknown role, strict alternation, ...)
            stats["render_errors"] += 1
            why = str(e) if isinstance(e, RowSkipped) else f"{type(e).__name__}: {e}"
            col.add(WARNING, CHECK, "cannot tokenise/render the row", row, why)
            continue
        stats["rows"] += 1
        n_train = sum(l != IGNORE for l in labels)
        lengths.append(len(ids))
        trainable.append(n_train)
        if n_train == 0:
            stats["zero_trainable"] += 1
            col.add(WARNING, CHECK, "zero trainable tokens: the row teaches nothing", row,
                    layout.content(row))
        runs = _runs(labels)
        trained = "\n".join(tokenizer.decode(ids[s:e]) for s, e in runs)
        flat = _squash(trained)
        missing = [what for what, t in _expected_targets(row, layout) if _squash(t) not in flat]
        if missing and (n_train or layout.fmt == "chat"):
            stats["untrained_targets"] += 1
            what = ("assistant turn gets no labels (the chat template drops it or is not "
                    "prefix-consistent)" if layout.fmt == "chat" else "target text gets no labels")
            col.add(WARNING, CHECK, what, row, ", ".join(missing))
        if any(_squash(p) in flat for p in _prompts(row, layout)):
            stats["trained_prompt"] += 1
            col.add(WARNING, CHECK, "prompt text gets labels: the model trains on user input", row)
        # the terminator may be followed by a trained newline ("<|im_end|>\n"): look at the tail
        if runs and any(not term.intersection(ids[max(s, e - 3):e]) for s, e in runs):
            stats["no_terminator_trained"] += 1
            col.add(WARNING, CHECK, "trained span does not end in EOS or a turn terminator: the "
                    "model may not learn to stop", row, tokenizer.decode(ids[runs[-1][0]:runs[-1][1]])[-80:])
        if max_length and len(ids) > max_length:
            _too_long(row, ids, labels, n_train, max_length, too_long, layout, stats, col, outcome)
    if lengths:
        stats["length"] = _length_stats(lengths)
        stats["trainable_tokens"] = int(sum(trainable))
    if max_length and too_long == "stop" and stats["truncated"] + stats["dropped"]:
        findings.append(Finding(FATAL, CHECK, f"rows longer than max_length={max_length} with "
                                "data.too_long: stop: training stops at the first"))
    if not term:
        findings.append(Finding(WARNING, CHECK, "tokenizer has no EOS token"))
    if rows and stats["render_errors"] == len(rows):
        findings.append(Finding(FATAL, CHECK, "no row could be tokenised (see the render errors)"))
    elif rows and not sum(trainable):
        findings.append(Finding(FATAL, CHECK, "no row has a trainable token: training has nothing "
                                "to learn"))
    findings += col.findings()
    if lengths:
        findings.append(Finding(INFO, CHECK, f"token lengths: {stats['length']}; "
                                f"{stats['trainable_tokens']} trainable tokens ({source})"))
    return findings, stats


def _producer(tokenizer, layout: RowSchema, rows, labels, options) -> tuple[Producer, str, list[Finding]]:
    """The training pipeline's own tokenisation where it applies, else a chat-template fallback."""
    producer = pipeline_producer(tokenizer, layout, rows, labels, options)
    if producer is not None:
        return producer, "pipeline tokenize_rows", []
    if layout.fmt != "text" and not getattr(tokenizer, "chat_template", None):
        return template_producer(tokenizer, layout), "plain prompt/target fallback", [Finding(
            INFO, CHECK, "tokenizer has no chat_template: prompt and target were joined as plain text")]
    return template_producer(tokenizer, layout), "chat template fallback", []


def _length_stats(lengths: list[int]) -> dict:
    arr = np.asarray(lengths)
    return {"min": int(arr.min())} | {f"p{q}": round(float(np.percentile(arr, q)), 1) for q in (50, 90, 99)} | {
        "max": int(arr.max()), "mean": round(float(arr.mean()), 1)}


def _too_long(row, ids, labels, n_train, max_length, too_long, layout, stats, col, outcome=None) -> None:
    """Count what max_length costs this row under too_long (`outcome`: see check_tokens)."""
    if layout.fmt == "text":
        # documents are cut into max_length blocks, not truncated: nothing is lost
        stats["split_into_blocks"] += 1
        return
    kept = (sum(l != IGNORE for l in labels[:max_length]) if outcome is None
            else outcome.get((row["_file"], row["_line"]), 0))
    if too_long == "drop" or (n_train and not kept):
        stats["dropped"] += 1
        stats["target_tokens_lost"] += n_train
        why = ("data.too_long: drop" if too_long == "drop"
               else "all target tokens lie beyond it")
        col.add(WARNING, CHECK, f"longer than max_length={max_length}, dropped ({why})", row, None,
                tokens=len(ids))
        return
    stats["truncated"] += 1
    stats["target_tokens_lost"] += n_train - kept
    if n_train > kept:
        col.add(WARNING, CHECK, f"truncated at max_length={max_length}, losing target tokens", row,
                None, tokens=len(ids), target_lost=n_train - kept)
