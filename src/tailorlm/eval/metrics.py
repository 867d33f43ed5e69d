"""Validation loss and perplexity: one function for training, `tailorlm eval` and benchmarks."""
from __future__ import annotations

import math

import torch

from ..device import autocast
from ..forward import LOSSES, batcher, eval_mode
from ..progress import track


@torch.no_grad()
def val_loss(model, examples, *, pad_id: int, device: str, precision: str, batch_size: int = 16,
             packing: bool = True, row_tokens: int = 512, task: str = "causal_lm", name: str = "val_loss") -> dict:
    """Token-weighted mean NLL over the examples' target tokens, and its perplexity (for a
    classification head: the mean cross-entropy over examples, `tokens` counting examples). `name`:
    what the progress lines call it."""
    make_batch = batcher(model, task=task, pad_id=pad_id, packing=packing, row_tokens=row_tokens)
    loss_sum = LOSSES[task]
    total, n = 0.0, 0
    with eval_mode(model):
        for i in track(range(0, len(examples), batch_size), name, total=len(examples), step=batch_size):
            batch = make_batch(examples[i:i + batch_size]).to(device)
            with autocast(device, precision):
                s, k = loss_sum(model, batch)
            total, n = total + float(s), n + k
    if n == 0:   # no score from no data (a loss of 0 would look perfect and be picked as best)
        return {"loss": float("nan"), "ppl": float("nan"), "tokens": 0}
    loss = total / n
    return {"loss": loss, "ppl": math.exp(min(loss, 50)), "tokens": n}


def format_scores(scores: dict, base: dict | None = None) -> str:
    """'accuracy 0.8333 (+0.1900), val_loss 0.0982 (-2.9702)': every figure, and its change from the
    base model's step-0 score where there is one (the retention figures are changes already)."""
    d, parts = deltas(scores, base), []
    for k, v in scores.items():
        if not isinstance(v, float):
            continue
        s = f"{k} {v:.4f}" if math.isfinite(v) else f"{k} {v}"
        if k in d and math.isfinite(d[k]):
            s += f" ({d[k]:+.4f})"
        parts.append(s)
    return ", ".join(parts)


# scores not shown for a classification run (eval's table, the report): exp(NLL of a label word) says
# nothing a classifier's reader can use (it is in the JSON and metrics.jsonl all the same)
NOT_FOR_CLASSIFICATION = frozenset({"val_ppl"})


def collapsed(scores: dict | None) -> str | None:
    """The one label a classifier answered for every held-out row, or None: the scores' `collapsed`
    (eval/tasks.py), or, in a run from before it was recorded, the only label `predicted` counts while
    the majority rate is below 1 (the rows held more than one label)."""
    scores = scores or {}
    if scores.get("collapsed"):
        return scores["collapsed"]
    used = [label for label, n in (scores.get("predicted") or {}).items() if n]
    majority = scores.get("majority")
    return used[0] if len(used) == 1 and isinstance(majority, (int, float)) and majority < 1 else None


def deltas(scores: dict, base: dict | None) -> dict:
    """{metric: score - base score} for the metrics the base model has a number for, except those whose
    spec has no delta (a score that is already a change from the base, or a property of the data)."""
    from .specs import find
    return {k: v - base[k] for k, v in scores.items()
            if isinstance(v, (int, float)) and isinstance((base or {}).get(k), (int, float))
            and k != "step" and getattr(find(k), "delta", True)}
