"""`tailorlm train CFG [key=value ...]` and `tailorlm train --resume RUN [key=value ...]`."""
from __future__ import annotations

import json
import os

HELP = "fine-tune a model from a config"
EXAMPLES = """examples:
  tailorlm train my.yaml train.lr=1e-4 method.r=8        dotted overrides win over the file
  tailorlm train --preset airline-lora train.steps=20    a shipped config (tailorlm presets lists them)
  tailorlm train --resume runs/my-run                     continue from the last verified checkpoint"""


def add_arguments(p) -> None:
    p.add_argument("config", nargs="?", help="YAML config; not needed with --preset or --resume")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 method.r=8")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its last good checkpoint")
    p.add_argument("--preset", metavar="NAME", help="a config shipped with tailorlm (tailorlm presets lists them)")
    p.add_argument("--no-plan-check", action="store_true", help="start even when tailorlm plan predicts more memory "
                   "than there is (train.plan_check=false)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or setup lines: evaluations, warnings "
                   "and errors only")


def train_command(a) -> int:
    from ..config import ConfigError, load_config
    from ..run.folder import RunDir
    from ..train import train
    from .presets import config_argument

    if a.config and "=" in a.config:  # `train --resume RUN key=value`: no config file given
        a.overrides, a.config = [a.config, *a.overrides], None
    a.config = config_argument(a.config, a.preset)
    if a.no_plan_check:   # an override like any other, validated with the rest
        a.overrides = [*a.overrides, "train.plan_check=false"]
    if a.resume:
        cfg = load_config(RunDir.at(a.resume).config_file, a.overrides + [f"output.dir={a.resume}"])
    elif a.config is None:
        raise ConfigError("train needs a config file, --preset NAME or --resume RUN. Fix: tailorlm presets lists "
                          "the presets")
    else:
        cfg = load_config(a.config, a.overrides)
    summary = train(cfg, resume=bool(a.resume), quiet=a.quiet)
    if os.environ.get("RANK", "0") != "0":   # under torchrun, rank 0 speaks for the job
        return 0
    print(json.dumps({k: summary[k] for k in ("steps", "first_loss", "last_loss", "tokens_per_s", "base", "final")},
                     indent=1))
    return 0
