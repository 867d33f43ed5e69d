"""AdamW over the method's own parameters, and warmup followed by cosine or linear decay."""
from __future__ import annotations

import math

import torch


def build_optimizer(params: dict[str, torch.nn.Parameter], lr: float, weight_decay: float, device: str,
                    impl: str = "default"):
    """AdamW (Loshchilov & Hutter 2019). `impl` (train.optimizer_impl) picks torch's kernel, the same
    update either way: `default` is fused on CUDA and torch's own choice elsewhere (a Python loop over
    the parameters on CPU); `foreach` batches the tensors of a group into multi-tensor ops; `fused`
    is one kernel per group (CPU and CUDA)."""
    # no decay on biases and norm gains (1-D), as is standard
    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kernel = {"default": {"fused": (device == "cuda") or None}, "foreach": {"foreach": True},
              "fused": {"fused": True}}[impl]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.999), eps=1e-8, **kernel)


def lr_lambda(step: int, *, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step` (0-based): linear warmup, then decay to min_ratio."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(opt, *, warmup: int, total: int, schedule: str, min_ratio: float):
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, warmup=warmup, total=total, schedule=schedule, min_ratio=min_ratio))
