"""The one way to add a loss term: a callback's `extra_loss(run)` (train/callbacks.py).

Retention's mitigations, continual's penalties and a user's terms all come through it, so the step
(train/step.py) knows nothing of any of them. A callback returns

    a Tensor      summed with the other callbacks' tensors, one backward, logged as `extra_loss`
                  (continual's EWC / L2-SP / distillation / O-LoRA penalties)
    LossTerms     one, or several yielded one by one: each backward as it comes, before the next is
                  computed (its own normalisation, and only one term's graph held at a time), its
                  value logged under its own name (retention's replay and penalties, below)
    None          nothing this step

after the task loss's backward, callback by callback in order; the summed tensors last. A non-finite
value of a term that `guards` (and of `extra_loss`) skips the step's update, as a non-finite loss does.

Retention's built-in callback comes first, so its terms come before the others', as they always have:

    replay_loss   the general text's mean token loss on a replay batch, weighted by retention.replay
                  (its own mean, since 128-token blocks would otherwise swamp a task with a few target
                  tokens per example); logged unweighted
    penalty       L2-SP + EWC + distillation (on the same replay batch), logged as their sum

With a forgetting budget (`retention.budget`), a second built-in callback, retention/budget.py's
Budget, steers the distillation weight from the probe's measurements; RetentionLoss distils with
that weight and logs it in every step's record as `distill_weight`.
The retention probe (forgetting measured at each evaluation) is the evaluators' (EvalContext.probe),
and the forgetting budget the guard's (train/select.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from ..device import autocast
from ..forward import lm_loss_sum
from ..retention.budget import Budget
from ..retention.session import Retention
from .view import RunView, view_of


@dataclass(frozen=True)
class LossTerm:
    """A term of the step's objective with a backward of its own: `loss` is backward as it comes, `value`
    goes into the step's record as `name` (default: the loss itself); a non-finite value skips the
    step's update when `guards`."""
    name: str
    loss: torch.Tensor
    value: Optional[float] = None
    guards: bool = True

    def logged(self) -> float:
        return float(self.loss.detach()) if self.value is None else self.value


def loss_terms(callbacks: list, run: RunView | None) -> Iterator[LossTerm]:
    """Every callback's extra loss, in order, as LossTerms: a callback's own terms as they come, then
    the plain tensors of all of them summed as one term, `extra_loss`."""
    plain = []
    for cb in callbacks:
        got = cb.extra_loss(run) if hasattr(cb, "extra_loss") else None
        if isinstance(got, torch.Tensor):
            plain.append(got)
        elif isinstance(got, LossTerm):
            yield got
        elif got is not None:
            yield from got
    if plain:
        yield LossTerm("extra_loss", sum(plain))


def extra_backward(run) -> tuple[dict, bool]:
    """Backward of the callbacks' loss terms, each computed under autocast and backward as it comes;
    returns their values by name for the step's record, and whether every guarding one is finite."""
    extra, finite, terms = {}, True, loss_terms(run.callbacks.items, view_of(run))
    while True:
        with autocast(run.device, run.cfg.train.precision):
            term = next(terms, None)
        if term is None:
            return extra, finite
        term.loss.backward()
        extra[term.name] = term.logged()
        finite = finite and (math.isfinite(extra[term.name]) or not term.guards)


class RetentionLoss:
    """Retention's replay and penalties as a callback (the module docstring)."""

    def __init__(self, retention: Retention, budget: Budget | None = None):
        self.r, self.budget = retention, budget

    def extra_loss(self, run: RunView) -> Iterator[LossTerm]:
        r = self.r
        replay = r.replay_batch(run.step)
        if replay is not None and r.mixes_replay:
            s, _ = lm_loss_sum(run.model, replay)
            n = max(replay.n_targets, 1)
            yield LossTerm("replay_loss", run.cfg.retention.replay * s / n, value=float(s.detach()) / n, guards=False)
        weight = None if self.budget is None else self.budget.weight
        if weight is not None:
            run.note(distill_weight=weight)
        pen = r.penalty(run.model, run.params, replay, distill=weight)
        if pen is not None:
            yield LossTerm("penalty", pen)


def retention_callbacks(retention: Retention | None) -> list:
    """The built-in callbacks of a run's retention (none without one), to go first of all: the loss, and
    with `retention.budget` the controller that steers its distillation weight."""
    if retention is None:
        return []
    budget = Budget(retention, retention.r) if retention.r.budget is not None else None
    return [RetentionLoss(retention, budget)] + ([budget] if budget is not None else [])
