"""Preference rows -> pairs of examples: each row's prompt with its chosen answer, and with its
rejected answer, as two token sequences whose prompt tokens carry no label (IGNORE), so a sequence's
log-probability is its answer's alone.

    {"prompt": "...", "chosen": "...", "rejected": "..."}
    {"messages": [{"role": "user", "content": "..."}, ...], "chosen": "...", "rejected": "..."}

The texts are rendered by the Formatter (formats.py: `preference_texts`, the model's chat template
when it has one, as instruction rows are) and checked by the shared validator (validate.py:
`preference_of`). A pair is one Example: the chosen sequence, with the rejected one in its
`rejected` field, so the batch order draws pairs and both sides of a pair always share a batch
(batching.collate_pairs). A pair whose longer sequence is over data.max_length follows
data.too_long: `truncate` cuts the end of each over-long sequence (counted, as cut answer tokens),
`drop` drops the pair, `stop` stops; a pair left without an answer token on either side is dropped.
"""
from __future__ import annotations

from .formats import Formatter
from .tokenize import IGNORE, Example, TokenizeReport, bos_prefix, fits_budget, join_segments, rendered_rows

SEGMENTS = [("", False), ("", True)]   # the prompt untrained, the answer trained (only the flags are read)


def _cut(seq: tuple[list[int], list[int]], max_length: int, rep: TokenizeReport) -> tuple[list[int], list[int]]:
    """One side of a pair cut to max_length at its end, the cut counted."""
    ids, labels = seq
    if len(ids) <= max_length:
        return ids, labels
    rep.truncated_tokens += len(ids) - max_length
    rep.target_tokens_lost += sum(x != IGNORE for x in labels[max_length:])
    return ids[:max_length], labels[:max_length]


def tokenize_pairs(rows: list[dict], tokenizer, dcfg, formatter: Formatter) -> tuple[list[Example], TokenizeReport]:
    """Preference rows -> Examples (the chosen sequence, its `rejected` the other), with the report."""
    rep = TokenizeReport(rows=len(rows))
    rendered = rendered_rows(rows, formatter.preference_texts, dcfg, rep)
    flat = [t for _, texts in rendered for t in texts]
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    bos = bos_prefix(tokenizer)
    out: list[Example] = []
    for k, (row, _) in enumerate(rendered):
        prompt, chosen, rejected = ids[3 * k: 3 * k + 3]
        where = (row.get("_file", "?"), row.get("_line", 0))
        sides = [join_segments([prompt, answer], SEGMENTS, bos) for answer in (chosen, rejected)]
        if not fits_budget(max(len(s[0]) for s in sides), where, dcfg, rep, "the pair's longer sequence"):
            continue
        sides = [_cut(s, dcfg.max_length, rep) for s in sides]
        if any(sum(x != IGNORE for x in labels[1:]) == 0 for _, labels in sides):
            rep.dropped_no_target += 1
            rep.problems.append(f"{where[0]}:{where[1]}: no answer token left on one side of the pair "
                                "(the prompt fills max_length)")
            continue
        ex = Example(*sides[0], *where, id=len(out))
        ex.rejected = Example(*sides[1], *where, id=len(out))
        out.append(ex)
    rep.examples = len(out)
    both = [s for e in out for s in (e, e.rejected)]
    rep.tokens = sum(len(e.input_ids) for e in both)
    rep.target_tokens = sum(sum(x != IGNORE for x in e.labels[1:]) for e in both)
    return out, rep
