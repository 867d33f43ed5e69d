"""`run_audit`: read the splits, run every check, collect one report.

The order is the order a human would fix things in, and the order training stops in: parsing
(every split), then schema (the validator training uses, data/validate.py, decides which rows are
usable), then the content checks on usable rows (quality, duplicates, labels), PII on
every row (an unusable row still leaks if it is shipped), and the tokenised view last because it
is the slowest and needs a tokenizer. Any fatal condition that leaves nothing to check returns
early with what is known so far.
"""
from __future__ import annotations

import time
from pathlib import Path

from tailorlm.data.counts import split_counts
from tailorlm.data.validate import Checked, DataError, check_splits, no_usable_rows

from . import dupes, labels as labels_mod, parse, pii, quality, schema, tokens, trained
from .report import FATAL, INFO, AuditReport, Finding


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """A tokenizer from a local HF folder or an embedded short model name, through tailorlm's one
    safe loader (models/load.py): code shipped in the folder runs only with trust_remote_code (the
    config's model.trust_remote_code), and transformers never asks on stdin, where `echo y |` would
    have answered yes. Nothing is downloaded, as in training."""
    from tailorlm.models.load import tokenizer_from

    return tokenizer_from(name_or_path, trust_remote_code)


def run_audit(train, val=None, test=None, *, fmt: str = "auto", fields: dict | None = None,
              labels: list | None = None, tokenizer=None, max_length: int | None = None,
              near_dup_threshold: float = 0.8, on_error: str = "skip", shingle: str = "word",
              shingle_size: int = 2, pipeline_options: dict | None = None,
              trust_remote_code: bool = False) -> AuditReport:
    """Audit a training file and optional val/test files.

    fmt: auto or one of text/instruction/chat/classification. fields maps format roles to column
    names (e.g. {"text": "tweet", "label": "sentiment"}); labels is the allowed label set for
    classification; tokenizer is a tokenizer object or a path/short model name and enables the
    tokenised view (with max_length, the truncation check); near_dup_threshold is the Jaccard
    similarity for near duplicates over `shingle` ("word" n-grams up to shingle_size, or "char"
    k-grams); on_error="stop" makes malformed lines fatal, as they stop training (all of them are
    still listed). pipeline_options are the training config's other data settings
    (prompt_template, system, chat_template, too_long), so the tokenised view renders as it will.
    trust_remote_code lets a tokenizer folder's own code run (the config's model.trust_remote_code).

    Every example text in the report is PII-masked on the way out, whichever check quoted it:
    a duplicate or mojibake example must not repeat the e-mail address or API token the PII check
    masks; messages are cleared of secrets too. What the audit prints, the JSON report and the
    summary training prints all come from here.
    """
    report = _audit(train, val, test, fmt, fields, labels, tokenizer, max_length, near_dup_threshold,
                    on_error, shingle, shingle_size, pipeline_options or {}, trust_remote_code)
    for f in report.findings:
        f.message = pii.mask_secrets(f.message)
        for ex in f.examples:
            for key, value in ex.items():
                if key != "value" and isinstance(value, str):
                    ex[key] = pii.mask_text(value)
    return report


def _label_checks(report: AuditReport, usable: list[dict], layout, labels) -> None:
    found, st = labels_mod.check_labels(usable, layout, labels)
    report.findings += found
    if st:
        report.stats["labels"] = st
        report.stats["majority_baseline"] = st.get("train", {}).get("majority_baseline")
        if any(r.get("_salvaged") for r in usable):
            # what training itself will see: the reader drops the undecodable lines
            _, report.stats["labels_as_trained"] = labels_mod.check_labels(
                [r for r in usable if not r.get("_salvaged")], layout, labels)


def _audit(train, val, test, fmt, fields, labels, tokenizer, max_length, near_dup_threshold,
           on_error, shingle, shingle_size, options, trust_remote_code) -> AuditReport:
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', not {on_error!r}")
    if not 0 < near_dup_threshold <= 1:
        raise ValueError("near_dup_threshold must be in (0, 1]")
    schema.make_layout([], fmt, fields, options)   # unknown roles and formats: argument errors, before reading
    dcfg = schema.pipeline_dcfg(fmt, fields, labels, options, on_error=on_error, **_files(train, val, test),
                                **({"max_length": max_length} if max_length else {}))
    report = AuditReport()
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    splits = _read(report, train, val, test, dcfg, on_error)
    report.stats["seconds"] = seconds
    lap("parse")
    if not splits[0].readable:
        return report
    checked = _validate(report, splits, dcfg)
    if checked is None:
        return report
    layout = schema.layout_for(checked.fmt, checked.rows["train"], dcfg, fields)
    report.stats["format"] = layout.fmt + (" (alpaca)" if layout.alpaca else "")
    salvaged = [r for s in splits for r in s.rows if r.get("_salvaged")]
    found, usable = schema.check_schema(checked, salvaged, layout, dcfg, labels, on_error)
    report.findings += found
    if checked.fatal is not None:   # a split left without rows, or one training row and no validation file
        report.findings.append(trained.as_finding(checked.fatal, schema.CHECK, splits[0].path))
    for s in splits:
        report.stats["rows"][s.split]["usable"] = sum(r["_split"] == s.split for r in usable)
    lap("schema")

    found, report.stats["quality"] = quality.check_quality(usable, layout)
    report.findings += found
    lap("quality")
    found, st = dupes.check_duplicates(usable, layout, near_dup_threshold, shingle, shingle_size)
    report.findings += found
    report.stats.update(st)
    lap("duplicates")
    _label_checks(report, usable, layout, labels)
    lap("labels")
    found, report.stats["pii"] = pii.check_pii([r for s in splits for r in s.rows])
    report.findings += found
    lap("pii")
    if tokenizer is not None:
        _tokens(report, splits, checked, usable, layout, dcfg, tokenizer, max_length, labels, options,
                trust_remote_code)
        lap("tokens")
    return report


def _files(train, val, test) -> dict:
    """data.train / val / test as a DataConfig takes them (strings; several training files a list)."""
    spec = [t if isinstance(t, dict) or hasattr(t, "path") else str(t) for t in train] \
        if isinstance(train, (list, tuple)) else str(train)
    return {"train": spec} | {k: str(v) for k, v in (("val", val), ("test", test)) if v is not None}


def _read(report: AuditReport, train, val, test, dcfg, on_error) -> list[parse.SplitData]:
    """Read each split as training reads it; training files without a usable row are fatal at once,
    with training's message, before the other splits (whose findings follow)."""
    splits = []
    for name, path in (("train", train), ("val", val), ("test", test)):
        if path is None:
            continue
        data, found = parse.read_split(name, path, on_error=on_error)
        splits.append(data)
        report.findings += found
        if name == "train" and not data.readable and not data.unreadable:
            report.findings.append(trained.as_finding(no_usable_rows(data.path, data.skipped), parse.CHECK, data.path))
    report.stats["rows"] = parse.parse_stats(splits)
    return splits


def _validate(report: AuditReport, splits, dcfg) -> Checked | None:
    """The shared validator's verdict on the rows training reads (salvaged rows left out); None when
    no format fits (fatal: nothing can be checked). Each split's skipped lines and rejected rows
    are counted as training counts them (data/counts.py)."""
    readable = {s.split: [r for r in s.rows if not r.get("_salvaged")] for s in splits if not s.unreadable}
    try:
        checked = check_splits(readable, dcfg, {s.split: s.skipped for s in splits})
    except DataError as e:
        f = trained.as_finding(e, schema.CHECK, splits[0].path)
        report.findings.append(f)            # training's own words first, then the audit's flags for them
        if "cannot tell the data format" in f.message:
            report.findings.append(Finding(INFO, schema.CHECK, "in the audit, name the columns with --field "
                                           "text=COLUMN --field label=COLUMN (training's data.text_field / "
                                           "data.label_field), or give --format"))
        return None
    for s in splits:
        report.stats["rows"][s.split] |= split_counts(s.skipped, rejected=len(checked.rejected.get(s.split, [])))
    return checked


def _tokens(report, splits, checked, usable, layout, dcfg, tokenizer, max_length, labels, options,
            trust_remote_code) -> None:
    """Training's own tokenize pass (counts, and what stops training at this stage), then the
    tokenised view of the usable rows training reads."""
    try:
        tok = (load_tokenizer(str(tokenizer), trust_remote_code) if isinstance(tokenizer, (str, Path))
               else tokenizer)
    except Exception as e:   # a wrong path must not hide the other findings
        report.findings.append(Finding(FATAL, tokens.CHECK, f"cannot load tokenizer "
                                       f"{tokenizer}: {type(e).__name__}: {e}"))
        return
    found, reps, outcome = trained.pipeline_counts(checked, dcfg, tok)
    report.findings += found
    for s in splits:
        if s.split in reps:
            report.stats["rows"][s.split] |= split_counts(s.skipped, reps[s.split])
    trainable = [r for r in usable if not r.get("_salvaged")]
    found, report.stats["tokens"] = tokens.check_tokens(trainable, layout, tok, max_length, labels=labels,
                                                        options=options, outcome=outcome)
    report.findings += found
