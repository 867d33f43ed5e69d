"""The run state: everything one training run holds, built by setup_run and advanced by the phases.

The objects (model, data, optimizer, ...) are built once; the counters change every step.
`state_dict()` is exactly what a checkpoint's state.json holds (with the trainable parameters and
optimizer state beside it), and `load_state_dict()` puts a run back where that checkpoint was.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..seed import rng_state, set_rng_state


@dataclass
class RunState:
    # ---- what the run is made of (setup_run)
    cfg: Any                       # the validated Config
    run_dir: Path
    dist: Any                      # train.distributed.Dist: this process's rank in the job
    device: str
    model: Any
    tok: Any
    data: Any                      # data.Data: examples, rows, formatter, report
    method: Any                    # methods.base.Method
    params: dict                   # the trainable parameters by name (what a checkpoint holds)
    opt: Any
    sched: Any
    order: Any                     # data.batching.Order: which examples each micro-batch takes
    make_batch: Any                # examples -> Batch for this task and model (forward.batcher)
    loss_fn: Any                   # forward.LOSSES[task]: (model, batch) -> (loss sum, target tokens); a preference
                                   # objective's: objectives.loss.PreferenceLoss -> (loss sum, pairs), and record()
    guard: Any                     # train.select.Guard: best checkpoint, early stopping, budget
    eval_ctx: Any                  # eval.evaluators.EvalContext
    callbacks: Any                 # train.callbacks.Callbacks (each given a train.view.RunView of this run)
    step_scope: Any = contextlib.nullcontext   # () -> context around a step's passes (train.levers.step_scope)
    n_trainable: int = 0
    n_total: int = 0
    t_start: float = 0.0
    # ---- what changes as it trains (checkpointed)
    step: int = 0
    history: list = field(default_factory=list)   # [{step, loss}] of every step
    tokens_seen: int = 0                          # the examples' own tokens trained on (no padding)
    train_time: float = 0.0                       # seconds inside steps
    base_scores: Optional[dict] = None            # the base model's scores at step 0
    skipped_steps: int = 0                        # non-finite steps whose update was skipped
    chosen: Optional[dict] = None                 # what train.lr: auto chose (train/lr_race.py)
    # ---- this process only (not checkpointed)
    bad_in_a_row: int = 0
    last_saved: int = 0
    stopped: Optional[str] = None                 # why the run stopped early, if it did
    scores: Optional[dict] = None                 # the latest evaluation, with its "step"
    notes: dict = field(default_factory=dict)     # numbers callbacks noted for the step in progress (RunView.note)

    def state_dict(self) -> dict:
        return {"step": self.step, "scheduler": self.sched.state_dict(), "rng": rng_state(),
                "history": self.history, "tokens_seen": self.tokens_seen, "train_time": self.train_time,
                "base_scores": self.base_scores, "skipped_steps": self.skipped_steps, "guard": self.guard.state(),
                "callbacks": {cb.state_key: cb.state_dict() for cb in self._stateful()},
                **({"chosen": self.chosen} if self.chosen else {})}

    def load_state_dict(self, st: dict) -> None:
        self.sched.load_state_dict(st["scheduler"])
        set_rng_state(st["rng"])
        self.step, self.history = st["step"], st["history"]
        self.tokens_seen, self.train_time = st["tokens_seen"], st["train_time"]
        self.base_scores, self.skipped_steps = st.get("base_scores"), st.get("skipped_steps", 0)
        self.guard.load(st.get("guard", {}))
        self.chosen = st.get("chosen", self.chosen)
        held = st.get("callbacks") or {}
        for cb in self._stateful():
            if cb.state_key in held:
                cb.load_state_dict(held[cb.state_key])
        self.last_saved = self.step

    def _stateful(self) -> list:
        """The callbacks with a state of their own, checkpointed in state.json under their `state_key`: a
        JSON-able `state_dict()` and `load_state_dict(st)` (a forgetting budget's weight)."""
        items = getattr(self.callbacks, "items", None) or []
        return [cb for cb in items if isinstance(getattr(cb, "state_key", None), str)]

    def say(self, text: str, always: bool = False) -> None:
        self.callbacks.on_message(self, text, None, always)

    def log(self, record: dict, text: str | None = None) -> None:
        """A record for metrics.jsonl (stamped with the step) and, with text, a line for the console."""
        self.callbacks.on_message(self, text, record, True)

