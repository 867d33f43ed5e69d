"""The training loop, top to bottom: set up, then step / evaluate / save until done, then finish.

Each phase is a function over one RunState (train/state.py); what varies plugs in through the
method registry, the evaluator registry and callbacks (train/callbacks.py), never by editing this.
"""
from __future__ import annotations

import torch

from ..config import Config
from ..device import pick_device
from . import distributed
from .phases import due, evaluate_and_select, finish, interrupt, save_checkpoint
from .setup import setup_run
from .signals import GracefulStop
from .state import RunState
from .step import check_finite, train_step


def train(cfg: Config, resume: bool = False, quiet: bool = False, *, model=None, callbacks=()) -> dict:
    """Tune as `cfg` says; returns the summary (also in RUN/summary.json). `model`: what to start from
    (see setup_run); `callbacks`: objects with any of the Callback methods, run on every rank."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    dist = distributed.init(cfg.train.parallel, device)   # under torchrun: this rank; alone: world 1, no-ops
    run = setup_run(cfg, resume=resume, quiet=quiet, model=model, callbacks=callbacks, dist=dist, device=device)
    summary = run_loop(run)
    dist.close()   # (after a failure the process exits; torchrun stops the other ranks)
    return summary


def run_loop(run: RunState) -> dict:
    tc = run.cfg.train
    run.callbacks.on_start(run)
    run.model.train()
    with GracefulStop() as stop:
        while run.step < tc.steps:
            run.callbacks.on_step_start(run)
            rec, stopping = train_step(run, stop.requested)
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
