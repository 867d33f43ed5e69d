"""Data: read -> validate -> format -> tokenize -> batch. `build_data` is the one entry the loop and eval
use; validate.py is the validator `tailorlm audit` shares, counts.py the counts both report."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from .counts import console_line, reject_into, split_counts, totals
from .formats import Formatter
from .preference import tokenize_pairs
from .read import DataError, Problem, read_rows, train_files
from .tokenize import Example, TokenizeReport, tokenize_classes, tokenize_rows
from .validate import (ROW_FIX, Checked, check_splits, detect_format, label_set, no_usable_rows,
                       split_label)


@dataclass
class Data:
    fmt: str
    formatter: Formatter
    labels: list[str] | None
    train: list[Example]
    val: list[Example]
    val_rows: list[dict]          # held-out rows, for task metrics (accuracy by label likelihood)
    test_rows: list[dict]
    report: dict = field(default_factory=dict)
    train_rows: list[dict] = field(default_factory=list)   # for few-shot prompts

    def describe(self) -> str:
        """The console's data line: format, examples, and what every split lost (counts.py)."""
        return (f"data: {self.fmt}, {len(self.train)} train / {len(self.val)} val examples; "
                f"{console_line(self.report)}")

    @property
    def groups(self) -> list[int] | None:
        """Each training example's class, for an order that draws classes equally (data.balance: sample)."""
        return [e.cls for e in self.train] if self.report.get("balance") == "sample" else None


def split_rows(rows: list[dict], fraction: float, cap: int, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded (train, val) split of rows: val gets fraction of them, at most cap, at least 1."""
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_val = max(1, min(cap, int(len(rows) * fraction)))
    held = set(idx[:n_val])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def _read(dcfg) -> tuple[dict[str, list[dict]], dict[str, list[Problem]], int]:
    """Each split's rows and the reader's problems (train first; val and test when given), and the
    CSV lines repaired. Training files with no usable row stop here, before the others are read, as
    the audit does (audit/core.py)."""
    read = read_rows(dcfg.train, dcfg.on_error)
    rows = read.rows[: dcfg.limit] if dcfg.limit else read.rows
    if not rows:
        raise no_usable_rows(split_label(dcfg, "train"), read.skipped)
    out, problems, repaired = {"train": rows}, {"train": list(read.skipped)}, read.repaired
    for split in ("val", "test"):
        if getattr(dcfg, split):
            res = read_rows(getattr(dcfg, split), dcfg.on_error)
            out[split], problems[split], repaired = res.rows, list(res.skipped), repaired + res.repaired
    return out, problems, repaired


def _checked(dcfg) -> tuple[Checked, dict[str, list[Problem]], int]:
    """Read and validate every split with the validator the audit uses (validate.py): data.on_error:
    stop raises at the first rejected row, skip keeps the rest and counts them."""
    rows, problems, repaired = _read(dcfg)
    checked = check_splits(rows, dcfg, problems)
    first = checked.first_rejected()
    if first is not None and dcfg.on_error == "stop":
        raise DataError(f"{first}\n  {ROW_FIX}")
    if checked.fatal is not None:
        raise checked.fatal
    return checked, problems, repaired


def _split(checked: Checked, dcfg, seed: int) -> tuple[list[dict], list[dict]]:
    """(train rows, validation rows). The validation split is carved before each training file's rows
    are repeated by its weight, so no copy of a held-out row is trained on."""
    rows = checked.rows["train"]
    if "val" in checked.rows:
        val_rows = checked.rows["val"]
    else:
        rows, val_rows = split_rows(rows, dcfg.val_fraction, dcfg.val_max, seed)
    weight = {str(p): w for p, w in train_files(dcfg.train)}
    return [r for r in rows for _ in range(weight.get(r["_file"], 1))], val_rows


BALANCE_AUTO_RATIO = 1.5   # data.balance: auto weighs classes when the largest is this many times the smallest


def _balance(dcfg, fmt: str, train: list[Example]) -> str:
    """data.balance: `weight` gives each training example the loss weight n / (classes x n_class), so
    every class weighs the same in the loss and the mean weight stays 1; `sample` is done by the
    batch order (batching.Order with Data.groups); `auto` is `weight` for classification data whose
    largest class is BALANCE_AUTO_RATIO times its smallest or more, else `none`. Returns the balance
    used (what the run's config.yaml records)."""
    counts = Counter(e.cls for e in train)
    balance = dcfg.balance
    if balance == "auto":
        skewed = fmt == "classification" and len(counts) > 1 and \
            max(counts.values()) >= BALANCE_AUTO_RATIO * min(counts.values())
        balance = "weight" if skewed else "none"
    if balance == "none":
        return balance
    if fmt != "classification":
        raise DataError(f"data.balance: {balance} balances the classes of classification data; this data is "
                        f"{fmt}. Fix: data.balance: none")
    if balance == "weight":
        for e in train:
            e.weight = len(train) / (len(counts) * counts[e.cls])
    return balance


def build_data(dcfg, tokenizer, seed: int = 0, task: str = "causal_lm") -> Data:
    """Read, validate, split, format and tokenize. `task: sequence_classification` (a classifier head)
    needs classification rows, and takes its labels from train and validation rows together (they fix
    the size of the head)."""
    checked, problems, repaired = _checked(dcfg)
    fmt = checked.fmt
    rows, val_rows = _split(checked, dcfg, seed)
    test_rows = checked.rows.get("test", [])
    labels, fm, (train, trep), (val, vrep), test_rep = _tokenize(dcfg, tokenizer, task, fmt, rows, val_rows, test_rows)
    for split, rep in (("train", trep), ("val", vrep), ("test", test_rep)):   # (a carved val: checked as train)
        reject_into(rep, checked.rejected.get(split, []))
    if not train:
        raise DataError(f"{split_label(dcfg, 'train')}: no example has a trainable token after tokenization "
                        f"({trep.dropped_too_long} too long, {trep.dropped_no_target} without targets, "
                        f"{trep.skipped_bad_rows} bad rows skipped" + (f"; first: {trep.problems[0]}" if
                                                                         trep.problems else "") + ")")
    balance = _balance(dcfg, fmt, train)
    splits = {"train": split_counts(problems["train"], trep), "val": split_counts(problems.get("val", []), vrep)}
    if "test" in checked.rows:
        splits["test"] = split_counts(problems["test"], test_rep)
    # a lost line is a line: a CSV quoting error loses every line after it, and the count says so
    report = {"format": fmt, "labels": labels, **totals(splits), "splits": splits,
              "skipped_examples": [str(p) for ps in problems.values() for p in ps][:20],
              "rejected_examples": (trep.problems + vrep.problems + test_rep.problems)[:20], "repaired_lines": repaired,
              "balance": balance, "train": trep.to_dict(), "val": vrep.to_dict(), "test_rows": len(test_rows)}
    if "test" in checked.rows:
        report["test"] = test_rep.to_dict()
    return Data(fmt, fm, labels, train, val, val_rows, test_rows, report, rows)


def _tokenize(dcfg, tokenizer, task, fmt, rows, val_rows, test_rows):
    """(labels, formatter, (train, its report), (val, its report), the test rows' report). Test rows are
    tokenized only to count what max_length cuts from them, leniently as evaluation cuts them
    (eval/tasks.py: over-long prompts truncated; for a classifier head, unknown labels skipped)."""
    if task == "sequence_classification":
        if fmt != "classification":
            raise DataError(f"{split_label(dcfg, 'train')}: model.task is sequence_classification, which needs "
                            f"classification rows (a text and a label), not {fmt}. Fix: data.format: "
                            "classification with data.text_field / data.label_field, or model.task: causal_lm")
        labels = label_set(rows + val_rows, dcfg)
        if len(labels) < 2:
            raise DataError(f"{split_label(dcfg, 'train')}: a classifier needs at least two labels, the data "
                            f"has {labels}")
        fm = Formatter(fmt, tokenizer, dcfg, labels, head=True)
        lenient = dcfg.model_copy(update={"on_error": "skip", "too_long": "truncate"})
        return (labels, fm, tokenize_classes(rows, tokenizer, dcfg, labels, fm),
                tokenize_classes(val_rows, tokenizer, dcfg, labels, fm),
                tokenize_classes(test_rows, tokenizer, lenient, labels, fm)[1])
    labels = label_set(rows, dcfg) if fmt == "classification" else None
    fm = Formatter(fmt, tokenizer, dcfg, labels)
    lenient = dcfg.model_copy(update={"too_long": "truncate"})
    if fmt == "preference":   # pairs: each example holds its rejected sequence (data/preference.py)
        return (None, fm, tokenize_pairs(rows, tokenizer, dcfg, fm), tokenize_pairs(val_rows, tokenizer, dcfg, fm),
                tokenize_pairs(test_rows, tokenizer, lenient, fm)[1])
    return (labels, fm, tokenize_rows(rows, fmt, tokenizer, dcfg, labels, fm),
            tokenize_rows(val_rows, fmt, tokenizer, dcfg, labels, fm),
            tokenize_rows(test_rows, fmt, tokenizer, lenient, labels, fm)[1])


__all__ = ["Data", "DataError", "console_line", "Example", "Formatter", "TokenizeReport", "build_data", "detect_format",
           "read_rows", "split_rows", "train_files", "tokenize_classes", "tokenize_pairs", "tokenize_rows"]
