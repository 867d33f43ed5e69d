"""setup_run: from a config (and optionally a model to start from) to a RunState ready to step.

Data first (bad data fails before the model loads), then the model the run starts from, the base
model's scores at step 0 (every evaluator, the retention probe included), the method, the
optimiser, and, with `resume`, the last verified checkpoint (train/rundir.py decides what there is
to resume, and what a fresh start may replace, before anything is read or deleted).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..atomic import write_text
from ..build import build, resolve_paths, run_dir_of, with_method
from ..config import Config, to_yaml
from ..data.batching import Order
from ..device import pick_device, resolve_precision
from ..eval.evaluators import EvalContext, evaluate, resolve
from ..eval.metrics import format_scores
from ..forward import batcher
from ..methods import METHODS, count, trainable
from ..probes.canaries import insert_canaries
from ..progress import phase
from ..retention.session import Retention
from ..seed import seed_everything
from . import checkpoint
from .callbacks import Callbacks, Console, MetricsLogger, load_callbacks
from .distributed import Dist
from .levers import apply_levers, loss_function, step_scope
from .log import MetricsLog
from .optim import build_optimizer, build_scheduler
from .preflight import audit_data, plan_check
from .report_cb import ReportWriter
from .rundir import prepare_run_dir
from .select import Guard
from .state import RunState
from .trackers import Trackers


def setup_run(cfg: Config, *, resume: bool = False, quiet: bool = False, model=None, callbacks=(),
              dist: Dist | None = None, device: str | None = None) -> RunState:
    """A run ready for its first (or next) step. `model` is what it starts from: None (model.path, or
    model.init_from), a model object (a base model, or one already carrying this method, whose
    parameters then train on), or an earlier run's directory / final/ (recorded as model.init_from,
    so the run resumes from the same start)."""
    t_start, tc = time.time(), resolve_paths(cfg).train   # stored paths work from any directory later
    device = device or pick_device(tc.device)
    dist = dist or Dist(device=device)
    if isinstance(model, (str, Path)):
        cfg.model.init_from, model = str(run_dir_of(model).resolve()), None
    rank_batch = dist.per_rank(tc.batch_size)   # train.batch_size is global; this rank's share (fails fast)
    resolve(cfg.eval.metrics)                   # an unknown evaluator fails before anything loads
    plan_check(cfg, dist.world, lambda text, always=False: quiet or print(text, flush=True))   # before any weight
    start = dist.on_main(prepare_run_dir, cfg, resume)   # rank 0 prepares the folder; every rank learns how
    run_dir, resume = start.run_dir, start.resume_from is not None   # (nothing usable: a clean start)
    log = MetricsLog(run_dir / "metrics.jsonl") if dist.main else None   # only rank 0 logs and writes files
    own = [MetricsLogger(log), Console(quiet), ReportWriter()] if dist.main else []
    own += [Trackers(tc.report_to)] if dist.main and tc.report_to else []   # train.report_to, rank 0 only
    cbs = Callbacks(own + load_callbacks(tc.callbacks) + list(callbacks))
    say = lambda text, always=False: cbs.on_message(None, text, None, always)  # noqa: E731
    for note in start.notes:
        say(f"[tailorlm] {note}", always=True)
    if tc.precision == "auto":  # resolved once and saved, so eval and resume use what training used
        tc.precision = resolve_precision(tc.precision, device)
    seed_everything(tc.seed)
    if cfg.data.audit and not resume and dist.main:
        audit_data(cfg, run_dir, say)

    model, tok, data = build(cfg, model)
    if (canaries := insert_canaries(cfg, data, tok, run_dir if dist.main else None)) is not None:   # run only
        say(f"[tailorlm] privacy: {len(canaries.inserted)} canaries x {canaries.levels()} copies added to the "
            f"training examples ({data.report['canaries']['rows']} rows; RUN/canaries.json)")
    _write(dist, run_dir / "config.yaml", to_yaml(cfg))   # with what build() pinned (a classifier's labels)
    rep = data.report["train"]
    say(f"[tailorlm] data: {data.fmt}, {len(data.train)} train / {len(data.val)} val examples; "
        f"truncated {rep['truncated']} ({rep['truncated_tokens']} tokens cut), dropped {rep['dropped_too_long']} "
        f"too long + {rep['dropped_no_target']} without targets, skipped {data.report['skipped_lines']} bad lines")
    model.to(device)
    retention = _retention(cfg, model, tok, device, say)
    ctx = EvalContext(cfg, data, device, probe=retention, run_dir=run_dir if dist.main else None)
    base_scores = _score_base(cfg, model, ctx, resume, dist, run_dir, say)
    method = METHODS[cfg.method.name]
    model = with_method(model, cfg).to(device)
    if tc.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = dist.wrap(model, tc.precision)   # ddp / fsdp in place; the same model object alone
    apply_levers(model, tc, say)             # train.frozen_bottom, train.compile (both off by default)
    params = trainable(model)
    n_train, n_total = count(model)
    say(f"[tailorlm] method {cfg.method.name}: {n_train:,} of {n_total:,} parameters trainable "
        f"({100 * n_train / n_total:.3f}%)")
    if retention is not None:
        retention.attach(model, params, method, data.train)   # EWC's Fisher: the replay half, never the probe
    opt = build_optimizer(params, tc.lr, tc.weight_decay, device, impl=tc.optimizer_impl)
    run = RunState(
        cfg=cfg, run_dir=run_dir, dist=dist, device=device, model=model, tok=tok, data=data, method=method,
        params=params, opt=opt, sched=build_scheduler(opt, warmup=tc.warmup, total=tc.steps, schedule=tc.schedule,
                                                      min_ratio=tc.min_lr_ratio),
        order=Order(len(data.train), rank_batch, tc.seed, groups=data.groups),
        make_batch=batcher(model, task=cfg.model.task, pad_id=tok.pad_token_id, packing=cfg.data.packing,
                           row_tokens=cfg.data.max_length),
        loss_fn=loss_function(cfg.model.task, tc.loss_chunk, model, say),
        guard=Guard(cfg.eval.metric, cfg.eval.patience, cfg.eval.min_delta, cfg.retention.max_forgetting,
                    cfg.retention.patience),
        eval_ctx=ctx, callbacks=cbs, retention=retention, step_scope=step_scope(model, tc, dist.mode),
        n_trainable=n_train, n_total=n_total, t_start=t_start, base_scores=base_scores)
    if resume:
        _resume(run, log, start.resume_from)
    _start_budget(run)
    if run.base_scores is None and (run_dir / "base_eval.json").is_file():
        run.base_scores = json.loads((run_dir / "base_eval.json").read_text())
    return run


def _write(dist: Dist, path: Path, text: str) -> None:
    if dist.main:
        write_text(path, text)


def _retention(cfg: Config, model, tok, device: str, say) -> Retention | None:
    """The forgetting probe (and mitigations), built on the base model at step 0."""
    if not (cfg.retention.reference and cfg.model.task == "causal_lm"):
        return None
    with phase("retention reference"):   # sampling the reference texts, the base model's scores on them
        r = Retention(cfg.retention, model, tok, device=device, precision=cfg.train.precision, seed=cfg.train.seed,
                      batch_size=cfg.train.batch_size)
    say(f"[tailorlm] retention probe on {len(r.probe.ref)} reference texts: base NLL {r.base['ref_nll']:.4f}")
    return r


def _score_base(cfg: Config, model, ctx: EvalContext, resume: bool, dist: Dist, run_dir: Path, say) -> dict | None:
    """Every evaluator on the model the run starts from (every rank computes, in step; rank 0 writes)."""
    if not cfg.eval.before or resume:
        return None
    ctx.base = True
    try:
        with phase("base model evaluation"):
            scores = evaluate(model, ctx)
    finally:
        ctx.base = False
    _write(dist, run_dir / "base_eval.json", json.dumps(scores, indent=1))
    say(f"[tailorlm] base model: {format_scores(scores)}")
    return scores


def _resume(run: RunState, log: MetricsLog | None, last: Path) -> None:
    run.load_state_dict(checkpoint.load(last, model=run.model, optimizer=run.opt, dist=run.dist))
    if log is not None:   # the killed run may have logged steps (and samples) past its last checkpoint
        log.truncate_after(run.step)
        if (run.run_dir / "samples.jsonl").is_file():
            MetricsLog(run.run_dir / "samples.jsonl").truncate_after(run.step)
    run.say(f"[tailorlm] resumed from {last.name} (step {run.step})", always=True)


def _start_budget(run: RunState) -> None:
    """With a forgetting budget, the start is within it: if no evaluation qualifies, final/ is the
    untouched start."""
    if run.step == 0 and run.cfg.retention.max_forgetting is not None and run.cfg.eval.keep_best:
        checkpoint.save(run.run_dir / "checkpoints" / "best", params=run.params, optimizer=None, state={"step": 0},
                        model=run.model, dist=run.dist)
        run.guard.best_step = 0

