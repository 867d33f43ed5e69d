"""Discoverable extraction (Carlini et al. 2022, "Quantifying Memorization Across Neural Language
Models", ICLR 2023 §2): prompt the model with a training sequence's first k tokens, decode the next
m greedily, and count the example extracted when they equal its true continuation exactly.

    rate(set) = #{x in set : greedy(x[:t]) == x[t:t+m]} / |set|
    gap       = rate(training examples) - rate(held-out examples)

Where the window sits (`window`):
    trained  (default) the m suffix tokens are the first m consecutive *trained* tokens (label not
             IGNORE) that start at least k tokens past the head every example shares: on instruction,
             chat and classification data the response or label, the only text the run trained on;
             the prompt before them is context (t >= head + k, so at least k of the row's own tokens
             precede the suffix). On plain text every token is trained and t = head + k.
    prompt   t = head + k wherever that falls: on instruction data inside the user's prompt, which the
             run never trained on; it measures whether the model reproduces prompts (the base model's
             knowledge, or prompts learnt elsewhere), not what this run memorised.
The head (a chat template's header, the prompt template) says nothing about the row. An example with
no such window (a response shorter than m, a label of 1-2 tokens) is left out and counted.

Training examples are rows the run trained on; held-out examples, rows it never did (validation,
test, training rows its steps never reached: privacy.split_by_training). They are the control: what
the model continues correctly without having seen the example (formulaic text, a template) is not
memorisation; the gap is. Base and tuned decode the same prompts, so their rates are paired
(stats.paired_change).
"""
from __future__ import annotations

import numpy as np

from ..data.tokenize import IGNORE
from .stats import bootstrap, paired_change

WINDOWS = ("trained", "prompt")


def trained_start(labels: list[int], head: int, k: int, m: int) -> int | None:
    """The first t >= head + k with labels[t:t + m] all trained (not IGNORE), or None."""
    run = 0                                   # trained positions in a row, ending at i
    for i, y in enumerate(labels):
        run = run + 1 if y != IGNORE else 0
        if run >= m and i - m + 1 >= head + k:
            return i - m + 1
    return None


def extraction_items(examples, head: int, k: int, m: int,
                     window: str = "trained") -> tuple[list[list[int]], list[list[int]]]:
    """(prompts, true continuations) of the examples that have the window: prompt = the tokens before
    position t, continuation = the m tokens from t (t as the module says, per `window`)."""
    if window not in WINDOWS:
        raise ValueError(f"extraction window {window!r}: one of {WINDOWS}")
    prompts, targets = [], []
    for e in examples:
        ids = e.input_ids
        if window == "trained":
            t = trained_start(e.labels, head, k, m)
        else:
            t = head + k if len(ids) >= head + k + m else None
        if t is not None:
            prompts.append(ids[:t])
            targets.append(ids[t:t + m])
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
