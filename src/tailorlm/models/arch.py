"""Per-architecture module names, as data: where the blocks are, and which module ends each sub-block.

Methods that insert modules (bottleneck adapters) look positions up here instead of subclassing a
model. `attn_out` and `mlp_out` name, inside one block, the module whose output is the attention
(resp. MLP) sub-block's output just before the residual add: the output projection. A family not
listed can be described in the same three strings.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    layers: str            # the ModuleList of blocks, inside the backbone (model.base_model)
    attn_out: str          # in a block: the attention output projection
    mlp_out: str           # in a block: the MLP output projection
    encoder: bool = False  # bidirectional (BERT-like): classification pools the first token, pads go right


LLAMA_LIKE = Arch(layers="layers", attn_out="self_attn.o_proj", mlp_out="mlp.down_proj")
BERT_LIKE = Arch(layers="encoder.layer", attn_out="attention.output.dense", mlp_out="output.dense", encoder=True)

ARCHS: dict[str, Arch] = {
    # decoders: Llama and the families that kept its module names
    "llama": LLAMA_LIKE,          # also SmolLM / SmolLM2
    "smollm3": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "qwen3": LLAMA_LIKE,
    "gemma": LLAMA_LIKE,
    "gemma2": LLAMA_LIKE,
    "gemma3_text": LLAMA_LIKE,
    "phi3": LLAMA_LIKE,
    "olmo2": LLAMA_LIKE,
    "gpt2": Arch(layers="h", attn_out="attn.c_proj", mlp_out="mlp.c_proj"),
    # encoders
    "bert": BERT_LIKE,
    "roberta": BERT_LIKE,
    "xlm-roberta": BERT_LIKE,
    "electra": BERT_LIKE,
    "distilbert": Arch(layers="transformer.layer", attn_out="attention.out_lin", mlp_out="ffn.lin2", encoder=True),
}


def arch_of(model) -> Arch:
    mtype = model.config.model_type
    if mtype not in ARCHS:
        raise ValueError(f"tailorlm has no module map for model_type {mtype!r} (known: {', '.join(ARCHS)}). Fix: add "
                         "an Arch(layers=..., attn_out=..., mlp_out=...) entry to tailorlm/models/arch.py")
    return ARCHS[mtype]


def is_encoder(model) -> bool:
    mtype = model.config.model_type
    return ARCHS[mtype].encoder if mtype in ARCHS else False


def blocks(model):
    """The model's transformer blocks, in order."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.base_model.get_submodule(arch_of(base).layers)


def hidden_size(model) -> int:
    return model.config.get_text_config().hidden_size


def pick_layers(n: int, layers) -> list[int]:
    """None: every layer; N: the top N (backward then stops there, which is what makes it fast);
    or an explicit list of indices."""
    if layers is None:
        return list(range(n))
    if isinstance(layers, int):
        return list(range(max(0, n - layers), n))
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise ValueError(f"layers {bad} do not exist in a model with {n} layers")
    return sorted(i % n for i in layers)


def head_names(model) -> list[str]:
    """Parameters outside the backbone: the task head (`score`, `classifier`, ...). A causal LM's
    lm_head is usually tied to the input embeddings and then not listed."""
    prefix = model.base_model_prefix + "."
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix)]
