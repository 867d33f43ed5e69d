"""What training would make of each split: the pipeline's own tokenize pass over the rows the
validator accepts, with the run's max_length, too_long and on_error.

The tokenised view (tokens.py) measures rows untruncated to explain them; this pass exists so that
the audit's counts of truncated examples, tokens cut, dropped and unrenderable rows are training's
counts, split by split (data/counts.py words them for both), and so that what stops training at
this stage (data.too_long: stop, a row the chat template cannot render under on_error: stop) is
fatal here too, with training's file:line message. Test rows are counted as evaluation cuts them
(over-long prompts truncated, never a stop), as build_data counts them.
"""
from __future__ import annotations

import re

from tailorlm.data.counts import reject_into
from tailorlm.data.formats import Formatter
from tailorlm.data.tokenize import IGNORE, TokenizeReport, tokenize_rows
from tailorlm.data.validate import Checked, DataError, label_set

from .report import FATAL, Finding

CHECK = "tokens"
_WHERE = re.compile(r"^(.*):(\d+): (.*)$")


def as_finding(e: DataError, check: str, label: str | None = None) -> Finding:
    """A fatal finding from the error training raises, located as training locates it: `file:line:`
    when the message starts so, else `label:` (a split's files), else nowhere."""
    first = str(e).splitlines()[0]
    m = _WHERE.match(first)
    if m:
        return Finding(FATAL, check, m.group(3), m.group(1), int(m.group(2)))
    if label and first.startswith(label + ": "):
        return Finding(FATAL, check, first[len(label) + 2:], label)
    return Finding(FATAL, check, first)


def pipeline_counts(checked: Checked, dcfg, tokenizer) -> tuple[list[Finding], dict[str, TokenizeReport], dict | None]:
    """(fatal findings, each split's TokenizeReport with the validator's rejections added, the
    trained tokens training keeps of each row: (file, line) -> count, None when training stops in
    this pass). Splits after the one training would stop at are not counted: it never reaches them."""
    labels = label_set(checked.rows["train"], dcfg) if checked.fmt == "classification" else None
    try:
        fm = Formatter(checked.fmt, tokenizer, dcfg, labels)
    except DataError as e:    # chat data and a tokenizer without a chat template
        return [as_finding(e, CHECK)], {}, None
    reports: dict[str, TokenizeReport] = {}
    kept: dict[tuple, int] = {}
    for split, rows in checked.rows.items():
        d = dcfg.model_copy(update={"too_long": "truncate"}) if split == "test" else dcfg
        try:
            examples, rep = tokenize_rows(rows, checked.fmt, tokenizer, d, labels, fm)
        except DataError as e:
            return [as_finding(e, CHECK)], reports, None
        reject_into(rep, checked.rejected.get(split, []))
        reports[split] = rep
        for ex in examples:
            key = (ex.file, ex.line)
            kept[key] = kept.get(key, 0) + sum(x != IGNORE for x in ex.labels)
    return [], reports, kept
