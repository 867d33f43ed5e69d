"""The run folder, owned: its format (folder.py: every name, reader and atomic writer), its lock
(lock.py: one writer at a time), a finished run opened to be scored, reported on, compared or
continued, and the start of a new one (open.py), and a continual plan's folder (continual_dir.py).

Nothing outside this package names a file of a run folder; it asks a `RunDir`.
open.py loads torch and the model code, so it is imported on first use: the folder
and its lock stay as light as the commands that only read a run (report) or take its lock.
"""
from __future__ import annotations

from importlib import import_module

from .folder import RunDir, run_dir_of

_LAZY = {"OpenedRun": "open", "load_run": "open", "method_base": "open", "open_run": "open", "place": "open",
         "run_config": "open", "start_model": "open", "build": "open"}

__all__ = ["RunDir", "run_dir_of", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
