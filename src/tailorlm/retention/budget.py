"""A forgetting budget: the distillation weight steered so the probe's forgetting stays under it.

Instead of a fixed `retention.distill` weight the user must guess, the run solves

    minimise task loss   subject to   forgetting <= B        (forgetting: the probe's ref_nll_change,
                                                              nats/token; B: `retention.budget`)

by its Lagrangian, task loss + lambda * (distillation KL), with lambda, the distillation weight, a
Lagrange multiplier updated by projected dual ascent at each probe measurement:

    lambda <- clip(lambda + eta * (forgetting - B) / B, 0, lambda_max)       (eta: `budget_rate`)

Over budget the weight rises, the more the further over; under budget it only ever falls toward 0,
and with lambda at 0 and forgetting at or under the budget it stays exactly 0 (the clip): a run
that forgets less than the budget is the plain run. The violation is divided by B so that eta needs
no rescaling from one budget to another. This is the basic differential method of multipliers
(gradient descent on the parameters, ascent on the multiplier) of Platt & Barr 1988, "Constrained
differential optimization" (NIPS), with the multiplier projected onto lambda >= 0 for an
inequality constraint (Bertsekas 1982, "Constrained Optimization and Lagrange Multiplier Methods").
Their modified method adds a damping term (c * g * grad g, g the violation) to the parameters'
update to stop the multiplier oscillating; here the clip at lambda_max and the step normalised by B
bound the swing instead, and the damping is left out (it needs the gradient of the probe itself).

The forgetting is measured at every evaluation (the `retention` evaluator's ref_nll_change), and,
with `retention.budget_every`, also every that many steps between them (the probe alone: a few short
texts). The weight, its trajectory [[step, weight], ...] and the measurements are the callback's
state, checkpointed with the run (RunState.state_dict) so a resumed run steers exactly as an
uninterrupted one; every step's record logs the weight used (`distill_weight`), a measurement
between evaluations its value (`budget_forgetting`), and summary.json's "budget" holds the budget,
the forgetting reached and the trajectory.
"""
from __future__ import annotations

import math


def dual_step(weight: float, forgetting: float, budget: float, rate: float, most: float) -> float:
    """One projected dual-ascent step of the multiplier: clip(w + rate (f - B) / B, 0, most). A
    non-finite forgetting (a broken measurement) leaves the weight as it is."""
    if not math.isfinite(forgetting):
        return weight
    return min(most, max(0.0, weight + rate * (forgetting - budget) / budget))


class Budget:
    """The controller as a callback (train/callbacks.py events; run: a RunView), built on the run's
    Retention (its probe) and config (`retention.budget`, `budget_every`, `budget_rate`,
    `budget_max`; the weight starts at `retention.distill`)."""

    state_key = "retention_budget"

    def __init__(self, retention, rcfg):
        self.retention = retention
        self.budget, self.every = float(rcfg.budget), rcfg.budget_every
        self.rate, self.most = float(rcfg.budget_rate), float(rcfg.budget_max)
        self.weight = min(float(rcfg.distill), self.most)
        self.trajectory: list[list] = [[0, self.weight]]     # [step, weight] after each measurement
        self.measured: list[list] = []                       # [step, forgetting] at each measurement

    # ---- the controller
    def update(self, step: int, forgetting: float) -> float:
        """The forgetting measured after `step` steps: move the weight, record both; the new weight."""
        self.weight = dual_step(self.weight, float(forgetting), self.budget, self.rate, self.most)
        self.measured.append([step, float(forgetting)])
        self.trajectory.append([step, self.weight])
        return self.weight

    def _measured_at(self, step: int) -> bool:
        return bool(self.measured) and self.measured[-1][0] == step

    # ---- checkpointed with the run
    def state_dict(self) -> dict:
        return {"weight": self.weight, "trajectory": [list(p) for p in self.trajectory],
                "measured": [list(p) for p in self.measured]}

    def load_state_dict(self, st: dict) -> None:
        self.weight = float(st["weight"])
        self.trajectory = [list(p) for p in st["trajectory"]]
        self.measured = [list(p) for p in st["measured"]]

    # ---- callback events
    def on_step_start(self, run) -> None:
        """Between evaluations, every `budget_every` steps: the probe alone, then the update (before
        this step's loss, so the step trains with the new weight)."""
        s = run.step
        if self.every and s and s % self.every == 0 and not self._measured_at(s):
            f = self.retention.measure(run.model)["ref_nll_change"]
            self.update(s, f)
            run.note(budget_forgetting=f)

    def on_eval(self, run, scores: dict, verdict) -> None:
        f = scores.get("ref_nll_change")
        if f is None:   # the retention evaluator is not in eval.metrics: the probe itself
            f = self.retention.measure(run.model)["ref_nll_change"]
        self.update(run.step, f)

    def summary_part(self, summary: dict) -> dict:
        """summary.json's "budget": the budget, the forgetting reached (the final scores', else the last
        measured), the weight's trajectory and the measurements."""
        final = (summary.get("final") or {}).get("ref_nll_change")
        reached = final if final is not None else (self.measured[-1][1] if self.measured else None)
        return {"budget": {"budget": self.budget, "forgetting": reached,
                           "within": None if reached is None else bool(reached <= self.budget),
                           "weight": [list(p) for p in self.trajectory],
                           "measured": [list(p) for p in self.measured]}}
