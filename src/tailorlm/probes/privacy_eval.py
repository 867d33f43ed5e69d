"""The privacy evaluators (eval.metrics: canaries, membership, extraction): cheap forms of the privacy
probe, scored at step 0, every evaluation and the end on a seeded sample (privacy.sample examples of
each side; canaries ranked among at most 256 references). `tailorlm privacy RUN` scores everything,
with intervals. Each returns {} where it does not apply (no canaries configured, a classifier head).
"""
from __future__ import annotations

import numpy as np

from .canaries import make_canaries
from .membership import auc
from .pair import base_view
from .privacy import exposures, measure_canaries, measure_examples

EVAL_REFERENCES = 256


def _cache(ctx) -> dict:
    """Per-run memo on the evaluation context: the canaries and the base model's figures."""
    return ctx.__dict__.setdefault("_privacy", {})


def _base(model, ctx, key: str, fn) -> dict:
    """fn(base model), once per run: the model itself at step 0, later inside pair.base_view (a
    resumed run has no step 0)."""
    cache = _cache(ctx)
    if key not in cache:
        if ctx.base:
            cache[key] = fn(model)
        else:
            with base_view(model, ctx.cfg, ctx.device) as b:
                cache[key] = fn(b)
    return cache[key]


def canary_scores(model, ctx) -> dict:
    """Mean canary exposure (Carlini et al. 2019: log2(|R|+1) - log2(rank)) per repetition level
    (`exposure_16x`) and of the never-inserted controls (`exposure_never`, chance ~1.44)."""
    cfg = ctx.cfg
    if not cfg.privacy.canaries.count or cfg.model.task != "causal_lm":
        return {}
    cache = _cache(ctx)
    if "canaries" not in cache:
        cache["canaries"] = make_canaries(cfg.privacy.canaries, cfg.train.seed)
    c = cache["canaries"]
    got = measure_canaries(model, cfg, ctx.data.formatter.tok, c, ctx.device, EVAL_REFERENCES)
    exp, reps = exposures(c, got["canary_nll"])["rank"], np.array([x["repetitions"] for x in c.inserted] +
                                                                   [0] * len(c.never))
    return {(f"exposure_{lv}x" if lv else "exposure_never"): float(exp[reps == lv].mean()) for lv in c.levels() + [0]}


def _examples(model, ctx, extract: bool) -> dict:
    """NLL (for membership) or extraction matches, on privacy.sample training and held-out examples."""
    p, cfg = ctx.cfg.privacy, ctx.cfg
    return measure_examples(model, cfg, ctx.data, k=p.prefix_tokens, m=p.suffix_tokens, n=p.sample,
                            device=ctx.device, extract=extract, nll=not extract)


def membership_scores(model, ctx) -> dict:
    """AUC of the reference attack (NLL_tuned - NLL_base; 0.5 at step 0 by construction) and of the
    loss attack (NLL alone), training vs held-out examples (membership.py)."""
    if ctx.cfg.model.task != "causal_lm" or not ctx.data.val:
        return {}
    base = _base(model, ctx, "examples_nll", lambda m: _examples(m, ctx, extract=False))
    tuned = base if ctx.base else _examples(model, ctx, extract=False)
    ref_m, ref_n = tuned["nll_train"] - base["nll_train"], tuned["nll_held"] - base["nll_held"]
    return {"mia_auc": auc(ref_m, ref_n), "mia_loss_auc": auc(tuned["nll_train"], tuned["nll_held"])}


def extraction_scores(model, ctx) -> dict:
    """Discoverable-extraction rates (Carlini et al. 2022) on the training and held-out sample, and the gap."""
    if ctx.cfg.model.task != "causal_lm" or not ctx.data.val:
        return {}
    got = _examples(model, ctx, extract=True)
    if not (len(got["extract_train"]) and len(got["extract_held"])):
        return {}
    tr, ho = float(got["extract_train"].mean()), float(got["extract_held"].mean())
    return {"extraction_train": tr, "extraction_heldout": ho, "extraction_gap": tr - ho}
