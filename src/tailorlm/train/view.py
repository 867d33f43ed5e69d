"""RunView: what a callback sees of a run, built for each event from the RunState (train/state.py).

A plug-in reads the run through it (the same names as the RunState: `run.step`, `run.model`,
`run.cfg`, ...) and changes it only in the ways named here: `stop(reason)` ends the run after the
step in progress, `note(**numbers)` adds numbers to that step's record, `say`/`log` speak and log
through the other callbacks. Everything else of the run (optimizer, scheduler, guard, counters,
the evaluators' context) is the loop's own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    import torch

    from ..config import Config
    from ..data import Data
    from ..data.batching import Batch
    from ..methods.base import Method
    from .distributed import Dist


@dataclass(frozen=True)
class RunView:
    step: int                                   # steps done (during a step: the one in progress is step + 1)
    cfg: Config                                 # the validated Config
    run_dir: Path
    device: str
    dist: Dist                                  # this process's rank in the job (dist.main: rank 0)
    model: torch.nn.Module
    tok: Any                                    # the tokenizer
    data: Data                                  # examples, rows, formatter, report
    method: Method
    params: dict[str, torch.nn.Parameter]       # the trainable parameters by name
    make_batch: Callable[[list], Batch]         # examples -> a Batch for this task and model
    base_scores: Optional[dict]                 # the base model's scores at step 0 (None: not scored)
    samples: list                               # the latest evaluation's generations ({step, prompt, ...})
    _say: Callable = field(repr=False, compare=False)
    _log: Callable = field(repr=False, compare=False)
    _stop: Callable = field(repr=False, compare=False)
    _notes: dict = field(repr=False, compare=False)

    def say(self, text: str, always: bool = False) -> None:
        """A line for the console (shown when not quiet, or `always`)."""
        self._say(text, always)

    def log(self, record: dict, text: str | None = None) -> None:
        """A record for metrics.jsonl (stamped with the step) and, with text, a line for the console."""
        self._log(record, text)

    def stop(self, reason: str) -> None:
        """End the run after the step in progress (logged as `stopped`, as an early stop is; final/ is
        written as at any end). Under torchrun every rank must ask alike (a callback runs on each)."""
        self._stop(reason)

    def note(self, **numbers: float) -> None:
        """Numbers for the record of the step in progress (metrics.jsonl, trackers): from on_step_start,
        extra_loss or on_before_optimizer_step; from on_step_end they go into the next step's."""
        self._notes.update(numbers)


def view_of(run) -> RunView:
    """The RunState `run` as a callback sees it now."""
    return RunView(step=run.step, cfg=run.cfg, run_dir=run.run_dir, device=run.device, dist=run.dist,
                   model=run.model, tok=run.tok, data=run.data, method=run.method, params=run.params,
                   make_batch=run.make_batch, base_scores=run.base_scores,
                   samples=getattr(run.eval_ctx, "samples", []), _say=run.say, _log=run.log,
                   _stop=lambda reason: _stop(run, reason), _notes=run.notes)


def _stop(run, reason: str) -> None:
    if run.stopped is None:
        run.log({"stopped": reason}, f"[tailorlm] {reason}; stopping at step {run.step}")
        run.stopped = reason
