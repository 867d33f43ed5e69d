"""The method registry: one file per method, one line here.

Every method module satisfies the typed contract `Method` (methods/base.py: Config, apply, save,
load, merge, disabled, trains_base_weights, footprint), so the loop, checkpointing, retention, export
and the planner never ask which method they run; a method's Config fields describe themselves (the
README's config table prints them).

A method owns which parameters are its own by setting requires_grad; `trainable(model)` below is
therefore the same function for every method. What a method does to the input sequence (virtual
tokens in front of each row) is read from the model by `sequence_layout(model)` (methods/base.py), which
batching and the loss consult.
"""
from __future__ import annotations

import torch

from . import bottleneck, full, ia3, lora, peft, prefix, prompt
from .base import Method, MethodConfig, NotMergeable, SequenceLayout, sequence_layout, task_of
from .footprint import Footprint, count

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


__all__ = ["METHODS", "METHOD_CONFIGS", "Footprint", "Method", "MethodConfig", "NotMergeable", "SequenceLayout",
           "count", "sequence_layout", "task_of", "trainable"]
