"""Training: the loop (loop.py) over one run state (state.py), its phases (setup.py, step.py,
phases.py), callbacks (callbacks.py), checkpoints, ranks, best-checkpoint selection."""
from .callbacks import Callback
from .loop import run_loop, train
from .setup import setup_run
from .state import RunState

__all__ = ["Callback", "RunState", "run_loop", "setup_run", "train"]
