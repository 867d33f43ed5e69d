"""Bottleneck adapters (Houlsby et al. 2019, arXiv:1902.00751; Pfeiffer et al. 2020, arXiv:2005.00247),
our own implementation (PEFT has none).

A small MLP with its own residual, inserted where a sub-block's output projection ends, before the
block's residual add:

    h  ->  h + W_up act(W_down h)        W_down: (dim -> d), W_up: (d -> dim), d = dim / reduction_factor

W_up and its bias start at zero, so the tuned model starts exactly as the base model. `houlsby` puts
an adapter after the attention and after the MLP of every block; `pfeiffer` only after the MLP.

Where those points are is data (models/arch.py). Each adapter is attached as a child `adapter` of the
projection it follows and applied by a forward hook, so no model class is subclassed, the base weights
keep their names, and the hook finds its adapter through the module it runs on (copies of the model
carry working adapters). For a classification model the new head trains too.

Saved as adapter.safetensors (the trainable tensors, by name) + bottleneck.json (the config); `load`
rebuilds the adapters on a fresh base model from those two files alone. Cannot merge: the
non-linearity sits between the two projections.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Literal, Optional, Union

import torch
from pydantic import Field
from torch import nn

from ..models.arch import arch_of, blocks, head_names, hidden_size, pick_layers
from . import footprint as fp
from .base import MethodConfig, NotMergeable, task_of
from .card import base_of, write_card

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
WEIGHTS, CONFIG = "adapter.safetensors", "bottleneck.json"
trains_base_weights = False
# train.lr when unset: 1e-3, Houlsby et al.'s upper grid value (their grid: 1e-4 ... 1e-3)
default_lr = 1e-3


class Config(MethodConfig):
    name: Literal["bottleneck"] = "bottleneck"
    placement: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby", description="`houlsby`: after attention and MLP; `pfeiffer`: after the MLP only")
    reduction_factor: int = Field(16, ge=1, description="bottleneck width = hidden size / reduction_factor ...")
    bottleneck_dim: Optional[int] = Field(None, ge=1, description="... unless given directly")
    activation: Literal["relu", "gelu", "silu", "tanh"] = Field(
        "relu", description="the non-linearity between the two projections")
    layers: Union[int, list[int], None] = Field(
        None, description="null: every block; N: the top N; or a list of block indices")


class Adapter(nn.Module):
    """h + up(act(down(h))), in fp32 whatever the base model's dtype."""

    def __init__(self, dim: int, bottleneck: int, activation: str):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.normal_(self.down.weight, std=1e-2)   # small, as Houlsby et al.
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)                # W_up = 0: the adapter starts as the identity
        nn.init.zeros_(self.up.bias)
        self.active = True

    def forward(self, h: torch.Tensor) -> torch.Tensor:   # (..., dim)
        return h + self.up(self.act(self.down(h.to(self.down.weight.dtype)))).to(h.dtype)


def _hook(module, args, output):
    return module.adapter(output) if module.adapter.active else output


@contextlib.contextmanager
def disabled(model):
    """The base model's function while inside (for retention probes and distillation)."""
    adapters = [m for m in model.modules() if isinstance(m, Adapter)]
    for a in adapters:
        a.active = False
    try:
        yield model
    finally:
        for a in adapters:
            a.active = True


def bottleneck_dim(model, cfg: Config) -> int:
    return cfg.bottleneck_dim or max(1, hidden_size(model) // cfg.reduction_factor)


def sites(model, cfg: Config) -> list[nn.Module]:
    """The modules an adapter follows, block by block."""
    arch, layer_list = arch_of(model), blocks(model)
    names = [arch.attn_out, arch.mlp_out] if cfg.placement == "houlsby" else [arch.mlp_out]
    return [layer_list[i].get_submodule(n) for i in pick_layers(len(layer_list), cfg.layers) for n in names]


def apply(model, cfg: Config):
    model.requires_grad_(False)
    dim, d = hidden_size(model), bottleneck_dim(model, cfg)
    for site in sites(model, cfg):
        if hasattr(site, "adapter"):
            raise ValueError("this model already has bottleneck adapters")
        device = next(site.parameters()).device
        site.adapter = Adapter(dim, d, cfg.activation).to(device)
        site.register_forward_hook(_hook)
    if task_of(model) == "sequence_classification":   # the new head is trained with the adapters
        named = dict(model.named_parameters())
        for n in head_names(model):
            named[n].requires_grad_(True)
    model.tailorlm_bottleneck = cfg                     # what save() writes beside the weights
    return model


def save(model, tokenizer, out_dir: Path) -> None:
    from safetensors.torch import save_file

    cfg = model.tailorlm_bottleneck
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(tensors, str(out_dir / WEIGHTS), metadata={"format": "pt"})
    (out_dir / CONFIG).write_text(json.dumps({"method": "bottleneck", "config": cfg.model_dump(),
                                              "model_type": model.config.model_type,
                                              "hidden_size": hidden_size(model), "base_model": base_of(model)},
                                             indent=1))
    tokenizer.save_pretrained(out_dir)
    write_card(out_dir, model, task_of(model), "bottleneck")


def load(base_model, art_dir: Path, allow_pickle: bool = False):
    """Adapters rebuilt from adapter.safetensors + bottleneck.json; any pickled weights beside them are
    refused unless allow_pickle (model.allow_pickle), though only the safetensors file is ever read."""
    from safetensors.torch import load_file

    from ..models.load import check_pickles

    art_dir = Path(art_dir)
    check_pickles(art_dir, allow_pickle)
    meta = json.loads((art_dir / CONFIG).read_text())
    if meta["model_type"] != base_model.config.model_type or meta["hidden_size"] != hidden_size(base_model):
        raise ValueError(f"{art_dir}: adapters were trained on a {meta['model_type']} model with hidden size "
                         f"{meta['hidden_size']}, not this {base_model.config.model_type} "
                         f"({hidden_size(base_model)})")
    cfg = Config(**meta["config"])
    model = apply(base_model, cfg)
    state = load_file(str(art_dir / WEIGHTS))
    own = dict(model.named_parameters())
    missing = [n for n, p in own.items() if p.requires_grad and n not in state]
    unknown = [n for n in state if n not in own]
    if missing or unknown:
        raise ValueError(f"{art_dir}: adapter weights do not match the model (missing {missing[:3]}, "
                         f"unknown {unknown[:3]})")
    with torch.no_grad():
        for n, t in state.items():
            own[n].copy_(t)
    return model


def footprint(cfg: Config, model_config) -> fp.Footprint:
    """Counted on the skeleton; backward stops at the lowest adapted block."""
    return fp.footprint(apply, cfg, model_config,
                        lowest_layer=fp.lowest_layer(cfg.layers, model_config.num_hidden_layers))


def merge(model):
    raise NotMergeable("bottleneck adapters put a non-linearity between two projections; they cannot be folded "
                       "into the base weights. Export the adapter (tailorlm export RUN --adapter), which "
                       "tailorlm reloads onto the base model")
