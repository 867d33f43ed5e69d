"""What each split (train, val, test) lost on its way to training, counted one way for the console
line, summary.json and `tailorlm audit`.

Three numbers once disagreed because three places counted them: the console showed the training
split's truncation only (a 10 MB validation row lost five million tokens and it said "truncated 0")
and the reader's skipped lines but not the rows the schema check rejected, and the audit counted a
CSV quoting error as one line where training lost every line after it. Here:

    skipped_lines      lines the reader could not use (bad JSON, bad bytes, bad CSV: every line lost)
    rejected_rows      rows the validator refused (validate.py) and rows the tokenizer could not render
    truncated          examples cut to data.max_length, and truncated_tokens the tokens cut from them
    dropped_too_long   examples dropped by data.too_long: drop; dropped_no_target those left without
                       a trainable token
"""
from __future__ import annotations

from .read import Problem

TOKEN_KEYS = ("truncated", "truncated_tokens", "dropped_too_long", "dropped_no_target")
KEYS = ("skipped_lines", "rejected_rows") + TOKEN_KEYS


def split_counts(problems: list[Problem] = (), rep=None, rejected: int = 0) -> dict:
    """One split's counts from the reader's problems and its TokenizeReport (whose skipped_bad_rows
    holds the validator's rejections once `reject_into` put them there; else pass `rejected`).
    Without a report (the audit without a tokenizer) the token counts are left out rather than
    shown as a false zero."""
    out = {"skipped_lines": sum(p.lines for p in problems),
           "rejected_rows": rejected + (rep.skipped_bad_rows if rep is not None else 0)}
    if rep is not None:
        out |= {k: getattr(rep, k) for k in TOKEN_KEYS}
    return out


def reject_into(rep, rejected: list) -> None:
    """Add the validator's rejected rows (RowErrors) to a TokenizeReport, first among its problems, so
    that its skipped_bad_rows counts every row of the split that training does not use."""
    rep.skipped_bad_rows += len(rejected)
    rep.problems[:0] = [str(e) for e in rejected]


def totals(splits: dict[str, dict]) -> dict:
    return {k: sum(c.get(k, 0) for c in splits.values()) for k in KEYS}


def _brief(c: dict) -> str:
    parts = [f"skipped {c['skipped_lines']} lines" if c.get("skipped_lines") else "",
             f"rejected {c['rejected_rows']} rows" if c.get("rejected_rows") else "",
             f"truncated {c['truncated']} ({c['truncated_tokens']} tokens cut)" if c.get("truncated") else "",
             f"dropped {c.get('dropped_too_long', 0) + c.get('dropped_no_target', 0)}"
             if c.get("dropped_too_long") or c.get("dropped_no_target") else ""]
    return ", ".join(p for p in parts if p)


def console_line(report: dict) -> str:
    """`truncated T (N tokens cut), dropped D too long + E without targets, skipped S bad lines,
    rejected R bad rows`, over every split; then each split's own share when a split other than
    train has any (`; val: truncated 1 (4999782 tokens cut)`)."""
    line = (f"truncated {report['truncated']} ({report['truncated_tokens']} tokens cut), dropped "
            f"{report['dropped_too_long']} too long + {report['dropped_no_target']} without targets, skipped "
            f"{report['skipped_lines']} bad lines, rejected {report['rejected_rows']} bad rows")
    shares = {s: _brief(c) for s, c in report.get("splits", {}).items()}
    if any(text for s, text in shares.items() if s != "train"):
        line += "".join(f"; {s}: {text}" for s, text in shares.items() if text)
    return line
