"""The method registry: one file per method, one line here.

Every method module satisfies the typed contract `Method` (methods/base.py: Config, apply, save,
load, merge, disabled), so the loop, checkpointing, retention and export never ask which method
they run.

A method owns which parameters are its own by setting requires_grad; `trainable(model)` below is
therefore the same function for every method. What a method does to the input sequence (virtual
tokens in front of each row) is read from the model by `sequence_layout(model)` (methods/base.py), which
batching and the loss consult.
"""
from __future__ import annotations

import torch

from . import bottleneck, full, ia3, lora, peft, prefix, prompt
from .base import Method, MethodConfig, NotMergeable, SequenceLayout, sequence_layout, task_of

METHODS: dict[str, Method] = {
    "full": full,
    "lora": lora,
    "bottleneck": bottleneck,
    "prompt": prompt,
    "prefix": prefix,
    "ia3": ia3,
    "peft": peft,
}
METHOD_CONFIGS = {name: m.Config for name, m in METHODS.items()}


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters the method made trainable, by name (these are what a checkpoint holds)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def count(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights counted once."""
    seen, total, train = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        train += p.numel() if p.requires_grad else 0
    return train, total


__all__ = ["METHODS", "METHOD_CONFIGS", "Method", "MethodConfig", "NotMergeable", "SequenceLayout", "count",
           "sequence_layout", "task_of", "trainable"]
