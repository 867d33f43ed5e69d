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

# What a family does to head(h) before the loss, as data. OPS: a setting's neutral value (with which
# the model's own forward leaves the skipped head's output alone) and the op the chunks apply instead;
# FAMILY_POST: which setting each model type applies (transformers 4.56-5.x: Gemma-2/3, VaultGemma,
# nanochat soft-cap with config.final_logit_softcapping; Granite divides by config.logits_scaling;
# Cohere multiplies by CohereForCausalLM.logit_scale, copied from the config at init). A non-neutral
# setting of another model type is not known to be applied (or how), so it gets the plain loss.
OPS = {"logit_scale": (1.0, lambda x, s: x * s),                                 # logits * scale
       "logits_scaling": (1.0, lambda x, s: x / s),                              # logits / scaling
       "final_logit_softcapping": (None, lambda x, c: torch.tanh(x / c) * c)}    # c tanh(logits / c)
FAMILY_POST = {"gemma2": "final_logit_softcapping", "gemma3": "final_logit_softcapping",
               "gemma3_text": "final_logit_softcapping", "gemma3n": "final_logit_softcapping",
               "gemma3n_text": "final_logit_softcapping", "vaultgemma": "final_logit_softcapping",
               "nanochat": "final_logit_softcapping", "cohere": "logit_scale", "cohere2": "logit_scale",
               "granite": "logits_scaling", "granitemoe": "logits_scaling", "granitemoeshared": "logits_scaling",
               "granitemoehybrid": "logits_scaling"}
UNKNOWN_POST = ("output_multiplier_scale",)   # never reproduced: always the plain loss


def _configs(model) -> list:
    cfg = model.config
    return list({id(c): c for c in (cfg, cfg.get_text_config())}.values())


def _holders(model, key: str) -> list:
    """The configs and modules that hold `key` as a number (a module's copy made at init)."""
    return _configs(model) + [m for m in model.modules() if isinstance(getattr(m, key, None), (int, float))]


def _set(model, key: str) -> tuple[str, float] | None:
    """(key, value) when the model holds a non-neutral `key`."""
    neutral = OPS[key][0]
    v = next((getattr(o, key) for o in _holders(model, key) if getattr(o, key, None) not in (None, neutral)), None)
    return None if v is None else (key, float(v))


def logit_post(model) -> list[tuple[str, float]]:
    """(setting, value) of the post-head op this model's family applies (none, or one)."""
    key = FAMILY_POST.get(model.config.get_text_config().model_type) or FAMILY_POST.get(model.config.model_type)
    found = _set(model, key) if key else None
    return [found] if found else []


def logit_scale(model) -> str | None:
    """A setting that changes the logits in a way the chunked loss does not reproduce, or None: an
    unknown one, or a known one on a model type not known to apply it."""
    cfg, own = model.config.get_text_config(), {k for k, _ in logit_post(model)}
    for key in UNKNOWN_POST:
        if getattr(cfg, key, None) not in (None, 1, 1.0):
            return f"{key}={getattr(cfg, key)}"
    for key in OPS:
        if key not in own and (found := _set(model, key)):
            return f"{key}={found[1]:g}"
    return None


@contextlib.contextmanager
def head_skipped(model):
    """Inside, the model's LM head is the identity and its family's post-head op is neutral, so
    `.logits` are the final hidden states (the head's input) at the kept columns; yields the head and
    [(op, value)] for the chunks to apply. Everything is put back after, even on an error."""
    head, post, saved = model.get_output_embeddings(), logit_post(model), []
    for key, value in post:
        for obj in _holders(model, key):
            if getattr(obj, key, None) not in (None, OPS[key][0]):
                saved.append((obj, key, getattr(obj, key)))
                setattr(obj, key, OPS[key][0])
    head.forward = lambda x: x   # an instance attribute shadows the class's forward
    try:
        yield head, [(OPS[key][1], value) for key, value in post]
    finally:
        del head.forward
        for obj, key, value in saved:
            setattr(obj, key, value)


def _chunk_ce(h: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, head, post) -> torch.Tensor:
    """Sum of CE over one chunk: h (n, hidden) -> logits (n, vocab), the same ops as the model's head
    and what its family does after it (post: [(op, value)], e.g. Gemma-2's soft cap)."""
    logits = head(h)   # under the caller's autocast, as the model's own head call would be
    for op, value in post:
        logits = op(logits, value)
    per = F.cross_entropy(logits.float(), t, reduction="none")   # (n,)
    return (per * w).sum() if w is not None else per.sum()


def chunked_lm_loss_sum(model, batch: Batch, chunk: int) -> tuple[torch.Tensor, int]:
    """forward.lm_loss_sum's value, computed as sum_c CE(post(head(h_c)), t_c) over chunks c of `chunk`
    label positions. The plain path scores every kept column of every row, (rows, K, vocab), where a
    packed batch's rows share few label columns; this scores the N = n_targets positions only, and
    torch.utils.checkpoint recomputes each chunk's (chunk, vocab) logits in backward instead of keeping
    them, so the logits held at once are (chunk, vocab)."""
    if (scale := logit_scale(model)) is not None:
        raise ConfigError(f"train.loss_chunk: this model scales its logits ({scale}), which the chunked loss does "
                          "not reproduce. Fix: train.loss_chunk=null")
    with head_skipped(model) as (head, post):
        hidden = lm_logits(model, batch, batch.keep)          # (rows, K, hidden): the head's input
    targets = batch.targets[:, batch.keep]                    # (rows, K)
    at = targets != IGNORE
    h, t = hidden[at], targets[at]                            # (N, hidden), (N,)
    w = batch.weights[:, batch.keep][at] if batch.weights is not None else None
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, t.numel(), chunk):
        part = slice(s, s + chunk)
        total = total + checkpoint(_chunk_ce, h[part], t[part], None if w is None else w[part], head, post,
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
    """The model-side levers train.frozen_bottom and train.compile, in place (the loss and optimizer
    levers are chosen in setup: loss_function, build_optimizer)."""
    if tc.frozen_bottom:
        n = freeze_bottom(model)
        say(f"[tailorlm] train.frozen_bottom: {n} blocks below the lowest adapted one run without autograd")
    if tc.compile != "off":
        n = compile_blocks(model, tc.compile)
        say(f"[tailorlm] train.compile={tc.compile}: {n} blocks compiled (the first steps include compilation)")
