"""What the privacy probes read off a model: each example's NLL, and whether greedy decoding
reproduces a continuation token for token. One forward path (forward.lm_logits, so virtual-token
methods work), no second copy of the model, and no decoding loop.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batching import collate
from ..data.tokenize import IGNORE, Example
from ..device import autocast
from ..forward import eval_mode, lm_logits


@torch.no_grad()
def example_nll(model, examples: list[Example], *, pad_id: int, device: str, precision: str,
                batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(sum of NLL in nats, number of target tokens) per example, in order: -sum_t log p(x_t | x_<t)
    over the positions whose label is not IGNORE. One example per row (no packing), so a row is an
    example and its sum is read off directly."""
    sums, counts = np.zeros(len(examples)), np.zeros(len(examples), dtype=int)
    with eval_mode(model):
        for i in range(0, len(examples), batch_size):
            b = collate(examples[i:i + batch_size], pad_id, packing=False).to(device)
            with autocast(device, precision):
                logits = lm_logits(model, b, b.keep)                    # (rows, K, vocab)
            tgt = b.targets[:, b.keep]                                   # (rows, K)
            ce = F.cross_entropy(logits.float().transpose(1, 2), tgt, ignore_index=IGNORE, reduction="none")
            n = len(b.ids)
            sums[i:i + n] = ce.sum(1).cpu().numpy()                      # ignored positions count 0
            counts[i:i + n] = (tgt != IGNORE).sum(1).cpu().numpy()
    return sums, counts


@torch.no_grad()
def greedy_matches(model, prompts: list[list[int]], targets: list[list[int]], *, pad_id: int, device: str,
                   precision: str, batch_size: int = 16) -> np.ndarray:
    """1.0 where greedy decoding after the prompt's tokens reproduces the target's tokens exactly,
    else 0.0 (Carlini et al. 2022, "Quantifying Memorization": exact match of the true continuation).

    Read off one teacher-forced forward instead of decoding: greedy decoding writes the target iff
    argmax p(. | prompt + target[:t]) == target[t] at every t (up to the first miss both see the same
    context, and at a miss both fail), so the m decoding steps collapse into one pass."""
    out = np.zeros(len(prompts))
    with eval_mode(model):
        for i in range(0, len(prompts), batch_size):
            exs = [Example(p + t, [IGNORE] * len(p) + t, "<extraction>", j)
                   for j, (p, t) in enumerate(zip(prompts[i:i + batch_size], targets[i:i + batch_size]))]
            b = collate(exs, pad_id, packing=False).to(device)
            with autocast(device, precision):
                logits = lm_logits(model, b, b.keep)                    # (rows, K, vocab)
            tgt = b.targets[:, b.keep]                                   # (rows, K)
            miss = (logits.argmax(-1) != tgt) & (tgt != IGNORE)          # a target position greedy gets wrong
            out[i:i + len(exs)] = (~miss.any(1)).float().cpu().numpy()
    return out


def shared_head(examples: list[Example]) -> int:
    """How many leading tokens every example shares (a chat template's header, a prompt template's
    instruction): they say nothing about the row, so extraction prompts start counting after them."""
    if len(examples) < 2:
        return 0
    first, n = examples[0].input_ids, min(len(e.input_ids) for e in examples) - 1
    for e in examples[1:]:
        n = next((j for j in range(n) if e.input_ids[j] != first[j]), n)
    return max(n, 0)


def sample(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A seeded sample of at most n examples (all of them when n is None or larger), in their order,
    so every evaluation of a run scores the same ones."""
    if n is None or n >= len(examples):
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]
