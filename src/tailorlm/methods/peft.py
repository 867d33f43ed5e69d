"""Any PEFT method, by its PEFT config: the rest of PEFT's ~45 tuners without code of ours.

    method: {name: peft, config: {peft_type: LOHA, r: 8, target_modules: all-linear}}

`task_type` is filled in from the model (CAUSAL_LM, or SEQ_CLS, which also trains the new head).
The config is checked against PEFT's own config class when the run's config is read. Saved in PEFT's
format; merged when PEFT can merge that method, NotMergeable otherwise.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from . import footprint as fp
from .base import MethodConfig, peft_disabled, peft_load, peft_merge, peft_save, peft_task

trains_base_weights = False
# train.lr when unset: 2e-4 (any PEFT method: no rate fits them all; set train.lr)
default_lr = 2e-4


class Config(MethodConfig):
    name: Literal["peft"] = "peft"
    config: dict[str, Any] = Field(description="any PEFT tuner's config dict (`peft_type: LOHA`, ...), checked "
                                               "against PEFT's own class")

    @field_validator("config")
    @classmethod
    def _peft_config(cls, v: dict) -> dict:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

        ptype = str(v.get("peft_type", "")).upper()
        if ptype not in PEFT_TYPE_TO_CONFIG_MAPPING:
            raise ValueError(f"config.peft_type must be one of {', '.join(sorted(PEFT_TYPE_TO_CONFIG_MAPPING))} "
                             f"(got {v.get('peft_type')!r})")
        rest = {k: x for k, x in v.items() if k != "peft_type"}
        try:
            PEFT_TYPE_TO_CONFIG_MAPPING[ptype](**rest)
        except TypeError as e:   # an unknown field
            raise ValueError(f"{ptype}: {e}") from None
        return {**v, "peft_type": ptype}


def apply(model, cfg: Config):
    from peft import get_peft_config, get_peft_model

    return get_peft_model(model, get_peft_config({"task_type": peft_task(model), **cfg.config}))


def footprint(cfg: Config, model_config) -> fp.Footprint:
    """Counted on the skeleton; the rest is what an adapter is taken to be: fp32, at most hidden x hidden
    a tensor, every layer in backward, nothing prepended to the rows."""
    return fp.footprint(apply, cfg, model_config)


# The artefact is PEFT's own adapter folder, so saving, loading and merging are PEFT's.
save, load, merge, disabled = peft_save, peft_load, peft_merge, peft_disabled
