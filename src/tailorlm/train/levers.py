"""Speed levers: switches in train.* that change how a step is computed, never what it computes.
Each is tested for the same loss and gradients as the plain path (tests/test_speed_levers.py) and
measured by benchmarks/levers.py (plain and lever steps interleaved in one process); on by default
are the two that won there: train.loss_chunk (1024) and train.frozen_cast.

  train.loss_chunk      the LM head and cross-entropy on label positions only, in chunks (each chunk
                        recomputed in backward), as Liger's fused linear cross-entropy and TRL's
                        chunked LM head do: the (positions, vocab) logits never exist at once.
  train.frozen_bottom   the blocks below the lowest adapted one run without autograd.
  train.compile         torch.compile of each transformer block (not the head: the chunked loss
                        swaps it, and a block compiles once for all layers of the same shape).
  train.frozen_cast     under bf16 autocast, frozen linear weights are cast to bf16 once, not in every
                        forward (autocast caches casts of trained leaves only): on by default.
  train.optimizer_impl  lives in train/optim.py (AdamW's foreach / fused kernels).
"""
from __future__ import annotations

import contextlib
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..data.batching import Batch
from ..data.tokenize import IGNORE
from ..errors import ConfigError
from ..forward import LOSSES, lm_logits
from ..models.arch import blocks


# ============================================================================ chunked LM head + CE

@contextlib.contextmanager
def head_skipped(model):
    """The model's LM head is the identity inside, so `.logits` are the final hidden states (the
    head's input) at the kept columns; the head's own forward is put back after (even on an error)."""
    head = model.get_output_embeddings()
    head.forward = lambda x: x   # an instance attribute shadows the class's forward
    try:
        yield head
    finally:
        del head.forward


def logit_scale(model) -> str | None:
    """Models whose logits are more than `head(hidden)` (a scale) would be scored wrongly by the
    chunked loss: the setting that says so, or None."""
    cfg = model.config.get_text_config()
    for key in ("logit_scale", "logits_scaling", "output_multiplier_scale"):
        if getattr(cfg, key, None) not in (None, 1, 1.0):
            return f"{key}={getattr(cfg, key)}"
    return None


def _chunk_ce(h: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, head, softcap: float | None) -> torch.Tensor:
    """Sum of CE over one chunk: h (n, hidden) -> logits (n, vocab), the same ops as the model's head."""
    logits = head(h)   # under the caller's autocast, as the model's own head call would be
    if softcap:        # Gemma-2's final logit soft-capping: cap * tanh(logits / cap)
        logits = torch.tanh(logits / softcap) * softcap
    per = F.cross_entropy(logits.float(), t, reduction="none")   # (n,)
    return (per * w).sum() if w is not None else per.sum()


def chunked_lm_loss_sum(model, batch: Batch, chunk: int) -> tuple[torch.Tensor, int]:
    """forward.lm_loss_sum's value, computed as sum_c CE(head(h_c), t_c) over chunks c of `chunk`
    label positions. The plain path scores every kept column of every row, (rows, K, vocab), where a
    packed batch's rows share few label columns; this scores the N = n_targets positions only, and
    torch.utils.checkpoint recomputes each chunk's (chunk, vocab) logits in backward instead of keeping
    them, so the logits held at once are (chunk, vocab)."""
    if (scale := logit_scale(model)) is not None:
        raise ConfigError(f"train.loss_chunk: this model scales its logits ({scale}), which the chunked loss does "
                          "not reproduce. Fix: train.loss_chunk=null")
    with head_skipped(model) as head:
        hidden = lm_logits(model, batch, batch.keep)          # (rows, K, hidden): the head's input
    targets = batch.targets[:, batch.keep]                    # (rows, K)
    at = targets != IGNORE
    h, t = hidden[at], targets[at]                            # (N, hidden), (N,)
    w = batch.weights[:, batch.keep][at] if batch.weights is not None else None
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, t.numel(), chunk):
        part = slice(s, s + chunk)
        total = total + checkpoint(_chunk_ce, h[part], t[part], None if w is None else w[part], head, softcap,
                                   use_reentrant=False)
    return total, batch.n_targets


def loss_function(task: str, chunk: int | None, model=None, say=None):
    """The run's loss_fn: the chunked LM loss with train.loss_chunk, else the plain one of `task`
    (also for a model that scales its logits, which the chunked loss would score wrongly)."""
    if chunk and task == "causal_lm":
        if model is not None and (scale := logit_scale(model)) is not None:
            if say:
                say(f"[tailorlm] train.loss_chunk: off for this model ({scale}: it scales its logits)")
            return LOSSES[task]
        return partial(chunked_lm_loss_sum, chunk=chunk)
    return LOSSES[task]


# ============================================================================ frozen bottom, compile

def lowest_adapted(model) -> int | None:
    """Index of the lowest block holding a trainable parameter; None when something below every
    block trains (embeddings, virtual tokens) or no block does: then every block needs autograd."""
    layers = list(blocks(model))
    inside = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    trained = [p for p in model.parameters() if p.requires_grad]
    emb = {id(p) for p in model.get_input_embeddings().parameters()}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if any(id(p) in emb for p in trained) or any("prompt_encoder" in n for n in names):
        return None
    found = [inside[id(p)] for p in trained if id(p) in inside]
    return min(found) if found else None


def freeze_bottom(model) -> int:
    """Run the blocks below the lowest adapted one under torch.no_grad. Nothing below is trained, so
    no gradient is lost; without it, gradient checkpointing (which makes the embeddings' output require
    grad) recomputes those blocks in backward and back-propagates through them to the frozen input.
    Returns the number of blocks frozen this way."""
    low = lowest_adapted(model)
    if not low:
        return 0
    for layer in list(blocks(model))[:low]:
        layer.forward = torch.no_grad()(layer.forward)   # an instance attribute over the bound method
    return low


def compile_blocks(model, mode: str, backend: str = "inductor") -> int:
    """torch.compile each transformer block in place (nn.Module.compile); blocks of one shape share
    the compiled code. Returns how many were compiled."""
    layers = list(blocks(model))
    for layer in layers:
        layer.compile(mode=None if mode == "default" else mode, backend=backend)
    return len(layers)


class FrozenCast:
    """bf16 copies of the frozen nn.Linear weights, swapped in (`p.data`, no copy) for the training step
    only, so evaluation, checkpoints and export see the fp32 weights untouched.

    Under torch.autocast(bfloat16) F.linear casts an fp32 weight to bf16 on every call; the cast is
    cached only for leaves that require grad, so a frozen base weight is re-cast in every forward and
    every gradient-checkpointing recompute (a LoRA step of SmolLM2-135M writes ~0.25 GB of bf16 copies).
    Handing F.linear the same bf16 values it would have made gives bit-identical results; the copies
    live as long as the run (autocast's transient ones live through each backward anyway). Weights tied
    to the input embeddings (an embedding lookup is not autocast) are left alone."""

    def __init__(self, model):
        tied = {id(p) for p in model.get_input_embeddings().parameters()}
        self.pairs = [(p, p.data, p.data.to(torch.bfloat16)) for m in model.modules() if isinstance(m, torch.nn.Linear)
                      for p in m.parameters(recurse=False)
                      if not p.requires_grad and p.dtype == torch.float32 and id(p) not in tied and p.dim() == 2]

    @contextlib.contextmanager
    def swapped(self):
        for p, _, low in self.pairs:
            p.data = low
        try:
            yield
        finally:
            for p, full, _ in self.pairs:
                p.data = full


def step_scope(model, tc, dist_kind: str):
    """What wraps each training step's forwards and backwards: FrozenCast's swap where it applies
    (train.frozen_cast, bf16 precision, not FSDP, whose flat shards it cannot swap), else nothing."""
    if tc.frozen_cast and tc.precision == "bf16" and dist_kind != "fsdp":
        cast = FrozenCast(model)
        if cast.pairs:
            return cast.swapped
    return contextlib.nullcontext


def apply_levers(model, tc, say) -> None:
    """The model-side levers train.frozen_bottom and train.compile, in place (the loss and optimiser
    levers are chosen in setup: loss_function, build_optimizer)."""
    if tc.frozen_bottom:
        n = freeze_bottom(model)
        say(f"[tailorlm] train.frozen_bottom: {n} blocks below the lowest adapted one run without autograd")
    if tc.compile != "off":
        n = compile_blocks(model, tc.compile)
        say(f"[tailorlm] train.compile={tc.compile}: {n} blocks compiled (the first steps include compilation)")
