"""`plan(cfg)`: a run's peak memory, as its parts, and its step time, before any weight is read.

    from tailorlm.plan import plan
    p = plan(cfg, memory="16GiB")     # or memory=None: what this machine has free
    p.total, p.fits, p.advice         # bytes; whether it fits; the changes that would (each re-planned)

plan/estimate.py puts the parts together, plan/memory.py says what is predicted and how,
plan/shapes.py what is measured on a probe, plan/speed.py how the step time is estimated,
plan/advice.py which changes are tried. What a method trains, in which dtype, with how many virtual
tokens, its largest tensor and its lowest trained layer, the method says itself (its `footprint`,
methods/footprint.py): plan/ never asks which method it plans.
`tailorlm plan CFG` prints it; `tailorlm train` refuses a run that does not fit before loading it.
"""
from __future__ import annotations

from .advice import advise as _advise
from .available import human, parse_size
from .estimate import HEADROOM, Plan, estimate


def plan(cfg, memory=None, *, advise: bool = True, world: int = 1) -> Plan:
    """The plan of `cfg` against `memory` (bytes or "16GiB"; None: detected). Reads config.json only.
    With `advise`, a run that does not fit gets the changes that would make it fit (plan/advice.py)."""
    p = estimate(cfg, memory, world)
    if advise and p.fits is False:
        p.advice = _advise(cfg, p.available, world)
    return p


__all__ = ["HEADROOM", "Plan", "estimate", "human", "parse_size", "plan"]
