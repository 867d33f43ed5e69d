"""Peak memory of a training run, as its parts, from the config and the model's config.json alone.

What is predicted. On CUDA: torch.cuda.max_memory_allocated over the training steps. On a CPU: the
process's peak resident memory (VmHWM) over the training steps minus its resident memory just before
the model loads (libraries imported, data tokenised), i.e. what training adds to the process.

The batch is planned for its worst case: every micro-batch holds `train.batch_size` rows of
`data.max_length` tokens (plus a method's virtual tokens), every position a target, except for
classification data, whose targets are its label positions (plan/targets.py: L per example, the
longest label and the end of its turn). Data with shorter rows, or with few target positions (a
short answer after a long prompt), needs less.

What the method puts on the model (the parameters it trains and their dtype, its virtual tokens,
its largest tensor, the lowest layer it trains) is its Footprint: the method says it
(methods/footprint.py); nothing here asks which method it is.

The parts (bytes; P = parameters, p = bytes per weight of model.dtype, R rows, T tokens per row):

    weights      frozen P x p + trainable P x their dtype's bytes
    gradients    trainable P x p (kept across micro-batches with grad_accum > 1)
    optimizer    AdamW's exp_avg and exp_avg_sq: 2 x trainable P x p, plus its temporaries while it
                 steps (two the size of the largest tensor in torch's per-parameter loop, the CPU default)
    activations  layers in backward x (c + R (a T + q T^2)), c, a, q measured on a probe
                 (plan/shapes.py); with checkpointing, each layer keeps only its input (R T x hidden)
                 and one layer's activations are rebuilt at a time (Korthikanti et al. 2022,
                 arXiv:2205.05198, section 5: "full activation recomputation")
    logits       at the kept positions: what autograd saves per position and vocabulary word
                 (measured: the fp32 log-softmax), and in backward the fp32 gradients of the loss by the
                 log-probabilities and by the logits (2 x 4 bytes); with train.loss_chunk, one chunk's
                 logits and gradients at a time (recomputed in backward). Kept: all T columns of a
                 row; for classification, N = R x L target positions per micro-batch, in at most
                 K = min(T, N) columns of each row (the head runs on the columns with any target, and
                 rows of different prompt lengths put their labels in different columns); the chunked
                 loss scores the N positions alone
    bf16 copies  train.frozen_cast under bf16: a bf16 copy of every frozen linear weight, held all run
                 (2 bytes x the frozen weights outside the embeddings); those of the layers backward
                 runs through are what autocast would have saved anyway (in c), so the start of
                 backward adds only the other layers' copies
    runtime      what a CPU training process adds whatever the model (the tokenizer, library code paged
                 in, oneDNN's buffers): a constant measured on a 2-layer, 64-wide Llama (RUNTIME below)
    retention    the probe's base log-probabilities (positions x vocab x 4), L2-SP's anchor (trainable
                 P x 4), EWC's anchor and Fisher (2 x trainable P x 4), distillation's frozen copy of a
                 model whose base weights train (P x p)
    reference    train.objective dpo with full fine-tuning: the frozen copy of the starting model (P x p);
                 a preference objective also doubles the rows (each pair: chosen and rejected) and
                 scores the answers' logits unchunked

The peak is the largest of three moments: the start of backward (weights, optimizer state, all
activations, logits and their gradients, the gradients already held), the end of backward (weights,
optimizer state, gradients) and the optimizer step (those plus AdamW's temporaries).

What is not modelled: the allocator's own slack. glibc keeps freed blocks in its heap once its mmap
threshold has risen (see benchmarks/plan_memory.py), so peak RSS under the default allocator can
exceed the memory in use, by up to a third measured on SmolLM2, and not the same from run to run;
models the probe cannot build (remote code), and several processes (DDP, FSDP) sharing a machine.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..methods import METHODS
from .targets import label_positions

BYTES = {"fp32": 4, "bf16": 2}
# What a CPU training process adds whatever the model (fp32, bf16 autocast): the tokenizer, library
# code paged in by the first forward and backward, oneDNN's buffers. Measured as the peak of 2-step
# runs of a 2-layer, 64-wide Llama (benchmarks/plan_memory.py; every modelled part under 2 MiB there).
RUNTIME = {False: 43 * 2 ** 20, True: 54 * 2 ** 20}


@dataclass
class Shape:
    """What the memory depends on, read from the config and config.json."""
    rows: int                # per micro-batch (this process's share)
    tokens: int              # per row, virtual tokens included
    vocab: int
    hidden: int
    layers: int              # decoder layers
    in_backward: int         # decoder layers backward runs through
    trainable: int
    total: int               # parameters with the method applied (tied once)
    largest: int             # elements of the largest trainable tensor
    head_trainable: bool     # the (tied) output embedding trains: its gradient comes first in backward
    device: str = "cpu"
    trains_base: bool = False        # the base weights themselves train (the method's trains_base_weights)
    trainable_dtype: str = "fp32"    # the trained weights' dtype (the model's own where the base trains)
    virtual_tokens: int = 0          # of `tokens`, those the method puts in front of each row
    targets: int | None = None       # target positions per micro-batch (classification: rows x L); None: all


def shape_of(cfg, config, world: int = 1) -> Shape:
    """The run's Shape: the config's batch and rows, config.json's sizes, and the method's Footprint."""
    method = METHODS[cfg.method.name]
    fp = method.footprint(cfg.method, config)
    base = method.trains_base_weights
    rows, per_example = max(1, cfg.train.batch_size // world), label_positions(cfg)   # (L: None unless classification)
    rows *= 2 if _preference(cfg) else 1   # a preference pair is two rows: its chosen and its rejected sequence
    return Shape(rows=rows, tokens=cfg.data.max_length + fp.virtual_tokens,
                 targets=None if per_example is None else rows * min(per_example, cfg.data.max_length),
                 vocab=config.vocab_size, hidden=config.hidden_size, layers=config.num_hidden_layers,
                 in_backward=config.num_hidden_layers - fp.lowest_layer, trainable=fp.trainable, total=fp.total,
                 largest=fp.largest, head_trainable=base, trains_base=base,
                 trainable_dtype=fp.dtype or cfg.model.dtype, virtual_tokens=fp.virtual_tokens)


def parts(cfg, config, probe: dict, s: Shape, device: str = "cpu", precision: str = "fp32") -> dict[str, int]:
    """Every part in bytes (see the module's docstring), before the peak is taken."""
    p = BYTES[cfg.model.dtype]
    own = BYTES[s.trainable_dtype]     # adapters are created in fp32 (PEFT's autocast_adapter_dtype)
    R, T, V = s.rows, s.tokens, s.vocab
    c, a, q = probe["layer"]
    layer = c + R * (a * T + q * T * T)
    if cfg.train.gradient_checkpointing:
        acts = s.in_backward * R * T * s.hidden * p + layer
    else:
        acts = s.in_backward * layer
    cr, ar, qr = probe["rest"]
    cw, aw, qw = probe["word"]
    rest = cr + R * (ar * T + qr * T * T)
    N = R * T if s.targets is None else min(s.targets, R * T)   # target positions per micro-batch
    K = T if s.targets is None else min(T, N)                   # kept columns per row: (R, K, V) logits
    saved_logits = V * (cw + R * (aw * K + qw * K * K))
    grad_logits = R * K * V * 8
    chunk = None if _preference(cfg) else getattr(cfg.train, "loss_chunk", None)   # (a preference loss: unchunked)
    if chunk:   # train.loss_chunk: one chunk's logits at a time, recomputed in backward (4 more for its log-softmax)
        saved_logits, grad_logits = V * cw, min(N, chunk) * V * 12
    return {
        "weights": (s.total - s.trainable) * p + s.trainable * own,
        "gradients": s.trainable * own,
        "optimizer": 2 * s.trainable * own,
        "optimizer_temp": _adamw_temporary(cfg, s) * own,
        "activations": max(0, int(acts + rest)),
        "logits": max(0, int(saved_logits + grad_logits)),
        "head_gradient": V * s.hidden * own if s.head_trainable else 0,
        "retention": retention_bytes(cfg, s, p),
        "reference": s.total * p if getattr(cfg.train, "objective", "sft") == "dpo" and s.trains_base else 0,
        "runtime": RUNTIME[precision == "bf16"] if device == "cpu" else 0,
        **frozen_copies(cfg, s, p, precision),
    }


def frozen_copies(cfg, s: Shape, p: int, precision: str) -> dict[str, int]:
    """train.frozen_cast's bf16 copies: all of them, and those of the layers backward does not reach."""
    if not (getattr(cfg.train, "frozen_cast", False) and precision == "bf16" and p == 4 and not s.trains_base):
        return {"bf16_copies": 0, "bf16_copies_beyond": 0}
    every = max(0, s.total - s.trainable - s.vocab * s.hidden) * 2
    return {"bf16_copies": every, "bf16_copies_beyond": every * (s.layers - s.in_backward) // max(s.layers, 1)}


def _preference(cfg) -> bool:
    """train.objective dpo / simpo: pairs of padded rows, the answers' logits unchunked (objectives/loss.py)."""
    return getattr(cfg.train, "objective", "sft") != "sft"


def _adamw_temporary(cfg, s: Shape) -> int:
    """Elements AdamW allocates while stepping (train.optimizer_impl). torch's per-parameter loop
    computes denom = sqrt(v) / c one tensor at a time: sqrt(v) and the quotient are alive together,
    2 x the largest tensor; `foreach` takes sqrt(v) of every tensor at once and divides in place,
    1 x all of them; `fused` (CUDA's default) allocates none to speak of."""
    impl = getattr(cfg.train, "optimizer_impl", "default")
    if impl == "fused" or (impl == "default" and s.device == "cuda"):
        return 0
    return s.trainable if impl == "foreach" else 2 * s.largest


def retention_bytes(cfg, s: Shape, p: int) -> int:
    r = cfg.retention
    if not r.reference or cfg.model.task != "causal_lm":
        return 0
    positions = (r.samples // 2) * ((r.sample_tokens + 32) // 8)   # every 8th position of ~32-token prompts + samples
    extra = positions * s.vocab * 4
    extra += s.trainable * 4 * (bool(r.l2sp) or bool(r.ewc)) + s.trainable * 4 * bool(r.ewc)
    if r.distill and s.trains_base:
        extra += s.total * p
    return extra


def peak(cfg, pt: dict[str, int]) -> tuple[int, str]:
    """(peak bytes, the moment it happens) from the parts."""
    held_grads = pt["gradients"] if cfg.train.grad_accum > 1 else pt["head_gradient"]
    moments = {
        "start of backward": pt["weights"] + pt["optimizer"] + pt["activations"] + pt["logits"] + held_grads
        + pt["bf16_copies_beyond"],
        "end of backward": pt["weights"] + pt["optimizer"] + pt["gradients"] + pt["bf16_copies"],
        "optimizer step": pt["weights"] + pt["optimizer"] + pt["gradients"] + pt["optimizer_temp"] + pt["bf16_copies"],
    }
    when = max(moments, key=moments.get)
    return moments[when] + pt["retention"] + pt.get("reference", 0) + pt["runtime"], when
