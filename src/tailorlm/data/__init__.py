"""Data: read -> format -> tokenize -> batch. `build_data` is the one entry the loop and eval use."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from .formats import Formatter, detect_format
from .read import DataError, read_rows, train_files
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


def _labels(rows: list[dict], dcfg) -> list[str]:
    if dcfg.labels:
        return list(dcfg.labels)
    key = dcfg.label_field or "label"
    return sorted({str(r[key]) for r in rows if r.get(key) not in (None, "")})


def _read_train(dcfg, seed: int) -> tuple[list[dict], list[dict], list[str], int]:
    """(train rows, validation rows, problems, repaired lines). Several training files are read in
    order; the validation split is carved before each file's rows are repeated by its weight, so no
    copy of a held-out row is trained on."""
    read = read_rows(dcfg.train, dcfg.on_error)
    rows = read.rows[: dcfg.limit] if dcfg.limit else read.rows
    if not rows:
        raise DataError(f"{dcfg.train}: no usable rows" + (f" ({len(read.skipped)} problems, first: "
                                                           f"{read.skipped[0]})" if read.skipped else ""))
    skipped = list(read.skipped)
    if dcfg.val:
        vread = read_rows(dcfg.val, dcfg.on_error)
        val_rows, skipped = vread.rows, skipped + vread.skipped
    elif len(rows) < 2:
        raise DataError(f"{rows[0]['_file']}: one usable row, so nothing is left to train on once the validation "
                        "split is carved out of it. Fix: more rows, or a separate data.val file")
    else:
        rows, val_rows = split_rows(rows, dcfg.val_fraction, dcfg.val_max, seed)
    weight = {str(p): w for p, w in train_files(dcfg.train)}
    rows = [r for r in rows for _ in range(weight.get(r["_file"], 1))]
    return rows, val_rows, skipped, read.repaired


def _balance(dcfg, fmt: str, train: list[Example]) -> None:
    """data.balance: `weight` gives each training example the loss weight n / (classes x n_class), so
    every class weighs the same in the loss and the mean weight stays 1; `sample` is done by the
    batch order (batching.Order with Data.groups)."""
    if dcfg.balance == "none":
        return
    if fmt != "classification":
        raise DataError(f"data.balance: {dcfg.balance} balances the classes of classification data; this data is "
                        f"{fmt}. Fix: data.balance: none")
    if dcfg.balance == "weight":
        counts = Counter(e.cls for e in train)
        for e in train:
            e.weight = len(train) / (len(counts) * counts[e.cls])


def _renderable(rows: list[dict], fm: Formatter, dcfg) -> list[dict]:
    """Held-out rows the task metrics can render. Under on_error: skip, a bad row that training skipped
    is left out of evaluation too, instead of stopping the run at its first evaluation."""
    if dcfg.on_error != "skip" or fm.fmt not in ("instruction", "classification"):
        return rows
    ok = []
    for r in rows:
        try:
            fm.content_response(r)
            ok.append(r)
        except DataError:
            pass
    return ok


def build_data(dcfg, tokenizer, seed: int = 0, task: str = "causal_lm") -> Data:
    """Read, split, format and tokenize. `task: sequence_classification` (a classifier head) needs
    classification rows, and takes its labels from train and validation rows together (they fix the
    size of the head)."""
    rows, val_rows, problems, repaired = _read_train(dcfg, seed)
    test_rows = read_rows(dcfg.test, dcfg.on_error).rows if dcfg.test else []
    fmt = detect_format(rows, dcfg)
    if fmt == "chat" and not any(isinstance(r.get(dcfg.messages_field), list) for r in rows[:100]):
        seen = detect_format(rows, dcfg.model_copy(update={"format": "auto"}))   # what the fields say instead
        raise DataError(f"{dcfg.train}: data.format is chat, but the rows have no {dcfg.messages_field!r} list: "
                        f"they are not chat rows (their fields make them {seen} rows). Fix: data.format: {seen}")
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
                        f"({trep.dropped_too_long} too long, {trep.dropped_no_target} without targets, "
                        f"{trep.skipped_bad_rows} bad rows skipped" + (f"; first: {trep.problems[0]}" if
                                                                         trep.problems else "") + ")")
    _balance(dcfg, fmt, train)
    # a lost line is a line: a CSV quoting error loses every line after it, and the count says so
    report = {"format": fmt, "labels": labels, "skipped_lines": sum(p.lines for p in problems),
              "skipped_examples": [str(p) for p in problems][:20], "repaired_lines": repaired,
              "balance": dcfg.balance, "train": trep.to_dict(), "val": vrep.to_dict(), "test_rows": len(test_rows)}
    return Data(fmt, fm, labels, train, val, _renderable(val_rows, fm, dcfg), _renderable(test_rows, fm, dcfg),
                report, rows)


__all__ = ["Data", "DataError", "Example", "Formatter", "TokenizeReport", "build_data", "detect_format",
           "read_rows", "split_rows", "train_files", "tokenize_classes", "tokenize_rows"]
