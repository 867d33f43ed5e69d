"""Penalties that hold the tuned weights near what the base model knew.

    l2sp     lambda * sum (theta - theta0)^2                      Li, Grandvalet & Davoine 2018 (L2-SP)
    ewc      lambda * sum F * (theta - theta0)^2, F the diagonal empirical Fisher at theta0,
             F_i = mean over examples n of (d log p(y_n | x_n) / d theta_i)^2, one gradient per
             example, on the previous task's data (a single run: the general text the base knew, the
             reference's replay half; continual: the previous stage's rows), never on the probe's
             texts                                                Kirkpatrick et al. 2017 (EWC)
    distill  lambda * T^2 * KL(base_T || tuned_T) on replay/reference batches, base = the frozen model
             (for adapter methods, the same model inside the method's `disabled` switch)
                                                                  Li & Hoiem 2017 (Learning without Forgetting)
Each returns a scalar tensor that the loop adds to the task loss of a step.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Optional

import torch
import torch.nn.functional as F

from ..data.batching import collate
from ..data.tokenize import IGNORE, Example
from ..forward import eval_mode, lm_logits
from .reference import spread

FISHER_EXAMPLES = 32   # per-example gradients cost one backward each: a bounded, evenly spread sample


def snapshot(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in params.items()}


def l2sp(params: dict[str, torch.nn.Parameter], anchor: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
    total = sum(((p - anchor[n]) ** 2).sum() for n, p in params.items())
    return weight * total


def ewc(params, anchor, fisher: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
    total = sum((fisher[n] * (p - anchor[n]) ** 2).sum() for n, p in params.items())
    return weight * total


def fisher_diagonal(model, params: dict[str, torch.nn.Parameter], examples, *, pad_id: int,
                    limit: int = FISHER_EXAMPLES, normalise: bool = True) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher (Kirkpatrick et al. 2017): F_i = 1/N sum_n (d log p(y_n|x_n) / d theta_i)^2
    over N = min(limit, len) examples spread evenly over `examples`, log p(y|x) the summed
    log-probability of an example's target tokens given its prefix (y = the data's tokens: empirical).
    One backward per example, a plain loop (any model's ordinary forward works; torch.func vmap+grad
    would batch it but needs a functional forward), each gradient squared before averaging: never the
    square of a batch-mean gradient, whose cross terms between examples cancel part of it.
    Normalised to mean 1 over all entries, so `ewc`'s weight has the same scale as l2sp's whatever the
    model (an entry of 0 means 'free to move', larger means 'important')."""
    picked = [examples[i] for i in spread(len(examples), limit)]
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    device, used = next(iter(params.values())).device, 0
    with eval_mode(model):
        for e in picked:
            if all(t == IGNORE for t in e.labels[1:]):
                continue                                  # no target: no log p(y|x)
            # (rebuilt without data.balance's loss weight: the Fisher is of log p(y|x) itself)
            b = collate([Example(e.input_ids, e.labels, e.file, e.line, e.id)], pad_id, packing=False).to(device)
            model.zero_grad(set_to_none=True)
            logits = lm_logits(model, b, b.keep).float()                  # (1, K, vocab)
            # -log p(y|x): the sign does not matter once squared
            F.cross_entropy(logits.flatten(0, 1), b.targets[:, b.keep].flatten(), ignore_index=IGNORE,
                            reduction="sum").backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name] += p.grad.detach().float() ** 2           # (param shape)
            used += 1
    model.zero_grad(set_to_none=True)
    fisher = {n: f / max(used, 1) for n, f in fisher.items()}
    if normalise:
        mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
        if mean > 0:
            fisher = {n: f / mean for n, f in fisher.items()}
    return fisher


def distill(model, base_model, batch, weight: float, temperature: float = 1.0,
            disabled: Optional[Callable[[object], Optional[ContextManager]]] = None) -> torch.Tensor:
    """KL(base || tuned) at the batch's target columns, temperature-scaled (T^2 keeps gradient scale).
    The base is `base_model` (a frozen copy), or `model` inside `disabled(model)` (the method's own
    switch, methods.base.Method.disabled)."""
    tuned = lm_logits(model, batch, batch.keep).float() / temperature       # (rows, K, vocab)
    with torch.no_grad():
        ctx = disabled(model) if base_model is None else contextlib.nullcontext()
        with ctx:
            base = lm_logits(base_model or model, batch, batch.keep).float() / temperature
    mask = batch.targets[:, batch.keep] != -100
    kl = F.kl_div(tuned.log_softmax(-1)[mask], base.log_softmax(-1)[mask], log_target=True, reduction="batchmean")
    return weight * temperature ** 2 * kl
