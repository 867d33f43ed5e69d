"""`tailorlm continual PLAN.yaml`: learn a sequence of tasks, then print ACC, BWT, FWT, F and LA."""
from __future__ import annotations

HELP = "learn a sequence of tasks with one strategy; the accuracy matrix and forgetting metrics"


def add_arguments(p) -> None:
    p.add_argument("plan", help="a continual plan (YAML: base, stages, strategy, orders); rerun it to resume")
    p.add_argument("--strategy", help="override strategy.name (naive, replay, ewc, l2sp, distill, olora, "
                                      "adapter_per_task)")
    p.add_argument("--out", help="override output.dir")
    p.add_argument("--orders", type=int, help="repeat the plan over K seeded orders of the stages (mean and spread)")
    p.add_argument("--quiet", action="store_true", help="only the per-stage rows and the final table")


def continual_command(a) -> int:
    import yaml

    from ..continual import load_plan, run_plan
    from ..errors import ConfigError

    try:
        raw = yaml.safe_load(open(a.plan)) or {}
    except FileNotFoundError:
        raise ConfigError(f"{a.plan}: no such plan file") from None
    if a.strategy:
        raw["strategy"] = {**(raw.get("strategy") or {}), "name": a.strategy}
    if a.orders:
        raw["orders"] = a.orders
    if a.out:
        raw["output"] = {**(raw.get("output") or {}), "dir": a.out}
    run_plan(load_plan(a.plan, raw=raw), quiet=a.quiet)
    return 0
