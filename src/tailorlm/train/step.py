"""One optimizer step: micro-batches, the task loss normalised by the whole global batch's target
tokens (under a preference objective, train.objective, by its pairs), the callbacks' loss terms
(retention's mitigations, continual's penalties), clipping, the update (skipped when non-finite),
the record."""
from __future__ import annotations

import math
import time

import torch

from ..device import autocast, memory_mb
from ..errors import NonFiniteError, OutOfMemory
from ..run import RunDir
from . import checkpoint
from .losses import extra_backward


def train_step(run, stop_requested: bool) -> tuple[dict, bool]:
    """Advance `run` by one step; returns the step's record and whether any rank asked to stop."""
    tc, dist = run.cfg.train, run.dist
    t0 = time.time()
    micro = [run.make_batch([run.data.train[i] for i in run.order.micro_batch(run.step * tc.grad_accum + a,
                                                                               dist.rank, dist.world)])
             for a in range(tc.grad_accum)]
    # normalise by the target tokens (preference pairs: the pairs) of the whole accumulated global batch
    # (all ranks), not a mean of micro-batch means
    n_tokens, n_loss = (int(n) for n in dist.sum(sum(b.n_targets for b in micro), sum(b.n_loss for b in micro)))
    with run.step_scope():   # train.frozen_cast: frozen weights' bf16 copies, for this step's passes only
        loss_sum = task_backward(run, micro, n_loss)
        extra, finite_terms = extra_backward(run)
    extra.update(run.loss_fn.record() if hasattr(run.loss_fn, "record") else {})   # a preference objective's figures
    if not finite_terms:
        loss_sum = float("nan")   # a non-finite penalty skips the step like a non-finite loss
    gnorm = dist.clip_grad_norm(run.params, tc.max_grad_norm)   # global: gradients are synced by now
    run.callbacks.on_before_optimizer_step(run)
    step_tokens = sum(int(b.input_ids.numel()) for b in micro)          # computed, padding included
    useful = sum(n for b in micro for _, _, n in b.spans)               # the examples' own tokens
    # one all-reduce: the global loss and tokens, and whether any rank got a signal (all stop together)
    loss_sum, step_tokens, useful, stops = dist.sum(loss_sum, step_tokens, useful, float(stop_requested))
    step_tokens, useful = int(step_tokens), int(useful)
    finite = math.isfinite(loss_sum) and math.isfinite(float(gnorm))
    if finite:  # a NaN/Inf loss or gradient skips the update, counted; the data moves on
        run.opt.step()
        run.bad_in_a_row = 0
    else:
        run.bad_in_a_row += 1
        run.skipped_steps += 1
    run.opt.zero_grad(set_to_none=True)
    lr = run.sched.get_last_lr()[0]
    run.sched.step()
    run.step += 1
    dt = time.time() - t0
    run.train_time += dt
    run.tokens_seen += useful
    loss = loss_sum / n_loss
    run.history.append({"step": run.step, "loss": loss})
    rec = {"step": run.step, "loss": loss, "lr": lr, "grad_norm": float(gnorm), "tokens": step_tokens,
           "useful_tokens": useful, "target_tokens": n_tokens, "tokens_per_s": step_tokens / dt,
           "useful_tokens_per_s": useful / dt, "epoch": run.order.epoch_of(run.step * tc.grad_accum * dist.world),
           "examples": dist.step_examples(run.order, (run.step - 1) * tc.grad_accum, tc.grad_accum,
                                          [i for b in micro for i in b.ids]),
           **memory_mb(run.device), **extra, **run.notes}
    run.notes.clear()   # (what callbacks noted for this step: RunView.note)
    if not finite:
        rec["skipped"] = "non-finite loss or gradient norm"
    return rec, stops > 0


def task_backward(run, micro: list, n_tokens: int) -> float:
    """Backward of every micro-batch's loss sum / the global target tokens (preference pairs: the global
    pairs); returns the loss sum."""
    loss_sum = 0.0
    for a, b in enumerate(micro):
        b = b.to(run.device)
        run.dist.sync_gradients(run.model, a == len(micro) - 1)   # ranks communicate on the last micro-batch
        try:
            with autocast(run.device, run.cfg.train.precision):
                s, _ = run.loss_fn(run.model, b)
            (s * run.dist.grad_scale / n_tokens).backward()
        except (torch.OutOfMemoryError, MemoryError) as e:
            raise OutOfMemory(out_of_memory_advice(run.cfg, b, e)) from None
        loss_sum += float(s.detach())
    return loss_sum


def check_finite(run, rec: dict) -> None:
    """Say so when a step was skipped; stop after train.max_bad_steps non-finite steps in a row."""
    if "skipped" not in rec:
        return
    run.say(f"[tailorlm] step {run.step}: non-finite loss/gradient, update skipped ({run.bad_in_a_row} in a row)",
            always=True)
    if run.bad_in_a_row >= run.cfg.train.max_bad_steps:
        last, _ = checkpoint.latest(RunDir.at(run.run_dir).checkpoints)
        raise NonFiniteError(
            f"{run.bad_in_a_row} steps in a row had a non-finite loss or gradient (last at step {run.step}); "
            f"stopped. The last good checkpoint is {last or 'none'}. Fix: lower train.lr, keep "
            "train.max_grad_norm set, or check the data; then tailorlm train --resume " + str(run.run_dir))


def out_of_memory_advice(cfg, batch, err: BaseException) -> str:
    """What would fit: the same global batch in smaller micro-batches, and activation checkpointing."""
    tc = cfg.train
    tips = []
    if tc.batch_size > 1:
        b = max(1, tc.batch_size // 2)
        tips.append(f"train.batch_size={b} train.grad_accum={tc.grad_accum * tc.batch_size // b} "
                    "(same global batch, half the activations)")
    if not tc.gradient_checkpointing:
        tips.append("train.gradient_checkpointing=true (recompute activations in backward)")
    if cfg.data.max_length > 256:
        tips.append(f"data.max_length={cfg.data.max_length // 2} (shorter rows)")
    from ..methods import METHODS

    if METHODS[cfg.method.name].trains_base_weights:   # the method says whether its base weights train
        tips.append("method=lora (no optimizer state for the base weights)")
    return (f"out of memory on a micro-batch of {tuple(batch.input_ids.shape)} tokens ({err}). Try: "
            + "; or ".join(tips))
