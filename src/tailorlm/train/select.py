"""The overfitting and forgetting guard: decides at each evaluation what is best and when to stop.

- best: the evaluation with the best `metric` (its direction from the metric registry, eval/specs.py:
  val_loss lower, accuracy/macro_f1 higher; only a spec with select=True may choose) among those
  within the forgetting budget; its weights, not the last, become final/.
- early stopping: no improvement of at least `min_delta` for `patience` evaluations.
- forgetting budget: a checkpoint whose reference-NLL increase exceeds `max_forgetting` is never
  best, and the run stops once the budget is exceeded for `budget_patience` evaluations in a row.
- overfitting warning: validation loss rose while training loss fell since the last evaluation.
- evaluators' warnings (`*_warning` scores, e.g. a classifier that answers one class for everything)
  are repeated as the decision's warnings, which the console prints and metrics.jsonl logs.
- no score, no best: an evaluation without a finite `metric` (no held-out examples) never becomes best.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..eval.specs import spec


@dataclass
class Decision:
    improved: bool = False
    stop: str | None = None
    warnings: list[str] = field(default_factory=list)


class Guard:
    def __init__(self, metric: str = "val_loss", patience: int | None = None, min_delta: float = 0.0,
                 max_forgetting: float | None = None, budget_patience: int = 1):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.max_forgetting, self.budget_patience = max_forgetting, budget_patience
        self.spec = spec(metric, "eval.metric")   # selection minimises spec.cost(value)
        if not self.spec.select:
            raise ConfigError(f"eval.metric {metric!r} may not choose the best checkpoint (its spec says "
                              "select=False). Fix: val_loss, accuracy or macro_f1")
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.since_best = 0
        self.over_budget = 0
        self.last: tuple[float, float] | None = None   # (train_loss, val_loss) at the previous evaluation

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("best_value", "best_step", "since_best", "over_budget", "last")}

    def load(self, st: dict) -> None:
        for k, v in st.items():
            setattr(self, k, tuple(v) if k == "last" and v is not None else v)

    def update(self, step: int, scores: dict, train_loss: float | None) -> Decision:
        d = Decision(warnings=[v for k, v in scores.items() if k.endswith("_warning") and isinstance(v, str)])
        value = scores.get(self.metric)
        scored = isinstance(value, (int, float)) and math.isfinite(value)
        if not scored:
            d.warnings.append(f"no {self.metric} score at this evaluation (no held-out examples to score?); "
                              "it cannot become the best")
        drift = scores.get("ref_nll_change")
        within = self.max_forgetting is None or drift is None or drift <= self.max_forgetting
        if not within:
            self.over_budget += 1
            d.warnings.append(f"forgetting {drift:.4f} nats/token is over the budget {self.max_forgetting}; "
                              "this checkpoint cannot become final")
            if self.over_budget >= self.budget_patience:
                d.stop = f"forgetting budget exceeded for {self.over_budget} evaluation(s)"
        else:
            self.over_budget = 0
        if scored and within and (self.best_value is None or self.spec.cost(self.best_value) - self.spec.cost(value) > self.min_delta):
            self.best_value, self.best_step, self.since_best = value, step, 0
            d.improved = True
        else:
            self.since_best += 1
            if self.patience is not None and self.since_best >= self.patience and d.stop is None:
                d.stop = f"early stopping: no {self.metric} improvement for {self.since_best} evaluations"
        val = scores.get("val_loss")
        if self.last is not None and train_loss is not None and val is not None:
            if val > self.last[1] and train_loss < self.last[0]:
                d.warnings.append(f"overfitting: validation loss rose {self.last[1]:.4f} -> {val:.4f} while "
                                  f"training loss fell {self.last[0]:.4f} -> {train_loss:.4f}")
        if train_loss is not None and val is not None:
            self.last = (train_loss, val)
        return d
