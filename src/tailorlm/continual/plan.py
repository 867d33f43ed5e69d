"""The continual plan: stages learnt in order by one model, one method, one strategy.

    # tailorlm continual plan.yaml
    base:                       # a tailorlm train config without data.train, shared by every stage
      model: smollm2-135m-instruct
      method: {name: lora, r: 16, alpha: 32, layers: 10}
      train: {steps: 60, batch_size: 8, lr: 1.0e-3}
    stages:                     # each a `data:` section of tailorlm train, plus a name
      - {name: airline, train: data/airline/train.jsonl, test: data/airline/test.jsonl}
      - {name: lexnames, train: data/wordnet/train.jsonl, test: data/wordnet/test.jsonl}
    strategy: {name: replay, buffer: 200, ratio: 0.25}
    orders: 1                   # K seeded orders of the stages: mean and spread over them
    references: {joint: false, single: false}
    output: {dir: runs/continual}

Each stage's validation rows (its run's best checkpoint) are its `val` file, else `data.val_fraction` of
its training rows (at most `data.val_max`); the rows R scores are its `test` file, else carved from its
training rows first. Dotted overrides (`tailorlm continual plan.yaml train.lr=1e-3 data.val_max=50`,
with_overrides): `data.*` reach every stage's data, `strategy.*`, `references.*`, `orders` and
`output.*` the plan's own keys, anything else the base config of every stage.

General text mixes in through the base config's own replay (`base.retention: {reference: FILE,
replay: 0.25}`). Classification stages are trained as instruction rows (the stage's rendered prompt, its label as the
answer), so stages with different label sets share one model and one replay buffer; each stage is
scored by label likelihood over its own labels. Instruction and text stages are scored by the
negative per-token NLL of their held-out answers (higher is better, as accuracy).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from ..config import Strict, apply_overrides
from ..errors import ConfigError


class StrategyConfig(Strict):
    name: Literal["naive", "replay", "ewc", "l2sp", "distill", "olora", "adapter_per_task"] = "naive"
    buffer: int = Field(200, ge=1)          # replay: rows kept from earlier stages (reservoir sampling)
    ratio: float = Field(0.25, gt=0, lt=1)  # replay: share of replayed rows in each stage's training rows
    weight: float = Field(1.0, ge=0)        # ewc / l2sp / distill / olora: weight of the penalty (olora: lambda1)
    lambda2: float = Field(0.0, ge=0)       # olora: weight of sum ||W||_2 over the new adapter's tensors (official 0)
    decay: float = Field(0.5, ge=0, le=1)   # ewc (online): Fisher_t = decay * Fisher_(t-1) + Fisher of stage t
    temperature: float = Field(2.0, gt=0)   # distill
    merge: bool = False                     # adapter_per_task: also score all adapters merged into one model
    seed: int = 0


class References(Strict):
    joint: bool = False                     # every stage at once (the upper bound)
    single: bool = False                    # each stage alone from the base model


class PlanConfig(Strict):
    base: dict[str, Any]
    stages: list[dict[str, Any]] = Field(min_length=2)
    strategy: StrategyConfig = StrategyConfig()
    orders: int = Field(1, ge=1)
    references: References = References()
    output: dict[str, Any] = Field(default_factory=lambda: {"dir": "runs/continual"})


PLAN_KEYS = ("strategy", "references", "orders", "output")   # overrides of the plan itself, not its stages


def with_overrides(raw: dict, overrides: list[str]) -> dict:
    """The raw plan with dotted overrides applied (a copy): `data.KEY=V` to every stage, a plan key
    (PLAN_KEYS) to the plan, anything else to `base`, which every stage's config starts from."""
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.lr=1e-4)")
        key = item.partition("=")[0].strip()
        head = key.split(".")[0]
        if head in PLAN_KEYS:
            apply_overrides(raw, [item])
        elif head == "data":
            if "." not in key:
                raise ConfigError(f"override {item!r}: each stage has its own data. Fix: data.KEY=VALUE for "
                                  "every stage (data.val_max=50), or the stage's own entry in the plan")
            for stage in raw.get("stages") or []:
                apply_overrides(stage, [item.strip()[len("data."):]])
        else:
            apply_overrides(raw.setdefault("base", {}), [item])
    return raw


def load_plan(path: str | Path | None = None, raw: dict | None = None) -> PlanConfig:
    if raw is None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such plan file") from None
    try:
        plan = PlanConfig.model_validate(raw)
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()]
        raise ConfigError(f"{path or 'plan'}: invalid continual plan\n" + "\n".join(lines)) from None
    names = [s.get("name") for s in plan.stages]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"{path or 'plan'}: every stage needs a unique name (got {names})")
    if "data" in plan.base:
        raise ConfigError(f"{path or 'plan'}: base.data: the data of each stage goes in stages, not base")
    return plan


def stage_order(plan: PlanConfig, k: int) -> list[int]:
    """Stage indices in the k-th order: order 0 as written, then seeded shuffles."""
    import random

    idx = list(range(len(plan.stages)))
    if k:
        random.Random(plan.strategy.seed * 1000 + k).shuffle(idx)
    return idx


def out_dir(plan: PlanConfig) -> Path:
    return Path(plan.output.get("dir", "runs/continual"))

