"""Graceful stop on SIGTERM / SIGINT (preemption, Ctrl-C).

The first signal asks the loop to finish the current step, save a checkpoint and exit with the
command that resumes. A second signal exits at once: checkpoints are written atomically, so the
last complete one stays intact whatever moment the process dies.

During start-up (`GracefulStop(startup=hint)`: the run directory, data, model, base evaluation)
there is no step to finish and nothing to save: the first signal stops at once, with a message that
says so and how to run again (`hint`), instead of the silent death of the default handler.
"""
from __future__ import annotations

import os
import signal
import threading


class Interrupted(Exception):
    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signum


class GracefulStop:
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, startup: str | None = None):
        self.signum: int | None = None
        self.startup = startup
        self._old: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: leave now
            os._exit(128 + signum)
        self.signum = signum
        if self.startup is not None:
            raise Interrupted(signum, f"stopped by {signal.Signals(signum).name} during start-up, before the "
                              f"first step; nothing was lost. {self.startup}")

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    @property
    def requested(self) -> bool:
        return self.signum is not None
