"""The privacy evaluators (eval.metrics: canaries, membership, extraction): cheap forms of the privacy
probe, scored at step 0, every evaluation and the end on a seeded sample (privacy.sample examples of
each side; canaries ranked among at most 256 references). `tailorlm privacy RUN` scores everything,
with intervals. Each returns {} where it does not apply (no canaries configured, a classifier head).

The training sample is drawn from the rows the run trains on by its last configured step (the run's
data order, membership.trained_rows), the held-out one from validation/test rows and the training
rows it never reaches. An evaluation at step s scores as members only the sampled rows steps 1..s
trained on; step 0 (the base model) scores the whole training sample: the control. Outside the
training loop (`tailorlm eval RUN`, ctx.step 0 on a tuned model) s is the configured last step.
"""
from __future__ import annotations

import numpy as np

from .canaries import make_canaries
from .membership import auc, trained_rows
from .pair import base_view
from .privacy import (exposures, held_out_examples, measure_canaries, measure_examples, order_size,
                      split_by_training)
from .privacy_scoring import sample, shared_head

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


def _samples(ctx) -> dict:
    """Once per run: {tr: indices into data.train of the sampled training rows the run trains on by
    cfg.train.steps, ho: the sampled held-out examples, head: the tokens they all share}."""
    cache, cfg, data = _cache(ctx), ctx.cfg, ctx.data
    if "samples" not in cache:
        members, non, _ = split_by_training(data, cfg, cfg.train.steps, held_out_examples(data, cfg))
        tr, ho = sample(members, cfg.privacy.sample, cfg.train.seed), sample(non, cfg.privacy.sample, cfg.train.seed)
        cache["samples"] = {"tr": tr, "ho": ho, "head": shared_head([data.train[i] for i in tr] + ho)}
    return cache["samples"]


def _trained_now(ctx, tr: list[int]) -> np.ndarray:
    """(len(tr),) bool: which sampled training rows the model scored now has trained on."""
    if ctx.base:
        return np.ones(len(tr), bool)                        # the control: the rows the run will train on
    step = ctx.step or ctx.cfg.train.steps                   # 0 outside the training loop: a finished run
    seen = trained_rows(order_size(ctx.data, ctx.cfg), ctx.cfg.train, step, ctx.data.groups)
    return np.array([i in seen for i in tr], bool)


def _examples(model, ctx, tr: list[int], extract: bool) -> dict:
    """NLL (for membership) or extraction matches, on the training rows `tr` and the held-out sample."""
    p, cfg, s = ctx.cfg.privacy, ctx.cfg, _samples(ctx)
    return measure_examples(model, cfg, ctx.data.formatter.tok, [ctx.data.train[i] for i in tr], s["ho"],
                            k=p.prefix_tokens, m=p.suffix_tokens, device=ctx.device, head=s["head"],
                            extract=extract, nll=not extract)


def membership_scores(model, ctx) -> dict:
    """AUC of the reference attack (NLL_tuned - NLL_base; 0.5 at step 0 by construction) and of the
    loss attack (NLL alone), trained-on vs held-out examples (membership.py)."""
    if ctx.cfg.model.task != "causal_lm" or not ctx.data.val:
        return {}
    tr = _samples(ctx)["tr"]
    now = _trained_now(ctx, tr)
    if not now.any():
        return {}
    base = _base(model, ctx, "examples_nll", lambda m: _examples(m, ctx, tr, extract=False))
    tuned = base if ctx.base else _examples(model, ctx, [i for i, k in zip(tr, now) if k], extract=False)
    b_train = base["nll_train"][now]                         # (members now,): the base on the same rows
    ref_m, ref_n = tuned["nll_train"] - b_train, tuned["nll_held"] - base["nll_held"]
    return {"mia_auc": auc(ref_m, ref_n), "mia_loss_auc": auc(tuned["nll_train"], tuned["nll_held"])}


def extraction_scores(model, ctx) -> dict:
    """Discoverable-extraction rates (Carlini et al. 2022) on the trained tokens of the trained-on and
    held-out samples, and the gap (extraction.py)."""
    if ctx.cfg.model.task != "causal_lm" or not ctx.data.val:
        return {}
    tr = _samples(ctx)["tr"]
    now = _trained_now(ctx, tr)
    got = _examples(model, ctx, [i for i, k in zip(tr, now) if k], extract=True)
    if not (len(got["extract_train"]) and len(got["extract_held"])):
        return {}
    tr_rate, ho = float(got["extract_train"].mean()), float(got["extract_held"].mean())
    return {"extraction_train": tr_rate, "extraction_heldout": ho, "extraction_gap": tr_rate - ho}
