"""Bootstrap confidence intervals (Efron & Tibshirani 1993, percentile method).

`bootstrap(stat, n)` resamples item indices with replacement and returns the statistic on all items
and the (alpha/2, 1 - alpha/2) percentiles of its resampled values. `paired_change` is the paired
form for base-vs-tuned probes: the same resampled items score both models, so the interval of
tuned - base excludes the between-item spread that both share.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def bootstrap(stat: Callable[[np.ndarray], float], n: int, *, rounds: int = 2000, alpha: float = 0.05,
              seed: int = 0) -> dict:
    """{value, lo, hi}: stat(indices) on all n items, and its percentile interval over `rounds`
    resamples of n indices drawn with replacement. stat receives an int array of item indices."""
    if n == 0:
        return {"value": float("nan"), "lo": float("nan"), "hi": float("nan")}
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(rounds)], dtype=float)
    draws = draws[np.isfinite(draws)]
    lo, hi = (np.quantile(draws, [alpha / 2, 1 - alpha / 2]) if draws.size else (float("nan"),) * 2)
    return {"value": float(stat(np.arange(n))), "lo": float(lo), "hi": float(hi)}


def paired_change(base: Sequence[float], tuned: Sequence[float], *, stat: Callable[[np.ndarray], float] = np.mean,
                  rounds: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """{base, tuned, change, lo, hi, significant}: stat over items for each model and the paired
    bootstrap interval of stat(tuned) - stat(base); `significant` when the interval excludes 0."""
    b, t = np.asarray(base, dtype=float), np.asarray(tuned, dtype=float)
    if b.shape != t.shape:
        raise ValueError(f"paired_change: base has {b.shape} items, tuned {t.shape}: score the same inputs")
    ci = bootstrap(lambda i: stat(t[i]) - stat(b[i]), len(b), rounds=rounds, alpha=alpha, seed=seed)
    out = {"base": float(stat(b)) if len(b) else float("nan"), "tuned": float(stat(t)) if len(t) else float("nan"),
           "change": ci["value"], "lo": ci["lo"], "hi": ci["hi"]}
    out["significant"] = bool(len(b) and (ci["lo"] > 0 or ci["hi"] < 0))
    return out
