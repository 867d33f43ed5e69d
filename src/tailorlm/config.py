"""The one config: pydantic models validated once, loaded from YAML plus dotted overrides.

    tailorlm train cfg.yaml train.lr=1e-4 method.r=8

Unknown keys fail with their path and the closest valid key; wrong types say what was expected.
Validated config objects stop at the builders, which pass flat arguments on.
"""
from __future__ import annotations

import difflib
import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data.formats import prompt_template_for
from .errors import ConfigError
from .methods import METHOD_CONFIGS, METHODS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def F(default: Any = ..., doc: str = "", **kw) -> Any:
    """A field with its one-line description: README's config table is generated from these
    (scripts/config_table.py), so the table and the code cannot drift apart."""
    return Field(description=doc, **kw) if "default_factory" in kw else Field(default, description=doc, **kw)


class ModelConfig(Strict):
    path: str = F("smollm2-135m-instruct", "local HF folder or embedded short name (`tailorlm models list`); "
                  "`model: X` is short for it")
    dtype: Literal["fp32", "bf16"] = F("fp32", "weights in memory (bf16 compute is `train.precision`)")
    task: Literal["causal_lm", "sequence_classification"] = F(
        "causal_lm", "`sequence_classification` loads a classification head (encoders too) over the labels")
    trust_remote_code: bool = F(False, "run code shipped with the model; off unless you ask")
    allow_pickle: bool = F(False, "load `.bin` weights (with `weights_only=True`) when a folder has no safetensors")
    init_from: Optional[str] = F(None, "start from an earlier run's final model (its directory or `final/`): the "
                                 "same method trains on, another is applied on top (an earlier adapter merged first)")


class TrainFile(Strict):
    path: str
    weight: int = Field(1, ge=1)   # each training row of the file is repeated this many times

    def __repr__(self) -> str:   # as the user wrote it, in messages that name data.train
        return f"{{path: {self.path}, weight: {self.weight}}}"


class DataConfig(Strict):
    train: Union[str, list[Union[str, TrainFile]]] = F(
        doc="JSONL, CSV or Parquet; or a list of files, each a path or `{path, weight}`: a file's training rows "
            "are repeated `weight` times (an integer; after the validation split)")
    val: Optional[str] = F(None, "validation file; absent: carved out of train (seeded, `val_fraction`, at most "
                           "`val_max` rows)")
    test: Optional[str] = F(None, "test file: task metrics score it instead of validation")
    format: Literal["auto", "text", "instruction", "chat", "classification", "preference"] = F(
        "auto", "`auto` detects it from the first row's fields (`chosen` and `rejected`: preference)")
    max_length: int = F(512, "per-example token budget", ge=8)
    too_long: Literal["truncate", "drop", "stop"] = F(
        "truncate", "past max_length: `truncate` cuts the end of the user text (never the template, response "
        "or label), `drop`, or `stop`; counted")
    on_error: Literal["stop", "skip"] = F("stop", "`stop` at the first malformed row, or `skip` and count")
    val_fraction: float = F(0.1, "share of train carved out for validation when `val` is absent", gt=0, lt=1)
    val_max: int = F(500, "...but never more rows than this", ge=1)
    limit: Optional[int] = F(None, "read at most this many train rows", ge=1)
    text_field: Optional[str] = F(None, "the text field; each field name unset means detect (`text`, "
                                  "`prompt`/`response`, `instruction`/`input`/`output`, `label`)")
    prompt_field: Optional[str] = F(None, "the prompt field (instruction data)")
    response_field: Optional[str] = F(None, "the response field (instruction data)")
    label_field: Optional[str] = F(None, "the label field (classification data)")
    messages_field: str = F("messages", "chat rows: the list of `{role, content}` messages")
    labels: Optional[list[str]] = F(None, "classification label words; detected from train otherwise")
    prompt_template: str = F("auto", "classification/instruction prompt; `{text}` and `{labels}` fill in; `auto`: "
                             "for classification `Classify the text as one of: {labels}.` before `Text: {text}`, "
                             "`{text}` for instruction data and a classifier head (written into the run's config.yaml)")
    system: Optional[str] = F(None, "system message for chat-templated prompts")
    chat_template: Literal["auto", "never"] = F(
        "auto", "instruction/classification prompts through the model's chat template when it has one")
    packing: bool = F(True, "several examples per row, attention kept inside each (padding-free)")
    audit: bool = F(True, "run the data audit before training (fatal findings stop it)")
    balance: Literal["none", "sample", "weight", "auto"] = F(
        "auto", "classification: `sample` draws classes equally into batches; `weight` weighs each class's "
        "loss by n / (classes x its count); `auto`: `weight` when the largest class is 1.5x the smallest or more, "
        "else `none` (written into the run's config.yaml)")


def _number_or_auto(v: Any, cast, kind: str) -> Any:
    """A field that takes a number or `auto`: a string parsed with `cast`, and one message for a word that
    is neither (not one per member of the union)."""
    if isinstance(v, str) and v != "auto":
        try:
            return cast(v)
        except ValueError:
            raise ValueError(f"Input should be a valid {kind}, or auto (got {v!r})") from None
    return v


class PreferenceConfig(Strict):
    beta: Optional[float] = F(None, "dpo: the strength of the pull to the reference (the implicit reward is beta x the "
                              "log-ratio); simpo: the scale of the length-normalised reward; null: the objective's own "
                              "(dpo 0.1, simpo 2.0), written into the run's config.yaml", gt=0)
    label_smoothing: float = F(0.0, "the share of pairs taken to be mislabelled (conservative / robust DPO): the loss "
                               "mixes in the flipped pair's at this weight", ge=0, lt=0.5)
    gamma: Optional[float] = F(None, "simpo: the target reward margin; null: beta / 2 (the paper's gamma/beta = 0.5), "
                               "written into the run's config.yaml", ge=0)


class TrainConfig(Strict):
    steps: Union[int, Literal["auto"], None] = F(
        100, "optimizer steps (or set `epochs`, not both); `auto`: from the data size, steps = clamp(3 x train "
        "examples / (batch_size x grad_accum), 100, 3000), early stopping on `eval.metric` (`eval.patience` 3 "
        "unless set), written into the run's config.yaml")
    epochs: Optional[float] = F(None, "instead of steps: steps = ceil(epochs x train examples / (batch_size x "
                                "grad_accum)), written into the run's config.yaml", gt=0)
    batch_size: int = F(8, "examples per micro-batch (the global one under torchrun)", ge=1)
    grad_accum: int = F(1, "micro-batches per step", ge=1)
    lr: Union[float, Literal["auto"], None] = F(
        None, "AdamW's peak learning rate; null: the method's own (`tailorlm methods`: lora 2e-4, full 2e-5, "
        "bottleneck 1e-3, ia3 3e-3, prefix 5e-3, prompt 3e-2); `auto`: a short successive-halving race over `lr_grid` (at most 15% of "
        "`steps`, scored by validation loss) picks it, written into the run's config.yaml and summary.json")
    lr_grid: list[float] = F(default_factory=lambda: [1e-4, 2e-4, 5e-4, 1e-3, 3e-3],
                             doc="the candidates `lr: auto` races (log-spaced)", min_length=1)
    weight_decay: float = F(0.0, "decay on matrices only", ge=0)
    warmup: int = F(10, "linear warmup steps", ge=0)
    schedule: Literal["cosine", "linear", "constant"] = F("cosine", "decay after warmup")
    min_lr_ratio: float = F(0.1, "the decay ends at lr x this", ge=0, le=1)
    max_grad_norm: Optional[float] = F(1.0, "gradient clipping; null: none")
    precision: Literal["auto", "fp32", "bf16"] = F(
        "auto", "autocast: `bf16` where the hardware is fast at it (CUDA, AVX512-BF16/AMX CPUs), else `fp32`")
    device: Literal["auto", "cpu", "cuda"] = F("auto", "`auto`: CUDA when there is one")
    seed: int = F(0, "data order, split, initialisation")
    gradient_checkpointing: bool = F(False, "trade compute for activation memory")
    plan_check: bool = F(True, "before the model loads, refuse a run whose predicted peak memory (`tailorlm plan`) "
                         "exceeds `memory_limit` or the free memory, naming a change that fits")
    memory_limit: Union[int, str, None] = F(None, "the memory the plan check allows, e.g. `16GiB` (a number: "
                                            "bytes); null: what the machine has free (CUDA free memory, "
                                            "MemAvailable, the cgroup limit)")
    optimizer_impl: Literal["default", "foreach", "fused"] = F(
        "default", "AdamW's kernel: `foreach` (one multi-tensor op per step) or `fused` (one kernel, CPU too); "
        "`default`: fused on CUDA, torch's per-parameter loop on CPU")
    loss_chunk: Optional[int] = F(
        1024, "LM head + cross-entropy at label positions only, this many positions at a time, each chunk's "
        "logits recomputed in backward (the positions x vocab logits never exist at once); null: one LM head "
        "call over the kept columns", ge=1)
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = F(
        "off", "`torch.compile` each transformer block with this mode (the first steps pay the compilation)")
    frozen_bottom: bool = F(
        False, "run the blocks below the lowest adapted one without autograd (LoRA/adapters on the top layers; "
        "matters with gradient checkpointing, which otherwise recomputes and back-propagates through them)")
    frozen_cast: bool = F(
        True, "under bf16 autocast, cast frozen linear weights to bf16 once (a copy kept for the training step) "
        "instead of in every forward; identical results, faster steps")
    objective: Literal["sft", "dpo", "simpo"] = F(
        "sft", "`sft`: the answers' (or text's) token loss; `dpo` (Rafailov et al. 2023) / `simpo` (Meng et al. "
        "2024): preference tuning on `preference` data (chosen and rejected answers); see \"Preference tuning\"")
    preference: PreferenceConfig = F(default_factory=PreferenceConfig, doc="`dpo` / `simpo` settings")
    log_every: int = F(10, "steps between metrics.jsonl records", ge=1)
    eval_every: int = F(50, "steps between evaluations", ge=1)
    save_every: int = F(50, "steps between checkpoints", ge=1)
    keep_last: int = F(2, "checkpoints kept", ge=1)
    max_bad_steps: int = F(3, "non-finite steps in a row before the run stops", ge=1)
    threads: Optional[int] = F(None, "torch CPU threads (null: torch's default); `1` on a small shared machine")
    parallel: Literal["none", "ddp", "fsdp"] = F(
        "none", "under torchrun: `ddp` (a copy per process) or `fsdp` (FSDP2 shards); see \"Many processes\"")
    callbacks: list[str] = F([], "extra loop callbacks by import path (`\"my_pkg.hooks:Timer\"`); see \"Plugging in\"")
    report_to: list[Literal["tensorboard", "mlflow", "trackio", "wandb"]] = F(
        [], "experiment trackers fed on rank 0, all local (in the run folder; W&B offline); each an extra, "
            "`pip install 'tailorlm[wandb]'`; one that fails warns once and is switched off; see \"Trackers\"")

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, v: Any) -> Any:
        """`report_to: wandb` is a list of one, `none` of none; an unknown name gets the closest one."""
        v = ([] if v == "none" else [v]) if isinstance(v, str) else v
        known = typing.get_args(typing.get_args(cls.model_fields["report_to"].annotation)[0])
        for name in v if isinstance(v, list) else []:
            if name not in known:
                near = difflib.get_close_matches(str(name), known, n=1)
                hint = f" Did you mean {near[0]!r}?" if near else ""
                raise ValueError(f"unknown tracker {name!r}; choose from {', '.join(known)}.{hint}")
        return v

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_or_auto(cls, v: Any) -> Any:
        return _number_or_auto(v, int, "integer")

    @field_validator("steps")
    @classmethod
    def _steps_at_least_one(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"Input should be greater than or equal to 1, or auto (got {v})")
        return v

    @field_validator("lr", mode="before")
    @classmethod
    def _lr_or_auto(cls, v: Any) -> Any:
        return _number_or_auto(v, float, "number")

    @field_validator("lr", "lr_grid")
    @classmethod
    def _positive_lr(cls, v: Any) -> Any:
        if any(x <= 0 for x in (v if isinstance(v, list) else [v]) if isinstance(x, (int, float))):
            raise ValueError("a learning rate must be > 0 (or train.lr: auto)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _steps_or_epochs(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("epochs") is not None:
            if v.get("steps") is not None:
                raise ValueError("train.steps and train.epochs are both set. Fix: set one of them "
                                 "(train.steps=null to train by epochs)")
            v = {**v, "steps": None}
        return v


DEFAULT_METRICS = ["val_loss", "accuracy", "generation", "fewshot", "preference", "retention",
                   "canaries"]   # canaries: only when configured; preference: on preference data


class EvalConfig(Strict):
    metrics: list[str] = F(default_factory=lambda: list(DEFAULT_METRICS), doc=(
        "evaluators scored at step 0, every evaluation and the end; each scores what applies to the data; names "
        "from the registry or `\"module:function\"`"))
    max_examples: int = F(300, "held-out rows scored for task metrics", ge=1)
    batch_size: int = F(16, "examples per evaluation forward", ge=1)
    before: bool = F(True, "score the base model at step 0")
    metric: Literal["auto", "val_loss", "accuracy", "macro_f1", "pref_loss", "pref_accuracy"] = F(
        "auto", "picks the best checkpoint: `auto` = pref_loss for `train.objective` dpo / simpo, macro_f1 for "
        "classification data, else val_loss")
    patience: Optional[int] = F(None, "early stopping after this many evaluations without gain", ge=1)
    min_delta: float = F(0.0, "the least change that counts as a gain", ge=0)
    keep_best: bool = F(True, "`final/` holds the best evaluation's weights, not the last step's")
    fewshot: int = F(0, "also score the base model with k training examples in context", ge=0)
    generate: int = F(0, "instruction data: greedy answers for this many held-out rows (exact match, token F1, "
                      "ROUGE-L; saved to samples.jsonl)", ge=0)
    max_new_tokens: int = F(64, "...at most this long", ge=1)


# retention.budget: auto (nats/token of the probe's ref_nll_change): chosen on the defaults benchmark
# (benchmarks/README.md), where unmitigated LoRA runs forgot 0.4-0.9 nats/token
BUDGET_AUTO = 0.1


class RetentionConfig(Strict):
    reference: Optional[str] = F("auto", "general text forgetting is measured on: `auto` = samples the base model "
                                 "writes at step 0; a text file; null = off")
    samples: int = F(16, "auto reference: base-model samples (half probe, half replay)", ge=2)
    sample_tokens: int = F(64, "...tokens each", ge=8)
    max_length: int = F(128, "reference blocks from a file: tokens each", ge=16)
    max_forgetting: Optional[float] = F(None, "budget on the reference-NLL increase (nats/token): a checkpoint past "
                                        "it never becomes `final/`")
    patience: int = F(1, "stop once over budget for this many evaluations", ge=1)
    replay: float = F(0.0, "general-text rows replayed per task example in each step, and the weight of their mean "
                      "token loss against the task's", ge=0, le=1)
    replay_data: Optional[str] = F(None, "replay this text file instead of the reference's replay half")
    l2sp: float = F(0.0, "weight of L2-SP: sum (theta - theta0)^2", ge=0)
    ewc: float = F(0.0, "weight of EWC: sum F (theta - theta0)^2, F the base model's diagonal Fisher from per-example gradients on the reference's replay half (never the probe's texts)", ge=0)
    distill: float = F(0.0, "weight of KL(base || tuned) on replay batches (adapters switched off)", ge=0)
    temperature: float = F(1.0, "distillation temperature", gt=0)
    budget: Union[Literal["auto"], Annotated[float, Field(gt=0)], None] = F(
        "auto", "forgetting budget (ref_nll_change, nats/token): the distillation weight is steered by dual ascent "
        f"to keep the probe's forgetting under it, starting at `distill`; `auto`: {BUDGET_AUTO} for an adapter "
        "method on one process with the probe on and no other mitigation set, else off (written into the run's "
        "config.yaml); null = off (a fixed `distill` weight)")
    budget_every: Optional[int] = F(10, "budget: steps between probe measurements besides each evaluation's; "
                                    "null = at evaluations only", ge=1)
    budget_rate: float = F(1.0, "budget: weight += rate * (forgetting - budget) / budget at each measurement "
                           "(clipped to [0, budget_max]; at 0 and under budget it stays 0)", gt=0)
    budget_max: float = F(5.0, "budget: the largest distillation weight it sets (a weight past it holds forgetting "
                          "down at the cost of most of the task's gain)", gt=0)


class CanaryConfig(Strict):
    count: int = F(0, "secrets inserted at each repetition level as extra training rows (recorded in RUN/canaries.json, "
                   "never in your files); 0 = off", ge=0)
    repetitions: list[int] = F(default_factory=lambda: [1, 4, 16], doc="how many copies of a level's secrets are trained on")
    pattern: str = F("my account number is {digits:9}", "the canary text; `{digits:N}` / `{letters:N}` is the random secret")
    references: int = F(1000, "never-inserted secrets each canary is ranked among: exposure = log2(references+1) - "
                        "log2(rank)", ge=8)

    @field_validator("repetitions")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        if not v or any(r < 1 for r in v) or len(set(v)) != len(v):
            raise ValueError(f"privacy.canaries.repetitions {v}: distinct counts of at least 1, e.g. [1, 4, 16]")
        return v


class PrivacyConfig(Strict):
    canaries: CanaryConfig = F(default_factory=CanaryConfig, doc="canaries (Carlini et al. 2019); see `tailorlm privacy`")
    sample: int = F(64, "training and held-out examples each the membership and extraction evaluators score", ge=2)
    prefix_tokens: int = F(32, "extraction: at least k tokens of context after the template all share, before the window checked", ge=1)
    suffix_tokens: int = F(32, "...and call it extracted when greedy decoding reproduces the example's first m trained tokens (its response, label or text) exactly", ge=1)


class BiasConfig(Strict):
    probes: Optional[str] = F(None, "pairs for the `bias` evaluator and `tailorlm bias`: a CrowS-Pairs CSV, a BBQ JSONL "
                              "or a pairs YAML; null = the shipped set (7 categories, 264 pairs)")
    max_pairs: int = F(140, "`bias` evaluator: pairs (or BBQ questions) scored at each evaluation, a seeded sample "
                       "across categories (140: 20 of each shipped category; a group under 10 never warns)", ge=2)
    swaps: Optional[str] = F(None, "`flips`: swap lists, YAML `axis: [[term, partner], ...]`; null = the shipped "
                             "ones (gender, names, ethnicity, religion, age, nationality, airline companies); optional lists "
                             "`ambiguous` (terms with another sense, swapped only before a word in `people`) and "
                             "`measures` (no swap right after these or a number)")
    flip_rows: int = F(100, "`flips` evaluator: held-out rows swapped at each evaluation", ge=1)
    threshold: float = F(0.05, "warn when tuning raises a bias score (|stereotype share - 0.5|, s_DIS, s_AMB) or a "
                         "flip rate significantly and by more than this", ge=0)


class OutputConfig(Strict):
    dir: str = F("runs/run", "the run directory")
    overwrite: bool = F(False, "replace a run already there")


MethodConfig = Annotated[Union[tuple(METHOD_CONFIGS.values())], Field(discriminator="name")]


class Config(Strict):
    model: ModelConfig = ModelConfig()
    data: DataConfig
    method: MethodConfig = Field(default_factory=lambda: METHOD_CONFIGS["lora"]())
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    retention: RetentionConfig = RetentionConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    bias: BiasConfig = BiasConfig()
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
        if self.train.lr is None:   # the method's own rate, written into the run's config.yaml
            self.train.lr = METHODS[self.method.name].default_lr
        if isinstance(self.train.steps, int) and self.train.warmup >= self.train.steps and self.train.warmup > 0:
            self.train.warmup = self.train.steps // 10
        metric, auto = self.eval.metric, self.eval.metric == "auto"
        if auto:   # what auto will choose: macro_f1 where the data is known to be classification
            metric = ("pref_loss" if self.train.objective != "sft" else
                      "macro_f1" if self.data.format == "classification" else "val_loss")
        needs = {"val_loss": "val_loss", "accuracy": "accuracy", "macro_f1": "accuracy", "pref_loss": "preference",
                 "pref_accuracy": "preference"}[metric]
        if needs not in self.eval.metrics:
            raise ValueError(f"eval.metric {metric} is scored by the {needs} evaluator, which eval.metrics "
                             f"leaves out{' (eval.metric: auto chose it)' if auto else ''}. Fix: add {needs} to "
                             "eval.metrics, or choose another eval.metric")
        check_objective(self, self.data.format)
        r = self.retention
        if r.budget == "auto":
            r.budget = BUDGET_AUTO if budget_applies(self) else None
        if r.budget is not None and not r.reference:
            raise ValueError("retention.budget needs the retention probe, which retention.reference=null turns off. "
                             "Fix: retention.reference=auto (or a text file), or retention.budget=null")
        used = [k for k in ("replay", "l2sp", "ewc", "distill", "budget") if getattr(r, k)]
        if self.train.parallel != "none" and used:
            raise ValueError(f"retention.{used[0]} is not supported with train.parallel={self.train.parallel} "
                             f"(the forgetting mitigations run on one process only). Fix: retention.{used[0]}="
                             f"{'null' if used[0] == 'budget' else 0}, "
                             "or train.parallel=none on one process; the retention probe and "
                             "retention.max_forgetting work in parallel runs")
        return self


def budget_applies(cfg: Config) -> bool:
    """Where `retention.budget: auto` turns the forgetting budget on: the probe measures (a reference),
    on one process, for a method with a switch back to its base (an adapter: no second copy of the
    model), a language model's task trained on its answers (`sft`: a preference objective is held to its
    reference by its own beta), and no mitigation the user set by hand (theirs is kept as set)."""
    r = cfg.retention
    return (bool(r.reference) and cfg.train.parallel == "none" and cfg.model.task == "causal_lm"
            and cfg.train.objective == "sft"
            and not METHODS[cfg.method.name].trains_base_weights
            and not any((r.replay, r.l2sp, r.ewc, r.distill)))


def auto_metric(cfg: Config, fmt: str) -> str:
    """What eval.metric: auto selects by: the held-out preference loss for a preference objective,
    macro_f1 for classification data (scored by the accuracy evaluator), else val_loss."""
    if cfg.train.objective != "sft":
        return "pref_loss"
    return "macro_f1" if fmt == "classification" and "accuracy" in cfg.eval.metrics else "val_loss"


def check_objective(cfg: Config, fmt: str) -> None:
    """train.objective and the data format agree (`fmt` auto: not known yet), and a preference objective
    runs where it can: one process, a causal LM."""
    obj = cfg.train.objective
    if obj != "sft" and fmt not in ("auto", "preference"):
        raise ValueError(f"train.objective {obj} learns from preference pairs, and the data is {fmt}. Fix: "
                         "rows with prompt (or messages), chosen and rejected fields (data.format: preference), or "
                         "train.objective: sft")
    if obj == "sft" and fmt == "preference":
        raise ValueError("the data is preference pairs (chosen and rejected answers), which train.objective sft "
                         "cannot learn from. Fix: train.objective: dpo (or simpo)")
    if obj == "sft" and cfg.eval.metric in ("pref_loss", "pref_accuracy"):
        raise ValueError(f"eval.metric {cfg.eval.metric} scores preference pairs under train.objective dpo or simpo; "
                         "this run's objective is sft. Fix: eval.metric: auto, or train.objective: dpo (or simpo)")
    if obj == "sft":
        return
    if cfg.model.task != "causal_lm":
        raise ValueError(f"train.objective {obj} scores answers with a language model's head. Fix: model.task: "
                         "causal_lm")
    if cfg.train.parallel != "none":
        raise ValueError(f"train.objective {obj} runs on one process for now. Fix: train.parallel: none")
    if cfg.privacy.canaries.count:
        raise ValueError(f"privacy.canaries are inserted as text rows, and train.objective {obj} trains on pairs "
                         "only. Fix: privacy.canaries.count: 0")
    if obj == "dpo" and cfg.train.preference.gamma is not None:
        raise ValueError("train.preference.gamma is SimPO's target margin; dpo has none. Fix: leave it unset, or "
                         "train.objective: simpo")


def resolve_with_data(cfg: Config, data) -> None:
    """Pin what only the data decides into `cfg` (so the run's config.yaml records it and a resume or
    an export reads the same): a classifier head's labels (data.labels, so the run reloads its head
    from the run alone), train.epochs (or train.steps: auto) becomes train.steps, eval.metric auto becomes macro_f1 for
    classification data (accuracy rewards a model that always answers the majority class) or
    val_loss otherwise; data.prompt_template and data.balance `auto` become what the data made them."""
    if cfg.model.task == "sequence_classification" and cfg.data.labels is None:
        cfg.data.labels = data.labels
    cfg.data.prompt_template = prompt_template_for(cfg.data.prompt_template, data.fmt,
                                                   head=cfg.model.task == "sequence_classification")
    cfg.data.balance = data.report.get("balance", cfg.data.balance)
    tc = cfg.train
    if tc.epochs is not None:
        steps = max(1, math.ceil(tc.epochs * len(data.train) / (tc.batch_size * tc.grad_accum)))
        data.report["steps_from_epochs"] = {"epochs": tc.epochs, "examples": len(data.train), "steps": steps}
        tc.epochs, tc.steps = None, steps   # in place: callers hold cfg.train
        if tc.warmup >= steps and tc.warmup > 0:
            tc.warmup = steps // 10
    if tc.steps == "auto":
        _auto_steps(cfg, data)
    try:   # (data.format: auto: the format the rows turned out to have)
        check_objective(cfg, data.fmt)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.eval.metric == "auto":
        cfg.eval.metric = auto_metric(cfg, data.fmt)


STEPS_AUTO = (3, 100, 3000)   # train.steps: auto: epochs, fewest steps, most steps
AUTO_PATIENCE = 3             # ...and the early stopping it turns on where eval.patience is unset


def _auto_steps(cfg: Config, data) -> None:
    """train.steps: auto: a few epochs of the data, clamped, with early stopping on eval.metric."""
    tc, (epochs, lo, hi) = cfg.train, STEPS_AUTO
    steps = min(hi, max(lo, math.ceil(epochs * len(data.train) / (tc.batch_size * tc.grad_accum))))
    tc.steps = steps
    if cfg.eval.patience is None:
        cfg.eval.patience = AUTO_PATIENCE
    if tc.warmup >= steps and tc.warmup > 0:
        tc.warmup = steps // 10
    data.report["steps_auto"] = {"epochs": epochs, "examples": len(data.train), "clamp": [lo, hi], "steps": steps,
                                 "patience": cfg.eval.patience}


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
        try:
            node[parts[-1]] = _parse_scalar(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: {key.strip()} is not a valid YAML value "
                              f"({getattr(e, 'problem', None) or e}). Fix: a complete YAML value, e.g. "
                              f"'{key.strip()}=[a, b]' for a list (brackets closed, quoted for the shell)") from None
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


# names other tools use for a key, where spelling similarity finds nothing (method.rank -> method.r)
ALIASES = {"rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
           "target_modules": "targets", "learning_rate": "lr", "max_steps": "steps", "num_virtual_tokens":
           "virtual_tokens", "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum"}


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for e in err.errors():
        # drop union tags such as 'lora' from method.lora.r -> method.r
        loc = tuple(p for p in e["loc"] if not (p in METHOD_CONFIGS and e["loc"][0] == "method"))
        path = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            valid = _fields_at(e["loc"][:-1])
            alias = ALIASES.get(str(loc[-1]))
            near = [alias] if alias in valid else difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"; did you mean {'.'.join(map(str, loc[:-1] + (near[0],)))!r}?" if near else ""
            lines.append(f"  {path}: unknown key{hint}")
        elif not loc:   # a cross-check of several keys: its message names them
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] == "missing":
            lines.append(f"  {path}: required key is missing")
        elif e["type"] == "value_error":   # a check of several keys in a section: its message names them
            lines.append(f"  {path}: {e['msg'].removeprefix('Value error, ')}")
        else:
            got = e.get("input")
            lines.append(f"  {path}: {e['msg']} (got {got!r})")
    if len(lines) == 2:   # one problem: one line, as every other user error prints
        return f"{lines[0]}: {lines[1].strip()}"
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
