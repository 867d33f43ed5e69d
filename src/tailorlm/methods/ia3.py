"""IA3 (Liu et al. 2022, arXiv:2205.05638) through PEFT: learned vectors that rescale the keys, the
values and the MLP's inner activations, l_k * k, l_v * v, l_ff * h; they start at one (the identity).
The fewest parameters of any method here, and mergeable: each vector folds into its projection.
For a classification model the new head trains too. Saved in PEFT's format."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field

from . import footprint as fp
from .base import MethodConfig, peft_disabled, peft_load, peft_merge, peft_save, peft_task

trains_base_weights = False
# train.lr when unset: 3e-3, the rate of IA3's paper (T-Few, Liu et al. 2022)
default_lr = 3e-3


class Config(MethodConfig):
    name: Literal["ia3"] = "ia3"
    targets: Union[Literal["default"], list[str]] = Field(
        "default", description="`default` (PEFT's choice per architecture: keys, values, MLP) or module names")
    feedforward: Optional[list[str]] = Field(
        None, description="targets whose input (not output) is scaled; default: the MLP's")


def apply(model, cfg: Config):
    from peft import IA3Config, get_peft_model
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF

    targets = None if cfg.targets == "default" else cfg.targets       # None: PEFT picks per model_type
    ff = cfg.feedforward
    if ff is None and targets is not None:     # custom targets: those among the architecture's MLP modules
        ff = [t for t in targets if t in FF.get(model.config.model_type, [])]
    return get_peft_model(model, IA3Config(task_type=peft_task(model), target_modules=targets,
                                           feedforward_modules=ff))


def footprint(cfg: Config, model_config) -> fp.Footprint:
    """Vectors in fp32 in every layer; counted on the skeleton."""
    return fp.footprint(apply, cfg, model_config)


# The artefact is PEFT's own adapter folder, so saving, loading and merging are PEFT's.
save, load, merge, disabled = peft_save, peft_load, peft_merge, peft_disabled
