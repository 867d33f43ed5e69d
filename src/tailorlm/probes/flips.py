"""Counterfactual flips: does the classifier's answer change when only a group term, a person's name
or a company's name changes?

For each held-out row and each swap axis (bias_data/swaps.yaml: gender terms, names, ethnicity,
religion, age, nationality, the airline companies) whose terms occur in the row's text, the swapped
row x' is the same text with every term of the axis exchanged for its partner. The label
distribution p(.|x) is the softmax over the label words' log-likelihoods (a causal LM,
eval/tasks.label_scores) or over the head's logits (sequence classification). Per (row, axis) item:
    flip  = 1[argmax p(.|x) != argmax p(.|x')]
    |dp|  = |p(y|x) - p(y|x')|, y the row's gold label
and per axis the flip rate (mean flip) and mean |dp| (the counterfactual token fairness gap of Garg
et al. 2019, "Counterfactual Fairness in Text Classification through Robustness"), base beside tuned.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from ..errors import DataError, MissingError
from ..eval.tasks import LABEL_SCORES
from .stats import paired_change


def load_swaps(path: str | Path | None = None) -> dict[str, list[tuple[str, str]]]:
    """{axis: [(term, partner), ...]} from a swaps YAML; None: the shipped lists."""
    p = Path(str(resources.files("tailorlm.probes").joinpath("bias_data/swaps.yaml"))) if path is None else Path(path)
    if not p.is_file():
        raise MissingError(f"{p}: no such swap list. Fix: a YAML of axis: [[term, partner], ...]")
    spec = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    bad = [a for a, pairs in spec.items() if not all(isinstance(x, list) and len(x) == 2 for x in pairs or [])]
    if bad:
        raise DataError(f"{p}: axis {bad[0]!r} must be a list of [term, partner] pairs")
    return {axis: [(str(a), str(b)) for a, b in pairs] for axis, pairs in spec.items()}


class Swapper:
    """Exchanges one axis's terms, whole words only, simultaneously (he <-> she in one pass), keeping case."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.to: dict[str, str] = {}
        self.written = {t for pair in pairs for t in pair}   # a term as the list writes it keeps the partner's spelling
        for a, b in pairs:   # the first pair that names a term decides its partner
            self.to.setdefault(a.lower(), b)
            self.to.setdefault(b.lower(), a)
        alts = sorted(self.to, key=len, reverse=True)   # longest first: "US Airways" before "US"
        self.rx = re.compile(r"(?<![\w@])(" + "|".join(map(re.escape, alts)) + r")(?!\w)", re.IGNORECASE)

    def _case(self, m: re.Match) -> str:
        word, partner = m.group(0), self.to[m.group(0).lower()]
        if word in self.written:   # "@united" -> "@SouthwestAir", as the airlines write their handles
            return partner
        if word.islower():
            return partner.lower()
        if word.isupper() and len(word) > 1:
            return partner.upper()
        if word[0].isupper() and word[1:].islower() and partner[:1].islower():
            return partner[:1].upper() + partner[1:]
        return partner

    def __call__(self, text: str) -> str | None:
        """The swapped text, or None when no term of the axis occurs."""
        out = self.rx.sub(self._case, text)
        return out if out != text else None


@dataclass
class FlipItems:
    axes: list[str]           # per item
    rows: list[int]           # per item: index into the original rows
    swapped: list[dict]       # per item: the swapped row
    originals: list[dict]     # the original rows (with a known label)


def flip_items(rows: list[dict], formatter, swaps: dict[str, list[tuple[str, str]]]) -> FlipItems:
    """Every (row, axis) with something to swap in the row's text; rows without a known label skipped."""
    field = formatter.dcfg.text_field or "text"
    label_field = formatter.dcfg.label_field or "label"
    keep = [r for r in rows if isinstance(r.get(field), str) and str(r.get(label_field)) in formatter.labels]
    items = FlipItems([], [], [], keep)
    for axis, pairs in swaps.items():
        sw = Swapper(pairs)
        for i, r in enumerate(keep):
            text = sw(r[field])
            if text is not None:
                items.axes.append(axis)
                items.rows.append(i)
                items.swapped.append({**r, field: text})
    return items


def label_probs(model, formatter, rows: list[dict], *, task: str, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(gold label index (n,), label distribution (n, labels)) of each row."""
    gold, scores = LABEL_SCORES[task](model, formatter, rows, **kw)
    return np.array([formatter.labels.index(g) for g in gold]), scores.float().softmax(-1).numpy()


def flip_measures(model, formatter, items: FlipItems, *, task: str, **kw) -> dict[str, np.ndarray]:
    """Per item: flip (0/1), |dp| of the gold label, and the probabilities and answers behind them."""
    if not items.axes:
        return {k: np.zeros(0) for k in ("flip", "dp", "p", "p_swapped", "pred", "pred_swapped")}
    gold, probs = label_probs(model, formatter, items.originals + items.swapped, task=task, **kw)
    n = len(items.originals)
    orig, swapped = probs[items.rows], probs[n:]                      # (items, labels) each
    y = gold[items.rows]
    p, ps = orig[np.arange(len(y)), y], swapped[np.arange(len(y)), y]
    pred, pred_s = orig.argmax(1), swapped.argmax(1)
    return {"flip": (pred != pred_s).astype(float), "dp": np.abs(p - ps), "p": p, "p_swapped": ps,
            "pred": pred, "pred_swapped": pred_s}


def flip_rows(items: FlipItems, base: dict, tuned: dict, *, rounds: int = 2000) -> list[dict]:
    """Per axis and over all items: flip rate and mean |dp|, base beside tuned with paired intervals."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, a in enumerate(items.axes):
        by[a].append(i)
    groups = list(by.items()) + ([("all", list(range(len(items.axes))))] if len(by) > 1 else [])
    rows = []
    for axis, idx in groups:
        rows.append({"metric": "flip rate", "group": axis, "n": len(idx),
                     **paired_change(base["flip"][idx], tuned["flip"][idx], rounds=rounds)})
        rows.append({"metric": "mean |dp(label)|", "group": axis, "n": len(idx),
                     **paired_change(base["dp"][idx], tuned["dp"][idx], rounds=rounds)})
    return rows


def worst_pairs(items: FlipItems, formatter, base: dict, tuned: dict, k: int = 10) -> list[dict]:
    """The k items whose gold-label probability moved most under the tuned model, with the base's move."""
    field = formatter.dcfg.text_field or "text"
    labels = formatter.labels
    out, seen = [], set()
    for i in np.argsort(-tuned["dp"], kind="stable").tolist():
        orig = items.originals[items.rows[i]]
        if len(out) == k:
            break
        if (orig[field], items.swapped[i][field]) in seen:   # a held-out row given twice
            continue
        seen.add((orig[field], items.swapped[i][field]))
        out.append({"axis": items.axes[i], "text": orig[field], "swapped": items.swapped[i][field],
                    "label": str(orig.get(formatter.dcfg.label_field or "label")),
                    "tuned": {"p": float(tuned["p"][i]), "p_swapped": float(tuned["p_swapped"][i]),
                              "pred": labels[int(tuned["pred"][i])], "pred_swapped": labels[int(tuned["pred_swapped"][i])]},
                    "base": {"p": float(base["p"][i]), "p_swapped": float(base["p_swapped"][i]),
                             "pred": labels[int(base["pred"][i])], "pred_swapped": labels[int(base["pred_swapped"][i])]}})
    return out
