"""`tailorlm eval RUN | CFG [key=value ...]`: the evaluators training uses, on a run's final model
or on the base model a config names. Overrides apply to the run's stored config before its model
loads, so a run moved to another machine can name where its base model now is."""
from __future__ import annotations

import json
from pathlib import Path

HELP = "evaluate a run or a base model on the config's held-out data"
EXAMPLES = """examples:
  tailorlm eval runs/my-run                             the run's final model
  tailorlm eval runs/my-run data.test=other.jsonl       other held-out data
  tailorlm eval runs/my-run model.path=/models/base     a run whose base model has moved
  tailorlm eval my.yaml                                 the base model the config names"""


def add_arguments(p) -> None:
    p.add_argument("target", help="a run directory (evaluates its final/) or a config (evaluates the base model)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the run's or the file's config, e.g. "
                   "model.path=/models/base eval.max_examples=100")


def eval_command(a) -> int:
    print(json.dumps(evaluate_target(a.target, a.overrides), indent=1))
    return 0


def evaluate_target(target: str, overrides: list[str]) -> dict:
    """A run directory: its final model; a config file: the base model it names."""
    from ..config import load_config
    from ..eval.evaluators import EvalContext, evaluate
    from ..progress import phase
    from ..run import build, open_run, place

    p = Path(target)
    if p.is_dir():
        opened = open_run(p, overrides)
        cfg, model, data = opened.cfg, opened.model, opened.data
    else:  # data first: a classifier's head is sized by the data's labels
        cfg = load_config(p, overrides)
        model, tok, data = build(cfg)
    device = place(cfg)   # (train.precision resolved for it)
    with phase("evaluation"):
        return evaluate(model.to(device), EvalContext(cfg, data, device))   # (fewshot, retention: step 0 only)
