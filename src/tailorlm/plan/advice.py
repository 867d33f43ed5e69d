"""The changes that make a run fit, each re-planned: a suggestion is shown only when the planner
itself says the changed run fits.

Tried in this order (the first ones change nothing about what is learned):
    1. smaller micro-batches, more of them: the same examples per optimiser step (batch_size x
       grad_accum kept), fewer activations at once
    2. gradient checkpointing (recompute each layer's activations in backward), at the current
       micro-batch, then with smaller ones
    3. a lighter method: LoRA instead of full fine-tuning (no gradients or AdamW state for the base)
    4. shorter rows: data.max_length halved until it fits (changes what a long example keeps)
"""
from __future__ import annotations

from ..config import Config


def _with(cfg: Config, overrides: dict[str, object]) -> Config:
    """A copy of cfg with dotted overrides applied and validated."""
    raw = cfg.model_dump(mode="python")
    for key, value in overrides.items():
        node = raw
        *path, last = key.split(".")
        for k in path:
            node = node[k]
        node[last] = value
    if "method.name" in overrides:
        raw["method"] = {"name": overrides["method.name"]}
    return Config.model_validate(raw)


def _smaller_batches(tc) -> list[dict]:
    out, b = [], tc.batch_size
    while b > 1:
        b //= 2
        if tc.batch_size % b == 0:
            out.append({"train.batch_size": b, "train.grad_accum": tc.grad_accum * tc.batch_size // b})
    return out


def candidates(cfg: Config) -> list[tuple[dict, str]]:
    tc, out = cfg.train, []
    out += [(o, "same examples per step, fewer activations at once") for o in _smaller_batches(tc)]
    if not tc.gradient_checkpointing:
        ck = {"train.gradient_checkpointing": True}
        out.append((ck, "recompute activations in backward (about a third more compute)"))
        out += [({**ck, **o}, "checkpointing, and smaller micro-batches with the same examples per step")
                for o in _smaller_batches(tc)]
    if cfg.method.name == "full":
        out.append(({"method.name": "lora"}, "LoRA: no gradients or optimiser state for the base weights"))
    n = cfg.data.max_length
    while n > 64:
        n //= 2
        out.append(({"data.max_length": n}, "shorter rows (long examples are cut or dropped as data.too_long says)"))
    return out


def override_text(o: dict) -> str:
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in o.items())


def advise(cfg: Config, available: int, world: int = 1, limit: int = 3) -> list[dict]:
    """Up to `limit` changes that fit `available` bytes, the first of each kind that does."""
    from . import plan

    found, kinds = [], set()
    for o, why in candidates(cfg):
        kind = why.split(",")[0]
        if kind in kinds:
            continue
        try:
            p = plan(_with(cfg, o), available, advise=False, world=world)
        except Exception:   # a change this model or config cannot take: not a suggestion
            continue
        if p.fits:
            kinds.add(kind)
            found.append({"override": override_text(o), "why": why, "total": p.total,
                          "step_time_s": p.step_time_s})
        if len(found) >= limit:
            break
    return found
