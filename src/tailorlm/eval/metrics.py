"""Validation loss and perplexity: one function for training, `tailorlm eval` and benchmarks."""
from __future__ import annotations

import math

import torch

from ..train.device import autocast
from ..train.loss import LOSSES, batcher


@torch.no_grad()
def val_loss(model, examples, *, pad_id: int, device: str, precision: str, batch_size: int = 16,
             packing: bool = True, row_tokens: int = 512, task: str = "causal_lm") -> dict:
    """Token-weighted mean NLL over the examples' target tokens, and its perplexity (for a
    classification head: the mean cross-entropy over examples, `tokens` counting examples)."""
    was_training = model.training
    model.eval()
    make_batch = batcher(model, task=task, pad_id=pad_id, packing=packing, row_tokens=row_tokens)
    loss_sum = LOSSES[task]
    total, n = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = make_batch(examples[i:i + batch_size]).to(device)
        with autocast(device, precision):
            s, k = loss_sum(model, batch)
        total, n = total + float(s), n + k
    model.train(was_training)
    loss = total / max(n, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50)), "tokens": n}
