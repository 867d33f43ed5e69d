"""setup_run: from a config (and optionally a model to start from) to a RunState ready to step.

Data first (bad data fails before the model loads), then the model the run starts from, the base
model's scores at step 0 (every evaluator, the retention probe included), the method, the
optimizer, and, with `resume`, the newest checkpoint that loads whole into the run (train/rundir.py
decides what there is to resume, and what a fresh start may replace, before anything is read or
deleted; train/resume.py falls back to older checkpoints, and to a clean start in place, when one
that verified does not fit the run).
"""
from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_text
from ..build import resolve_paths, with_method
from ..config import Config, to_yaml
from ..data.batching import Order
from ..device import pick_device, resolve_precision
from ..errors import TailorError
from ..eval.evaluators import EvalContext, evaluate, resolve
from ..eval.metrics import format_scores
from ..forward import batcher
from ..methods import METHODS, count, trainable
from .. import objectives
from ..objectives.loss import PreferenceLoss, Reference
from ..probes import evaluators as _probe_evaluators  # noqa: F401  (registers the probes' evaluators)
from ..probes.canaries import insert_canaries
from ..progress import phase
from ..retention.session import Retention
from ..run import RunDir, build, run_dir_of
from ..seed import seed_everything
from . import checkpoint
from . import lr_race
from . import resume as resuming
from .callbacks import Callbacks, Console, MetricsLogger, load_callbacks
from .distributed import Dist
from .levers import apply_levers, loss_function, step_scope
from .log import MetricsLog
from .losses import retention_callbacks
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
    objectives.pin(tc)   # train.objective dpo / simpo: the beta (and gamma) it resolved, into config.yaml
    device = device or pick_device(tc.device)
    dist = dist or Dist(device=device)
    if isinstance(model, (str, Path)):
        cfg.model.init_from, model = str(run_dir_of(model).resolve()), None
    rank_batch = dist.per_rank(tc.batch_size)   # train.batch_size is global; this rank's share (fails fast)
    resolve(cfg.eval.metrics)                   # an unknown evaluator fails before anything loads
    plan_check(cfg, dist.world, lambda text, always=False: quiet or print(text, flush=True))   # before any weight
    written = dist.on_main(resuming.config_written, cfg) if resume else None   # before prepare_run_dir rewrites it
    start = dist.on_main(prepare_run_dir, cfg, resume)   # rank 0 prepares the folder; every rank learns how
    log = MetricsLog(RunDir.at(start.run_dir).metrics_file) if dist.main else None   # only rank 0 logs and writes files
    own = [MetricsLogger(log), Console(quiet), ReportWriter()] if dist.main else []
    own += [Trackers(tc.report_to)] if dist.main and tc.report_to else []   # train.report_to, rank 0 only
    cbs = Callbacks(own + load_callbacks(tc.callbacks) + list(callbacks))
    if tc.precision == "auto":  # resolved once and saved, so eval and resume use what training used
        tc.precision = resolve_precision(tc.precision, device)
    at = _Setup(cfg, dist, device, rank_batch, log, cbs, t_start, written)
    run = _assemble(at, start, model)
    if run is None:   # no checkpoint loads into this run (each removed, saying why): start again, clean, in place
        if model is not None:
            raise TailorError(f"nothing in {start.run_dir} loads into this run (each unusable checkpoint was "
                              "removed) and the model handed to train() already carries the method. Fix: run "
                              "again: with no checkpoint left it starts clean in place")
        gc.collect()
        run = _assemble(at, dist.on_main(resuming.clean_start, cfg, start.run_dir), None)
    _start_budget(run)
    if run.base_scores is None and RunDir.at(start.run_dir).base_eval_file.is_file():
        run.base_scores = json.loads(RunDir.at(start.run_dir).base_eval_file.read_text())
    return run


@dataclass
class _Setup:
    """What setup_run settles before the run is assembled (once, or twice when a resume starts clean)."""
    cfg: Config
    dist: Dist
    device: str
    rank_batch: int
    log: MetricsLog | None
    cbs: Callbacks
    t_start: float
    written: str | None   # config.yaml as the checkpoints were written with it (a resume)

    def say(self, text: str, always: bool = False) -> None:
        self.cbs.on_message(None, text, None, always)


def _assemble(at: _Setup, start, model) -> RunState | None:
    """Data, model, method, optimizer and the run state; on a resume, the newest checkpoint that loads.
    None when resuming found no checkpoint that does (each was removed)."""
    cfg, tc, dist, device, say = at.cfg, at.cfg.train, at.dist, at.device, at.say
    run_dir, resume = start.run_dir, start.resume_from is not None   # (nothing usable: a clean start)
    for note in start.notes:
        say(f"[tailorlm] {note}", always=True)
    seed_everything(tc.seed)
    if cfg.data.audit and not resume and dist.main:
        audit_data(cfg, run_dir, say)

    model, tok, data = build(cfg, model)
    if (canaries := insert_canaries(cfg, data, tok, run_dir if dist.main else None)) is not None:   # run only
        say(f"[tailorlm] privacy: {len(canaries.inserted)} canaries x {canaries.levels()} copies added to the "
            f"training examples ({data.report['canaries']['rows']} rows; RUN/canaries.json)")
    _write(dist, RunDir.at(run_dir).config_file, to_yaml(cfg))   # with what build() pinned (a classifier's labels)
    say(f"[tailorlm] {data.describe()}")   # every split's skipped lines, rejected rows, truncation (data/counts.py)
    model.to(device)
    retention = _retention(cfg, model, tok, device, say)
    ctx = EvalContext(cfg, data, device, probe=retention, run_dir=run_dir if dist.main else None)
    base_scores = _score_base(cfg, model, ctx, resume, dist, run_dir, say)
    method = METHODS[cfg.method.name]
    model = with_method(model, cfg).to(device)
    ctx.reference = _reference(cfg, model, method)   # before the first update (and any wrapping)
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
    lr = 0.0 if tc.lr == "auto" else tc.lr   # (auto: lr_race.settle below sets it)
    opt = build_optimizer(params, lr, tc.weight_decay, device, impl=tc.optimizer_impl)
    run = RunState(
        cfg=cfg, run_dir=run_dir, dist=dist, device=device, model=model, tok=tok, data=data, method=method,
        params=params, opt=opt, sched=build_scheduler(opt, warmup=tc.warmup, total=tc.steps, schedule=tc.schedule,
                                                      min_ratio=tc.min_lr_ratio),
        order=Order(len(data.train), at.rank_batch, tc.seed, groups=data.groups),
        make_batch=batcher(model, task=cfg.model.task, pad_id=tok.pad_token_id, packing=cfg.data.packing,
                           row_tokens=cfg.data.max_length, pairs=tc.objective in objectives.OBJECTIVES),
        loss_fn=_loss_fn(cfg, model, ctx.reference, say),
        guard=Guard(cfg.eval.metric, cfg.eval.patience, cfg.eval.min_delta, cfg.retention.max_forgetting,
                    cfg.retention.patience),
        eval_ctx=ctx, callbacks=Callbacks(retention_callbacks(retention) + at.cbs.items),
        step_scope=step_scope(model, tc, dist.mode),
        n_trainable=n_train, n_total=n_total, t_start=at.t_start, base_scores=base_scores)
    lr_race.settle(run, at.written)   # train.lr: auto: the race's lr (train/lr_race.py), or config.yaml's
    if resume and not resuming.resume(run, at.log, start.resume_from, at.written):
        return None
    return run


def _loss_fn(cfg: Config, model, reference: Reference | None, say):
    """The run's task loss: a preference objective's (train.objective dpo / simpo), else the token loss."""
    tc = cfg.train
    if tc.objective in objectives.OBJECTIVES:
        return PreferenceLoss(tc.objective, objectives.settings(tc), reference)
    return loss_function(cfg.model.task, tc.loss_chunk, model, say)


def _reference(cfg: Config, model, method) -> Reference | None:
    """The reference model of an objective that needs one (dpo): the method's adapters switched off, or
    for full fine-tuning a frozen copy of the starting model (objectives/loss.py)."""
    objective = objectives.OBJECTIVES.get(cfg.train.objective)
    return Reference(model, method) if objective is not None and objective.reference else None


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
    _write(dist, RunDir.at(run_dir).base_eval_file, json.dumps(scores, indent=1))
    say(f"[tailorlm] base model: {format_scores(scores)}")
    return scores


def _start_budget(run: RunState) -> None:
    """With a forgetting budget, the start is within it: if no evaluation qualifies, final/ is the
    untouched start."""
    if run.step == 0 and run.cfg.retention.max_forgetting is not None and run.cfg.eval.keep_best:
        checkpoint.save(RunDir.at(run.run_dir).checkpoints / "best", params=run.params, optimizer=None, state={"step": 0},
                        model=run.model, dist=run.dist)
        run.guard.best_step = 0

