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

Terms with a common sense that names no group ("black coffee", "white wine", "senior engineer",
"senior year", "how old", "American Airlines", "french fries") would make a swap that changes the
meaning, not the group. The rule: a term listed under `ambiguous` in the swaps YAML counts as a group
term only where the next word is one of `people` ("black woman", "old man", "senior citizens") and the
word before is no number or word of `measures` ("10 yr old daughter", "4yr old son" give an age, not
the old); a (row, axis) with any other occurrence of such a term is not probed on that axis but counted
apart (`FlipItems.set_aside`, per axis), so the flip rate is over unambiguous swaps only.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from ..errors import DataError, MissingError
from ..eval.tasks import LABEL_SCORES
from .stats import paired_change


SENSE_KEYS = ("ambiguous", "people", "measures")   # reserved keys of a swaps YAML: the other-senses rule's words


class SwapList(dict):
    """{axis: [(term, partner), ...]}, with the other-senses rule's lowercase word sets (SENSE_KEYS)."""

    def __init__(self, axes: dict, ambiguous=frozenset(), people=frozenset(), measures=frozenset()):
        super().__init__(axes)
        self.ambiguous, self.people, self.measures = frozenset(ambiguous), frozenset(people), frozenset(measures)


def _words(p: Path, spec: dict, key: str) -> frozenset[str] | None:
    words = spec.get(key)
    if words is not None and not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
        raise DataError(f"{p}: `{key}` must be a list of words")
    return None if words is None else frozenset(w.lower() for w in words)


def load_swaps(path: str | Path | None = None) -> SwapList:
    """{axis: [(term, partner), ...]} from a swaps YAML, with its `ambiguous`, `people` and `measures` words
    (a list a file leaves out is the shipped one; `ambiguous: []` turns the rule off); None: the shipped file."""
    p = Path(str(resources.files("tailorlm.probes").joinpath("bias_data/swaps.yaml"))) if path is None else Path(path)
    if not p.is_file():
        raise MissingError(f"{p}: no such swap list. Fix: a YAML of axis: [[term, partner], ...]")
    spec = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    words = {k: _words(p, spec, k) for k in SENSE_KEYS}
    axes = {a: v for a, v in spec.items() if a not in SENSE_KEYS}
    bad = [a for a, pairs in axes.items() if not all(isinstance(x, list) and len(x) == 2 for x in pairs or [])]
    if bad:
        raise DataError(f"{p}: axis {bad[0]!r} must be a list of [term, partner] pairs")
    if path is not None and None in words.values():
        shipped = load_swaps(None)
        words = {k: getattr(shipped, k) if v is None else v for k, v in words.items()}
    return SwapList({axis: [(str(a), str(b)) for a, b in pairs] for axis, pairs in axes.items()},
                    **{k: v or frozenset() for k, v in words.items()})


class Swapper:
    """Exchanges one axis's terms, whole words only, simultaneously (he <-> she in one pass), keeping case;
    `ambiguous` terms only right before a word of `people`, not after a measure (the other-senses rule)."""

    def __init__(self, pairs: list[tuple[str, str]], *, ambiguous=(), people=(), measures=()):
        self.to: dict[str, str] = {}
        self.written = {t for pair in pairs for t in pair}   # a term as the list writes it keeps the partner's spelling
        for a, b in pairs:   # the first pair that names a term decides its partner
            self.to.setdefault(a.lower(), b)
            self.to.setdefault(b.lower(), a)
        self.ambiguous = {t.lower() for t in ambiguous} & set(self.to)   # this axis's terms only
        self.people, self.measures = {w.lower() for w in people}, {w.lower() for w in measures}
        alts = sorted(self.to, key=len, reverse=True)   # longest first: "US Airways" before "US"
        self.rx = re.compile(r"(?<![\w@])(" + "|".join(map(re.escape, alts)) + r")(?!\w)", re.IGNORECASE)

    def other_senses(self, text: str) -> list[str]:
        """The ambiguous terms (lowercase, in order) not right before a person word or right after a
        measure: 'black coffee', 'senior engineer', 'how old' (end of text), '10 yr old daughter';
        not 'black woman'."""
        out = []
        for m in self.rx.finditer(text):
            term = m.group(0).lower()
            if term in self.ambiguous:
                nxt = re.match(r"[ \t]+([^\W\d_]+)", text[m.end():])      # the next word, letters only
                prev = re.search(r"([^\W_]+)[ \t-]*$", text[:m.start()])    # the word before: "10", "4yr", "year"
                measured = prev is not None and (any(c.isdigit() for c in prev.group(1))
                                                 or prev.group(1).lower() in self.measures)
                if nxt is None or nxt.group(1).lower() not in self.people or measured:
                    out.append(term)
        return out

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
        """The swapped text, or None when no term of the axis occurs or one is in another sense."""
        if self.other_senses(text):
            return None
        out = self.rx.sub(self._case, text)
        return out if out != text else None


@dataclass
class FlipItems:
    axes: list[str]           # per item
    rows: list[int]           # per item: index into the original rows
    swapped: list[dict]       # per item: the swapped row
    originals: list[dict]     # the original rows (with a known label)
    set_aside: dict[str, int] = field(default_factory=dict)   # per axis: (row, axis) skipped, a term in another sense


def flip_items(rows: list[dict], formatter, swaps: dict[str, list[tuple[str, str]]]) -> FlipItems:
    """Every (row, axis) with something to swap in the row's text; rows without a known label skipped,
    and (row, axis) with a term in another sense counted in `set_aside` (a SwapList's rule; a bare
    dict of axes has none)."""
    text_field = formatter.dcfg.text_field or "text"
    label_field = formatter.dcfg.label_field or "label"
    keep = [r for r in rows if isinstance(r.get(text_field), str) and str(r.get(label_field)) in formatter.labels]
    items = FlipItems([], [], [], keep)
    senses = {k: getattr(swaps, k, ()) for k in SENSE_KEYS}
    for axis, pairs in swaps.items():
        sw = Swapper(pairs, **senses)
        for i, r in enumerate(keep):
            if sw.other_senses(r[text_field]):
                items.set_aside[axis] = items.set_aside.get(axis, 0) + 1
                continue
            text = sw(r[text_field])
            if text is not None:
                items.axes.append(axis)
                items.rows.append(i)
                items.swapped.append({**r, text_field: text})
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
    text_field = formatter.dcfg.text_field or "text"
    labels = formatter.labels
    out, seen = [], set()
    for i in np.argsort(-tuned["dp"], kind="stable").tolist():
        orig = items.originals[items.rows[i]]
        if len(out) == k:
            break
        if (orig[text_field], items.swapped[i][text_field]) in seen:   # a held-out row given twice
            continue
        seen.add((orig[text_field], items.swapped[i][text_field]))
        out.append({"axis": items.axes[i], "text": orig[text_field], "swapped": items.swapped[i][text_field],
                    "label": str(orig.get(formatter.dcfg.label_field or "label")),
                    "tuned": {"p": float(tuned["p"][i]), "p_swapped": float(tuned["p_swapped"][i]),
                              "pred": labels[int(tuned["pred"][i])], "pred_swapped": labels[int(tuned["pred_swapped"][i])]},
                    "base": {"p": float(base["p"][i]), "p_swapped": float(base["p_swapped"][i]),
                             "pred": labels[int(base["pred"][i])], "pred_swapped": labels[int(base["pred_swapped"][i])]}})
    return out
