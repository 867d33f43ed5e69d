"""Penalties that hold the tuned weights near what the base model knew.

    l2sp     lambda * sum (theta - theta0)^2                      Li, Grandvalet & Davoine 2018 (L2-SP)
    ewc      lambda * sum F * (theta - theta0)^2, F the diagonal Fisher of the reference NLL at step 0
                                                                  Kirkpatrick et al. 2017 (EWC)
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
from ..forward import eval_mode, lm_logits, lm_loss_sum


def snapshot(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in params.items()}


def l2sp(params: dict[str, torch.nn.Parameter], anchor: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
    total = sum(((p - anchor[n]) ** 2).sum() for n, p in params.items())
    return weight * total


def ewc(params, anchor, fisher: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
    total = sum((fisher[n] * (p - anchor[n]) ** 2).sum() for n, p in params.items())
    return weight * total


def fisher_diagonal(model, params: dict[str, torch.nn.Parameter], examples, *, pad_id: int, batch_size: int = 4,
                    normalise: bool = True) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: the mean over reference batches of squared gradients of the
    per-token NLL. Normalised to mean 1 over all entries, so `ewc`'s weight has the same scale as
    l2sp's whatever the model (an entry of 0 means 'free to move', larger means 'important')."""
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    n_batches = 0
    with eval_mode(model):
        for i in range(0, len(examples), batch_size):
            b = collate(examples[i:i + batch_size], pad_id, packing=False)
            model.zero_grad(set_to_none=True)
            s, n = lm_loss_sum(model, b)
            (s / n).backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name] += p.grad.detach() ** 2
            n_batches += 1
    model.zero_grad(set_to_none=True)
    fisher = {n: f / max(n_batches, 1) for n, f in fisher.items()}
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
