"""What every method shares: the NotMergeable error, the task a model was loaded for, the PEFT artefact
format, and the Layout that tells batching and the loss what a method does to the input sequence."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class NotMergeable(RuntimeError):
    """The method adds computation that cannot be folded into the base weights."""


@dataclass(frozen=True)
class Layout:
    """How a tuned model reads a batch.

    packing        examples may share a row (position ids restart per example, no attention mask)
    logit_offset   positions the method prepends to every row; logits come back that much longer
    position_ids   the model takes our position ids (PEFT drops them for prompt tuning and warns)
    """
    packing: bool = True
    logit_offset: int = 0
    position_ids: bool = True


def layout(model) -> Layout:
    """The model's Layout, read from the model itself, so the loop, eval and export need not know the
    method. PEFT's prompt-learning methods (prompt tuning, p-tuning, prefix tuning, and any of them
    through the `peft` pass-through) put virtual tokens in front of each row: as embeddings (the
    logits grow by that many positions) or as past keys and values (prefix: the logits do not). A
    row-wide prefix cannot be shared by several packed examples, so each gets a row of its own."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None or not cfg.is_prompt_learning or getattr(model, "_adapters_disabled", False):
        return Layout()   # (inside PEFT's disable_adapter() the base model's forward runs: nothing prepended)
    in_cache = cfg.peft_type in ("PREFIX_TUNING", "CARTRIDGE")   # PeftType is a str enum
    return Layout(packing=False, logit_offset=0 if in_cache else cfg.num_virtual_tokens, position_ids=in_cache)


def task_of(model) -> str:
    """causal_lm or sequence_classification, from the model's class (a PEFT wrapper reports its base's)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "sequence_classification" if "ForSequenceClassification" in type(base).__name__ else "causal_lm"


def peft_task(model) -> str:
    """PEFT's task_type: SEQ_CLS also makes the new classification head trainable (modules_to_save)."""
    return "SEQ_CLS" if task_of(model) == "sequence_classification" else "CAUSAL_LM"


# ---------------------------------------------------------------- PEFT artefacts (every PEFT-backed method)

def peft_save(model, tokenizer, out_dir: Path) -> None:
    """adapter_config.json + adapter_model.safetensors: PEFT, transformers and vLLM load it without us."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def peft_load(base_model, art_dir: Path):
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(art_dir))


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
