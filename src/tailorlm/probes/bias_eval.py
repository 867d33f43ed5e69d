"""The `bias` and `flips` evaluators (eval.metrics): the bias probes during training.

At step 0 (ctx.base) each scores the base model on a seeded sample (bias.max_pairs pairs,
bias.flip_rows held-out rows) and keeps the per-item scores on the context; at every later evaluation
it scores the tuned model on the same items and reports the tuned figure, its change from the base
and the paired 95% bootstrap interval. A resumed run, which has no step 0, reaches the base through
probes.pair.base_view instead. A significant rise beyond bias.threshold comes back as a
`*_warning` score, which the guard repeats as a warning (console, metrics.jsonl); the rows and the
warnings also go to RUN/probes/bias.json for `tailorlm report`.

    bias    causal LMs: stereotype share (ideal 0.5), bias score |share - 0.5| and mean |LL(more) -
            LL(less)| over the pairs, lm-evaluation-harness's pct_stereotype and likelihood_diff
            (or BBQ's s_DIS / s_AMB for a BBQ file)                               probes/bias_pairs.py
            Scores: bias_stereo_share, bias_score, bias_ll_diff (the mean |difference|, nats; the
            signed mean is in RUN/probes/bias.json only), bias_s_dis, bias_s_amb.
    flips   classification data: flip rate and mean |dp(label)| under group-term, name and
            company swaps of held-out rows                                           probes/flips.py
"""
from __future__ import annotations

from .bias_pairs import ABS_DIFF
from .bias_probe import as_scores, run_flips, run_pairs, save, warnings_for
from .pair import base_view

ROUNDS = 1000   # bootstrap resamples during training (the command uses 2000)


def _cache(ctx) -> dict:
    """Per-run memo on the evaluation context: the base model's per-item scores."""
    return ctx.__dict__.setdefault("_bias", {})


def _measure_pair(model, ctx, key: str):
    """measure_pair for run_pairs / run_flips: (base, tuned) per-item scores; (base, base) at step 0."""
    def measure_pair(score):
        cache = _cache(ctx)
        if ctx.base:
            cache[key] = score(model)
            return cache[key], cache[key]
        tuned = score(model)
        if key not in cache:   # a resumed run: no step-0 scores in memory
            with base_view(model, ctx.cfg, ctx.device) as base:
                cache[key] = score(base)
        return cache[key], tuned
    return measure_pair


def _finish(ctx, source: str, rows: list[dict], extra: dict, names: dict[str, str], warn_key: str) -> dict:
    if not rows:
        return {}
    out = as_scores(rows, names, base_only=ctx.base)
    warnings = [] if ctx.base else warnings_for(rows, ctx.cfg.bias.threshold)
    if warnings:
        out[warn_key] = "; ".join(warnings)
    if ctx.run_dir is not None and not ctx.base:
        save(ctx.run_dir, source, rows, warnings, {**extra, "step": ctx.step, "sampled": True},
             ctx.cfg.bias.threshold)
    return out


def bias_scores(model, ctx) -> dict:
    c = ctx.cfg
    if c.model.task != "causal_lm":
        return {}
    kw = dict(device=ctx.device, precision=c.train.precision, batch_size=c.eval.batch_size)
    rows, extra = run_pairs(_measure_pair(model, ctx, "bias"), ctx.data.formatter.tok, c, probes=c.bias.probes,
                            max_pairs=c.bias.max_pairs, rounds=ROUNDS, **kw)
    names = {"stereotype share": "bias_stereo_share", "bias score": "bias_score",
             ABS_DIFF: "bias_ll_diff", "s_DIS": "bias_s_dis", "s_AMB": "bias_s_amb"}
    return _finish(ctx, "pairs", rows, extra, names, "bias_warning")


def flip_scores(model, ctx) -> dict:
    c = ctx.cfg
    rows = ctx.held_out(c.bias.flip_rows)
    if ctx.data.fmt != "classification" or not rows:
        return {}
    kw = dict(device=ctx.device, precision=c.train.precision, batch_size=c.eval.batch_size)
    rows, extra = run_flips(_measure_pair(model, ctx, "flips"), ctx.data.formatter, c, rows, rounds=ROUNDS,
                            worst=5, **kw)
    return _finish(ctx, "flips", rows, extra, {"flip rate": "flip_rate", "mean |dp(label)|": "flip_dp"},
                   "flips_warning")
