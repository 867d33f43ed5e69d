"""Rows -> token ids and labels (-100 where nothing is trained), with every loss counted.

Each segment is tokenized on its own (no special tokens added) and the pieces concatenated, so the
boundary between prompt and response is exact. For a classification head (`tokenize_classes`) the
prompt is tokenized as the model's tokenizer frames a single text ([CLS] ... [SEP] for BERT) and the
label becomes a class index. Over-long examples follow `data.too_long`:
truncate (keep the first max_length tokens), drop, or stop; `text` documents are instead cut into
max_length blocks. Whatever is truncated, dropped or skipped is counted in the report.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

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


@dataclass
class TokenizeReport:
    rows: int = 0
    examples: int = 0
    tokens: int = 0
    target_tokens: int = 0
    truncated: int = 0
    target_tokens_lost: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    skipped_bad_rows: int = 0
    problems: list[str] = field(default_factory=list)   # first few, for the summary

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problems"] = d["problems"][:20]
        return d


def _fits(n: int, where: tuple, dcfg, rep: TokenizeReport, noun: str) -> bool:
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


def tokenize_rows(rows: list[dict], fmt: str, tokenizer, dcfg, labels: list[str] | None = None,
                  formatter: Formatter | None = None) -> tuple[list[Example], TokenizeReport]:
    fm = formatter or Formatter(fmt, tokenizer, dcfg, labels)
    rep = TokenizeReport(rows=len(rows))
    segs_per_row: list[tuple[dict, list[tuple[str, bool]]]] = []
    for row in rows:
        try:
            segs_per_row.append((row, fm.segments(row)))
        except DataError as e:
            if dcfg.on_error == "stop":
                raise DataError(f"{e}\n  Fix: correct the row, or set data.on_error: skip (skipped rows are "
                                "counted)") from None
            rep.skipped_bad_rows += 1
            rep.problems.append(str(e))
    # one batched call into the fast tokenizer for every segment of every row
    flat = [text for _, segs in segs_per_row for text, _ in segs]
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    bos = bos_prefix(tokenizer)
    out: list[Example] = []
    k = 0
    for row, segs in segs_per_row:
        input_ids, labels_ = list(bos), [IGNORE] * len(bos)
        for text, trained in segs:
            piece = ids[k]
            k += 1
            if bos and not input_ids[len(bos):] and piece[:1] == bos:
                piece = piece[1:]  # the template already wrote BOS
            input_ids += piece
            labels_ += piece if trained else [IGNORE] * len(piece)
        where = (row.get("_file", "?"), row.get("_line", 0))
        if fmt == "text":
            for s in range(0, len(input_ids), dcfg.max_length):
                chunk = input_ids[s:s + dcfg.max_length]
                if len(chunk) >= 2:
                    out.append(Example(chunk, list(chunk), *where))
            continue
        if not _fits(len(input_ids), where, dcfg, rep, "example"):
            continue
        if len(input_ids) > dcfg.max_length:
            rep.target_tokens_lost += sum(x != IGNORE for x in labels_[dcfg.max_length:])
            input_ids, labels_ = input_ids[:dcfg.max_length], labels_[:dcfg.max_length]
        # a label on position 0 can never be predicted (nothing precedes it)
        if sum(x != IGNORE for x in labels_[1:]) == 0:
            rep.dropped_no_target += 1
            rep.problems.append(f"{where[0]}:{where[1]}: no trainable tokens left (prompt fills max_length)")
            continue
        out.append(Example(input_ids, labels_, *where))
    for i, ex in enumerate(out):
        ex.id = i
    rep.examples = len(out)
    rep.tokens = sum(len(e.input_ids) for e in out)
    rep.target_tokens = sum(sum(x != IGNORE for x in e.labels[1:]) for e in out)
    return out, rep


def tokenize_classes(rows: list[dict], tokenizer, dcfg, labels: list[str],
                     formatter: Formatter) -> tuple[list[Example], TokenizeReport]:
    """Rows -> (input_ids of the prompt, [class index]) for a sequence-classification head. A label
    outside `labels` is a bad row (data.on_error); over-long prompts follow data.too_long."""
    index = {lab: i for i, lab in enumerate(labels)}
    rep = TokenizeReport(rows=len(rows))
    kept: list[tuple[dict, str, int]] = []
    for row in rows:
        try:
            prompt, label = formatter.prompt_response(row)
            if label not in index:
                raise DataError(f"{row.get('_file')}:{row.get('_line')}: label {label!r} is not one of the "
                                f"classifier's labels {labels}")
        except DataError as e:
            if dcfg.on_error == "stop":
                raise DataError(f"{e}\n  Fix: correct the row, set data.labels, or set data.on_error: skip") from None
            rep.skipped_bad_rows += 1
            rep.problems.append(str(e))
            continue
        kept.append((row, prompt, index[label]))
    ids = tokenizer([p for _, p, _ in kept], add_special_tokens=True)["input_ids"] if kept else []
    out: list[Example] = []
    for (row, _, y), input_ids in zip(kept, ids):
        where = (row.get("_file", "?"), row.get("_line", 0))
        if not _fits(len(input_ids), where, dcfg, rep, "text"):
            continue
        input_ids = input_ids[:dcfg.max_length]
        out.append(Example(input_ids, [y], *where, id=len(out)))
    rep.examples = rep.target_tokens = len(out)
    rep.tokens = sum(len(e.input_ids) for e in out)
    return out, rep
