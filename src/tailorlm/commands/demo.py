"""`tailorlm demo`: tune the embedded SmolLM2 on airline tweets and print a before/after table."""
from __future__ import annotations

HELP = "fine-tune the embedded SmolLM2 on airline tweets; before/after table"


def add_arguments(p) -> None:
    p.add_argument("--steps", type=int, default=None, help="optimizer steps of each run (default: the demo's 100)")
    p.add_argument("--out", default="runs/demo", help="run directory")
    p.add_argument("--data-dir", default="data/airline", help="where the tweets are written as JSONL")
    p.add_argument("--data-only", action="store_true",
                   help="only write the data (what the presets read: tailorlm presets)")
    p.add_argument("--mitigation", default="no-budget", choices=["no-budget", "replay", "distill", "l2sp", "ewc", "none"],
                   help="the second run: without the default forgetting budget (no-budget, the default), or with "
                   "a fixed mitigation instead of it; none: one run only")


def demo_command(a) -> int:
    from ..demo import main

    return main(steps=a.steps, out=a.out, data_dir=a.data_dir, data_only=a.data_only,
                mitigation=None if a.mitigation == "none" else a.mitigation)
