"""Resuming a run from the newest checkpoint that loads whole, falling back to older ones.

rundir.py picks the newest checkpoint that verifies and whose files can be read (before any model
exists); only the built run can tell whether its tensors fit: names, shapes, dtypes, the optimizer's
state, the run state. One that does not fit is removed, as rundir removes a corrupt one, in one line
saying which and why, and the next older one is tried; when none is left the run starts clean in
place (setup.py builds it again: base evaluation and data audit included).

Every attempt reads into fresh tensors and checks before it assigns (checkpoint.read), and the run
state is put back when state.json does not fit, so a failed attempt leaves the run as it was built.

A resume that changes what the checkpoints were written for (`--resume RUN method.r=8`: the method, the
model, a classifier's labels) makes every checkpoint misfit without anything being wrong with them:
then nothing is removed, config.yaml is put back as it was, and the error names the changed keys.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from ..config import Config, to_yaml
from ..errors import ConfigError
from ..run import RunDir
from . import checkpoint
from .log import MetricsLog
from .rundir import Start, _resume_point, mark

# the keys that decide which tensors a run trains, and their shapes
SHAPING = ("model.path", "model.task", "model.dtype", "model.init_from", "method", "data.labels",
           "train.frozen_bottom")


def config_written(cfg: Config) -> str | None:
    """The run's config.yaml as the checkpoints were written with it (before a resume rewrites it)."""
    return RunDir.at(cfg.output.dir).config_text()


def resume(run, log: MetricsLog | None, last: Path, written: str | None) -> bool:
    """Put the run where the newest checkpoint that loads left it; False when none does (each one tried
    removed, said in one line; the caller starts clean)."""
    while last is not None:
        why = _attempt(run, last)
        if why is None:
            break
        _refuse_if_config_changed(run, last, why, written)
        last, notes = run.dist.on_main(_set_aside, last, why)
        for note in notes:
            run.say(f"[tailorlm] {note}", always=True)
    if last is None:
        return False
    if log is not None:   # the killed run may have logged steps (and samples) past its last checkpoint
        log.truncate_after(run.step)
        if (samples := RunDir.at(run.run_dir).samples_file).is_file():
            MetricsLog(samples).truncate_after(run.step)
    run.say(f"[tailorlm] resumed from {last.name} (step {run.step})", always=True)
    return True


def _attempt(run, ckpt: Path) -> str | None:
    """None once `ckpt` is in the run; else why it does not load, the run as it was. Every rank agrees."""
    snapshot = run.state_dict()
    try:
        loaded, why = checkpoint.read(ckpt, model=run.model, optimizer=run.opt, dist=run.dist), None
    except checkpoint.Unloadable as e:
        loaded, why = None, str(e)
    why = _agree(run.dist, why)
    if why is None:
        try:
            run.load_state_dict(loaded.state)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as e:
            why = f"state.json does not fit this run ({checkpoint.describe(e)})"
        why = _agree(run.dist, why)
    if why is None:
        try:
            loaded.apply()   # (an older checkpoint, or a clean start, overwrites whatever a rank applied)
        except checkpoint.Unloadable as e:
            why = str(e)
        why = _agree(run.dist, why)
    if why is not None:
        run.load_state_dict(snapshot)
    return why


def _agree(dist, why: str | None) -> str | None:
    """One verdict on every rank: rank 0's reason, or, where only another rank failed, that one did."""
    if not dist.parallel:
        return why
    failed = dist.sum(float(why is not None))[0]
    return dist.broadcast(why) or ("it does not load on every process" if failed else None)


def _set_aside(bad: Path, why: str) -> tuple[Path | None, list[str]]:
    """Remove a checkpoint that does not load (rank 0); the next one to try, and what was said."""
    root = bad.parent
    shutil.rmtree(bad)
    nxt, found = checkpoint.latest(root)
    notes = [f"removed {bad.name}: {why}" + (f"; trying {nxt.name}" if nxt is not None else "")] + found
    return nxt, notes + (checkpoint.discard(root, nxt) if nxt is not None else [])


def _refuse_if_config_changed(run, ckpt: Path, why: str, written: str | None) -> None:
    changed = _shaping_changes(written, run.cfg)
    if not changed:
        return
    run.dist.on_main(RunDir.at(run.run_dir).write_config, written)   # as the checkpoints were written
    raise ConfigError(f"{ckpt.name} does not load into this run ({why}), and this resume changes "
                      f"{', '.join(changed)} from what the run was written with; nothing was removed. Fix: "
                      f"tailorlm train --resume {run.run_dir} without those overrides, or a new output.dir")


def _shaping_changes(written: str | None, cfg: Config) -> list[str]:
    if not written:
        return []
    try:
        old, new = yaml.safe_load(written), yaml.safe_load(to_yaml(cfg))
    except yaml.YAMLError:
        return []

    def at(d, key: str):
        for k in key.split("."):
            d = d.get(k) if isinstance(d, dict) else None
        return d

    return [k for k in SHAPING if at(old, k) != at(new, k)]


def clean_start(cfg: Config, run_dir: Path) -> Start:
    """Once no checkpoint is left, what prepare_run_dir does for a resume with nothing to resume: the
    run's own files cleared (config.yaml, its marker and lock kept), marked as a start (rank 0)."""
    start = _resume_point(run_dir)
    mark(run_dir, "setup")
    RunDir.at(run_dir).write_config(cfg)
    return start
