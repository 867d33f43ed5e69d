"""The changes that make a run fit, each re-planned: a suggestion is shown only when the planner
itself says the changed run fits.

Tried in this order (the first ones change nothing about what is learned):
    1. smaller micro-batches, more of them: the same examples per optimizer step (batch_size x
       grad_accum kept), fewer activations at once
    2. gradient checkpointing (recompute each layer's activations in backward), at the current
       micro-batch, then with smaller ones
    3. a lighter method: LoRA instead of a method that trains the base weights themselves (the
       method's `trains_base_weights`: no gradients or AdamW state for the base)
    4. bf16 weights (model.dtype=bf16, from fp32): half the bytes of every weight held in it
    5. shorter rows: data.max_length halved until it fits (changes what a long example keeps)
When no single change fits, pairs: bf16 weights with smaller micro-batches, then with checkpointing
(and smaller micro-batches): the weights and the activations are often both too large at once.

Each change is re-planned by plan/estimate.py (not the package's `plan`, which calls this module).
"""
from __future__ import annotations

from ..config import Config
from ..methods import METHODS
from .estimate import estimate

BF16 = {"model.dtype": "bf16"}


def _with(cfg: Config, overrides: dict[str, object]) -> Config:
    """A copy of cfg with dotted overrides applied and validated. A `name` picks a variant (a method):
    the keys of the one it replaces go with it, the new one starts from its defaults."""
    raw = cfg.model_dump(mode="python")
    for key, value in overrides.items():
        node = raw
        *path, last = key.split(".")
        for k in path:
            node = node[k]
        if last == "name":
            node.clear()
        node[last] = value
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
    if METHODS[cfg.method.name].trains_base_weights:
        out.append(({"method.name": "lora"}, "LoRA: no gradients or optimizer state for the base weights"))
    if cfg.model.dtype == "fp32":
        out.append((BF16, "bf16 weights: half the memory of every weight held in model.dtype"))
    n = cfg.data.max_length
    while n > 64:
        n //= 2
        out.append(({"data.max_length": n}, "shorter rows (long examples are cut or dropped as data.too_long says)"))
    return out


def pairs(cfg: Config) -> list[tuple[dict, str]]:
    """Two changes at once, for when no single one fits: bf16 weights with smaller micro-batches,
    then with checkpointing (and smaller micro-batches)."""
    if cfg.model.dtype != "fp32":
        return []
    out = [({**BF16, **o}, "bf16 weights and smaller micro-batches together: no single change fits")
           for o in _smaller_batches(cfg.train)]
    if not cfg.train.gradient_checkpointing:
        ck = {**BF16, "train.gradient_checkpointing": True}
        out += [({**ck, **o}, "bf16 weights and checkpointing together: no single change fits")
                for o in [{}] + _smaller_batches(cfg.train)]
    return out


def override_text(o: dict) -> str:
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in o.items())


def advise(cfg: Config, available: int, world: int = 1, limit: int = 3) -> list[dict]:
    """Up to `limit` changes that fit `available` bytes, the first of each kind that does; pairs of
    changes only when no single one fits. Each: the override, why, the predicted peak (`total`) and
    what fitting compared with `available` (`needed`: the peak x the plan's headroom)."""
    found = _fitting(cfg, candidates(cfg), available, world, limit)
    return found or _fitting(cfg, pairs(cfg), available, world, limit)


def _fitting(cfg: Config, tried: list[tuple[dict, str]], available: int, world: int, limit: int) -> list[dict]:
    found, kinds = [], set()
    for o, why in tried:
        kind = why.split(",")[0]
        if kind in kinds:
            continue
        try:
            p = estimate(_with(cfg, o), available, world=world)
        except Exception:   # a change this model or config cannot take: not a suggestion
            continue
        if p.fits:
            kinds.add(kind)
            found.append({"override": override_text(o), "why": why, "total": p.total, "needed": p.needed,
                          "step_time_s": p.step_time_s})
        if len(found) >= limit:
            break
    return found
