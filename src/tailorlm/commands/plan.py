"""`tailorlm plan CFG [key=value ...] [--memory 16GiB] [--json]`: a run's peak memory and step time,
before any weight is read, and what to change when it does not fit."""
from __future__ import annotations

import json

HELP = "predict a run's peak memory (as its parts) and step time, and what to change when it does not fit"
EXAMPLES = """examples:
  tailorlm plan my.yaml                          against the memory this machine has free
  tailorlm plan my.yaml --memory 16GiB           against a given amount (e.g. the machine you will run on)
  tailorlm plan --preset airline-full train.batch_size=32 --json"""

LABELS = {"weights": "weights", "gradients": "gradients", "optimizer": "AdamW state (2 moments)",
          "optimizer_temp": "AdamW step temporary", "activations": "activations (saved for backward)",
          "logits": "logits at target positions (+ their gradients)", "head_gradient": "LM head gradient (early in backward)",
          "retention": "retention probe and mitigations", "bf16_copies": "bf16 copies of frozen weights (frozen_cast)",
          "reference": "DPO's frozen reference model (full fine-tuning)"}


def add_arguments(p) -> None:
    p.add_argument("config", nargs="?", help="YAML config (as tailorlm train takes it)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.batch_size=4")
    p.add_argument("--preset", metavar="NAME", help="a config shipped with tailorlm")
    p.add_argument("--memory", metavar="SIZE", help="the memory to plan against, e.g. 16GiB (default: detected: "
                   "CUDA free memory, or MemAvailable / the cgroup limit)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def show(p, human) -> str:
    lines = [f"plan: {p.device}, {p.precision}; {p.trainable:,} of {p.total_params:,} parameters trainable; "
             f"{p.tokens_per_step:,} tokens per step (every row max_length tokens: the worst case)"]
    labels = {**LABELS, **({"logits": f"logits at {p.targets} label positions (+ gradients)"} if p.targets else {})}
    for key, n in p.parts.items():
        if n and not key.endswith("_beyond"):   # (a part of another line)
            lines.append(f"  {labels.get(key, key):50s}{human(n):>12s}")
    avail = "unknown" if p.available is None else f"{human(p.available)} ({p.source})"
    verdict = {True: "FITS", False: "DOES NOT FIT", None: "cannot tell"}[p.fits]
    lines.append(f"  {'predicted peak (' + p.moment + ')':50s}{human(p.total):>12s}")
    if p.headroom != 1.0:
        lines.append(f"  {f'needed (x{p.headroom:g}: freed memory the allocator keeps)':50s}{human(p.needed):>12s}")
    lines.append(f"  {'available':50s}{avail:>12s}")
    lines.append(f"{verdict}; step time about {p.step_time_s:.2f} s (matmul FLOPs over measured throughput: a "
                 "lower bound)")
    for a in p.advice:
        lines += [f"  fits with: {a['override']}", f"    -> {fit_figure(p, a, human)}; about "
                  f"{a['step_time_s']:.2f} s/step", f"    ({a['why']})"]
    if p.fits is False and not p.advice:
        lines.append("  no change tried fits (smaller micro-batches, checkpointing, LoRA, bf16 weights, shorter "
                     "rows, nor bf16 weights with smaller micro-batches or checkpointing); a machine with more "
                     "memory is needed")
    return "\n".join(lines)


def fit_figure(p, a: dict, human) -> str:
    """What a suggestion was compared with: its need (peak x headroom) against the memory available."""
    avail = human(p.available)
    if p.headroom == 1.0:
        return f"peak {human(a['total'])} of {avail} available"
    return f"needs {human(a['needed'])} (x{p.headroom:g} of its {human(a['total'])} peak) of {avail} available"


def plan_command(a) -> int:
    from ..config import ConfigError, load_config
    from ..plan import human, plan
    from .presets import config_argument

    if a.config and "=" in a.config:   # `plan --preset NAME key=value`: no config file given
        a.overrides, a.config = [a.config, *a.overrides], None
    a.config = config_argument(a.config, a.preset)
    if a.config is None:
        raise ConfigError("plan needs a config file or --preset NAME. Fix: tailorlm plan my.yaml")
    p = plan(load_config(a.config, a.overrides), a.memory)
    print(json.dumps(p.to_dict(), indent=1) if a.json else show(p, human))
    return 0 if p.fits is not False else 1
