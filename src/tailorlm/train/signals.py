"""Graceful stop on SIGTERM / SIGINT (preemption, Ctrl-C).

The first signal asks the loop to finish the current step, save a checkpoint and exit with the
command that resumes. A second signal exits at once: checkpoints are written atomically, so the
last complete one stays intact whatever moment the process dies.
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

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: leave now
            os._exit(128 + signum)
        self.signum = signum

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
