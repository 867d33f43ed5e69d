"""Step time, estimated: the step's matmul FLOPs over this machine's measured matmul throughput.

FLOPs (Kaplan et al. 2020, arXiv:2001.08361, section 2.1; per token, N the decoder's weights):
forward 2 N + the LM head 2 h V at each kept position + attention 4 T h per layer (QK^T and AV);
backward 2x the forward through the layers it runs through (gradients by the inputs and by the
weights), or, with a frozen base, 1x for the inputs plus 2 x trainable for the weights' gradients;
checkpointing runs the forward of those layers once more. So full fine-tuning is about 6 N per
token and a frozen base about 4 N. Throughput is measured once per device, precision and thread
count (a 1024 x 1024 matmul, best of 5) and cached in the tailorlm cache folder. Elementwise work,
data loading and Python overhead are not counted: read the result as a lower bound.
"""
from __future__ import annotations

import json
import os
import time

import torch

from ..atomic import write_text
from ..models.defaults import cache_dir


def _measure(device: str, precision: str) -> float:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):
        t = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def throughput(device: str, precision: str) -> float:
    """Matmul FLOP/s at this precision, measured once and cached."""
    key = f"{device}:{precision}:{torch.get_num_threads()}:{os.cpu_count()}"
    if device == "cuda":
        key += ":" + torch.cuda.get_device_name()
    path = cache_dir() / "plan-throughput.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key not in cached:
        cached[key] = _measure(device, precision)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, json.dumps(cached, indent=1))
        except OSError:
            pass   # a read-only cache: measure again next time
    return cached[key]


def step_flops(cfg, s) -> float:
    """Matmul FLOPs of one optimizer step (all micro-batches), from the plan's Shape."""
    tokens = s.rows * s.tokens
    per_layer = max(0, s.total - s.trainable * (not s.trains_base) - s.vocab * s.hidden) / s.layers
    attn = 4 * s.tokens * s.hidden
    fwd_layer = tokens * (2 * per_layer + attn)
    head = 2 * s.hidden * s.vocab * tokens
    fwd = s.layers * fwd_layer + head
    if s.trains_base:
        bwd = 2 * fwd
    else:
        bwd = s.in_backward * fwd_layer + head + 2 * s.trainable * tokens
    recompute = s.in_backward * fwd_layer if cfg.train.gradient_checkpointing else 0
    return (fwd + bwd + recompute) * cfg.train.grad_accum


def step_time(cfg, s, device: str, precision: str) -> float:
    return step_flops(cfg, s) / throughput(device, precision)
