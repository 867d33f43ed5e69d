"""What every method shares: the typed contract (`Method`), the strict base of method configs, the
NotMergeable error, the task a model was loaded for, the PEFT artefact format, and the SequenceLayout
that tells batching and the loss what a method does to the input sequence."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Optional, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from .footprint import Footprint


class MethodConfig(BaseModel):
    """The strict base of every method's config: unknown keys fail (with the config's "did you mean")."""
    model_config = ConfigDict(extra="forbid")


@runtime_checkable
class Method(Protocol):
    """What the loop, checkpoints, retention, export and the planner know of a method (one module per method):

        Config                     its pydantic config, a MethodConfig with `name: Literal[...]`
        apply(model, cfg)          -> the model with the method's own parameters (and nothing else)
                                   trainable; on a classification model, the new head too
        save(model, tok, out_dir)  the final artefact: PEFT's format, an HF folder, or ours
        load(base, art_dir, allow_pickle=False)
                                   -> the tuned model rebuilt from that artefact on a fresh base model,
                                   its own parameters trainable (a later run may continue them);
                                   pickled weights there refused unless allow_pickle (model.allow_pickle),
                                   and then read with torch.load(weights_only=True)
        merge(model)               -> a plain transformers model, or raises NotMergeable
        disabled(model)            -> a context inside which the model computes the base model's
                                   function (adapters switched off), or None where the method changes
                                   the base weights themselves (full fine-tuning: keep a frozen copy)
        trains_base_weights        True where the base weights themselves train (no frozen base: full
                                   fine-tuning), so advice may offer an adapter instead
        default_lr                 train.lr when the config leaves it unset: rates differ by orders of
                                   magnitude between methods (full 2e-5, prompt tuning 3e-2)
        footprint(cfg, model_config)
                                   -> a Footprint (methods/footprint.py): what it trains on that model
                                   (counted on a weightless skeleton), in which dtype, its virtual
                                   tokens, its largest tensor and its lowest trained layer; what the
                                   planner (plan/) asks instead of branching on the method's name

    Each Config field carries its description (`Field(description=...)`), which the README's config
    table (scripts/config_table.py) prints.
    """
    Config: type[MethodConfig]
    trains_base_weights: bool
    default_lr: float

    def apply(self, model, cfg): ...
    def save(self, model, tokenizer, out_dir: Path) -> None: ...
    def load(self, base_model, art_dir: Path, allow_pickle: bool = False): ...
    def merge(self, model): ...
    def disabled(self, model) -> Optional[ContextManager]: ...
    def footprint(self, cfg, model_config) -> Footprint: ...


class NotMergeable(RuntimeError):
    """The method adds computation that cannot be folded into the base weights."""


@dataclass(frozen=True)
class SequenceLayout:
    """How a tuned model reads a batch.

    packing        examples may share a row (position ids restart per example, no attention mask)
    logit_offset   positions the method prepends to every row; logits come back that much longer
    position_ids   the model takes our position ids (PEFT drops them for prompt tuning and warns)
    """
    packing: bool = True
    logit_offset: int = 0
    position_ids: bool = True


def sequence_layout(model) -> SequenceLayout:
    """The model's SequenceLayout, read from the model itself, so the loop, eval and export need not know the
    method. PEFT's prompt-learning methods (prompt tuning, p-tuning, prefix tuning, and any of them
    through the `peft` pass-through) put virtual tokens in front of each row: as embeddings (the
    logits grow by that many positions) or as past keys and values (prefix: the logits do not). A
    row-wide prefix cannot be shared by several packed examples, so each gets a row of its own."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None or not cfg.is_prompt_learning or getattr(model, "_adapters_disabled", False):
        return SequenceLayout()   # (inside PEFT's disable_adapter() the base model's forward runs: nothing prepended)
    in_cache = cfg.peft_type in ("PREFIX_TUNING", "CARTRIDGE")   # PeftType is a str enum
    return SequenceLayout(packing=False, logit_offset=0 if in_cache else cfg.num_virtual_tokens, position_ids=in_cache)


def task_of(model) -> str:
    """causal_lm or sequence_classification, from the model's class (a PEFT wrapper reports its base's)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "sequence_classification" if "ForSequenceClassification" in type(base).__name__ else "causal_lm"


def peft_task(model) -> str:
    """PEFT's task_type: SEQ_CLS also makes the new classification head trainable (modules_to_save)."""
    return "SEQ_CLS" if task_of(model) == "sequence_classification" else "CAUSAL_LM"


# ---------------------------------------------------------------- PEFT artefacts (every PEFT-backed method)

def peft_save(model, tokenizer, out_dir: Path) -> None:
    """adapter_config.json + adapter_model.safetensors: PEFT, transformers and vLLM load it without us.
    Its base_model_name_or_path is rewritten as card.base_of(model) (the Hub id of an embedded model,
    else an absolute folder), not the path this process loaded, so AutoPeftModelForCausalLM.from_pretrained
    works from another directory or machine; README.md says which base it needs and how to load it.
    Rewritten after PEFT saves: PEFT itself looks the base up while saving, and must find the local one."""
    import json

    from .card import base_of, write_card

    model.save_pretrained(out_dir)
    for cfg_file in Path(out_dir).glob("**/adapter_config.json"):   # one per adapter
        cfg = json.loads(cfg_file.read_text())
        cfg_file.write_text(json.dumps({**cfg, "base_model_name_or_path": base_of(model)}, indent=2, sort_keys=True))
    tokenizer.save_pretrained(out_dir)
    write_card(out_dir, model, task_of(model), "peft")


def peft_load(base_model, art_dir: Path, allow_pickle: bool = False):
    """The adapter on `base_model`, trainable, as every method's load() returns it (a later run may
    continue it). PEFT refuses is_trainable for prompt learning, whose prompt encoder is what trains.
    PEFT falls back to adapter_model.bin (weights_only=True) without safetensors: refused unless allowed."""
    from peft import PeftConfig, PeftModel

    from ..models.load import check_pickles, refusals

    check_pickles(Path(art_dir), allow_pickle)
    prompt = PeftConfig.from_pretrained(str(art_dir)).is_prompt_learning
    with refusals(Path(art_dir), "adapter"):
        model = PeftModel.from_pretrained(base_model, str(art_dir), is_trainable=not prompt)
    for cfg in model.peft_config.values():   # the base it sits on here, not the saved Hub id: PEFT's save
        cfg.base_model_name_or_path = base_model.name_or_path   # looks it up (online), and peft_save renames it
    if prompt:
        model.prompt_encoder.requires_grad_(True)
    return model


def peft_disabled(model) -> ContextManager:
    """PEFT's own switch: the base model's forward inside (prompt methods prepend nothing there)."""
    return model.disable_adapter()


def peft_merge(model):
    """Fold a PEFT adapter into the base weights; methods with nothing to fold raise NotMergeable."""
    cfg = model.active_peft_config
    if cfg.is_prompt_learning:
        raise NotMergeable(f"{cfg.peft_type.value} adds virtual tokens to every input; there are no weights to "
                           "fold them into. Export the adapter (tailorlm export RUN --adapter)")
    try:
        return model.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError, TypeError) as e:
        raise NotMergeable(f"PEFT cannot merge {cfg.peft_type.value}: {e}") from e
