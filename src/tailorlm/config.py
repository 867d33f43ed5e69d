"""The one config: pydantic models validated once, loaded from YAML plus dotted overrides.

    tailorlm train cfg.yaml train.lr=1e-4 method.r=8

Unknown keys fail with their path and the closest valid key; wrong types say what was expected.
Validated config objects stop at the builders, which pass flat arguments on.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .methods import METHOD_CONFIGS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Strict):
    path: str = "smollm2-135m-instruct"   # a local HF folder, or an embedded short name
    dtype: Literal["fp32", "bf16"] = "fp32"   # weights in memory; bf16 compute is train.precision
    task: Literal["causal_lm", "sequence_classification"] = "causal_lm"
    trust_remote_code: bool = False
    allow_pickle: bool = False            # load .bin/.pt weights (torch.load, weights_only) if no safetensors
    init_from: Optional[str] = None       # start from an earlier run's final model (its directory or final/)


class DataConfig(Strict):
    train: str
    val: Optional[str] = None
    test: Optional[str] = None
    format: Literal["auto", "text", "instruction", "chat", "classification"] = "auto"
    max_length: int = Field(512, ge=8)
    too_long: Literal["truncate", "drop", "stop"] = "truncate"
    on_error: Literal["stop", "skip"] = "stop"
    val_fraction: float = Field(0.1, gt=0, lt=1)   # carved from train (seeded) when val is absent
    val_max: int = Field(500, ge=1)                # ...but never more rows than this
    limit: Optional[int] = Field(None, ge=1)       # read at most this many train rows
    # field names; None means "detect" (prompt/response, instruction/input/output, text/label, messages)
    text_field: Optional[str] = None
    prompt_field: Optional[str] = None
    response_field: Optional[str] = None
    label_field: Optional[str] = None
    messages_field: str = "messages"
    labels: Optional[list[str]] = None            # classification label words; detected from train otherwise
    prompt_template: str = "{text}"               # classification/instruction prompt; {text} and {labels} fill in
    system: Optional[str] = None                  # system message for chat-templated prompts
    chat_template: Literal["auto", "never"] = "auto"  # instruction/classification through the model's chat template
    packing: bool = True                          # padding-free: examples share rows, attention kept inside each
    audit: bool = True                            # run the data audit before training (fatal findings stop it)


class TrainConfig(Strict):
    steps: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)              # examples per micro-batch
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup: int = Field(10, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: Optional[float] = 1.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # autocast dtype; auto = bf16 where the hardware is fast at it
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    gradient_checkpointing: bool = False
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(50, ge=1)
    save_every: int = Field(50, ge=1)
    keep_last: int = Field(2, ge=1)
    max_bad_steps: int = Field(3, ge=1)          # non-finite steps in a row before the run stops
    threads: Optional[int] = None                 # torch CPU threads; None keeps torch's default
    parallel: Literal["none", "ddp", "fsdp"] = "none"   # under torchrun: replicated (ddp) or sharded (fsdp) weights
    callbacks: list[str] = []                     # extra loop callbacks, as import paths "module:Name"


DEFAULT_METRICS = ["val_loss", "accuracy", "generation", "fewshot", "retention"]


class EvalConfig(Strict):
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))  # evaluators (eval/evaluators.py),
    #                                               or import paths "module:function"; each scores what applies
    max_examples: int = Field(300, ge=1)          # held-out rows scored for task metrics
    batch_size: int = Field(16, ge=1)
    before: bool = True                           # score the base model at step 0
    metric: Literal["val_loss", "accuracy", "macro_f1"] = "val_loss"   # picks the best checkpoint
    patience: Optional[int] = Field(None, ge=1)   # early stopping after this many evaluations without gain
    min_delta: float = Field(0.0, ge=0)
    keep_best: bool = True                        # final/ holds the best evaluation's weights, not the last
    fewshot: int = Field(0, ge=0)                 # also score the base model with k training examples in context
    generate: int = Field(0, ge=0)                # instruction data: greedy answers for this many held-out rows
    max_new_tokens: int = Field(64, ge=1)         # ...scored by exact match, token F1 and ROUGE-L


class RetentionConfig(Strict):
    reference: Optional[str] = "auto"             # auto: written by the base model at step 0; a text file; or null
    samples: int = Field(16, ge=2)                # auto reference: how many base-model samples (half probe, half replay)
    sample_tokens: int = Field(64, ge=8)
    max_length: int = Field(128, ge=16)           # reference blocks from a file
    max_forgetting: Optional[float] = None        # budget: reference-NLL increase (nats/token) a final model may have
    patience: int = Field(1, ge=1)                # stop once over budget for this many evaluations
    replay: float = Field(0.0, ge=0, le=1)        # replay rows per task example in each step, and the weight of
    #                                               their mean token loss against the task's
    replay_data: Optional[str] = None             # replay this text file instead of the reference's replay half
    l2sp: float = Field(0.0, ge=0)                # weight of sum (theta - theta0)^2
    ewc: float = Field(0.0, ge=0)                 # weight of sum F (theta - theta0)^2
    distill: float = Field(0.0, ge=0)             # weight of KL(base || tuned) on replay batches
    temperature: float = Field(1.0, gt=0)


class OutputConfig(Strict):
    dir: str = "runs/run"
    overwrite: bool = False


MethodConfig = Annotated[Union[tuple(METHOD_CONFIGS.values())], Field(discriminator="name")]


class Config(Strict):
    model: ModelConfig = ModelConfig()
    data: DataConfig
    method: MethodConfig = Field(default_factory=lambda: METHOD_CONFIGS["lora"]())
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    retention: RetentionConfig = RetentionConfig()
    output: OutputConfig = OutputConfig()

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = {"name": v}
        if isinstance(v, dict) and "name" not in v:
            v = {"name": "lora", **v}
        if isinstance(v, dict) and v.get("name") not in METHOD_CONFIGS:
            near = difflib.get_close_matches(str(v.get("name")), METHOD_CONFIGS, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"unknown method {v.get('name')!r}; choose one of {', '.join(METHOD_CONFIGS)}.{hint}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        if self.train.warmup >= self.train.steps and self.train.warmup > 0:
            self.train.warmup = self.train.steps // 10
        needs = {"val_loss": "val_loss", "accuracy": "accuracy", "macro_f1": "accuracy"}[self.eval.metric]
        if needs not in self.eval.metrics:
            raise ValueError(f"eval.metric {self.eval.metric} is scored by the {needs} evaluator, which eval.metrics "
                             f"leaves out. Fix: add {needs} to eval.metrics, or choose another eval.metric")
        r = self.retention
        used = [k for k in ("replay", "l2sp", "ewc", "distill") if getattr(r, k)]
        if self.train.parallel != "none" and used:
            raise ValueError(f"retention.{used[0]} is not supported with train.parallel={self.train.parallel} "
                             f"(the forgetting mitigations run on one process only). Fix: retention.{used[0]}=0, "
                             "or train.parallel=none on one process; the retention probe and "
                             "retention.max_forgetting work in parallel runs")
        return self


# ---------------------------------------------------------------- loading and overrides

def _parse_scalar(text: str) -> Any:
    """Override values are YAML scalars: `1e-4`, `true`, `[q_proj, v_proj]`, `null`."""
    v = yaml.safe_load(text)
    if isinstance(v, str) and re.fullmatch(r"[-+]?\d*\.?\d+e[-+]?\d+", v, re.I):
        return float(v)  # YAML 1.1 reads 1e-4 as a string
    return v


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.lr=1e-4)")
        key, _, value = item.partition("=")
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if isinstance(node.get(p), str) and p in ("model", "method"):
                node[p] = {"path" if p == "model" else "name": node[p]}
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = _parse_scalar(value)
    return raw


def _fields_at(loc: tuple) -> list[str]:
    """Valid keys of the config section at `loc` (for 'did you mean')."""
    model: Any = Config
    for part in loc:
        ann = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if ann is None:
            if part in METHOD_CONFIGS:
                model = METHOD_CONFIGS[part]
                continue
            return []
        model = ann.annotation
        if getattr(model, "__origin__", None) is Union:
            model = next((a for a in model.__args__ if hasattr(a, "model_fields")), None)
        if not hasattr(model, "model_fields"):
            return []
    return list(model.model_fields)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for e in err.errors():
        # drop union tags such as 'lora' from method.lora.r -> method.r
        loc = tuple(p for p in e["loc"] if not (p in METHOD_CONFIGS and e["loc"][0] == "method"))
        path = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(loc[-1]), _fields_at(e["loc"][:-1]), n=1)
            hint = f"; did you mean {'.'.join(map(str, loc[:-1] + (near[0],)))!r}?" if near else ""
            lines.append(f"  {path}: unknown key{hint}")
        elif not loc:   # a cross-check of several keys: its message names them
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] == "missing":
            lines.append(f"  {path}: required key is missing")
        else:
            got = e.get("input")
            lines.append(f"  {path}: {e['msg']} (got {got!r})")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                raw: dict | None = None) -> Config:
    """Read YAML (or take `raw`), apply dotted overrides, validate. Relative data paths stay
    relative to the working directory, as a user typing them on the command line expects."""
    source = str(path) if path else "config"
    if raw is None:
        raw = {}
        if path is not None:
            try:
                raw = yaml.safe_load(Path(path).read_text()) or {}
            except FileNotFoundError:
                raise ConfigError(f"{path}: no such config file") from None
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f":{mark.line + 1}" if mark else ""
                raise ConfigError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
            if not isinstance(raw, dict):
                raise ConfigError(f"{path}: expected a mapping of sections (model, data, method, train, ...)")
    raw = apply_overrides(dict(raw), overrides or [])
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


SECRET_KEY = re.compile(r"token|key|secret|password", re.I)


def redact(node: Any) -> Any:
    """A copy with the string value of every token/key/secret/password-named key replaced by ***."""
    if isinstance(node, dict):
        return {k: ("***" if SECRET_KEY.search(str(k)) and isinstance(v, str) else redact(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [redact(v) for v in node]
    return node


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, with any secret-looking value redacted."""
    return yaml.safe_dump(redact(cfg.model_dump(mode="json")), sort_keys=False)
