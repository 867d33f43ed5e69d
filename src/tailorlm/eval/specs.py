"""The metric registry: every score an evaluator returns has one spec, and everything that judges a
score asks it: checkpoint selection (train/select.py), the report's colours and "lower is better"
labels, `compare`'s gains and Pareto fronts, and `continual`'s tables. Nothing guesses a direction
from a metric's name.

    direction  "higher" | "lower" is better; "target": closer to `target` is better (a membership
               AUC of 0.5, a stereotype share of 0.5, BBQ's s_DIS of 0); "info": a count or a
               control, neither better nor worse (validation tokens, the majority-class rate)
    unit       what one unit is ("fraction", "nats/token", "bits", "AUC", ...): tables average only
               like units
    lo, hi     the range a value can take (None: unbounded)
    select     whether it may choose the best checkpoint (eval.metric)
    delta      whether `summary.json`'s "delta" (score - base score) is reported for it; a score that
               is itself a change from the base (ref_nll_change, kl_to_base) has none

An evaluator registers the metrics it returns with it (`register` in eval/evaluators.py); a name may
be a glob (`fewshot*_accuracy`, `exposure_*x`). An evaluator from outside declares its specs with
`@declares(name=MetricSpec(...))`; one without specs is refused when it is resolved, and a returned
number without a spec is refused when it is scored: a one-line ConfigError naming the metric.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError

DIRECTIONS = ("higher", "lower", "target", "info")


@dataclass(frozen=True)
class MetricSpec:
    direction: str
    unit: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    target: Optional[float] = None
    select: bool = False
    delta: bool = True
    doc: str = ""

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if (self.direction == "target") != (self.target is not None):
            raise ValueError("a target (and only a 'target' direction) needs target=")

    def cost(self, v: float) -> float:
        """What selection minimises: -v, v or |v - target| (info: 0, nothing to prefer)."""
        return {"higher": -v, "lower": v, "info": 0.0}.get(self.direction, abs(v - (self.target or 0.0)))

    def gain(self, tuned: float, base: float) -> float:
        """Positive when `tuned` is better than `base`: cost(base) - cost(tuned)."""
        return self.cost(base) - self.cost(tuned)

    def better(self, a: float, b: float) -> bool:
        return self.cost(a) < self.cost(b)

    @property
    def label(self) -> str:
        if self.direction == "target":
            return f"closer to {self.target:g} is better"
        return {"higher": "higher is better", "lower": "lower is better"}.get(self.direction, "")

    @property
    def arrow(self) -> str:
        """HTML arrow: the way that is better (a target: a diamond)."""
        return {"higher": "&uarr;", "lower": "&darr;", "target": "&loz;"}.get(self.direction, "")

    def good_change(self, base: float, tuned: float) -> bool | None:
        """Whether the move base -> tuned is an improvement (None: no direction, or no move)."""
        if self.direction == "info" or tuned == base or not (math.isfinite(base) and math.isfinite(tuned)):
            return None
        return self.gain(tuned, base) > 0


# name (or glob) -> spec; the evaluator that returns it in OWNER
METRICS: dict[str, MetricSpec] = {}
OWNER: dict[str, str] = {}


def register_metrics(evaluator: str, specs: dict[str, MetricSpec]) -> None:
    if not specs:
        raise ConfigError(f"evaluator {evaluator!r} declares no metrics. Fix: give each metric it returns a "
                          "MetricSpec (tailorlm.eval.specs)")
    for name, s in specs.items():
        if not isinstance(s, MetricSpec):
            raise ConfigError(f"evaluator {evaluator!r}: metric {name!r} has no MetricSpec (got {s!r})")
        METRICS[name], OWNER[name] = s, evaluator


def declares(**specs: MetricSpec):
    """Decorator for an evaluator written outside tailorlm: the specs of the metrics it returns."""
    def mark(fn):
        fn.metrics = dict(specs)
        return fn
    return mark


def _entry(name: str) -> Optional[str]:
    """The registry entry `name` falls under: itself, else the first glob it matches; None if neither."""
    from . import evaluators   # (the built-in evaluators register their metrics on import, the plugins' on load)
    evaluators.load_plugins()
    if name in METRICS:
        return name
    return next((pat for pat in METRICS if any(c in pat for c in "*?[") and fnmatch.fnmatchcase(name, pat)), None)


def find(name: str) -> Optional[MetricSpec]:
    """The spec of `name` (an exact entry first, then a glob), or None."""
    entry = _entry(name)
    return METRICS[entry] if entry else None


def owner(name: str) -> Optional[str]:
    """The evaluator that returns `name` (as `find` looks it up), or None: what says which split it scored."""
    entry = _entry(name)
    return OWNER[entry] if entry else None


def spec(name: str, where: str = "metric") -> MetricSpec:
    """The spec of `name`; a one-line ConfigError naming the metric when there is none."""
    s = find(name)
    if s is None:
        known = ", ".join(sorted(n for n in METRICS if METRICS[n].direction != "info"))
        raise ConfigError(f"{where} {name!r} has no metric spec (direction, unit, range), so tailorlm cannot "
                          f"tell whether higher is better. Fix: one of {known}, or register a MetricSpec")
    return s


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
