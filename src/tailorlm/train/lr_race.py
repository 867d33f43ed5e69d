"""`train.lr: auto`: the run picks its own learning rate in a short successive-halving race.

Successive halving (Jamieson & Talwalkar 2016, "Non-stochastic best arm identification and
hyperparameter optimization"; the inner loop of Hyperband, Li et al. 2018, JMLR 18(185)): every
candidate of `train.lr_grid` trains a few steps and is scored; the better half races on with twice the
steps, until one is left. Here every candidate, in every round, starts from the state the run starts
from (the same trainable weights, the same random state), takes the run's own first batches (a slice
of the training data, in the run's seeded order) at a constant lr, with the task loss only (no
callbacks' terms), and is scored by its loss on a slice of the validation set (the training loss of
its last steps where there is none). A candidate whose loss turns non-finite, or ends above the start's
(the loss rose: it diverges), is out.

The whole race costs at most `BUDGET` (15%) of train.steps in optimizer steps, said in the log; when
train.steps is too small for that, the race is skipped and the default lr is used, saying so. Then the
trainable weights and every random generator are put back exactly as they were, so the run trains
from its original start with the winner, which is written into config.yaml (train.lr: a rerun from it
is exact), into metrics.jsonl (a `chosen` event at step 0), the checkpoints' state and summary.json
(`chosen: {lr, race, ...}`). The race is deterministic: a run killed during it races again on resume to
the same choice; once config.yaml holds the number, a resume uses it without racing.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import yaml

from ..methods import METHODS
from ..objectives import OBJECTIVES, settings
from ..objectives.loss import score_pairs
from ..eval.metrics import val_loss
from ..run import RunDir
from ..seed import rng_state, set_rng_state
from .callbacks import Callbacks
from .optim import build_optimizer, build_scheduler
from .step import train_step

BUDGET = 0.15          # the race's optimizer steps, at most this share of train.steps
VAL_SLICE = 64         # validation examples that score a candidate (at most eval.max_examples)


def settle(run, written: str | None) -> None:
    """With train.lr: auto, the lr this run trains with (config.yaml's number when an earlier start of this
    run already chose it, else the race's), set into the config, config.yaml, the optimizer and schedule."""
    tc = run.cfg.train
    if tc.lr != "auto":
        return
    earlier = _recorded(written)
    chosen = {"lr": earlier, "race": "chosen before this resume (config.yaml)"} if earlier else race(run)
    tc.lr = chosen["lr"]
    run.chosen = chosen
    run.dist.on_main(RunDir.at(run.run_dir).write_config, run.cfg)
    run.opt = build_optimizer(run.params, tc.lr, tc.weight_decay, run.device, impl=tc.optimizer_impl)
    run.sched = build_scheduler(run.opt, warmup=tc.warmup, total=tc.steps, schedule=tc.schedule,
                                min_ratio=tc.min_lr_ratio)
    if not earlier:
        run.log({"chosen": chosen}, f"[tailorlm] train.lr: auto chose {tc.lr:g} ({_said(chosen)})")


def _recorded(written: str | None) -> float | None:
    """train.lr as config.yaml holds it, when a number (an earlier start of this run chose it)."""
    try:
        lr = ((yaml.safe_load(written or "") or {}).get("train") or {}).get("lr")
    except (yaml.YAMLError, AttributeError):
        return None
    try:
        return float(lr) if lr not in (None, "auto") and float(lr) > 0 else None
    except (TypeError, ValueError):
        return None


def plan(n: int, steps: int) -> tuple[list[int], int]:
    """([candidates racing in each round], steps of the first round): halving until one is left, round k
    running 2**k times the first round's steps, all of it within BUDGET x steps. First-round steps 0:
    the race does not fit."""
    alive, rounds = n, []
    while alive > 1:
        rounds.append(alive)
        alive = max(1, alive // 2)
    units = sum(a * 2 ** k for k, a in enumerate(rounds))
    return rounds, (int(BUDGET * steps) // units if units else 0)


def race(run) -> dict:
    """Successive halving over train.lr_grid (the module docstring); the run's weights and random state
    are as they were when it returns {lr, race: [one record per candidate and round], cost_steps, ...}."""
    tc = run.cfg.train
    grid = sorted(set(tc.lr_grid))
    rounds, first = plan(len(grid), tc.steps)
    budget = int(BUDGET * tc.steps)
    if len(grid) == 1 or first == 0:
        lr = grid[0] if len(grid) == 1 else METHODS[run.cfg.method.name].default_lr   # what lr: null gives
        why = "one candidate" if len(grid) == 1 else (
            f"train.steps {tc.steps} is too few to race {len(grid)} candidates within {BUDGET:.0%} of them "
            f"(it needs {math.ceil(sum(a * 2 ** k for k, a in enumerate(rounds)) / BUDGET)})")
        return {"lr": lr, "race": [], "cost_steps": 0, "budget_steps": budget, "train_steps": tc.steps,
                "skipped": why}
    start = {k: p.detach().to("cpu", copy=True) for k, p in run.params.items()}
    rng = rng_state()
    base = _score(run, [])
    alive, records, cost = grid, [], 0
    try:
        for k in range(len(rounds)):
            done = [_candidate(run, lr, first * 2 ** k, start, rng, base) for lr in alive]
            records += [{"round": k, **d} for d in done]
            cost += sum(d["steps_run"] for d in done)
            ranked = sorted((d for d in done if d["out"] is None), key=lambda d: d["score"])
            alive = [d["lr"] for d in ranked[:max(1, len(alive) // 2)]]
            if len(alive) <= 1:
                break
    finally:
        _restore(run, start, rng)
    lr = alive[0] if alive else grid[0]   # every one diverged: the smallest
    return {"lr": lr, "race": records, "cost_steps": cost, "budget_steps": budget, "train_steps": tc.steps,
            "base_score": base,
            "score": ("pref_loss" if tc.objective in OBJECTIVES else "val_loss") if run.data.val else "train_loss",
            **({} if alive else {"note": "every candidate diverged; the smallest lr is used"})}


def _candidate(run, lr: float, steps: int, start: dict, rng: dict, base: float) -> dict:
    """One candidate from the run's start: `steps` steps at a constant `lr`, then its score."""
    tc = run.cfg.train
    _restore(run, start, rng)
    opt = build_optimizer(run.params, lr, tc.weight_decay, run.device, impl=tc.optimizer_impl)
    racer = dataclasses.replace(
        run, opt=opt, sched=build_scheduler(opt, warmup=0, total=steps, schedule="constant", min_ratio=1.0),
        callbacks=Callbacks([]), step=0, history=[], tokens_seen=0, train_time=0.0, skipped_steps=0,
        bad_in_a_row=0, notes={})
    run.model.train()
    out = None
    while racer.step < steps and out is None:
        rec, _ = train_step(racer, False)
        if "skipped" in rec:
            out = f"non-finite loss at step {racer.step}"
    score = _score(run, racer.history) if out is None else math.inf
    if out is None and not math.isfinite(score):
        out = "non-finite validation loss"
    elif out is None and score > base:
        out = f"loss rose ({base:.4f} -> {score:.4f})"
    return {"lr": lr, "steps": steps, "steps_run": racer.step, "score": score, "out": out}


def _score(run, history: list) -> float:
    """Loss on a slice of the validation set (rank 0's; a preference objective's: its loss on held-out
    pairs, objectives/loss.py); with no validation set, the mean training
    loss of the candidate's last quarter of steps (the start: inf, nothing to compare with)."""
    c, data = run.cfg, run.data
    if not data.val:
        tail = [h["loss"] for h in history[-max(1, len(history) // 4):]]
        return sum(tail) / len(tail) if tail else math.inf
    if c.train.objective in OBJECTIVES:   # a preference objective: its own loss on held-out pairs
        s = score_pairs(run.model, data.val[:min(VAL_SLICE, c.eval.max_examples)], c.train.objective,
                        settings(c.train), run.eval_ctx.reference, pad_id=run.tok.pad_token_id, device=run.device,
                        precision=c.train.precision, batch_size=c.eval.batch_size)
        return float(run.dist.broadcast(s["pref_loss"]))
    s = val_loss(run.model, data.val[:min(VAL_SLICE, c.eval.max_examples)], pad_id=run.tok.pad_token_id,
                 device=run.device, precision=c.train.precision, batch_size=c.eval.batch_size,
                 packing=c.data.packing, row_tokens=c.data.max_length, task=c.model.task, name="lr race")
    return float(run.dist.broadcast(s["loss"]))


@torch.no_grad()
def _restore(run, start: dict, rng: dict) -> None:
    """The trainable weights and every random generator exactly as the run started."""
    for k, p in run.params.items():
        p.copy_(start[k].to(p.device))
        p.grad = None
    set_rng_state(rng)


def _said(chosen: dict) -> str:
    if chosen.get("skipped"):
        return f"race skipped: {chosen['skipped']}"
    scores = ", ".join(f"{d['lr']:g}: {'out, ' + d['out'] if d['out'] else format(d['score'], '.4f')}"
                       for d in chosen["race"] if d["round"] == 0)
    return (f"race of {len(chosen['race'])} candidate runs, {chosen['cost_steps']} steps = "
            f"{chosen['cost_steps'] / chosen['train_steps']:.1%} of train.steps; "
            f"first round {chosen['score']}: {scores}")
