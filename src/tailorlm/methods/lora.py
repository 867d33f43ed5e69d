"""LoRA (Hu et al. 2021, arXiv:2106.09685) through PEFT, with DoRA (Liu et al. 2024) and rsLoRA
(Kalajdzievski 2023) as switches. The adapter is saved in PEFT's own format, so PEFT, transformers
and vLLM load it without tailorlm."""
from __future__ import annotations

from typing import Literal, Union

from pydantic import Field

from . import footprint as fp
from .base import MethodConfig, peft_disabled, peft_load, peft_merge, peft_save, peft_task

trains_base_weights = False
# train.lr when unset: 1e-3 (the defaults benchmark's best on validation at 100 steps: benchmarks/README.md)
default_lr = 1e-3


class Config(MethodConfig):
    name: Literal["lora"] = "lora"
    r: int = Field(16, ge=1, description="rank of the low-rank update A·B")
    alpha: float = Field(32, description="scale: the update is multiplied by alpha / r (alpha / sqrt(r) with "
                                       "rslora)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    targets: Union[Literal["all-linear"], list[str]] = Field(
        "all-linear", description="`all-linear`, or the names of the linear modules to adapt")
    layers: Union[int, list[int], None] = Field(
        None, description="null: every layer; N: the top N; or a list of layer indices")
    dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    rslora: bool = Field(False, description="rank-stabilised scaling alpha / sqrt(r)")


def linear_names(model) -> list[str]:
    """Leaf names of the model's Linear layers except its heads (what PEFT's all-linear means)."""
    import torch

    head = model.get_output_embeddings()
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}
    return sorted(names - {"score", "classifier", "lm_head"})


def layer_indices(model, layers) -> list[int] | None:
    """Top-N layers (int) or an explicit list. Adapting only the top layers means backward stops
    there: on a 2-core CPU, LoRA on the top third of SmolLM2 trains about 2.5x faster."""
    if layers is None or isinstance(layers, list):
        return layers
    n = model.config.num_hidden_layers
    return list(range(max(0, n - layers), n))


def apply(model, cfg: Config):
    from peft import LoraConfig, get_peft_model

    idx = layer_indices(model, cfg.layers)
    targets = linear_names(model) if (idx is not None and cfg.targets == "all-linear") else cfg.targets
    lcfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      layers_to_transform=idx, use_dora=cfg.dora, use_rslora=cfg.rslora, task_type=peft_task(model))
    return get_peft_model(model, lcfg)


def footprint(cfg: Config, model_config) -> fp.Footprint:
    """Its largest tensor is an A or B factor: r x the wider side of an MLP matrix; backward stops at the
    lowest adapted layer."""
    largest = cfg.r * max(model_config.hidden_size, fp.intermediate_size(model_config))
    return fp.footprint(apply, cfg, model_config, largest=largest,
                        lowest_layer=fp.lowest_layer(cfg.layers, model_config.num_hidden_layers))


# The artefact is PEFT's own adapter folder (adapter_config.json + adapter_model.safetensors),
# so saving, loading and merging are PEFT's.
save, load, merge, disabled = peft_save, peft_load, peft_merge, peft_disabled
