"""Run a continual plan: each stage an ordinary run in the plan's folder, the matrix R filled after
every stage, resumable at the stage and step where it stopped.

    PLAN/data/<stage>/train.jsonl, heldout.jsonl      each stage's rows, written once
    PLAN/order-<k>/01-<stage>/ ...                     one ordinary run per stage (config, checkpoints, final/)
    PLAN/order-<k>/matrix.json                         R (row 0: the base model), the probe after each stage
    PLAN/continual.json                                the summary: metrics per order, mean and spread

(the folder's names and its atomic writes: run/continual_dir.py)
"""
from __future__ import annotations

import copy
import json
import random
import statistics
from pathlib import Path

from ..build import load_base, tokenizer_for
from ..config import load_config
from ..errors import ConfigError
from ..progress import phase, quiet as quiet_progress
from ..retention.session import Retention
from ..run import RunDir, open_run, place
from ..run.continual_dir import ContinualDir
from ..run.lock import hold
from ..train import Callback, train
from .metrics import by_unit, metric_keys
from .report import write_report
from .plan import PlanConfig, out_dir, stage_order
from .stages import Stage, measure, prepare_stages, score, stage_rows, write_rows
from .strategies import STRATEGIES


def run_plan(plan: PlanConfig, quiet: bool = False, say=print) -> dict:
    """The plan in its folder, which one process writes at a time (the plan folder's lock, held to the end;
    a rerun while it runs is refused, naming it)."""
    root = out_dir(plan)
    done = finished(plan)
    if done is not None:   # said at once: no tokenizer, no model loaded
        stages = [s["name"] for s in plan.stages]
        say(f"[continual] the plan in {root} is finished ({plan.orders} order(s) of {len(stages)} stages: "
            f"{', '.join(stages)}); nothing was loaded or trained. Results: {ContinualDir(root).summary_file} and "
            f"{ContinualDir(root).page_file.name}. To run it again: --out ANOTHER_DIR")
        say(table(done))
        for line in collapse_warnings(done):
            say(line)
        return done
    with hold(root, fix=", or another output.dir for the plan"):
        return _run_plan(plan, root, quiet, say)


def plan_record(plan: PlanConfig) -> dict:
    """The plan as continual.json keeps it (JSON values), without output: the folder is where it is."""
    return json.loads(json.dumps(plan.model_dump(mode="json", exclude={"output"})))


def finished(plan: PlanConfig) -> dict | None:
    """The stored summary when the plan's folder holds this very plan finished (its summary is written
    last, and records the plan), else None; reads one file, loads nothing."""
    f = ContinualDir(out_dir(plan)).summary_file
    out = json.loads(f.read_text()) if f.is_file() else None
    return out if out and out.get("plan") == plan_record(plan) else None


def _run_plan(plan: PlanConfig, root: Path, quiet: bool, say) -> dict:
    tok = tokenizer_for(load_config(raw={**copy.deepcopy(plan.base), "data": {"train": "-"}}))
    stages = prepare_stages(plan.stages, root, tok, plan.strategy.seed)
    if STRATEGIES[plan.strategy.name].needs_same_format and len({s.fmt for s in stages}) > 1:
        raise ConfigError(f"strategy {plan.strategy.name} mixes stages' rows, which needs one trained format; "
                          f"the stages are {sorted({s.fmt for s in stages})}")
    with quiet_progress(quiet):
        orders = [run_order(plan, stages, stage_order(plan, k), root / f"order-{k}", tok, quiet, say)
                  for k in range(plan.orders)]
    out = {"strategy": plan.strategy.model_dump(), "orders": orders, **aggregate(orders),
           "references": references(plan, stages, root, tok, quiet), "plan": plan_record(plan)}
    if plan.strategy.name == "adapter_per_task":
        out["note"] = "adapter_per_task scores each task with its own adapter: it uses the task's identity at inference"
    plan_dir = ContinualDir(root)
    plan_dir.write_summary(out)
    warnings = collapse_warnings(out)
    write_report(out, plan_dir.page_file, warnings)
    say(table(out))
    for line in warnings:
        say(line)
    return out


class _Capture(Callback):
    """Keeps the stage's final model (after final/ is written) and runs the strategy's after_stage."""

    def __init__(self, after):
        self.after, self.model = after, None

    def on_end(self, run, summary) -> None:
        self.model = run.model
        self.after(run.model, run.cfg)


def stage_config(plan: PlanConfig, strat, t: int, stage: Stage, run_dir: Path, prev: Path | None):
    raw = copy.deepcopy(plan.base)
    raw["model"] = raw.get("model") or {}
    raw["model"] = {"path": raw["model"]} if isinstance(raw["model"], str) else raw["model"]
    data = dict(stage.data)
    own = stage_rows(stage, "train")
    rows = strat.train_rows(t, stage, own)
    if len(rows) != len(own):   # replay: this stage's own rows plus the buffer's
        mixed = run_dir.parent / f".{run_dir.name}.train.jsonl"
        if not mixed.is_file():
            write_rows(mixed, rows)
        data["train"] = str(mixed)
    raw["data"] = data
    ret = raw.setdefault("retention", {})
    if not any(ret.get(k) for k in ("replay", "l2sp", "ewc", "distill", "max_forgetting")):
        ret["reference"] = None      # the plan measures forgetting itself, once per stage
    raw.setdefault("eval", {}).setdefault("before", False)
    raw["output"] = {"dir": str(run_dir)}
    return load_config(raw=strat.stage_config(t, raw, prev))


def run_order(plan: PlanConfig, stages: list[Stage], order: list[int], folder: Path, tok, quiet: bool, say) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    strat = STRATEGIES[plan.strategy.name](plan.strategy, folder)
    names = [stages[i].name for i in order]
    state = ContinualDir.read_matrix(folder) or {"order": names, "R": [], "probe": []}
    state["units"] = [stages[i].metric for i in order]   # each column's unit: like units only are averaged
    # per row of R, per task: the label a classifier answered for every held-out row, else None
    state.setdefault("collapsed", [[None] * len(order) for _ in state["R"]])
    if len(state["R"]) > len(order):   # finished earlier: read back, no model loaded
        return _result(state)
    cfg0 = load_config(raw={**copy.deepcopy(plan.base), "data": stages[order[0]].data})
    device = place(cfg0)   # (the plan's base config: every stage is scored alike)
    precision = cfg0.train.precision
    n = cfg0.eval.max_examples
    scorer = lambda m, i: measure(m.to(device), stages[order[i]], tok, device=device, precision=precision, n=n)  # noqa: E731
    base = load_base(cfg0, tokenizer=tok)[0].to(device)
    with phase(f"{folder.name}: retention reference"):
        probe = Retention(cfg0.retention.model_copy(update={"reference": plan.base.get("retention", {}).get(
            "reference", "auto") or "auto", "replay": 0.0, "l2sp": 0.0, "ewc": 0.0, "distill": 0.0}), base, tok,
            device=device, precision=precision, seed=cfg0.train.seed, batch_size=cfg0.train.batch_size)
    if not state["R"]:
        with phase(f"{folder.name}: the base model on every task"):
            _add_row(state, [scorer(base, i) for i in range(len(order))])
        state["probe"].append({"ref_nll_change": 0.0, "kl_to_base": 0.0})
        ContinualDir.write_matrix(folder, state)
    for t in range(len(state["R"])):   # the base row first, then any stages a resumed plan already has
        _say_row(say, folder.name, state, t)
    prev = None
    for t, si in enumerate(order, 1):
        run_dir = ContinualDir.stage(folder, t, stages[si].name).path
        if len(state["R"]) <= t:
            model = _train_stage(plan, strat, t, stages[si], run_dir, prev, tok, quiet)
            stage_run = lambda i: ContinualDir.stage(folder, i + 1, names[i]).path  # noqa: E731
            load = lambda i: base if i is None else open_run(stage_run(i)).model  # noqa: E731
            with phase(f"{folder.name}: stage {t} on every task"):
                _add_row(state, [scorer(strat.eval_model(t, i, model, load), i) for i in range(len(order))])
                m = strat.eval_model(t, t - 1, model, load)
                state["probe"].append({k: probe.measure(m)[k] for k in ("ref_nll_change", "kl_to_base")})
            ContinualDir.write_matrix(folder, state)
            _say_row(say, folder.name, state, t)
        prev = run_dir
    return _result(state)


def _add_row(state: dict, measured: list[dict]) -> None:
    """One row of R (stages.measure per task) and its collapses."""
    state["R"].append([m["score"] for m in measured])
    state["collapsed"].append([m.get("collapsed") for m in measured])


def _say_row(say, order: str, state: dict, t: int) -> None:
    """`[continual] order-0 stage 1 sentiment: sentiment 0.683, exclaims 0.900`, a collapsed cell
    marked; under a stage's row, a warning per task it collapsed on."""
    names, coll = state["order"], state["collapsed"][t]
    who = "base model" if t == 0 else f"stage {t} {names[t - 1]}"
    say(f"[continual] {order} {who}: " + ", ".join(
        f"{n} {x:.3f}" + (f" (always {c!r})" if c else "") for n, x, c in zip(names, state["R"][t], coll)))
    if t:
        for line in collapse_lines(order, t, names, state["R"][t], coll):
            say(line)


def collapse_lines(order: str, t: int, names: list[str], row: list[float], coll: list) -> list[str]:
    return [f"[continual] warning: {order} after stage {t} ({names[t - 1]}) the model answers {c!r} for every "
            f"held-out row of {names[i]} (a collapsed classifier): its accuracy {row[i]:.3f} is that class's rate, "
            "not learning, and BWT, F and LA over it are no success" for i, c in enumerate(coll) if c]


def collapse_warnings(out: dict) -> list[str]:
    """Every stage row's collapses, over the plan's orders (an older summary without them: none)."""
    lines = []
    for k, o in enumerate(out["orders"]):
        for t, coll in enumerate(o.get("collapsed") or []):
            if t:
                lines += collapse_lines(f"order-{k}", t, o["order"], o["R"][t], coll)
    return lines


def _result(state: dict) -> dict:
    """An order's matrix and probe with the metrics of R and the last stage's forgetting."""
    return {**state, **by_unit(state["R"], state.get("units")), **state["probe"][-1]}


def _train_stage(plan, strat, t: int, stage: Stage, run_dir: Path, prev, tok, quiet: bool):
    """One stage as an ordinary run; resumed from its last checkpoint when it was cut short."""
    cfg = stage_config(plan, strat, t, stage, run_dir, prev)
    cap = _Capture(lambda model, c: strat.after_stage(t, stage, model, c, tok))
    resume = RunDir.at(run_dir).has_checkpoints()
    train(cfg, resume=resume, quiet=quiet, model=strat.start_model(t, cfg), callbacks=[cap, *strat.callbacks(t, stage)])
    return cap.model


def references(plan: PlanConfig, stages: list[Stage], root: Path, tok, quiet: bool) -> dict:
    """Optional bounds beside the sequence: every stage at once from the base model (joint), and each
    stage alone from the base model (single), scored on every stage / on its own."""
    out: dict = {}
    strat = STRATEGIES["naive"](plan.strategy, root / "references")
    if plan.references.joint:
        if len({s.fmt for s in stages}) > 1:
            raise ConfigError("references.joint trains every stage's rows at once, which needs one trained format")
        rows = [r for s in stages for r in stage_rows(s, "train")]
        random.Random(plan.strategy.seed).shuffle(rows)
        joint = Stage("joint", stages[0].fmt, root / "references" / "joint.jsonl", stages[0].heldout, None,
                      {**stages[0].data, "train": str(root / "references" / "joint.jsonl")}, "neg_nll")
        joint.train.parent.mkdir(parents=True, exist_ok=True)
        if not joint.train.is_file():
            write_rows(joint.train, rows)
        out["joint"] = _score_all(_train_stage(plan, strat, 1, joint, root / "references" / "joint", None, tok, quiet),
                                  plan, stages, tok)
    if plan.references.single:
        out["single"] = {s.name: _score_all(_train_stage(plan, strat, 1, s, root / "references" / f"single-{s.name}",
                                                         None, tok, quiet), plan, [s], tok)[s.name] for s in stages}
    return out


def _score_all(model, plan: PlanConfig, stages: list[Stage], tok) -> dict:
    cfg = load_config(raw={**copy.deepcopy(plan.base), "data": stages[0].data})
    device = place(cfg)
    return {s.name: score(model.to(device), s, tok, device=device, precision=cfg.train.precision,
                          n=cfg.eval.max_examples) for s in stages}


def aggregate(orders: list[dict]) -> dict:
    """Mean and spread (population stdev) over orders of every metric and of the final probe."""
    keys = [k for k in (*metric_keys(orders[0].get("units")), "ref_nll_change", "kl_to_base")
            if all(o.get(k) is not None for o in orders)]
    return {"mean": {k: statistics.fmean(o[k] for o in orders) for k in keys},
            "spread": {k: statistics.pstdev(o[k] for o in orders) for k in keys}}


def table(out: dict) -> str:
    m, s = out["mean"], out["spread"]
    cols = [k for k in (*metric_keys(out["orders"][0].get("units")), "ref_nll_change", "kl_to_base") if k in m]
    head = "| strategy | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols)
    cells = [f"{m[k]:+.3f}" + (f" ± {s[k]:.3f}" if len(out["orders"]) > 1 else "") for k in cols]
    return head + f"\n| {out['strategy']['name']} | " + " | ".join(cells) + " |"
