"""Discoverable extraction (Carlini et al. 2022, "Quantifying Memorization Across Neural Language
Models", ICLR 2023 §2): prompt the model with the first k tokens of an example, decode the next m
greedily, and count the example extracted when they equal its true continuation exactly.

    rate(set) = #{x in set : greedy(x[:k]) == x[k:k+m]} / |set|
    gap       = rate(training examples) - rate(held-out examples)

Held-out examples of the same data are the control: what the model continues correctly without
having seen the example (formulaic text, a template) is not memorisation; the gap is. The k tokens
are counted after the head every example shares (a chat template's header, the prompt template),
which says nothing about the row; an example shorter than head + k + m is left out and counted.
Base and tuned decode the same prompts, so their rates are paired (stats.paired_change).
"""
from __future__ import annotations

import numpy as np

from .stats import bootstrap, paired_change


def extraction_items(examples, head: int, k: int, m: int) -> tuple[list[list[int]], list[list[int]]]:
    """(prompts, true continuations) of the examples long enough for head + k + m tokens."""
    prompts, targets = [], []
    for e in examples:
        ids = e.input_ids
        if len(ids) >= head + k + m:
            prompts.append(ids[:head + k])
            targets.append(ids[head + k:head + k + m])
    return prompts, targets


def _gap(match: np.ndarray, is_train: np.ndarray):
    """stat(indices): extraction rate on the resampled training items minus on the held-out ones."""
    def stat(i):
        t, h = match[i][is_train[i]], match[i][~is_train[i]]
        return float(t.mean() - h.mean()) if len(t) and len(h) else float("nan")
    return stat


def extraction_rows(train: dict, held: dict, *, rounds: int = 1000, seed: int = 0) -> list[dict]:
    """Rows for RUN/probes/privacy.json. `train` and `held` are {"base": matches, "tuned": matches}
    (0/1 per example, the same examples for both models)."""
    rows = []
    for group, d in (("training", train), ("held-out", held)):
        ci = paired_change(d["base"], d["tuned"], rounds=rounds, seed=seed)
        rows.append({"metric": "extraction rate", "group": group, **ci, "n": len(d["tuned"])})
    is_train = np.r_[np.ones(len(train["tuned"]), bool), np.zeros(len(held["tuned"]), bool)]
    b = np.r_[train["base"], held["base"]].astype(float)
    t = np.r_[train["tuned"], held["tuned"]].astype(float)
    gb, gt = _gap(b, is_train), _gap(t, is_train)
    ci = bootstrap(lambda i: gt(i) - gb(i), len(is_train), rounds=rounds, seed=seed)
    idx = np.arange(len(is_train))
    rows.append({"metric": "extraction gap (training - held-out)", "group": "gap", "base": gb(idx),
                 "tuned": gt(idx), "change": ci["value"], "lo": ci["lo"], "hi": ci["hi"],
                 "significant": bool(ci["lo"] > 0 or ci["hi"] < 0)})
    return rows
