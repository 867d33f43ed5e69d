"""Continual-learning metrics over the accuracy matrix R.

R has T+1 rows and T columns: R[0][i] is the base model on task i, R[t][i] the model after stage t
(1-based) on task i. With T the last stage:

    ACC  average accuracy     mean over i of R[T][i]                                  (Lopez-Paz & Ranzato 2017)
    BWT  backward transfer    mean over i < T of R[T][i] - R[i][i]                    (Lopez-Paz & Ranzato 2017)
    FWT  forward transfer     mean over i >= 2 of R[i-1][i] - R[0][i]                 (Lopez-Paz & Ranzato 2017)
    F    forgetting           mean over i < T of max over l in [i, T-1] of R[l][i] - R[T][i]
                                                                                  (Chaudhry et al. 2018)
    LA   learning accuracy    mean over i of R[i][i]                                  (Riemer et al. 2019)

Tasks are numbered 1..T here as in the papers; in code, column j holds task j+1. BWT and F are
undefined for one task (None), FWT for fewer than two. LA sits beside BWT because a weak first stage
makes BWT look good: nothing learnt, nothing to forget.

Only like units are averaged: a plan whose stages are scored in different units (accuracy for
classification stages, negative NLL in nats/token for instruction and text stages) gets each metric
once per unit, over that unit's tasks only (`by_unit`: "ACC" for one unit, "ACC[accuracy]" and
"ACC[neg_nll]" for two). `cols` restricts any metric to a subset of the tasks, keeping each task's
own stage (R[i][i] is still task i right after it was learnt).
"""
from __future__ import annotations

METRICS = ("ACC", "BWT", "FWT", "F", "LA")


def _check(R: list[list[float]]) -> int:
    T = len(R) - 1
    if T < 1 or any(len(row) != T for row in R):
        raise ValueError(f"R must have T+1 rows of T scores (row 0: the base model); got {[len(r) for r in R]}")
    return T


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _cols(T: int, cols) -> list[int]:
    return list(range(T)) if cols is None else [i for i in cols if 0 <= i < T]


def acc(R, cols=None) -> float | None:
    T = _check(R)
    return _mean([R[T][i] for i in _cols(T, cols)])


def bwt(R, cols=None) -> float | None:
    T = _check(R)
    return _mean([R[T][i] - R[i + 1][i] for i in _cols(T, cols) if i < T - 1])


def fwt(R, cols=None) -> float | None:
    T = _check(R)
    return _mean([R[i][i] - R[0][i] for i in _cols(T, cols) if i >= 1])   # task i+1 after stage i, vs the base


def forgetting(R, cols=None) -> float | None:
    T = _check(R)
    return _mean([max(R[l][i] for l in range(i + 1, T)) - R[T][i] for i in _cols(T, cols) if i < T - 1])


def learning_accuracy(R, cols=None) -> float | None:
    T = _check(R)
    return _mean([R[i + 1][i] for i in _cols(T, cols)])


def summary(R, cols=None) -> dict:
    return {"ACC": acc(R, cols), "BWT": bwt(R, cols), "FWT": fwt(R, cols), "F": forgetting(R, cols),
            "LA": learning_accuracy(R, cols)}


def by_unit(R, units: list[str] | None = None) -> dict:
    """summary(R) when every task is in one unit (or units is None), else each metric per unit over
    that unit's tasks: {"ACC[accuracy]": ..., "ACC[neg_nll]": ..., ...}."""
    kinds = list(dict.fromkeys(units or []))
    if len(kinds) <= 1:
        return summary(R)
    out = {}
    for u in kinds:
        for k, v in summary(R, [i for i, x in enumerate(units) if x == u]).items():
            out[f"{k}[{u}]"] = v
    return out


def metric_keys(units: list[str] | None) -> list[str]:
    """The keys by_unit gives for these units, in table order."""
    kinds = list(dict.fromkeys(units or []))
    return list(METRICS) if len(kinds) <= 1 else [f"{k}[{u}]" for u in kinds for k in METRICS]
