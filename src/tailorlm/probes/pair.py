"""The base model beside the tuned one, with one model in memory where the method allows it."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..run import method_base
from ..methods import METHODS


@contextlib.contextmanager
def base_view(model: torch.nn.Module, cfg, device: str | None = None) -> Iterator[torch.nn.Module]:
    """Yields the base model's function: `model` itself inside its method's `disabled` switch
    (adapters, prompts: no second copy), or, for full fine-tuning (no switch), the base folder loaded
    beside it on `device` (freed on exit)."""
    switch = METHODS[cfg.method.name].disabled(model)
    if switch is not None:
        with switch:
            yield model
        return
    base, _ = method_base(cfg)
    base.to(device or next(model.parameters()).device).eval()
    try:
        yield base
    finally:
        del base
