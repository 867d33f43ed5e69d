"""Fault injection for the tests, from the test side: callbacks named in `train.callbacks`
("tests.faults:Faults") that read what to break from the environment, so a resumed run (same
config, no variable set) runs clean.

    TAILORLM_TEST_KILL_IN_SAVE=N   SIGKILL this process midway through saving checkpoint step N
                                   (after the parameters are written, before the manifest)
    TAILORLM_TEST_FAIL_AT=R:S      rank R raises before step S
"""
from __future__ import annotations

import os
import signal

from tailorlm.train import Callback

KILL_IN_SAVE = "TAILORLM_TEST_KILL_IN_SAVE"
FAIL_AT = "TAILORLM_TEST_FAIL_AT"


class Faults(Callback):
    def __init__(self):
        at = os.environ.get(KILL_IN_SAVE)
        if at:
            from tailorlm.train import checkpoint

            real = checkpoint.save_file

            def save_file(tensors, path, *a, **k):   # the checkpoint's first file: kill right after it
                real(tensors, path, *a, **k)
                if f".step-{int(at):06d}." in str(path):
                    os.kill(os.getpid(), signal.SIGKILL)
            checkpoint.save_file = save_file

    def on_step_start(self, run) -> None:
        at = os.environ.get(FAIL_AT)
        if at and at == f"{run.dist.rank}:{run.step + 1}":
            raise RuntimeError(f"injected failure on rank {run.dist.rank} before step {run.step + 1}")
