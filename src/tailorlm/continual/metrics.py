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
"""
from __future__ import annotations


def _check(R: list[list[float]]) -> int:
    T = len(R) - 1
    if T < 1 or any(len(row) != T for row in R):
        raise ValueError(f"R must have T+1 rows of T scores (row 0: the base model); got {[len(r) for r in R]}")
    return T


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def acc(R) -> float:
    T = _check(R)
    return _mean([R[T][i] for i in range(T)])


def bwt(R) -> float | None:
    T = _check(R)
    return _mean([R[T][i] - R[i + 1][i] for i in range(T - 1)])


def fwt(R) -> float | None:
    T = _check(R)
    return _mean([R[i][i] - R[0][i] for i in range(1, T)])   # task i+1 (>= 2) after stage i, against the base


def forgetting(R) -> float | None:
    T = _check(R)
    return _mean([max(R[l][i] for l in range(i + 1, T)) - R[T][i] for i in range(T - 1)])


def learning_accuracy(R) -> float:
    T = _check(R)
    return _mean([R[i + 1][i] for i in range(T)])


def summary(R) -> dict:
    return {"ACC": acc(R), "BWT": bwt(R), "FWT": fwt(R), "F": forgetting(R), "LA": learning_accuracy(R)}
