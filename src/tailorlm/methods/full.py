"""Full fine-tuning: every weight trains; the result is an ordinary Hugging Face model folder."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from .base import MethodConfig


class Config(MethodConfig):
    name: Literal["full"] = "full"


def apply(model, cfg: Config):
    model.requires_grad_(True)
    return model


def save(model, tokenizer, out_dir: Path) -> None:
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def load(base_model, art_dir: Path):
    """The folder is a complete model: load its weights (safetensors only) into the base's skeleton."""
    from safetensors.torch import load_file

    state = {}
    for f in sorted(Path(art_dir).glob("*.safetensors")):
        state.update(load_file(str(f)))
    missing, unexpected = base_model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k and getattr(base_model.config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise ValueError(f"{art_dir}: weights do not match the model (missing {sorted(set(missing) - tied)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")
    return base_model


def merge(model):
    return model


def disabled(model):
    """None: full fine-tuning changes the base weights themselves; a caller that needs the base
    model's function keeps a frozen copy."""
    return None
