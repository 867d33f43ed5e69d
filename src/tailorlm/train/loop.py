"""The training loop: setup in helpers, the loop itself inline and top to bottom."""
from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

from ..config import Config, to_yaml
from ..retention.guard import Guard
from ..retention.session import Retention
from ..data.batching import Order
from ..eval.metrics import deltas, format_scores, val_loss
from ..eval.generate import generation_eval
from ..eval.tasks import ACCURACY
from ..methods import METHODS, count, trainable
from . import checkpoint, distributed
from .device import autocast, pick_device, resolve_precision
from .log import MetricsLog, progress
from .loss import LOSSES, batcher, lm_loss_sum
from .optim import build_optimizer, build_scheduler
from .preflight import audit_data
from .signals import GracefulStop, Interrupted
from .setup import build, load_base, seed_everything


def evaluate(model, data, cfg: Config, device: str) -> dict:
    """Validation loss/perplexity and, for classification, held-out accuracy. One place for both."""
    e, tok = cfg.eval, data.formatter.tok
    out = {f"val_{k}": v for k, v in val_loss(
        model, data.val[: e.max_examples], pad_id=tok.pad_token_id, device=device, precision=cfg.train.precision,
        batch_size=e.batch_size, packing=cfg.data.packing, row_tokens=cfg.data.max_length,
        task=cfg.model.task).items()}
    if data.fmt == "classification":
        rows = (data.test_rows or data.val_rows)[: e.max_examples]
        acc = ACCURACY[cfg.model.task](model, data.formatter, rows, device=device, precision=cfg.train.precision,
                                       batch_size=e.batch_size)
        out.update({"accuracy": acc["accuracy"], "macro_f1": acc["macro_f1"], "majority": acc["majority"],
                    "predicted": acc["predicted"]})
    if data.fmt == "instruction" and e.generate:
        out.update(generation_eval(model, data, (data.test_rows or data.val_rows)[: e.generate], e.max_new_tokens,
                                   device))
    return out


def fewshot_eval(model, data, cfg: Config, device: str) -> dict:
    """The base model prompted with k training examples in context: what tuning must beat."""
    import random

    k = cfg.eval.fewshot
    shots = random.Random(cfg.train.seed).sample(data.train_rows, min(k, len(data.train_rows)))
    rows = (data.test_rows or data.val_rows)[: cfg.eval.max_examples]
    acc = ACCURACY[cfg.model.task](model, data.formatter, rows, device=device, precision=cfg.train.precision,
                                   batch_size=cfg.eval.batch_size, shots=shots)
    return {f"fewshot{k}_accuracy": acc["accuracy"], f"fewshot{k}_macro_f1": acc["macro_f1"]}


def prepare_run_dir(cfg: Config, resume: bool, main: bool = True) -> Path:
    run = Path(cfg.output.dir)
    if not main:   # rank 0 prepares it; the others wait for it (barrier) before touching it
        return run
    if run.exists() and any(run.iterdir()) and not resume:
        if not cfg.output.overwrite:
            raise FileExistsError(f"{run} already holds a run. Fix: --resume to continue it, a new output.dir, "
                                  "or output.overwrite=true to replace it")
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(to_yaml(cfg))
    return run


def train(cfg: Config, resume: bool = False, quiet: bool = False) -> dict:
    t_start = time.time()
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = pick_device(tc.device)
    dist = distributed.init(tc.parallel, device)   # under torchrun: this rank; alone: world 1, all no-ops
    summary = _train(cfg, resume, quiet, dist, device, t_start)
    dist.close()   # (after a failure the process exits; torchrun stops the other ranks)
    return summary


def _train(cfg: Config, resume: bool, quiet: bool, dist, device: str, t_start: float) -> dict:
    tc = cfg.train
    rank_batch = dist.per_rank(tc.batch_size)   # train.batch_size is global; this rank's share (fails fast)
    run = prepare_run_dir(cfg, resume, dist.main)
    dist.barrier()
    log = MetricsLog(run / "metrics.jsonl", quiet, enabled=dist.main)   # only rank 0 logs and writes files
    if tc.precision == "auto":  # resolved once and saved, so eval and resume use what training used
        tc.precision = resolve_precision(tc.precision, device)
        if dist.main:
            (run / "config.yaml").write_text(to_yaml(cfg))
    seed_everything(tc.seed)
    if cfg.data.audit and not resume and dist.main:
        audit_data(cfg, run, log.say)

    # ---- setup: data first (bad data fails before the model loads), model, method, optimizer
    model, tok, data = build(cfg)
    if dist.main:
        (run / "config.yaml").write_text(to_yaml(cfg))  # with what build() pinned (a classifier's labels)
    log.say(f"[tailorlm] data: {data.fmt}, {len(data.train)} train / {len(data.val)} val examples; "
            f"truncated {data.report['train']['truncated']}, dropped {data.report['train']['dropped_too_long']} "
            f"too long + {data.report['train']['dropped_no_target']} without targets, "
            f"skipped {data.report['skipped_lines']} bad lines")
    method = METHODS[cfg.method.name]
    base_scores = None
    if cfg.eval.before and not resume:   # (every rank computes the scores, in step; rank 0 writes them)
        model.to(device)
        base_scores = evaluate(model, data, cfg, device)
        if cfg.eval.fewshot and data.fmt == "classification" and cfg.model.task == "causal_lm":
            base_scores.update(fewshot_eval(model, data, cfg, device))
        if dist.main:
            (run / "base_eval.json").write_text(json.dumps(base_scores, indent=1))
        log.say(f"[tailorlm] base model: {format_scores(base_scores)}")
    retention = None
    if cfg.retention.reference and cfg.model.task == "causal_lm":
        model.to(device)
        retention = Retention(cfg.retention, model, tok, device=device, precision=tc.precision, seed=tc.seed,
                              batch_size=tc.batch_size)
        log.say(f"[tailorlm] retention probe on {len(retention.probe.ref)} reference texts: base NLL "
                f"{retention.base['ref_nll']:.4f}")
        if base_scores is not None:
            base_scores.update(retention.base)
            if dist.main:
                (run / "base_eval.json").write_text(json.dumps(base_scores, indent=1))
    model = method.apply(model, cfg.method)
    model.to(device)
    if tc.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = dist.wrap(model, tc.precision)   # ddp / fsdp in place; the same model object alone
    params = trainable(model)
    n_train, n_total = count(model)
    make_batch = batcher(model, task=cfg.model.task, pad_id=tok.pad_token_id, packing=cfg.data.packing,
                         row_tokens=cfg.data.max_length)
    loss_fn = LOSSES[cfg.model.task]
    log.say(f"[tailorlm] method {cfg.method.name}: {n_train:,} of {n_total:,} parameters trainable "
            f"({100 * n_train / n_total:.3f}%)")
    if retention is not None:
        retention.attach(model, params)
    guard = Guard(cfg.eval.metric, cfg.eval.patience, cfg.eval.min_delta, cfg.retention.max_forgetting,
                  cfg.retention.patience)
    opt = build_optimizer(params, tc.lr, tc.weight_decay, device)
    sched = build_scheduler(opt, warmup=tc.warmup, total=tc.steps, schedule=tc.schedule, min_ratio=tc.min_lr_ratio)
    order = Order(len(data.train), rank_batch, tc.seed)
    ckpt_root = run / "checkpoints"
    step, history, tokens_seen, train_time, scores, skipped_steps = 0, [], 0, 0.0, None, 0
    if resume:
        last, notes = dist.on_main(checkpoint.latest, ckpt_root)
        for n in notes:
            log.say(f"[tailorlm] {n}", always=True)
        if last is not None:
            st = checkpoint.load(last, model=model, optimizer=opt, dist=dist)
            sched.load_state_dict(st["scheduler"])
            checkpoint.set_rng_state(st["rng"])
            step, history, tokens_seen, train_time = st["step"], st["history"], st["tokens_seen"], st["train_time"]
            base_scores, skipped_steps = st.get("base_scores"), st.get("skipped_steps", 0)
            guard.load(st.get("guard", {}))
            log.truncate_after(step)  # the killed run may have logged steps past its last checkpoint
            log.say(f"[tailorlm] resumed from {last.name} (step {step})", always=True)
    if step == 0 and cfg.retention.max_forgetting is not None and cfg.eval.keep_best:
        # the start is within any budget: if no evaluation qualifies, final/ is the untouched start
        checkpoint.save(ckpt_root / "best", params=params, optimizer=None, state={"step": 0}, model=model,
                        dist=dist)
        guard.best_step = 0
    if base_scores is None and (run / "base_eval.json").is_file():
        base_scores = json.loads((run / "base_eval.json").read_text())

    # ---- the loop
    model.train()
    bar = progress(tc.steps, step, quiet, enabled=dist.main)
    bad_in_a_row, last_saved, stopped = 0, step, None
    with GracefulStop() as stop:
        while step < tc.steps:
            dist.fault(step + 1)
            t0 = time.time()
            micro = [make_batch([data.train[i] for i in order.micro_batch(step * tc.grad_accum + a, dist.rank,
                                                                           dist.world)])
                     for a in range(tc.grad_accum)]
            replay = retention.replay_batch(step) if retention is not None else None
            mixed = replay if (replay is not None and retention.mixes_replay) else None
            # normalise by the target tokens of the whole accumulated global batch (all ranks), not a
            # mean of micro-batch means
            n_tokens = int(dist.sum(sum(b.n_targets for b in micro))[0])
            loss_sum, extra = 0.0, {}
            for a, b in enumerate(micro):
                b = b.to(device)
                dist.sync_gradients(model, a == len(micro) - 1)   # ranks communicate on the last micro-batch
                try:
                    with autocast(device, tc.precision):
                        s, _ = loss_fn(model, b)
                    (s * dist.grad_scale / n_tokens).backward()
                except (torch.OutOfMemoryError, MemoryError) as e:
                    raise MemoryError(out_of_memory_advice(cfg, b, e)) from None
                loss_sum += float(s.detach())
            if mixed is not None:  # replay: the general text's mean token loss, weighted by retention.replay
                with autocast(device, tc.precision):   # (its own mean: 128-token blocks would otherwise
                    s, _ = lm_loss_sum(model, mixed)  # swamp a task with a few target tokens per example)
                (cfg.retention.replay * s / max(mixed.n_targets, 1)).backward()
                extra["replay_loss"] = float(s.detach()) / max(mixed.n_targets, 1)
            if retention is not None:
                with autocast(device, tc.precision):
                    pen = retention.penalty(model, params, replay)
                if pen is not None:
                    pen.backward()
                    extra["penalty"] = float(pen.detach())
                    if not math.isfinite(extra["penalty"]):
                        loss_sum = float("nan")  # a non-finite penalty skips the step like a non-finite loss
            gnorm = dist.clip_grad_norm(params, tc.max_grad_norm)   # global: gradients are synced by now
            step_tokens = sum(int(b.input_ids.numel()) for b in micro)          # computed, padding included
            useful = sum(n for b in micro for _, _, n in b.spans)               # the examples' own tokens
            # one all-reduce: the global loss and tokens, and whether any rank got a signal (all stop together)
            loss_sum, step_tokens, useful, stops = dist.sum(loss_sum, step_tokens, useful, float(stop.requested))
            step_tokens, useful, stopping = int(step_tokens), int(useful), stops > 0
            finite = math.isfinite(loss_sum) and math.isfinite(float(gnorm))
            if finite:  # a NaN/Inf loss or gradient skips the update, counted; the data moves on
                opt.step()
                bad_in_a_row = 0
            else:
                bad_in_a_row += 1
                skipped_steps += 1
            opt.zero_grad(set_to_none=True)
            lr = sched.get_last_lr()[0]
            sched.step()
            step += 1
            dt = time.time() - t0
            train_time += dt
            tokens_seen += useful
            loss = loss_sum / n_tokens
            rec = {"step": step, "loss": loss, "lr": lr, "grad_norm": float(gnorm), "tokens": step_tokens,
                   "useful_tokens": useful, "target_tokens": n_tokens, "tokens_per_s": step_tokens / dt,
                   "useful_tokens_per_s": useful / dt,
                   "epoch": order.epoch_of(step * tc.grad_accum * dist.world),
                   "examples": dist.step_examples(order, (step - 1) * tc.grad_accum, tc.grad_accum,
                                                  [i for b in micro for i in b.ids]),
                   **extra}
            if not finite:
                rec["skipped"] = "non-finite loss or gradient norm"
                bar.write(f"[tailorlm] step {step}: non-finite loss/gradient, update skipped "
                          f"({bad_in_a_row} in a row)", file=sys.stderr)
            history.append({"step": step, "loss": loss})
            if step % tc.log_every == 0 or step == 1 or step == tc.steps or not finite:
                log.write(rec)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{useful / dt:.0f}")
            bar.update(1)
            if bad_in_a_row >= tc.max_bad_steps:
                last, _ = checkpoint.latest(ckpt_root)
                raise FloatingPointError(
                    f"{bad_in_a_row} steps in a row had a non-finite loss or gradient (last at step {step}); "
                    f"stopped. The last good checkpoint is {last or 'none'}. Fix: lower train.lr, keep "
                    "train.max_grad_norm set, or check the data; then tailorlm train --resume " + str(run))

            if step % tc.eval_every == 0 or step == tc.steps:
                scores = evaluate(model, data, cfg, device)   # every rank runs the same forwards (FSDP needs it)
                if retention is not None:
                    scores.update(retention.measure(model))
                scores = dist.broadcast(scores)   # ...and decides on rank 0's numbers
                recent = [h["loss"] for h in history[-tc.eval_every:] if math.isfinite(h["loss"])]
                verdict = guard.update(step, scores, sum(recent) / len(recent) if recent else None)
                log.write({"step": step, "eval": scores, "delta": deltas(scores, base_scores), "best": verdict.improved,
                           "warnings": verdict.warnings})
                scores["step"] = step
                bar.write(f"[tailorlm] step {step}: {format_scores(scores, base_scores)}{' (best)' if verdict.improved else ''}",
                          file=sys.stderr)
                for w in verdict.warnings:
                    bar.write(f"[tailorlm] warning: {w}", file=sys.stderr)
                if verdict.improved and cfg.eval.keep_best:
                    try:
                        checkpoint.save(ckpt_root / "best", params=params, optimizer=None, state={"step": step},
                                        model=model, dist=dist)
                    except OSError as e:  # the best so far could not be kept: say so, keep the run going
                        guard.best_step = None
                        log.write({"step": step, "checkpoint_error": f"best: {e}"})
                        bar.write(f"[tailorlm] could not save the best checkpoint ({e}); final/ will be the "
                                  "last step", file=sys.stderr)
                if verdict.stop:
                    bar.write(f"[tailorlm] {verdict.stop}; stopping at step {step}", file=sys.stderr)
                    log.write({"step": step, "stopped": verdict.stop})
                    stopped = verdict.stop
            if step % tc.save_every == 0 or step == tc.steps or (stopping and last_saved != step):
                state = {"step": step, "scheduler": sched.state_dict(), "rng": checkpoint.rng_state(),
                         "history": history, "tokens_seen": tokens_seen, "train_time": train_time,
                         "base_scores": base_scores, "skipped_steps": skipped_steps, "guard": guard.state()}
                try:
                    checkpoint.save(ckpt_root / f"step-{step:06d}", params=params, optimizer=opt, state=state,
                                    model=model, dist=dist)
                    if dist.main:
                        checkpoint.rotate(ckpt_root, tc.keep_last)
                    last_saved = step
                except OSError as e:  # disk full, permissions: keep training, keep the last good one
                    last, _ = checkpoint.latest(ckpt_root)
                    msg = f"checkpoint at step {step} failed ({e}); the previous one ({last or 'none'}) is intact"
                    log.write({"step": step, "checkpoint_error": str(e)})
                    bar.write(f"[tailorlm] {msg}", file=sys.stderr)
            if stopping and step < tc.steps:
                bar.close()
                signum = stop.signum or signal.SIGTERM   # (another rank's signal)
                name = signal.Signals(signum).name
                log.write({"step": step, "interrupted": name})
                raise Interrupted(signum, f"stopped by {name} after step {step}; checkpoint saved. "
                                  f"Resume with: tailorlm train --resume {run}")
            if stopped:
                break
    bar.close()
    if cfg.eval.keep_best and guard.best_step is not None and guard.best_step != step:
        checkpoint.load(ckpt_root / "best", model=model, dist=dist)  # final/ is the best evaluation's weights
        what = ("the start (step 0): no evaluation was within the forgetting budget" if guard.best_step == 0 else
                f"the best evaluation (step {guard.best_step}, {cfg.eval.metric} {guard.best_value:.4f})")
        log.say(f"[tailorlm] final/ holds {what}, not the last step ({step})", always=True)
        scores = None

    # ---- the result: the method's artefact, and a summary a person can read
    final = run / "final"
    if final.exists() and dist.main:
        shutil.rmtree(final)
    # parallel: gathered to rank 0 into a plain model, so final/ is what one process would have written
    dist.save_final(method, model, tok, final,
                    rebuild=lambda: method.apply(load_base(cfg, tokenizer=tok)[0], cfg.method))
    if scores is not None and scores.get("step") == step:
        final_scores = scores
    else:
        final_scores = evaluate(model, data, cfg, device)
        if retention is not None:
            final_scores.update(retention.measure(model))
    final_scores.pop("step", None)
    summary = {"method": cfg.method.name, "steps": step, "trainable_params": n_train, "total_params": n_total,
               "train_tokens": tokens_seen, "train_time_s": round(train_time, 2),
               "tokens_per_s": round(tokens_seen / max(train_time, 1e-9), 1),
               "wall_time_s": round(time.time() - t_start, 2), "first_loss": history[0]["loss"] if history else None,
               "last_loss": history[-1]["loss"] if history else None, "base": base_scores, "final": final_scores,
               "delta": deltas(final_scores, base_scores),
               "skipped_steps": skipped_steps, "best_step": guard.best_step, "stopped_early": stopped,
               "data": data.report, "device": device, "processes": dist.world, "parallel": dist.mode}
    if dist.main:
        (run / "summary.json").write_text(json.dumps(summary, indent=1))
    log.say(f"[tailorlm] done: {format_scores(final_scores, base_scores)}; {summary['tokens_per_s']} tokens/s "
            f"(the examples' own tokens, padding not counted); run in {run}")
    return summary


def out_of_memory_advice(cfg: Config, batch, err: BaseException) -> str:
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
    if cfg.method.name == "full":
        tips.append("method=lora (no optimiser state for the base weights)")
    return (f"out of memory on a micro-batch of {tuple(batch.input_ids.shape)} tokens ({err}). Try: "
            + "; or ".join(tips))
