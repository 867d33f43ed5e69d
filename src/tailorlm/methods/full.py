"""Full fine-tuning: every weight trains; the result is an ordinary Hugging Face model folder."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from . import footprint as fp
from .base import MethodConfig

trains_base_weights = True   # (so there is no frozen base: disabled() is None, advice offers an adapter)
# train.lr when unset: 2e-5, the usual full fine-tuning rate (BERT's grid: 2e-5 ... 5e-5); every weight moves
default_lr = 2e-5


class Config(MethodConfig):
    name: Literal["full"] = "full"


def apply(model, cfg: Config):
    model.requires_grad_(True)
    return model


def save(model, tokenizer, out_dir: Path) -> None:
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def load(base_model, art_dir: Path, allow_pickle: bool = False):
    """The folder is a complete model: load its weights into the base's skeleton, from safetensors, or
    (only with allow_pickle, model.allow_pickle) from pickles through torch.load(weights_only=True)."""
    from safetensors.torch import load_file

    from ..models.load import check_weights, load_pickled, pickled_files

    art_dir = Path(art_dir)
    state = {}
    if check_weights(art_dir, allow_pickle):   # (pickles only: refused unless allowed)
        for f in sorted(art_dir.glob("*.safetensors")):
            state.update(load_file(str(f)))
    else:
        for name in pickled_files(art_dir):
            state.update(load_pickled(art_dir / name))
    missing, unexpected = base_model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k and getattr(base_model.config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise ValueError(f"{art_dir}: weights do not match the model (missing {sorted(set(missing) - tied)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")
    return base_model


def merge(model):
    return model


def footprint(cfg: Config, model_config) -> fp.Footprint:
    """Every weight, in the model's own dtype, trains; the largest is the embedding or an MLP matrix."""
    hidden = model_config.hidden_size
    largest = max(model_config.vocab_size * hidden, hidden * fp.intermediate_size(model_config))
    return fp.footprint(apply, cfg, model_config, dtype=None, largest=largest)


def disabled(model):
    """None: full fine-tuning changes the base weights themselves; a caller that needs the base
    model's function keeps a frozen copy."""
    return None
