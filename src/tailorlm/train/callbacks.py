"""Callbacks: how code plugs into the loop without editing it.

A callback is an object with any of these methods (the `Callback` base has them all as no-ops);
`run` is a RunView (train/view.py): what a plug-in may read (step, cfg, model, params, method, data,
tok, device, dist, run_dir, make_batch, base_scores, samples) and change (`stop(reason)`,
`note(**numbers)` for the step's record, `say`, `log`):

    on_start(run)                       setup done: method applied, model on its device, optimizer
                                        ready, base model scored; before the first step
    on_step_start(run)                  before a step builds its micro-batches (run.step = steps done)
    extra_loss(run)                     terms added to the step's objective, after the task loss's
                                        backward: a Tensor (summed with the other callbacks', logged as
                                        `extra_loss`), LossTerms (each its own backward and name), or
                                        None. The one way to add a loss (train/losses.py): retention's
                                        replay and penalties, continual's, a user's
    on_before_optimizer_step(run)       gradients final (accumulated, synced, clipped), before the update
    on_step_end(run, rec)               after the update; rec is the step's metrics record
    on_train_end(run)                   the loop stepped for the last time (finished, stopped early,
                                        or interrupted by a signal)
    on_eval(run, scores, verdict)       after an evaluation and the best-checkpoint decision
    on_save(run, path)                  after a checkpoint was written
    on_message(run, text, record, always)  something to say (text) and/or to log (record)
    on_end(run, summary)                after final/ and summary.json

The metrics log (metrics.jsonl) and the console progress are ordinary callbacks, on rank 0 only;
callbacks given to `train(..., callbacks=[...])` or named in `train.callbacks` ("module:Name", a
class or factory called with no arguments) run on every rank, after retention's (train/losses.py).

A callback may also keep a state of its own across a resume: a `state_key` (str) with a JSON-able
`state_dict()` and `load_state_dict(st)`, checkpointed in state.json (train/state.py), and add its own
part to summary.json with `summary_part(summary) -> dict` (retention's forgetting budget does both).
"""
from __future__ import annotations

import importlib
import sys
from typing import Iterable

import torch

from ..errors import ConfigError
from .log import MetricsLog
from .losses import LossTerm
from .state import RunState
from .view import RunView, view_of


class Callback:
    """Every event as a no-op: a callback overrides those it needs."""
    def on_start(self, run: RunView) -> None: ...
    def on_step_start(self, run: RunView) -> None: ...
    def extra_loss(self, run: RunView) -> torch.Tensor | LossTerm | Iterable[LossTerm] | None: return None
    def on_before_optimizer_step(self, run: RunView) -> None: ...
    def on_step_end(self, run: RunView, rec: dict) -> None: ...
    def on_train_end(self, run: RunView) -> None: ...
    def on_eval(self, run: RunView, scores: dict, verdict) -> None: ...
    def on_save(self, run: RunView, path) -> None: ...
    def on_message(self, run: RunView | None, text: str | None, record: dict | None = None,
                   always: bool = False) -> None: ...
    def on_end(self, run: RunView, summary: dict) -> None: ...


EVENTS = [name for name in vars(Callback) if name.startswith("on_")]


class Callbacks:
    """Several callbacks as one: each event goes to every callback that has it, in order, with the run
    as a RunView (train/view.py)."""

    def __init__(self, callbacks):
        self.items = list(callbacks)

    def __getattr__(self, event: str):
        if event not in EVENTS:
            raise AttributeError(event)

        def fire(run, *args, **kwargs):
            view = _view(run)
            for cb in self.items:
                fn = getattr(cb, event, None)
                if fn is not None:
                    fn(view, *args, **kwargs)
        return fire


def _view(run):
    """What a callback is given: the RunState's view (None, or a view already, as it is)."""
    return view_of(run) if isinstance(run, RunState) else run


def is_logged(rec: dict, tc) -> bool:
    """A step's record is logged (metrics.jsonl, trackers) every log_every, first, last, and when skipped."""
    return rec["step"] % tc.log_every == 0 or rec["step"] in (1, tc.steps) or "skipped" in rec


class MetricsLogger(Callback):
    """metrics.jsonl: logged steps (every log_every, the first, the last, every skipped one),
    evaluations with their deltas from the base, and what the loop reports (checkpoint errors,
    early stops, interruptions)."""

    def __init__(self, log: MetricsLog):
        self.log = log

    def on_step_end(self, run, rec: dict) -> None:
        if is_logged(rec, run.cfg.train):
            self.log.write(rec)

    def on_eval(self, run, scores: dict, verdict) -> None:
        from ..eval.metrics import deltas

        self.log.write({"step": run.step, "eval": scores, "delta": deltas(scores, run.base_scores),
                        "best": verdict.improved, "warnings": verdict.warnings})

    def on_message(self, run, text, record=None, always=False) -> None:
        if record is not None:
            self.log.write({"step": run.step, **record})


SHOW_SAMPLES = 3   # generated answers printed after an evaluation (all of them are in RUN/samples.jsonl)


class Console(Callback):
    """What a person watching sees: setup lines, a progress bar with loss, lr and tokens/s, the
    evaluations (with deltas from the base model), warnings. `quiet` keeps only what must be said."""

    def __init__(self, quiet: bool = False):
        self.quiet, self.bar = quiet, None

    def on_start(self, run) -> None:
        from ..progress import Progress   # a bar on a terminal; plain lines in a log file

        self.bar = Progress(run.cfg.train.steps, "train", "steps", initial=run.step, disable=self.quiet)

    def on_step_end(self, run, rec: dict) -> None:
        self.bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}", tok_s=f"{rec['useful_tokens_per_s']:.0f}")
        self.bar.update(1)

    def on_eval(self, run, scores: dict, verdict) -> None:
        from ..audit.pii import mask_secrets
        from ..eval.metrics import format_scores

        best = " (best)" if verdict.improved else ""
        self._say(f"[tailorlm] step {run.step}: {format_scores(scores, run.base_scores)}{best}", always=True)
        for w in verdict.warnings:
            self._say(f"[tailorlm] warning: {w}", always=True)
        shown = [] if self.quiet else [x for x in run.samples if x.get("step") == run.step]
        for smp in shown[:SHOW_SAMPLES]:   # what the model says, not only its scores (all in samples.jsonl)
            prompt, generated, reference = (mask_secrets(smp[k]) for k in ("prompt", "generated", "reference"))
            self._say(f"[tailorlm]   sample: {prompt[-80:]!r} -> {generated[:120]!r} (reference {reference[:80]!r})",
                      True)   # (an API token in the data is not echoed: audit/pii.py)

    def on_message(self, run, text, record=None, always=False) -> None:
        if text:
            self._say(text, always)

    def on_train_end(self, run) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _say(self, text: str, always: bool) -> None:
        if self.bar is not None:      # during the loop: above the bar (written even when the bar is disabled)
            self.bar.write(text)
        elif always or not self.quiet:
            print(text, file=sys.stderr, flush=True)


def load_callbacks(paths: list[str]) -> list:
    """Callbacks named by import path ("module:Name"; a class or factory called with no arguments)."""
    out = []
    for path in paths:
        mod, _, attr = path.partition(":")
        try:
            out.append(getattr(importlib.import_module(mod), attr)())
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(f"train.callbacks: cannot load {path!r} ({e}). Fix: an importable "
                              "'module:Name' whose Name() makes a callback") from None
    return out
