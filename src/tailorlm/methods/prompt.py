"""Prompt tuning (Lester et al. 2021, arXiv:2104.08691) through PEFT: a few trainable input embeddings
("virtual tokens") in front of every row; the model itself stays frozen. For a classification model
the new head trains too.

The virtual tokens start as the embeddings of a text (`init: text`, e.g. a description of the task;
the paper's best start), of tokens sampled from the vocabulary (`init: vocab`), or as random vectors
(`init: random`). The prefix is per row, so examples are not packed (see methods.base.SequenceLayout).
Saved in PEFT's format. Cannot merge: there is no weight to fold a prompt into.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from ..models.load import TRUST_MARK
from . import footprint as fp
from .base import MethodConfig, peft_disabled, peft_load, peft_merge, peft_save, peft_task

trains_base_weights = False
# train.lr when unset: 3e-2 (Lester et al. train the prompt at 0.3 with Adafactor; with AdamW 3e-2, as PEFT's examples)
default_lr = 3e-2


class Config(MethodConfig):
    name: Literal["prompt"] = "prompt"
    virtual_tokens: int = Field(20, ge=1, description="trainable input embeddings in front of every row")
    init: Literal["text", "vocab", "random"] = Field(
        "vocab", description="start as the embeddings of `init_text`, of sampled `vocab` tokens, or `random`")
    init_text: Optional[str] = Field(None, description="required by init: text")

    @model_validator(mode="after")
    def _text(self) -> "Config":
        if (self.init == "text") != (self.init_text is not None):
            raise ValueError("init: text and init_text go together (init_text is the text the virtual tokens "
                             "start from)")
        return self


def apply(model, cfg: Config):
    from peft import PromptTuningConfig, get_peft_model

    kw = {}
    if cfg.init == "text":
        if not model.name_or_path:
            raise ValueError("prompt init: text needs the model's folder (for its tokenizer)")
        # PEFT loads the tokenizer itself: trust_remote_code as the model was loaded, never None (which asks on stdin)
        kw = dict(prompt_tuning_init_text=cfg.init_text, tokenizer_name_or_path=str(model.name_or_path),
                  tokenizer_kwargs={"trust_remote_code": getattr(model, TRUST_MARK, False)})
    pcfg = PromptTuningConfig(task_type=peft_task(model), num_virtual_tokens=cfg.virtual_tokens,
                              prompt_tuning_init={"text": "TEXT", "vocab": "SAMPLE_VOCAB", "random": "RANDOM"}[cfg.init],
                              **kw)
    return get_peft_model(model, pcfg)


def footprint(cfg: Config, model_config) -> fp.Footprint:
    """The virtual tokens lengthen every row; the input needs a gradient, so backward runs through every
    layer; the one tensor is the virtual tokens' embeddings."""
    return fp.footprint(apply, cfg, model_config, virtual_tokens=cfg.virtual_tokens,
                        largest=cfg.virtual_tokens * model_config.hidden_size)


# The artefact is PEFT's own adapter folder, so saving, loading and merging are PEFT's.
save, load, merge, disabled = peft_save, peft_load, peft_merge, peft_disabled
