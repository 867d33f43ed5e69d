"""The training loop, top to bottom: set up, then step / evaluate / save until done, then finish.

Each phase is a function over one RunState (train/state.py); what varies plugs in through the
method registry, the evaluator registry and callbacks (train/callbacks.py: each sees a RunView,
train/view.py, and adds loss terms through extra_loss), never by editing this.
"""
from __future__ import annotations

import gc
import os

import torch

from ..config import Config
from ..device import pick_device
from ..progress import quiet as quiet_progress
from . import distributed, rundir
from .phases import due, evaluate_and_select, finish, interrupt, save_checkpoint
from .setup import setup_run
from .signals import GracefulStop, Interrupted
from .state import RunState
from .step import check_finite, train_step


def train(cfg: Config, resume: bool = False, quiet: bool = False, *, model=None, callbacks=()) -> dict:
    """Tune as `cfg` says; returns the summary (also in RUN/summary.json). `model`: what to start from
    (see setup_run); `callbacks`: objects with any of the Callback methods, run on every rank.
    Progress of the long evaluations shows on rank 0 unless `quiet` (tailorlm/progress.py)."""
    with quiet_progress(quiet or os.environ.get("RANK", "0") != "0"), rundir.one_writer(cfg.output.dir):
        return _train(cfg, resume, quiet, model=model, callbacks=callbacks)


def _train(cfg: Config, resume: bool, quiet: bool, *, model, callbacks) -> dict:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    again = (f"Resume with: tailorlm train --resume {cfg.output.dir}" if resume else
             "Run the same command again to start the run.")
    with GracefulStop(startup=again):   # a signal before the first step: stop at once, and say so
        device = pick_device(cfg.train.device)
        dist = distributed.init(cfg.train.parallel, device)   # under torchrun: this rank; alone: world 1, no-ops
        run = setup_run(cfg, resume=resume, quiet=quiet, model=model, callbacks=callbacks, dist=dist, device=device)
    try:
        summary = run_loop(run)
    except Interrupted as stop:   # every rank stopped after the same step: they leave the group together
        stop.__traceback__ = None   # (its frames hold the run)
        del run
        _leave(dist)
        raise
    del run
    _leave(dist)   # (after a failure the process exits; torchrun stops the other ranks)
    return summary


def _leave(dist) -> None:
    """Free the model before leaving the process group: its data-parallel hooks hold the group in
    reference cycles, and left to the collection at interpreter exit, gloo's worker thread needs the
    GIL to drop its last tensors and aborts the process (seen under load)."""
    if dist.parallel:
        gc.collect()
    dist.close()


def run_loop(run: RunState) -> dict:
    tc = run.cfg.train
    with GracefulStop() as stop:
        run.callbacks.on_start(run)
        if run.dist.main:
            rundir.mark(run.run_dir, "training")   # from now on the folder holds a run (see train/rundir.py)
        run.model.train()
        while run.step < tc.steps:
            run.callbacks.on_step_start(run)
            rec, stopping = train_step(run, stop.requested)
            run.eval_ctx.step = run.step   # the step the evaluators score (and stamp their files with)
            run.callbacks.on_step_end(run, rec)
            check_finite(run, rec)
            if due(run.step, tc.eval_every, tc.steps):
                evaluate_and_select(run)
            if due(run.step, tc.save_every, tc.steps) or (stopping and run.last_saved != run.step):
                save_checkpoint(run)
            if stopping and run.step < tc.steps:
                interrupt(run, stop.signum)
            if run.stopped:
                break
    run.callbacks.on_train_end(run)
    return finish(run)
