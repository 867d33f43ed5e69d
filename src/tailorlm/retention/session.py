"""Everything forgetting-related in one run: built from the base model at step 0, then consulted by
the loop at each step (replay batch, penalty) and each evaluation (probe)."""
from __future__ import annotations

import copy

import torch

from ..data.batching import Order, collate
from ..seed import rng_state, set_rng_state
from . import regularizers as reg
from .probe import Probe
from .reference import generate_reference, read_reference, spread


class Retention:
    def __init__(self, rcfg, base_model, tok, *, device: str, precision: str, seed: int, batch_size: int):
        """Build the reference (half probe, half replay) and measure the base model on it."""
        self.r, self.tok, self.device = rcfg, tok, device
        state = rng_state()  # sampling the reference must not shift the run's random stream
        if rcfg.reference == "auto":
            ref = generate_reference(base_model, tok, rcfg.samples, rcfg.sample_tokens, seed, device)
            probe_part, replay_part = ref[0::2], ref[1::2]
        else:   # a file: `samples / 2` blocks spread over it are the probe, every other block may be replayed
            blocks = read_reference(rcfg.reference, tok, rcfg.max_length, 10**9)
            probe_ids = set(spread(len(blocks), rcfg.samples)[0::2])
            probe_part = [b for i, b in enumerate(blocks) if i in probe_ids]
            # (a replay pool of only samples / 2 blocks is memorised within a few epochs, and the
            # general-text NLL then rises instead of falling: measured, +1.4 nats in 60 steps)
            replay_part = [b for i, b in enumerate(blocks) if i not in probe_ids]
        set_rng_state(state)
        if rcfg.replay_data:
            replay_part = read_reference(rcfg.replay_data, tok, rcfg.max_length, 10_000)
        self.replay = replay_part
        self.probe = Probe(probe_part, pad_id=tok.pad_token_id, device=device, precision=precision)
        self.base = self.probe.measure(base_model)          # step 0: the base model's numbers
        # (a forgetting budget distils with the weight it steers: retention/budget.py)
        self.distills = bool(rcfg.distill) or rcfg.budget is not None
        self.n_replay = max(1, round(batch_size * rcfg.replay)) if (rcfg.replay or self.distills) else 0
        self.order = Order(len(self.replay), self.n_replay, seed + 1) if self.n_replay and self.replay else None
        self.anchor = self.fisher = self.base_copy = self.disabled = None

    def attach(self, model, params: dict, method, task_examples: list) -> None:
        """After the method is applied: starting values, Fisher, and the base for distillation (the
        method's own switch back to the base model, or, where it has none, a frozen copy).

        EWC's Fisher (regularizers.fisher_diagonal) is the base model's on the reference's replay half:
        the general text the base already knew is the "previous task" a single run protects
        (Kirkpatrick et al. 2017 compute F on the old task's data), and it is never the probe's half,
        so the penalty is not fitted to the texts forgetting is scored on. Without a replay half
        (none sampled), the run's own training data (`task_examples`)."""
        if self.r.l2sp or self.r.ewc:
            self.anchor = reg.snapshot(params)
        if self.r.ewc:
            self.fisher = reg.fisher_diagonal(model, params, self.replay or task_examples, pad_id=self.tok.pad_token_id)
        if self.distills:
            self.disabled = method.disabled
            if method.disabled(model) is None:   # full fine-tuning: keep a frozen copy
                self.base_copy = copy.deepcopy(model).requires_grad_(False).eval()

    def replay_batch(self, step: int):
        if self.order is None:
            return None
        return collate([self.replay[i] for i in self.order.micro_batch(step)], self.tok.pad_token_id, packing=True,
                       row_tokens=1024).to(self.device)

    @property
    def mixes_replay(self) -> bool:
        return bool(self.r.replay) and self.order is not None

    def penalty(self, model, params: dict, replay, distill: float | None = None) -> torch.Tensor | None:
        """L2-SP + EWC + distillation, None when none applies; `distill`: the distillation weight this
        step (a forgetting budget's), instead of retention.distill."""
        weight = self.r.distill if distill is None else distill
        terms = []
        if self.r.l2sp:
            terms.append(reg.l2sp(params, self.anchor, self.r.l2sp))
        if self.r.ewc:
            terms.append(reg.ewc(params, self.anchor, self.fisher, self.r.ewc))
        if weight and replay is not None:
            terms.append(reg.distill(model, self.base_copy, replay, weight, self.r.temperature,
                                     disabled=self.disabled))
        return sum(terms) if terms else None

    def measure(self, model) -> dict:
        return self.probe.measure(model)
