"""Validation loss and perplexity: one function for training, `tailorlm eval` and benchmarks."""
from __future__ import annotations

import math

import torch

from ..data.batching import collate
from ..train.device import autocast
from ..train.loss import lm_loss_sum


@torch.no_grad()
def val_loss(model, examples, *, pad_id: int, device: str, precision: str, batch_size: int = 16,
             packing: bool = True, row_tokens: int = 512) -> dict:
    """Token-weighted mean NLL over the examples' target tokens, and its perplexity."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i:i + batch_size], pad_id, packing, row_tokens).to(device)
        with autocast(device, precision):
            s, k = lm_loss_sum(model, batch)
        total, n = total + float(s), n + k
    model.train(was_training)
    loss = total / max(n, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50)), "tokens": n}
