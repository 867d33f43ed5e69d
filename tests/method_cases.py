"""One table of method cases for the method, plan and export tests (issue 24): a new method is one file
in src/tailorlm/methods/, one line in its registry (methods/__init__.py) and one case here, and then
tests/methods/test_methods.py applies, trains, saves, reloads and merges it, tests/plan/test_plan.py plans it (its
trainable count and the activations its probe predicts), and tests/export/test_export.py exports it when the
case gives an export config.

A case's name is the method's, or `method+variant` for another setting of the same method."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

R, N_VIRTUAL, REDUCTION = 4, 4, 8


# ---------------------------------------------------------------- trainable counts, by hand

def linears(c, kind: str) -> list[tuple[int, int]]:
    """(in, out) of every Linear PEFT's all-linear targets."""
    h, i, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    if kind == "decoder":
        kv = c.num_key_value_heads * (h // c.num_attention_heads)
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)] * L     # q k v o gate up down
    return [(h, h), (h, h), (h, h), (h, h), (h, i), (i, h)] * L + [(h, h)]         # q k v attn-out in out, pooler


def kv_dim(c) -> int:
    return c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)


@dataclass(frozen=True)
class Case:
    """config      the method's config, as a run's `method:` section (tests/methods/test_methods.py)
    own         a regex matching the names of the parameters that are the method's own
    formula     (model config, "decoder" | "encoder") -> its trainable count worked out by hand, head
                excluded; None: every parameter
    mergeable   merge() folds it into a plain model (else NotMergeable)
    peft_format its artefact is PEFT's adapter folder (PEFT loads it without tailorlm)
    plan        the config the planner's tests plan (test_plan.py); None: not planned (a variant)
    export      the config a short run trains before the export tests (test_export.py); None: not exported
    """
    config: dict
    own: str
    formula: Optional[Callable]
    mergeable: bool = True
    peft_format: bool = True
    plan: Optional[dict] = None
    export: Optional[dict] = None


CASES: dict[str, Case] = {
    "full": Case({"name": "full"}, r".", None, peft_format=False, plan={"name": "full"}),
    "lora": Case({"name": "lora", "r": R, "alpha": 2 * R}, r"\.lora_[AB]\.",
                 lambda c, k: sum(R * (i + o) for i, o in linears(c, k)),
                 plan={"name": "lora", "r": 4, "layers": 2}, export={"name": "lora", "r": 4, "alpha": 16}),
    "lora+dora": Case({"name": "lora", "r": R, "dora": True}, r"\.lora_([AB]|magnitude_vector)\.",
                      lambda c, k: sum(R * (i + o) + o for i, o in linears(c, k))),
    "lora+rslora": Case({"name": "lora", "r": R, "rslora": True}, r"\.lora_[AB]\.",
                        lambda c, k: sum(R * (i + o) for i, o in linears(c, k))),
    "bottleneck": Case({"name": "bottleneck", "reduction_factor": REDUCTION}, r"\.adapter\.(down|up)\.",
                       # houlsby: two adapters per block, each h*d + d (down) + d*h + h (up)
                       lambda c, k: 2 * c.num_hidden_layers * (2 * c.hidden_size * (c.hidden_size // REDUCTION)
                                                               + c.hidden_size // REDUCTION + c.hidden_size),
                       mergeable=False, peft_format=False, plan={"name": "bottleneck", "reduction_factor": 8},
                       export={"name": "bottleneck"}),
    "prompt": Case({"name": "prompt", "virtual_tokens": N_VIRTUAL}, r"^prompt_encoder\.",
                   lambda c, k: N_VIRTUAL * c.hidden_size, mergeable=False,
                   plan={"name": "prompt", "virtual_tokens": 5, "init": "random"},
                   export={"name": "prompt", "virtual_tokens": 4}),
    "prefix": Case({"name": "prefix", "virtual_tokens": N_VIRTUAL}, r"^prompt_encoder\.",
                   lambda c, k: N_VIRTUAL * c.num_hidden_layers * 2 * kv_dim(c),   # a key and a value per layer
                   mergeable=False, plan={"name": "prefix", "virtual_tokens": N_VIRTUAL}),
    "ia3": Case({"name": "ia3"}, r"\.ia3_l\.",
                # decoder: k and v outputs, down_proj's input; BERT: key and value outputs, and the inputs of
                # attention.output.dense and output.dense (PEFT's "output.dense" matches both)
                lambda c, k: c.num_hidden_layers * (2 * kv_dim(c) + c.intermediate_size if k == "decoder"
                                                    else 3 * c.hidden_size + c.intermediate_size),
                plan={"name": "ia3"}, export={"name": "ia3"}),
    "peft": Case({"name": "peft", "config": {"peft_type": "LOHA", "r": R, "target_modules": "all-linear"}},
                 r"\.hada_w[12]_[ab]\.", lambda c, k: sum(2 * R * (i + o) for i, o in linears(c, k)),
                 plan={"name": "peft", "config": {"peft_type": "LOHA", "r": R, "target_modules": "all-linear"}}),
}

# what the planner's tests plan, and what the export tests train, by method name
PLAN_CASES = [c.plan for c in CASES.values() if c.plan]
EXPORT_CASES = {c.export["name"]: c.export for c in CASES.values() if c.export}
PEFT_EXPORTS = [n for n, c in CASES.items() if c.export and c.peft_format]        # PEFT loads the adapter
UNMERGEABLE_EXPORTS = [n for n, c in CASES.items() if c.export and not c.mergeable]  # exported as an adapter
