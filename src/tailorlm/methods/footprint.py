"""What a method puts on a model, as the planner (plan/) needs it before any weight is read.

Every method module has `footprint(cfg, model_config) -> Footprint` (the `Method` contract,
methods/base.py), so plan/ asks the method and never branches on its name (issue 24): a new method
describes itself in its own file. What every footprint shares is here:

- the parameters it trains, counted exactly rather than by a formula: the method is applied to the
  model's skeleton on the meta device (shapes only, no memory) and `count` counts what it made
  trainable, the same function a run reports with;
- the lowest decoder layer a `layers` choice trains (backward stops there);
- the default largest trainable tensor, for a method that does not know better.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Footprint:
    """A method on one model (a causal LM: the planner plans language models).

    trainable, total   parameters it trains / all parameters with it applied, tied weights once
    dtype              its trained weights' dtype: "fp32" (adapters are created in fp32: PEFT's
                       autocast_adapter_dtype, and ours), or None: the model's own (model.dtype), where the
                       method trains the base weights themselves
    virtual_tokens     positions it puts in front of every row's input as embeddings (prompt tuning); a
                       prefix held in the attention cache adds none to the rows
    largest            elements of its largest trainable tensor (AdamW's per-tensor temporaries)
    lowest_layer       the lowest decoder layer it trains: backward runs through the layers from there up
                       (0: every layer, also where the input itself needs a gradient)
    """
    trainable: int
    total: int
    dtype: Optional[str] = "fp32"
    virtual_tokens: int = 0
    largest: int = 0
    lowest_layer: int = 0


def count(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights counted once."""
    seen, total, train = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        train += p.numel() if p.requires_grad else 0
    return train, total


def skeleton(config, task: str = "causal_lm"):
    """The architecture with its weights on the meta device (config.json's model; its code never runs)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if task == "sequence_classification" else AutoModelForCausalLM
    with torch.device("meta"):
        return cls.from_config(config)


def shape_only(cfg):
    """The method's config without what only sets start values (a prompt's or prefix's init text needs
    real weights to embed; the shapes are the same)."""
    if getattr(cfg, "init", None) == "text":
        return cfg.model_copy(update={"init": "random", "init_text": None})
    return cfg


def counted(apply: Callable, cfg, model_config, task: str = "causal_lm") -> tuple[int, int]:
    """(trainable, total) of `apply(model, cfg)` on the model's skeleton, tied weights once."""
    return count(apply(skeleton(copy.deepcopy(model_config), task), shape_only(cfg)))


def lowest_layer(layers, n_layers: int) -> int:
    """The lowest layer a `layers` choice trains: None every layer, N the top N, or a list of indices."""
    if layers is None:
        return 0
    lowest = n_layers - layers if isinstance(layers, int) else min(layers)
    return max(0, lowest)


def footprint(apply: Callable, cfg, model_config, **known) -> Footprint:
    """The Footprint of a method whose `apply` is given, its parameters counted on the skeleton; `known`
    holds the fields the method knows (Footprint's). Without its own `largest`, a method's largest tensor
    is taken as min(trainable, hidden^2): an adapter's matrices are at most hidden x hidden."""
    trainable, total = counted(apply, cfg, model_config)
    known.setdefault("largest", min(trainable, model_config.hidden_size ** 2))
    return Footprint(trainable=trainable, total=total, **known)


def intermediate_size(model_config) -> int:
    """The MLP's inner width (4 x hidden where config.json does not say)."""
    return getattr(model_config, "intermediate_size", 4 * model_config.hidden_size)
