"""The evaluator registry: name -> function(model, ctx) -> {metric: value}.

One evaluator, one function, one entry. The loop (at step 0 on the base model, at every evaluation,
at the end), `tailorlm eval` and anything built beside the loop score a model through `evaluate`,
so base-model scores and deltas exist for every evaluator. `eval.metrics` chooses which run; each
evaluator returns {} where it does not apply (accuracy on text data, generation without
`eval.generate`), so the default list reproduces the scores of every data format.

    val_loss    token-weighted mean NLL on the validation examples and its perplexity exp(NLL)
                (val_loss, val_ppl, val_tokens)                             eval/metrics.py
    accuracy    classification: accuracy and macro-F1 by label likelihood or the head's argmax,
                the majority-class rate, the predicted label counts, and `accuracy_warning`
                when the predictions collapse to one class or do not beat the majority rate
                (the guard repeats it as a warning)                             eval/tasks.py
    generation  instruction data: greedy answers scored by exact match, token F1, ROUGE-L; the
                answers themselves go to ctx.samples and, in a run, RUN/samples.jsonl
                                                                                eval/text_metrics.py
    fewshot     the base model only: accuracy with k training examples in context (Brown et al.
                2020), the baseline tuning must beat                            eval/tasks.py
    preference  preference data under train.objective dpo / simpo: pref_accuracy, reward_margin,
                pref_loss, chosen_logp, rejected_logp on held-out pairs      objectives/loss.py
    retention   forgetting on general text: reference NLL, its change from the base, and
                KL(base || tuned) at fixed positions                            retention/probe.py
    canaries, membership, extraction, bias, flips
                the privacy and bias probes: registered by probes/evaluators.py, a module named in
                PLUGINS and imported on the registry's first lookup (eval does not import the probes)

An evaluator with no data to score returns {} (an empty validation set has no loss, not loss 0).
A user's evaluator plugs in without editing tailorlm: `register("name", fn, {metric: MetricSpec(...)})`,
or an import path `"package.module:function"` in `eval.metrics` to a function decorated with
`@declares(metric=MetricSpec(...))`. Every number an evaluator returns has a spec in the metric
registry (eval/specs.py: direction, unit, range, whether it may select the best checkpoint); one
without is refused with a one-line error when it is scored.
"""
from __future__ import annotations

import difflib
import importlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..atomic import append_lines
from ..errors import ConfigError
from ..run import RunDir, start_model
from ..methods import METHODS
from ..objectives import OBJECTIVES, settings
from ..objectives.loss import Reference, score_pairs
from .generate import generation_eval
from .metrics import val_loss
from .specs import METRICS, MetricSpec, find, is_number, register_metrics
from .tasks import ACCURACY


@dataclass
class EvalContext:
    """What an evaluator may read. `probe` is the run's retention probe (anything with
    `measure(model)` and a step-0 `base`), None when forgetting is not measured."""
    cfg: Any                      # the validated Config
    data: Any                     # the built Data (examples, rows, formatter)
    device: str
    probe: Optional[Any] = None
    base: bool = False            # True while scoring the base model at step 0
    run_dir: Optional[Path] = None   # a run's directory (rank 0 only): evaluators may write files there
    step: int = 0                 # the step being scored (set by the loop after each step)
    samples: list = field(default_factory=list)   # the latest generations: {step, prompt, reference, generated}
    reference: Optional[Any] = None   # a run's preference reference model (objectives/loss.py), set once the method is on

    def held_out(self, n: int) -> list[dict]:
        """The first n held-out rows: the test split when there is one, else validation."""
        return (self.data.test_rows or self.data.val_rows)[:n]

    def scored_on(self, evaluator: str) -> tuple[str, int] | None:
        """(split, rows) the built-in evaluator scores, as each function below slices it: val_loss the
        first eval.max_examples validation examples, accuracy and fewshot as many held-out rows,
        generation eval.generate of them; None for the others (reference text, probes' own data)."""
        e, split = self.cfg.eval, "test" if self.data.test_rows else "val"
        rows = {"val_loss": ("val", len(self.data.val[: e.max_examples])),
                "accuracy": (split, len(self.held_out(e.max_examples))),
                "fewshot": (split, len(self.held_out(e.max_examples))),
                "generation": (split, len(self.held_out(e.generate or 0))),
                "preference": ("val", len(self.data.val[: e.max_examples]))}
        return rows.get(evaluator)


Evaluator = Callable[[torch.nn.Module, EvalContext], dict]


def val_loss_scores(model, ctx: EvalContext) -> dict:
    c, tok = ctx.cfg, ctx.data.formatter.tok
    if not ctx.data.val:
        return {}
    scores = val_loss(model, ctx.data.val[: c.eval.max_examples], pad_id=tok.pad_token_id, device=ctx.device,
                      precision=c.train.precision, batch_size=c.eval.batch_size, packing=c.data.packing,
                      row_tokens=c.data.max_length, task=c.model.task)
    return {f"val_{k}": v for k, v in scores.items()}


def accuracy_scores(model, ctx: EvalContext) -> dict:
    c = ctx.cfg
    rows = ctx.held_out(c.eval.max_examples)
    if ctx.data.fmt != "classification" or not rows:
        return {}
    acc = ACCURACY[c.model.task](model, ctx.data.formatter, rows, device=ctx.device,
                                 precision=c.train.precision, batch_size=c.eval.batch_size)
    return {k: acc[k] for k in ("accuracy", "macro_f1", "majority", "predicted", "per_class", "confusion",
                                "collapsed", "accuracy_warning") if k in acc}


def generation_scores(model, ctx: EvalContext) -> dict:
    """Scores, and the generated answers themselves: in ctx.samples and appended to RUN/samples.jsonl
    (one line per held-out row and evaluation), since a score alone does not show what the model says."""
    e = ctx.cfg.eval
    rows = ctx.held_out(e.generate)
    if ctx.data.fmt != "instruction" or not e.generate or not rows:
        return {}
    scores, samples = generation_eval(model, ctx.data, rows, e.max_new_tokens, ctx.device)
    ctx.samples = [{"step": 0 if ctx.base else ctx.step, **s} for s in samples]
    if ctx.run_dir is not None:   # (whole lines or none; a full disk is said once and the run goes on)
        lines = [json.dumps(s, ensure_ascii=False) + "\n" for s in ctx.samples]
        append_lines(RunDir.at(ctx.run_dir).samples_file, lines,
                     "these generations are not kept there (the console shows some); training goes on")
    return scores


def fewshot_scores(model, ctx: EvalContext) -> dict:
    """The base model prompted with k seeded training examples in context: what tuning must beat."""
    c, k = ctx.cfg, ctx.cfg.eval.fewshot
    if not (ctx.base and k and ctx.data.fmt == "classification" and c.model.task == "causal_lm"):
        return {}
    shots = random.Random(c.train.seed).sample(ctx.data.train_rows, min(k, len(ctx.data.train_rows)))
    acc = ACCURACY[c.model.task](model, ctx.data.formatter, ctx.held_out(c.eval.max_examples), device=ctx.device,
                                 precision=c.train.precision, batch_size=c.eval.batch_size, shots=shots)
    return {f"fewshot{k}_accuracy": acc["accuracy"], f"fewshot{k}_macro_f1": acc["macro_f1"]}


def preference_scores(model, ctx: EvalContext) -> dict:
    """Held-out preference pairs (validation) under the run's objective (train.objective dpo / simpo):
    the share of pairs whose implicit reward prefers the chosen answer, the mean reward margin, the
    objective's loss, and the answers' mean summed log-probabilities (objectives/loss.py). The base
    model at step 0 is its own reference (every DPO reward 0); in a run, the reference is the run's
    (ctx.reference); outside one (`tailorlm eval`), an adapter's is the model with the adapter off,
    full fine-tuning's the starting model loaded again (once, kept in ctx.reference)."""
    c = ctx.cfg
    pairs = ctx.data.val[: c.eval.max_examples]
    if ctx.data.fmt != "preference" or c.train.objective not in OBJECTIVES or not pairs:
        return {}
    method = METHODS[c.method.name]
    if not ctx.base and ctx.reference is None and OBJECTIVES[c.train.objective].reference:
        base = start_model(c, tokenizer=ctx.data.formatter.tok)[0].to(ctx.device) if method.disabled(model) is None \
            else None
        ctx.reference = Reference(model, method, base=base)
    return score_pairs(model, pairs, c.train.objective, settings(c.train), None if ctx.base else ctx.reference,
                       pad_id=ctx.data.formatter.tok.pad_token_id, device=ctx.device, precision=c.train.precision,
                       batch_size=c.eval.batch_size)


def retention_scores(model, ctx: EvalContext) -> dict:
    if ctx.probe is None:
        return {}
    return dict(ctx.probe.base) if ctx.base else ctx.probe.measure(model)   # (the base was measured at step 0)


EVALUATORS: dict[str, Evaluator] = {}


def register(name: str, fn: Evaluator, metrics: dict[str, MetricSpec]) -> None:
    """One evaluator, one entry: the function and the specs of every metric it returns."""
    register_metrics(name, metrics)
    EVALUATORS[name] = fn
    fn.metrics = dict(metrics)


FRACTION = dict(unit="fraction", lo=0.0, hi=1.0)
NATS = dict(unit="nats/token", lo=0.0)
register("val_loss", val_loss_scores, {
    "val_loss": MetricSpec("lower", select=True, doc="mean NLL of the validation tokens", **NATS),
    "val_ppl": MetricSpec("lower", "perplexity", 1.0, doc="exp(val_loss)"),
    "val_tokens": MetricSpec("info", "tokens", 0.0, doc="validation tokens scored")})
register("accuracy", accuracy_scores, {
    "accuracy": MetricSpec("higher", select=True, **FRACTION),
    "macro_f1": MetricSpec("higher", select=True, doc="unweighted mean of per-label F1", **FRACTION),
    "majority": MetricSpec("info", delta=False, doc="the majority label's share of the held-out rows", **FRACTION)})
register("generation", generation_scores, {
    k: MetricSpec("higher", **FRACTION) for k in ("exact_match", "token_f1", "rouge_l")})
register("fewshot", fewshot_scores, {
    "fewshot*_accuracy": MetricSpec("higher", doc="the base model with k examples in context", **FRACTION),
    "fewshot*_macro_f1": MetricSpec("higher", **FRACTION)})
register("preference", preference_scores, {
    "pref_accuracy": MetricSpec("higher", select=True, doc="share of held-out pairs whose implicit reward prefers "
                                "the chosen answer", **FRACTION),
    "reward_margin": MetricSpec("higher", "reward", doc="mean implicit reward of the chosen answer minus the "
                                "rejected one's (dpo: beta x nats of log-ratio; simpo: beta x nats/token)"),
    "pref_loss": MetricSpec("lower", "nats", 0.0, select=True, doc="the objective's mean loss on held-out pairs"),
    "chosen_logp": MetricSpec("info", "nats", hi=0.0, doc="mean summed log-probability of the chosen answers"),
    "rejected_logp": MetricSpec("info", "nats", hi=0.0, doc="mean summed log-probability of the rejected answers")})
register("retention", retention_scores, {
    "ref_nll": MetricSpec("lower", doc="NLL of general reference text", **NATS),
    "ref_nll_change": MetricSpec("lower", "nats/token", delta=False, doc="ref_nll - the base model's"),
    "kl_to_base": MetricSpec("lower", delta=False, doc="KL(base || tuned) per token", **NATS)})


# Modules that register evaluators into this registry from above it, imported by name on the first lookup
# (resolve, specs.find): the registry stays below what plugs into it, and every caller still finds them
# (training imports them outright: train/setup.py).
PLUGINS = ["tailorlm.probes.evaluators"]


def load_plugins() -> None:
    """Import each module in PLUGINS once; importing it registers its evaluators."""
    while PLUGINS:
        importlib.import_module(PLUGINS.pop(0))


def resolve(names: list[str]) -> list[tuple[str, Evaluator]]:
    """(name, function) for each of `names`: a registry entry or an import path "module:function"."""
    load_plugins()
    out = []
    for name in names:
        if name in EVALUATORS:
            out.append((name, EVALUATORS[name]))
        elif ":" in name:
            mod, _, attr = name.partition(":")
            try:
                out.append((name, getattr(importlib.import_module(mod), attr)))
            except (ImportError, AttributeError) as e:
                raise ConfigError(f"eval.metrics: cannot import {name!r} ({e}). Fix: an importable "
                                  "'module:function', or one of " + ", ".join(EVALUATORS)) from None
        else:
            near = difflib.get_close_matches(name, EVALUATORS, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"eval.metrics: unknown evaluator {name!r}; choose from {', '.join(EVALUATORS)} "
                              f"or give 'module:function'.{hint}")
    for name, fn in out:   # an outside evaluator's declared specs (@declares) join the registry
        if getattr(fn, "metrics", None) is not None and any(m not in METRICS for m in fn.metrics):
            register_metrics(name, fn.metrics)
    return out


def _checked(name: str, scores: dict) -> dict:
    """The scores, once every number in them has a spec (a string is a warning, a dict a breakdown)."""
    for k, v in scores.items():
        if is_number(v) and find(k) is None:
            raise ConfigError(f"evaluator {name!r} returned {k!r}, which has no metric spec, so tailorlm cannot "
                              "tell whether higher is better. Fix: decorate the evaluator with "
                              f"@tailorlm.eval.specs.declares({k}=MetricSpec(direction, unit, ...))")
    return scores


def evaluate(model, ctx: EvalContext, names: list[str] | None = None) -> dict:
    """Every chosen evaluator's scores, in the order chosen, in one dict."""
    scores: dict = {}
    for name, fn in resolve(ctx.cfg.eval.metrics if names is None else names):
        scores.update(_checked(name, fn(model, ctx)))
    return scores
