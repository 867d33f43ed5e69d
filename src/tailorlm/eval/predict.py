"""Predictions of a finished run, one record per input: what `tailorlm predict` writes.

Each input is rendered exactly as training rendered its rows (the run's Formatter: data.prompt_template,
data.system, the chat template), and scored by evaluation's own functions (tasks.py, generate.py):

    classification, a language model   p(label | text) = softmax over the labels of
                                         sum_t log p(label token t | prompt, earlier label tokens)
    classification, a head              p(label | text) = softmax(head logits)
    instruction, chat                   the greedy answer after the prompt (at most max_new_tokens)
    text                                the greedy continuation of the text itself

An input row gives its text by the run's own field (data.text_field, data.prompt_field, Alpaca's
instruction and input) or, failing that, by a `text` field; a label or response it carries is not
read for the prediction, only echoed as `gold`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.read import DataError, read_rows
from ..data.tokenize import fitted_prompt
from ..data.validate import DEFAULT_FIELDS, RowError, content_response, text_of
from .generate import greedy_texts, prompt_ids
from .tasks import LABEL_SCORES

PAIRED = ("classification", "instruction")   # formats whose rows are (content, target) pairs
FIX = "Fix: correct that line; each input is a row with a 'text' field (or the text field the run's data reads)"


def read_inputs(path) -> list[dict]:
    """Rows of a JSONL, CSV or Parquet file (each with `_file` and `_line`), or of a .txt file one text
    per non-empty line. The first malformed line is refused with its file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file. Fix: name a JSONL, CSV, Parquet or .txt file of inputs, or give --text")
    if p.suffix.lower() == ".txt":
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not valid UTF-8 ({e.reason} at byte {e.start}). Fix: save it as UTF-8") from None
        return [{"text": t, "_file": str(p), "_line": n} for n, t in enumerate(lines, 1) if t.strip()]
    res = read_rows(p, on_error="skip")   # problems kept: the first is named below, with predict's own fix
    if res.skipped:
        raise DataError(f"{res.skipped[0]}. {FIX}")
    if not res.rows:
        raise DataError(f"{p}: no input rows. {FIX}")
    return res.rows


def _target_keys(dcfg) -> list[str]:
    """The fields a row's target may sit in (label, response, Alpaca's output)."""
    return [dcfg.label_field or DEFAULT_FIELDS["label"], dcfg.response_field or DEFAULT_FIELDS["response"],
            dcfg.response_field or DEFAULT_FIELDS["output"]]


def content_of(row: dict, fm) -> str:
    """The user text of an input row by the run's own fields (the target filled in, as it is not read),
    else its `text` field; neither: a DataError at the row's file and line."""
    filled = {**row, **dict.fromkeys(_target_keys(fm.dcfg), "-")}
    try:
        return content_response(filled, fm.fmt, fm.dcfg)[0] if fm.fmt in PAIRED else text_of(row, fm.dcfg)
    except RowError as e:
        text = row.get(DEFAULT_FIELDS["text"])
        if isinstance(text, str) and text.strip():
            return text
        raise DataError(f"{e.where}: no input text: {e.text}. {FIX}") from None


def gold_of(row: dict, fm) -> str | None:
    """The row's own label (classification) or response (instruction), when it has one: echoed, never
    read for the prediction."""
    keys = _target_keys(fm.dcfg)[:1] if fm.fmt == "classification" else _target_keys(fm.dcfg)[1:]
    found = [row[k] for k in keys if row.get(k) is not None] if fm.fmt in PAIRED else []
    return str(found[0]) if found else None


def _run_row(content: str, row: dict, fm) -> dict:
    """The input as a row of the run's own format: its content under the field the Formatter reads, the
    first label (or a dash) as a stand-in target, which the scorers read as `gold` and nothing else."""
    d = fm.dcfg
    text_key = (d.text_field or DEFAULT_FIELDS["text"]) if fm.fmt == "classification" else \
        (d.prompt_field or DEFAULT_FIELDS["prompt"])
    target = fm.labels[0] if fm.fmt == "classification" and fm.labels else "-"
    return {text_key: content, **dict.fromkeys(_target_keys(d), target),
            "_file": row.get("_file"), "_line": row.get("_line")}


@torch.no_grad()
def label_scores(model, fm, contents: list[str], rows: list[dict], *, task: str, device: str,
                 precision: str, batch_size: int) -> torch.Tensor:
    """(inputs, labels) evaluation's own label scores (tasks.LABEL_SCORES: summed label-word
    log-probabilities, or a head's logits; their softmax is p(label | text)), each input cut to
    data.max_length as eval cuts it."""
    run_rows = [_run_row(c, r, fm) for c, r in zip(contents, rows)]
    _, scores = LABEL_SCORES[task](model, fm, run_rows, device=device, precision=precision, batch_size=batch_size)
    if len(scores) != len(rows):   # a head's scorer skips rows it cannot read; every input must have its line
        raise DataError(f"{len(rows) - len(scores)} of {len(rows)} inputs could not be scored by the classifier")
    return scores.float()


def prompts(fm, contents: list[str], rows: list[dict] | None = None) -> list[str]:
    """Each input rendered as training rendered a row's prompt: instruction and classification, the
    content cut to data.max_length (as eval cuts it) inside data.prompt_template, after data.system, in
    the chat template; chat, the user turn after data.system; text, the text itself (trained on
    documents alone, so it is continued as it stands). `rows`: where each input came from."""
    rows = rows or [{} for _ in contents]
    if fm.fmt in PAIRED:
        return [fm.prompt_text(fitted_prompt(fm, _run_row(c, r, fm), fm.dcfg.max_length)[0])
                for c, r in zip(contents, rows)]
    return [fm.prompt_text(c) for c in contents] if fm.fmt == "chat" else list(contents)


def answers(model, fm, contents: list[str], rows: list[dict] | None = None, *, device: str, max_new_tokens: int,
            batch_size: int = 8) -> list[str]:
    """The greedy answer after each input's prompt (`prompts`), tokenized as training starts an example."""
    ids = [prompt_ids(fm.tok, p) for p in prompts(fm, contents, rows)]
    return [t.strip() for t in greedy_texts(model, fm.tok, ids, max_new_tokens, device, batch_size)]


def predict(model, fm, rows: list[dict], *, task: str, device: str, precision: str = "fp32",
            batch_size: int = 16, max_new_tokens: int = 64) -> list[dict]:
    """One record per input row: {line (a file's rows), text, label, probability, probabilities} for a
    classification run, {line, text, answer} otherwise; `gold` where the row carries its answer."""
    contents = [content_of(r, fm) for r in rows]   # every row read (or refused) before the model runs
    out = [{**({"line": r["_line"]} if r.get("_line") is not None else {}), "text": c}
           for c, r in zip(contents, rows)]
    if fm.fmt == "classification":
        scores = label_scores(model, fm, contents, rows, task=task, device=device, precision=precision,
                              batch_size=batch_size)
        for rec, best, p in zip(out, scores.argmax(1).tolist(), scores.softmax(-1).tolist()):   # eval's argmax
            rec.update(label=fm.labels[best], probability=p[best], probabilities=dict(zip(fm.labels, p)))
    else:
        for rec, a in zip(out, answers(model, fm, contents, rows, device=device, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size)):
            rec["answer"] = a
    for rec, r in zip(out, rows):
        gold = gold_of(r, fm)
        if gold is not None:
            rec["gold"] = gold
    return out
