"""Rows -> token ids and labels (-100 where nothing is trained), with every loss counted.

Each segment is tokenized on its own (no special tokens added) and the pieces concatenated, so the
boundary between prompt and response is exact. For a classification head (`tokenize_classes`) the
prompt is tokenized as the model's tokenizer frames a single text ([CLS] ... [SEP] for BERT) and the
label becomes a class index. Over-long examples follow `data.too_long`: truncate, drop, or stop;
`text` documents are instead cut into max_length blocks. Truncation cuts the end of the user content
(the row's text or prompt inside data.prompt_template), never the template's tail, the response or
the label: an example that lost its target would teach nothing (and be dropped), which is why
LLaMA-Factory and Axolotl keep the target too. Only when the response alone is over budget (or for
chat rows) is the end of the example cut. Whatever is truncated, dropped or skipped is counted in the
report (`truncated` examples, `truncated_tokens` tokens cut).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from .formats import Formatter
from .read import DataError

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]           # per token, IGNORE where untrained; for a classification head: [class index]
    file: str
    line: int
    id: int = 0                 # position in the tokenized split: what logs and resume checks name
    cls: int = -1               # classification data: the label's index (data.balance reads it); else -1
    weight: float = 1.0         # loss weight of the example's targets (data.balance: weight)
    rejected: Optional["Example"] = None   # preference data: the pair's rejected sequence (this one is the chosen)


@dataclass
class TokenizeReport:
    rows: int = 0
    examples: int = 0
    tokens: int = 0
    target_tokens: int = 0
    truncated: int = 0
    truncated_tokens: int = 0
    target_tokens_lost: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    skipped_bad_rows: int = 0
    problems: list[str] = field(default_factory=list)   # first few, for the summary

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problems"] = d["problems"][:20]
        return d


def fits_budget(n: int, where: tuple, dcfg, rep: TokenizeReport, noun: str) -> bool:
    """Apply data.too_long to an example of n tokens: False when it is dropped, a DataError on stop;
    a truncation is counted here and done by the caller, which knows what it cuts."""
    if n <= dcfg.max_length:
        return True
    if dcfg.too_long == "stop":
        raise DataError(f"{where[0]}:{where[1]}: {noun} has {n} tokens, more than data.max_length={dcfg.max_length}. "
                        "Fix: raise data.max_length, or set data.too_long: truncate | drop")
    if dcfg.too_long == "drop":
        rep.dropped_too_long += 1
        return False
    rep.truncated += 1
    return True


def bos_prefix(tok) -> list[int]:
    """[bos] when the tokenizer adds one by default and templates do not (Llama-2 style)."""
    if tok.bos_token_id is None:
        return []
    ids = tok("a")["input_ids"]
    return [tok.bos_token_id] if ids and ids[0] == tok.bos_token_id else []


def fit_content(tok, content: str, length, max_length: int) -> tuple[str, int]:
    """(content, tokens cut): `content` shortened at its end, by whole tokens, until `length(content)`
    (the tokens of the whole example it is rendered into) is at most max_length. The cut is made on
    the content's own character offsets, so what is kept is the user's text verbatim. When even
    empty content is over budget, returns ("", all its tokens) and the caller cuts the example's end."""
    n = length(content)
    if n <= max_length:
        return content, 0
    ends = [e for _, e in tok(content, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    keep, short = len(ends), content
    while n > max_length and keep > 0:
        keep = max(0, keep - (n - max_length))
        short = content[:ends[keep - 1]] if keep else ""
        n = length(short)
    return short, len(ends) - keep


def fitted_prompt(fm: Formatter, row: dict, budget: int, extra: int = 0) -> tuple[str, str]:
    """(user prompt, response) of a held-out row for evaluation, its user content cut as training cuts
    it, so that the rendered prompt plus `extra` tokens fits in `budget` (few-shot examples placed
    before it are context on top, as they are not part of the example the budget is for)."""
    content, response = fm.content_response(row)

    def length(c: str) -> int:
        return extra + len(fm.tok(fm.prompt_text(fm.wrap(c)), add_special_tokens=False)["input_ids"])
    return fm.wrap(fit_content(fm.tok, content, length, budget)[0]), response


def join_segments(pieces: list[list[int]], segs: list[tuple[str, bool]],
                  bos: list[int]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example from its segments' token pieces, after the BOS prefix."""
    input_ids, labels_ = list(bos), [IGNORE] * len(bos)
    for piece, (_, trained) in zip(pieces, segs):
        if bos and len(input_ids) == len(bos) and piece[:1] == bos:
            piece = piece[1:]  # the template already wrote BOS
        input_ids += piece
        labels_ += piece if trained else [IGNORE] * len(piece)
    return input_ids, labels_


def _fit_prompt(row: dict, fm: Formatter, bos: list[int], max_length: int) -> tuple[list[int], list[int], int]:
    """An over-long instruction or classification row re-rendered with its user content cut to fit:
    (input_ids, labels, content tokens cut)."""
    content, response = fm.content_response(row)

    def render(c: str):
        segs = fm.pair_segments(fm.wrap(c), response)
        return join_segments(fm.tok([t for t, _ in segs], add_special_tokens=False)["input_ids"], segs, bos)

    short, cut = fit_content(fm.tok, content, lambda c: len(render(c)[0]), max_length)
    return (*render(short), cut)


def rendered_rows(rows: list[dict], render, dcfg, rep: TokenizeReport) -> list[tuple[dict, object]]:
    """(row, render(row)) of every row that renders; a bad row (DataError) stops the run or, with
    data.on_error: skip, is counted in REP."""
    out = []
    for row in rows:
        try:
            out.append((row, render(row)))
        except DataError as e:
            if dcfg.on_error == "stop":
                raise DataError(f"{e}\n  Fix: correct the row, or set data.on_error: skip (skipped rows are "
                                "counted)") from None
            rep.skipped_bad_rows += 1
            rep.problems.append(str(e))
    return out


def tokenize_rows(rows: list[dict], fmt: str, tokenizer, dcfg, labels: list[str] | None = None,
                  formatter: Formatter | None = None) -> tuple[list[Example], TokenizeReport]:
    fm = formatter or Formatter(fmt, tokenizer, dcfg, labels)
    rep = TokenizeReport(rows=len(rows))
    segs_per_row: list[tuple[dict, list[tuple[str, bool]]]] = rendered_rows(rows, fm.segments, dcfg, rep)
    # one batched call into the fast tokenizer for every segment of every row
    flat = [text for _, segs in segs_per_row for text, _ in segs]
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    bos = bos_prefix(tokenizer)
    out: list[Example] = []
    k = 0
    for row, segs in segs_per_row:
        input_ids, labels_ = join_segments(ids[k:k + len(segs)], segs, bos)
        k += len(segs)
        where = (row.get("_file", "?"), row.get("_line", 0))
        if fmt == "text":
            for s in range(0, len(input_ids), dcfg.max_length):
                chunk = input_ids[s:s + dcfg.max_length]
                if len(chunk) >= 2:
                    out.append(Example(chunk, list(chunk), *where))
            continue
        if not fits_budget(len(input_ids), where, dcfg, rep, "example"):
            continue
        if len(input_ids) > dcfg.max_length and fmt in ("instruction", "classification"):
            input_ids, labels_, cut = _fit_prompt(row, fm, bos, dcfg.max_length)
            rep.truncated_tokens += cut
        if len(input_ids) > dcfg.max_length:   # chat rows, or a response over budget on its own
            rep.truncated_tokens += len(input_ids) - dcfg.max_length
            rep.target_tokens_lost += sum(x != IGNORE for x in labels_[dcfg.max_length:])
            input_ids, labels_ = input_ids[:dcfg.max_length], labels_[:dcfg.max_length]
        # a label on position 0 can never be predicted (nothing precedes it)
        if sum(x != IGNORE for x in labels_[1:]) == 0:
            rep.dropped_no_target += 1
            rep.problems.append(f"{where[0]}:{where[1]}: no trainable tokens left (prompt fills max_length)")
            continue
        out.append(Example(input_ids, labels_, *where, cls=_class_of(fm, row, labels)))
    for i, ex in enumerate(out):
        ex.id = i
    rep.examples = len(out)
    rep.tokens = sum(len(e.input_ids) for e in out)
    rep.target_tokens = sum(sum(x != IGNORE for x in e.labels[1:]) for e in out)
    return out, rep


def _class_of(fm: Formatter, row: dict, labels: list[str] | None) -> int:
    """The index of a classification row's label in `labels`, -1 for other formats or unknown labels."""
    if fm.fmt != "classification" or not labels:
        return -1
    label = fm.content_response(row)[1]
    return labels.index(label) if label in labels else -1


def tokenize_classes(rows: list[dict], tokenizer, dcfg, labels: list[str],
                     formatter: Formatter) -> tuple[list[Example], TokenizeReport]:
    """Rows -> (input_ids of the prompt, [class index]) for a sequence-classification head. A label
    outside `labels` is a bad row (data.on_error); over-long prompts follow data.too_long."""
    index = {lab: i for i, lab in enumerate(labels)}
    rep = TokenizeReport(rows=len(rows))
    kept: list[tuple[dict, str, int]] = []
    for row in rows:
        try:
            content, label = formatter.content_response(row)
            if label not in index:
                raise DataError(f"{row.get('_file')}:{row.get('_line')}: label {label!r} is not one of the "
                                f"classifier's labels {labels}")
        except DataError as e:
            if dcfg.on_error == "stop":
                raise DataError(f"{e}\n  Fix: correct the row, set data.labels, or set data.on_error: skip") from None
            rep.skipped_bad_rows += 1
            rep.problems.append(str(e))
            continue
        kept.append((row, content, index[label]))
    wrap = formatter.wrap
    ids = tokenizer([wrap(c) for _, c, _ in kept], add_special_tokens=True)["input_ids"] if kept else []
    out: list[Example] = []
    for (row, content, y), input_ids in zip(kept, ids):
        where = (row.get("_file", "?"), row.get("_line", 0))
        if not fits_budget(len(input_ids), where, dcfg, rep, "text"):
            continue
        if len(input_ids) > dcfg.max_length:   # cut the text inside the template, not the template's tail
            encode = lambda c: tokenizer(wrap(c), add_special_tokens=True)["input_ids"]  # noqa: E731
            short, cut = fit_content(tokenizer, content, lambda c: len(encode(c)), dcfg.max_length)
            input_ids = encode(short)
            rep.truncated_tokens += cut + max(0, len(input_ids) - dcfg.max_length)
            input_ids = input_ids[:dcfg.max_length]
        out.append(Example(input_ids, [y], *where, id=len(out), cls=y))
    rep.examples = rep.target_tokens = len(out)
    rep.tokens = sum(len(e.input_ids) for e in out)
    return out, rep
