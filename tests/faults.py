"""Fault injection for the tests, from the test side: callbacks named in `train.callbacks`
("tests.faults:Faults") that read what to break from the environment, so a resumed run (same
config, no variable set) runs clean.

    TAILORLM_TEST_KILL_IN_SAVE=N     SIGKILL this process midway through saving checkpoint step N
                                     (after the parameters are written, before the manifest);
                                     `best`: midway through the first save of checkpoints/best
    TAILORLM_TEST_FAIL_AT=R:S        rank R raises before step S
    TAILORLM_TEST_KILL_AT=NAME:S     SIGKILL after step S of the run whose folder name contains NAME
    TAILORLM_TEST_KILL_AT_WRITE=F    SIGKILL this process the moment it opens a file named F (or a
                                     temporary named after it, `.F.*`) to write it: created or
                                     truncated, nothing written yet
    TAILORLM_TEST_SIGNAL_IN_SETUP=S  send this process signal S (TERM, KILL) during start-up, while
                                     the callbacks load (after the run directory is prepared, before
                                     the data, the model and the base evaluation)
"""
from __future__ import annotations

import os
import signal

from tailorlm.train import Callback

KILL_IN_SAVE = "TAILORLM_TEST_KILL_IN_SAVE"
FAIL_AT = "TAILORLM_TEST_FAIL_AT"
KILL_AT = "TAILORLM_TEST_KILL_AT"
KILL_AT_WRITE = "TAILORLM_TEST_KILL_AT_WRITE"
SIGNAL_IN_SETUP = "TAILORLM_TEST_SIGNAL_IN_SETUP"


def _kill_in_save(at: str) -> None:
    from tailorlm.train import checkpoint

    real = checkpoint.save_file
    mark = ".best." if at == "best" else f".step-{int(at):06d}."

    def save_file(tensors, path, *a, **k):   # the checkpoint's first file: kill right after it
        real(tensors, path, *a, **k)
        if mark in str(path):
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save_file = save_file


def _kill_at_write(name: str) -> None:
    """Every Python-level open (builtins.open, and io.open, which pathlib's write_text uses)."""
    import builtins
    import io

    real = io.open

    def opener(file, mode="r", *a, **k):
        fh = real(file, mode, *a, **k)
        base = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
        if ("w" in mode or "x" in mode) and (base == name or base.startswith(f".{name}.")):
            os.kill(os.getpid(), signal.SIGKILL)
        return fh
    builtins.open = io.open = opener


class Faults(Callback):
    def __init__(self):
        if os.environ.get(KILL_IN_SAVE):
            _kill_in_save(os.environ[KILL_IN_SAVE])
        if os.environ.get(KILL_AT_WRITE):
            _kill_at_write(os.environ[KILL_AT_WRITE])
        if os.environ.get(SIGNAL_IN_SETUP):
            os.kill(os.getpid(), getattr(signal, "SIG" + os.environ[SIGNAL_IN_SETUP]))

    def on_step_start(self, run) -> None:
        at = os.environ.get(FAIL_AT)
        if at and at == f"{run.dist.rank}:{run.step + 1}":
            raise RuntimeError(f"injected failure on rank {run.dist.rank} before step {run.step + 1}")

    def on_step_end(self, run, rec) -> None:
        at = os.environ.get(KILL_AT)
        if at:
            name, _, step = at.rpartition(":")
            if name in run.run_dir.name and rec["step"] == int(step):
                os.kill(os.getpid(), signal.SIGKILL)
