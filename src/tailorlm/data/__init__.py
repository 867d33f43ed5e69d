"""Data: read -> format -> tokenize -> batch. `build_data` is the one entry the loop and eval use."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .formats import Formatter, detect_format
from .read import DataError, read_rows
from .tokenize import Example, TokenizeReport, tokenize_classes, tokenize_rows


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


def split_rows(rows: list[dict], fraction: float, cap: int, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded (train, val) split of rows: val gets fraction of them, at most cap, at least 1."""
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_val = max(1, min(cap, int(len(rows) * fraction)))
    held = set(idx[:n_val])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def _labels(rows: list[dict], dcfg) -> list[str]:
    if dcfg.labels:
        return list(dcfg.labels)
    key = dcfg.label_field or "label"
    return sorted({str(r[key]) for r in rows if r.get(key) not in (None, "")})


def build_data(dcfg, tokenizer, seed: int = 0, task: str = "causal_lm") -> Data:
    """Read, split, format and tokenize. `task: sequence_classification` (a classifier head) needs
    classification rows, and takes its labels from train and validation rows together (they fix the
    size of the head)."""
    read = read_rows(dcfg.train, dcfg.on_error)
    rows = read.rows[: dcfg.limit] if dcfg.limit else read.rows
    if not rows:
        raise DataError(f"{dcfg.train}: no usable rows")
    skipped = [str(p) for p in read.skipped]
    if dcfg.val:
        vread = read_rows(dcfg.val, dcfg.on_error)
        val_rows, skipped = vread.rows, skipped + [str(p) for p in vread.skipped]
    else:
        rows, val_rows = split_rows(rows, dcfg.val_fraction, dcfg.val_max, seed)
    test_rows = read_rows(dcfg.test, dcfg.on_error).rows if dcfg.test else []
    fmt = detect_format(rows, dcfg)
    if task == "sequence_classification":
        if fmt != "classification":
            raise DataError(f"{dcfg.train}: model.task is sequence_classification, which needs classification "
                            f"rows (a text and a label), not {fmt}. Fix: data.format: classification with "
                            "data.text_field / data.label_field, or model.task: causal_lm")
        labels = _labels(rows + val_rows, dcfg)
        if len(labels) < 2:
            raise DataError(f"{dcfg.train}: a classifier needs at least two labels, the data has {labels}")
        fm = Formatter(fmt, tokenizer, dcfg, labels)
        train, trep = tokenize_classes(rows, tokenizer, dcfg, labels, fm)
        val, vrep = tokenize_classes(val_rows, tokenizer, dcfg, labels, fm)
    else:
        labels = _labels(rows, dcfg) if fmt == "classification" else None
        fm = Formatter(fmt, tokenizer, dcfg, labels)
        train, trep = tokenize_rows(rows, fmt, tokenizer, dcfg, labels, fm)
        val, vrep = tokenize_rows(val_rows, fmt, tokenizer, dcfg, labels, fm)
    if not train:
        raise DataError(f"{dcfg.train}: no example has a trainable token after tokenization "
                        f"({trep.dropped_too_long} too long, {trep.dropped_no_target} without targets)")
    report = {"format": fmt, "labels": labels, "skipped_lines": len(skipped), "skipped_examples": skipped[:20],
              "repaired_lines": read.repaired,
              "train": trep.to_dict(), "val": vrep.to_dict(), "test_rows": len(test_rows)}
    return Data(fmt, fm, labels, train, val, val_rows, test_rows, report, rows)


__all__ = ["Data", "DataError", "Example", "Formatter", "TokenizeReport", "build_data", "detect_format",
           "read_rows", "split_rows", "tokenize_classes", "tokenize_rows"]
