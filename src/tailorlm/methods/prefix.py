"""Prefix tuning (Li & Liang 2021, arXiv:2101.00190) through PEFT: trainable keys and values for a few
virtual positions in front of every row, in every layer's attention; the model stays frozen. For a
classification model the new head trains too.

The prefix starts random, or (`init: text`) as the keys and values the frozen model itself computes
for a text, the initialisation the paper found best in low-data settings. `projection: true` trains
the prefix through an MLP, as the paper does for stability (PEFT saves the projected result). The
prefix is per row, so examples are not packed (methods.base.SequenceLayout). Saved in PEFT's format.
Cannot merge. Language models only: PEFT's prefix path for a classification head looks for a
`past_key_values` argument, which transformers 5 renamed `cache`, so it refuses every classifier
(decoder or encoder); prompt tuning works there.
"""
from __future__ import annotations

import inspect
import math
from typing import Literal, Optional

import torch
from pydantic import Field, model_validator

from ..errors import ConfigError
from ..models.load import TRUST_MARK, load_tokenizer
from . import footprint as fp
from .base import MethodConfig, peft_disabled, peft_load, peft_merge, peft_save, peft_task, task_of

trains_base_weights = False
# train.lr when unset: 5e-3 (prefix parameters start from random keys and values: adapter-like rates are too slow)
default_lr = 5e-3


class Config(MethodConfig):
    name: Literal["prefix"] = "prefix"
    virtual_tokens: int = Field(20, ge=1, description="virtual key/value positions in every layer")
    init: Literal["random", "text"] = Field(
        "random", description="`random`, or `text`: the keys and values the frozen model computes for `init_text`")
    init_text: Optional[str] = Field(None, description="required by init: text")
    projection: bool = Field(False, description="train the prefix through an MLP (the paper's reparameterisation)")
    projection_dim: int = Field(512, ge=1, description="the MLP's hidden width")

    @model_validator(mode="after")
    def _text(self) -> "Config":
        if (self.init == "text") != (self.init_text is not None):
            raise ValueError("init: text and init_text go together (init_text is the text whose keys and values "
                             "start the prefix)")
        if self.init == "text" and self.projection:
            raise ValueError("init: text sets the prefix itself; it cannot start an MLP reparameterisation "
                             "(set projection: false)")
        return self


def _peft_accepts(model) -> bool:
    """PEFT's own test for a classification head: its forward, or its backbone's, names past_key_values
    (a causal LM is not tested; PEFT passes the prefix by keyword, which transformers still accepts)."""
    if task_of(model) != "sequence_classification":
        return True
    return any("past_key_values" in inspect.signature(m.forward).parameters for m in (model, model.base_model))


def apply(model, cfg: Config):
    from peft import PrefixTuningConfig, get_peft_model

    if not _peft_accepts(model):   # a config the user can change: one line, the keys and the fix
        raise ConfigError(f"method.name: prefix tuning of a classification head ({type(model).__name__}, "
                          "model.task: sequence_classification) is refused: PEFT looks for a past_key_values "
                          "argument, which this transformers version calls `cache`. Fix: method.name=prompt (works "
                          "on classifiers), or model.task=causal_lm for prefix tuning of the language model")
    pcfg = PrefixTuningConfig(task_type=peft_task(model), num_virtual_tokens=cfg.virtual_tokens,
                              prefix_projection=cfg.projection, encoder_hidden_size=cfg.projection_dim)
    peft_model = get_peft_model(model, pcfg)
    if cfg.init == "text":
        init_from_text(peft_model, cfg.init_text)
    return peft_model


@torch.no_grad()
def init_from_text(peft_model, text: str) -> None:
    """Set the prefix to the frozen model's keys and values for `text` (repeated or cut to length).
    The prefix then sits at positions 0..n-1 and the input after it, as PEFT places it."""
    from pathlib import Path

    base = peft_model.get_base_model()
    n = peft_model.active_peft_config.num_virtual_tokens
    tok = load_tokenizer(Path(base.name_or_path), getattr(base, TRUST_MARK, False))   # the one safe loader
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("prefix init_text is empty after tokenization")
    ids = (ids * math.ceil(n / len(ids)))[:n]
    was_training = base.training
    base.eval()
    device = base.get_input_embeddings().weight.device
    cache = base(input_ids=torch.tensor([ids], device=device), use_cache=True).past_key_values
    base.train(was_training)
    # PEFT's layout of one virtual token: [k_0, v_0, k_1, v_1, ...], each (kv_heads, head_dim)
    kv = [t[0].transpose(0, 1) for layer in cache.layers for t in (layer.keys, layer.values)]  # (n, H, D) each
    prefix = torch.stack(kv, dim=1).reshape(n, -1)
    emb = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight
    if prefix.shape != emb.shape:
        raise ValueError(f"this model's cache has shape {tuple(prefix.shape)} per prefix, PEFT expects "
                         f"{tuple(emb.shape)}; use init: random")
    emb.copy_(prefix.to(emb.dtype))


def footprint(cfg: Config, model_config) -> fp.Footprint:
    """Counted on the skeleton. The prefix sits in every layer's attention cache, not in the rows: no
    virtual tokens lengthen them (the attention to it is in the planner's probe)."""
    return fp.footprint(apply, cfg, model_config)


# The artefact is PEFT's own adapter folder, so saving, loading and merging are PEFT's.
save, load, merge, disabled = peft_save, peft_load, peft_merge, peft_disabled
