"""Training: the loop (loop.py) over one run state (state.py), its phases (setup.py, step.py,
phases.py), callbacks (callbacks.py) with their view of the run (view.py) and their loss terms
(losses.py), checkpoints, ranks, best-checkpoint selection."""
from .callbacks import Callback
from .loop import run_loop, train
from .losses import LossTerm
from .setup import setup_run
from .state import RunState
from .view import RunView

__all__ = ["Callback", "LossTerm", "RunState", "RunView", "run_loop", "setup_run", "train"]
