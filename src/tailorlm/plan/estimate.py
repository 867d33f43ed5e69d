"""`estimate(cfg)`: one configuration's Plan (peak memory as its parts, step time), without advice.

plan/__init__.py's `plan` adds the advice (plan/advice.py), which itself re-plans each change it
tries through this function; keeping the estimate here is what spares plan/ an import cycle between
its package and its advice.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..device import pick_device, resolve_precision
from ..errors import ConfigError
from . import memory as mem
from . import shapes, speed
from .available import detect, parse_size

# What fitting needs beyond the predicted peak of memory in use. On CPU, glibc keeps freed activations
# in the heap (its mmap threshold rises as blocks are freed), so a process's peak RSS ran up to 32%
# over the peak in use (SmolLM2 LoRA fp32: 2061 vs 1562 MiB); the accuracy test pins the threshold to
# measure the peak in use. CUDA's caching allocator is not modelled beyond the allocated bytes.
HEADROOM = {"cpu": 1.35}


@dataclass
class Plan:
    parts: dict[str, int]        # bytes (plan/memory.py)
    total: int                   # predicted peak, bytes
    moment: str                  # when the peak happens
    available: int | None        # bytes the run may use; None when unknown
    source: str                  # where `available` comes from
    device: str
    precision: str
    trainable: int
    total_params: int
    tokens_per_step: int
    step_time_s: float           # an estimate (plan/speed.py)
    advice: list[dict] = field(default_factory=list)   # {"override": "k=v ...", "why": str, "total": bytes}
    headroom: float = 1.0        # fitting needs total * headroom (HEADROOM: memory the allocator keeps)
    targets: int | None = None   # target positions per micro-batch where not every one is (classification)

    @property
    def needed(self) -> int:
        return int(self.total * self.headroom)

    @property
    def fits(self) -> bool | None:
        return None if self.available is None else self.needed <= self.available

    def to_dict(self) -> dict:
        return {**asdict(self), "needed": self.needed, "fits": self.fits}


def estimate(cfg, memory=None, world: int = 1) -> Plan:
    """The Plan of `cfg` against `memory` (bytes or "16GiB"; None: detected), advice left empty.
    Reads config.json only: the method describes itself (its Footprint) on the model's skeleton."""
    if cfg.model.task != "causal_lm":
        raise ConfigError("plan: only language models (model.task: causal_lm) are planned so far; a "
                          "classification head is not. Fix: tailorlm train with train.plan_check=false")
    device = pick_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    config = shapes.hf_config(cfg)
    s = mem.shape_of(cfg, config, world)
    s.device = device
    pt = mem.parts(cfg, config, shapes.probe(cfg, config, precision, s.virtual_tokens), s, device, precision)
    total, moment = mem.peak(cfg, pt)
    if memory is None:
        available, source = detect(device)
    else:
        available, source = parse_size(memory), "given"
    return Plan(parts=pt, total=int(total), moment=moment, available=available, source=source, device=device,
                precision=precision, trainable=s.trainable, total_params=s.total,
                tokens_per_step=s.rows * s.tokens * cfg.train.grad_accum * world,
                step_time_s=speed.step_time(cfg, s, device, precision), headroom=HEADROOM.get(device, 1.0),
                targets=s.targets)
