"""Which charts a run (or several, overlaid) gets, built from collect.read_run's dicts.

Training: loss (raw, smoothed, and validation loss, with the base model's validation loss as a dashed
line), learning rate, gradient norm, tokens/s, memory (any logged key naming memory). Evaluations: one
chart per score over steps with the base model's step-0 value as a line (accuracy also gets the
majority-class rate). Forgetting: the retention measures (retention/probe.py: `ref_nll_change` = mean
per-token NLL change on text the base model wrote, `kl_to_base` = KL(base || tuned) per token) over steps,
with a forgetting budget (retention.budget) its line and the distillation weight it set.
Run k has colour k in every chart; within a run, raw loss is faint, validation dashed.
"""
from __future__ import annotations

import math

from ..eval.metrics import NOT_FOR_CLASSIFICATION
from ..eval.specs import find
from .svg import colour, finite, line_chart

FORGETTING = ("ref_nll_change", "kl_to_base", "ref_nll")
NOT_CHARTED = {"step", "val_tokens", "majority", "val_loss"}   # (val_loss is on the loss chart)
MEMORY_HINTS = ("mem", "rss", "vram")


def ema(values: list[float], beta: float) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing; Adam's bias correction, Kingma &
    Ba 2015): m_t = beta m_{t-1} + (1 - beta) x_t, shown as m_t / (1 - beta^t), so early points are not
    pulled toward 0. Non-finite values (a skipped step) are passed over."""
    out, m, t = [], 0.0, 0
    for v in values:
        if finite(v):
            t += 1
            m = beta * m + (1 - beta) * v
        out.append(m / (1 - beta ** t) if t else math.nan)
    return out


def smoothing(n: int) -> float:
    """A twentieth of the logged points averaged: beta with an effective window 1/(1 - beta) ~ n/20, in
    [0.6, 0.98] (a wider window lags behind a falling loss)."""
    return min(0.98, max(0.6, 1 - 20 / max(n, 1)))


def direction_label(metric: str) -> str:
    """'lower is better', 'higher is better', 'closer to 0.5 is better' from the metric registry; '' for
    a count, a control or a metric tailorlm has no spec for (an older run's outside evaluator)."""
    s = find(metric)
    return s.label if s else ""


def _series(steps: list[dict], key: str) -> list[tuple]:
    return [(r["step"], r.get(key)) for r in steps if "step" in r]


def _label(run: dict, what: str, many: bool) -> str:
    return f"{run['name']}: {what}" if many else what


def _base_lines(runs: list[dict], key: str, label: str = "base model", fixed: str | None = None) -> list[dict]:
    """The base model's value of `key`, once per distinct value (runs on one base share one line), in
    the run's colour (grey for one run; `fixed`: one colour for all, a property of the data)."""
    seen, out = set(), []
    for i, r in enumerate(runs):
        v = (r.get("base") or {}).get(key)
        if finite(v) and round(v, 9) not in seen:
            seen.add(round(v, 9))
            name = label if len(runs) == 1 else f"{r['name']}: {label}"
            out.append({"name": name, "y": v, "colour": fixed or ("#555" if len(runs) == 1 else colour(i))})
    return out


def loss_chart(runs: list[dict]) -> str:
    many, series = len(runs) > 1, []
    for i, r in enumerate(runs):
        raw = _series(r["steps"], "loss")
        smooth = ema([v for _, v in raw], smoothing(len(raw)))
        val = [(e["step"], e["eval"].get("val_loss")) for e in r["evals"]]
        series += [{"name": _label(r, "train loss", many), "points": raw, "colour": colour(i) if many else "#9ecae1",
                    "opacity": 0.45 if many else None},
                   {"name": _label(r, "train loss (smoothed)", many), "points": list(zip([s for s, _ in raw], smooth)),
                    "colour": colour(i)},
                   {"name": _label(r, "val loss", many), "points": val, "dashed": True,
                    "colour": colour(i) if many else colour(1)}]
    return line_chart(series, title="loss", y_label="loss (nats/token)", hlines=_base_lines(runs, "val_loss",
                                                                                          "base val loss"))


def step_chart(runs: list[dict], keys: tuple, title: str, y_label: str = "", **opts) -> str | None:
    """A line per run and key of step-record keys (several runs: the run's colour, later keys dashed;
    one run: a colour per key); None when no run logged any."""
    many, series = len(runs) > 1, []
    for i, r in enumerate(runs):
        for j, key in enumerate(k for k in keys if any(k in s for s in r["steps"])):
            name = key.replace("_", " ") if len(keys) > 1 else title
            series.append({"name": _label(r, name, many), "points": _series(r["steps"], key),
                           "colour": colour(i if many else j), "dashed": many and j > 0})
    return line_chart(series, title=title, y_label=y_label, **opts) if series else None


def training_charts(runs: list[dict]) -> list[str]:
    mem = list(dict.fromkeys(k for r in runs for s in r["steps"] for k, v in s.items()
                             if any(h in k.lower() for h in MEMORY_HINTS) and finite(v)))
    charts = [loss_chart(runs),
              step_chart(runs, ("lr",), "learning rate"),
              step_chart(runs, ("grad_norm",), "gradient norm", "L2 norm, before clipping"),
              step_chart(runs, ("useful_tokens_per_s",), "tokens/s", "tokens/s, padding not counted")
              or step_chart(runs, ("tokens_per_s",), "tokens/s"),
              step_chart(runs, tuple(mem), "memory", "MiB", y_zero=True) if mem else None]
    return [c for c in charts if c]


def charted(run: dict, key: str) -> bool:
    return key not in NOT_CHARTED and not (run.get("classification") and key in NOT_FOR_CLASSIFICATION)


def score_names(runs: list[dict]) -> list[str]:
    """Every numeric evaluation score of any run (base or evaluations), in first-seen order; a
    classification run's perplexity left out."""
    names = {}
    for r in runs:
        for scores in [r.get("base") or {}] + [e["eval"] for e in r["evals"]]:
            for k, v in scores.items():
                if finite(v) and charted(r, k):
                    names.setdefault(k, None)
    return list(names)


def score_chart(runs: list[dict], key: str) -> str:
    many, series = len(runs) > 1, []
    for i, r in enumerate(runs):
        if not charted(r, key):
            continue
        pts = [(e["step"], e["eval"].get(key)) for e in r["evals"]]
        if finite((r.get("base") or {}).get(key)):
            pts = [(0, r["base"][key])] + pts      # step 0: the base model, where the line starts
        series.append({"name": _label(r, key, many), "points": pts, "colour": colour(i)})
    hlines = _base_lines(runs, key) if key not in FORGETTING else []
    if key == "ref_nll_change":   # a forgetting budget (retention.budget) is the line not to cross
        hlines += [{"name": _label(r, "forgetting budget", many), "y": b, "colour": "#c0392b"}
                   for r in runs if finite(b := ((r.get("config") or {}).get("retention") or {}).get("budget"))]
    if key == "accuracy":
        hlines += _base_lines(runs, "majority", "majority class", fixed="#c0392b")   # the bar to beat
    return line_chart(series, title=key, y_label=direction_label(key), hlines=hlines)


def eval_charts(runs: list[dict]) -> tuple[list[str], list[str]]:
    """(score charts, forgetting charts)."""
    names = score_names(runs)
    scores = [score_chart(runs, k) for k in names if k not in FORGETTING]
    forgetting = [score_chart(runs, k) for k in FORGETTING if k in names]
    weight = step_chart(runs, ("distill_weight",), "distillation weight", "set by the forgetting budget", y_zero=True)
    return scores, forgetting + ([weight] if weight else [])
