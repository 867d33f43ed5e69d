"""`tailorlm continual PLAN.yaml [key=value ...]`: learn a sequence of tasks, then print ACC, BWT, FWT, F and LA."""
from __future__ import annotations

HELP = "learn a sequence of tasks with one strategy; the accuracy matrix and forgetting metrics"
EXAMPLES = """examples:
  tailorlm continual plan.yaml                               every stage, then the matrix R and its metrics
  tailorlm continual plan.yaml train.lr=1e-3 data.val_max=50 dotted overrides: every stage's config
  tailorlm continual plan.yaml --resume                      continue where it stopped (a rerun does too)
data.* reaches every stage's data; strategy.*, references.*, orders and output.* the plan; the rest the base."""


def add_arguments(p) -> None:
    p.add_argument("plan", help="a continual plan (YAML: base, stages, strategy, orders), or the folder of a "
                                "finished plan; rerun it to resume")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides of every stage's config (train.lr=1e-3, data.val_max=50, method.r=8)")
    p.add_argument("--strategy", help="override strategy.name (naive, replay, ewc, l2sp, distill, olora, "
                                      "adapter_per_task)")
    p.add_argument("--out", help="override output.dir")
    p.add_argument("--orders", type=int, help="repeat the plan over K seeded orders of the stages (mean and spread)")
    p.add_argument("--resume", action="store_true", help="continue the plan in its folder from the stage and step "
                   "where it stopped; a finished plan says so at once")
    p.add_argument("--quiet", action="store_true", help="only the per-stage rows and the final table")


def _read_plan(where: str) -> dict:
    """The raw plan: a YAML file, or a plan folder whose finished summary records its plan."""
    import json
    from pathlib import Path

    import yaml

    from ..errors import ConfigError
    from ..run.continual_dir import ContinualDir

    if Path(where).is_dir():
        f = ContinualDir(where).summary_file
        stored = json.loads(f.read_text()).get("plan") if f.is_file() else None
        if not stored:
            raise ConfigError(f"{where} is a folder with no finished plan recorded in it. Fix: tailorlm continual "
                              "PLAN.yaml (the plan file; a rerun continues in its output.dir)")
        return {**stored, "output": {"dir": where}}
    try:
        return yaml.safe_load(Path(where).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such plan file") from None


def continual_command(a) -> int:
    from ..continual import load_plan, run_plan
    from ..continual.plan import out_dir, with_overrides
    from ..errors import ConfigError
    from ..run.continual_dir import ContinualDir

    raw = with_overrides(_read_plan(a.plan), list(a.overrides or []))
    if a.strategy:
        raw["strategy"] = {**(raw.get("strategy") or {}), "name": a.strategy}
    if a.orders:
        raw["orders"] = a.orders
    if a.out:
        raw["output"] = {**(raw.get("output") or {}), "dir": a.out}
    plan = load_plan(a.plan, raw=raw)
    root = ContinualDir(out_dir(plan))
    if a.resume and not (root.summary_file.is_file() or root.order(0).is_dir()):
        raise ConfigError(f"--resume: {root.root} holds no started plan. Fix: drop --resume to start it, or "
                          "--out the folder it ran in")
    run_plan(plan, quiet=a.quiet)
    return 0
