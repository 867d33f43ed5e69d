"""The run directory: what tailorlm writes there, how it knows a folder is its own, what it deletes.

tailorlm marks every run directory it creates with `.tailorlm-run` (JSON), whose state is `setup`
until the first step starts and `training` from then on, and deletes only what it recognises:

- a folder without the marker (a project folder, `.`, a folder of data) is never emptied, whatever
  output.overwrite says; nor a marked one that also holds something tailorlm does not write there
  (a user's notes); nor, to replace a run, the current directory or a folder holding it;
- a marked folder still in `setup` holds no run (its start failed: bad data, a wrong model path, a
  signal), so the same command starts again in it; one in `training` holds a run, which only
  `--resume` continues and only output.overwrite=true replaces.

One process writes a run folder at a time: preparing it takes the folder's lock (run/lock.py,
`.tailorlm-lock`) before anything there is written or deleted, and the run holds it until it ends, so
a second start or a `--resume` of a run still going is refused, naming the holder; the lock file is
tailorlm's own, never emptied away and never foreign.

Every check runs before anything is deleted, and the marker is deleted last, so a folder emptied
halfway (a kill) is still recognised the next time. A resume with nothing usable to resume from
(killed before the first checkpoint, every checkpoint corrupt) says so and starts a clean run in
place: log, base evaluation and data audit done again, not appended to.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import holds_cwd
from ..config import Config
from ..errors import RunExistsError
from ..run.folder import CONFIG, LOCK, MARKER, RunDir, is_own, mark, state
from ..run.lock import released_after, take
from . import checkpoint

BUSY = ", or another output.dir"   # the fix a refused second writer is offered beside waiting


@dataclass
class Start:
    """Where a run starts: its directory, the checkpoint it resumes from (None: step 0), and what
    preparing it found and did (said once the console exists)."""
    run_dir: Path
    resume_from: Path | None = None
    notes: list[str] = field(default_factory=list)


def prepare_run_dir(cfg: Config, resume: bool) -> Start:
    """Validate output.dir, take its lock, then (only then) clear what a fresh start replaces; write
    config.yaml. The lock stays held after this returns: `one_writer` (around the run) releases it."""
    run = Path(cfg.output.dir)
    if run.exists() and not run.is_dir():
        raise RunExistsError(f"output.dir {run} is a file, not a folder; nothing was changed. "
                             "Fix: output.dir=<a new or empty folder>")
    if not resume:
        _refuse_foreign(run)   # before the lock file is made there: a folder not tailorlm's is not written
    lock, new, note = take(run, fix="" if resume else BUSY)
    try:
        start = _resume_point(run) if resume else Start(run)
        if start.resume_from is None:
            if not resume:
                _claim(run, cfg.output.overwrite)
            run.mkdir(parents=True, exist_ok=True)
            mark(run, "setup")
        RunDir.at(run).write_config(cfg)
    except BaseException:
        if new:
            lock.release()
        raise
    if note:
        start.notes.insert(0, note)
    return start


def one_writer(run: str | Path):
    """Around a run's whole life (train): the lock prepare_run_dir takes is released when the block
    ends, however it ends; a process killed outright loses it with its life (flock)."""
    return released_after(Path(run))


def _entries(run: Path) -> list[Path]:
    """What the folder holds, its lock file aside (which only says who is writing it)."""
    return [p for p in run.iterdir() if p.name != LOCK] if run.is_dir() else []


def _refuse_foreign(run: Path) -> None:
    """A folder holding anything, without the marker, is not tailorlm's: nothing is written there."""
    if _entries(run) and state(run) is None:
        raise RunExistsError(f"{run} is not empty and is not a tailorlm run (no {MARKER}); nothing was deleted. "
                             "Fix: output.dir=<a new or empty folder>")


def _claim(run: Path, overwrite: bool) -> None:
    """A fresh run may start in `run`: new, empty, a failed start, or (overwrite) a run of tailorlm's.
    Raises, having deleted nothing, for anything else."""
    if not _entries(run):
        return
    _refuse_foreign(run)
    st = state(run)
    foreign = ", ".join(sorted(p.name for p in run.iterdir() if not is_own(p.name))[:3])
    if st != "setup" and not overwrite:   # what to do about the run comes first; the user's files are kept anyway
        also = f", and {foreign}, which tailorlm did not write" if foreign else ""
        move = f"move {foreign} out and " if foreign else ""
        raise RunExistsError(f"{run} already holds a run{also}. Fix: tailorlm train --resume {run} to continue it, "
                             f"a new output.dir, or {move}output.overwrite=true to replace it")
    if foreign:
        raise RunExistsError(f"{run} holds files tailorlm did not write ({foreign}); nothing was deleted. "
                             "Fix: move them out, or another output.dir")
    if st != "setup" and holds_cwd(run):
        raise RunExistsError(f"{run} is the current directory (or holds it); tailorlm does not empty it. "
                             "Fix: run from another directory, or another output.dir")
    _empty(run)


def _empty(run: Path, keep: tuple[str, ...] = ()) -> None:
    """Delete tailorlm's own entries in `run` and nothing else; the marker last, the lock never."""
    for p in sorted(_entries(run), key=lambda p: p.name == MARKER):
        if is_own(p.name) and p.name not in keep:
            _remove(p)


def _resume_point(run: Path) -> Start:
    """The newest usable checkpoint; the debris of interrupted writes and the unusable checkpoints
    removed. With none: the run's own files cleared (config.yaml kept) for a clean start in place."""
    notes = []
    if run.is_dir():
        for p in run.iterdir():
            if p.name.startswith(".") and p.name not in (MARKER, LOCK) and is_own(p.name):
                _remove(p)
                notes.append(f"removed {p.name}: left by an interrupted write")
    last, found = checkpoint.latest(RunDir.at(run).checkpoints)
    notes += found
    if last is None:
        notes.append(f"nothing could be resumed in {run} (no verified checkpoint); starting a clean run in place: "
                     "the log, the base evaluation and the data audit start again")
        if run.is_dir():
            _empty(run, keep=(CONFIG, MARKER))
        return Start(run, None, notes)
    return Start(run, last, notes + checkpoint.discard(RunDir.at(run).checkpoints, last))


def _remove(p: Path) -> None:
    """One entry; a link is removed, never followed."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()
