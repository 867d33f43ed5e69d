"""A finished run opened from its folder alone: its config, its tuned model (with its method), the
tokenizer, and, on demand, its data and the device and precision it is scored with; and the start
of a new run, which may be such a run continued.

Every command and package that scores, reports on, compares or continues a finished run opens it
here (`open_run`), so the overrides, the pickle refusal, the thread count and the device and
precision are settled the same way everywhere. The model a run tuned sits on a base: the base model,
or, with model.init_from, an earlier run's final model (`method_base`, `start_model`).

The model a new run starts from (`build`) is, in order: a model object handed to `build(cfg,
model=...)`; the `final/` of an earlier run named by `model.init_from` (a continual stage, a second
round of tuning); or the base model `model.path` names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from ..build import MARK, load_base, merged, tokenizer_for
from ..config import Config, resolve_with_data
from ..data import Data, build_data
from ..device import pick_device, resolve_precision
from ..errors import MissingError
from ..methods import METHODS
from ..models.load import check_pickles
from .folder import FINAL, RunDir


def run_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The run's stored config, overrides applied (RunDir.config)."""
    return RunDir(run_dir).config(overrides)


def load_run(run_dir: str | Path, which: str = FINAL, tokenizer=None, overrides: list[str] | None = None,
             allow_pickle: bool | None = None):
    """(cfg, tuned model, tokenizer) from a run directory alone. `overrides` (dotted key=value) apply
    to the stored config before anything loads (e.g. model.path=... for a run moved elsewhere).
    Pickled weights in the artefact are refused (before the base model loads) unless `allow_pickle`,
    by default the run's model.allow_pickle; a run started from this one passes its own."""
    run = RunDir(run_dir)
    cfg = run.config(overrides)
    art = run.artefact(which)
    if not art.is_dir():
        raise MissingError(f"{art}: the run has no {which}/ folder (did it finish?)")
    allow = cfg.model.allow_pickle if allow_pickle is None else allow_pickle
    check_pickles(art, allow)
    base, tok = method_base(cfg, tokenizer)
    model = METHODS[cfg.method.name].load(base, art, allow_pickle=allow)
    setattr(model, MARK, cfg.method.name)
    return cfg, model, tok


def method_base(cfg: Config, tokenizer=None):
    """(model, tokenizer) that cfg's method sits on, which its final/ loads onto: the base model; or
    model.init_from's final model, an adapter of another method merged into it; or, where that run
    trained this same method (continued, so this run's artefact holds all of it), that run's own base."""
    if not cfg.model.init_from:
        return load_base(cfg, tokenizer=tokenizer)
    prev = run_config(cfg.model.init_from)
    if prev.method.name == cfg.method.name:
        return method_base(prev, tokenizer)
    _, model, tok = load_run(cfg.model.init_from, tokenizer=tokenizer, allow_pickle=cfg.model.allow_pickle)
    return merged(model, cfg.method.name), tok


def start_model(cfg: Config, tokenizer=None):
    """(model, tokenizer) a run of `cfg` starts from: model.init_from's tuned model when it carries
    this run's method (which then trains on), else the model the method is applied to."""
    init = cfg.model.init_from
    if init and run_config(init).method.name == cfg.method.name:
        _, model, tok = load_run(init, tokenizer=tokenizer, allow_pickle=cfg.model.allow_pickle)
        return model, tok
    return method_base(cfg, tokenizer)


def build(cfg: Config, model: torch.nn.Module | None = None) -> tuple[torch.nn.Module, object, Data]:
    """A new run's start: tokenizer, data (before the model: bad data fails fast), then the model it
    starts from. A classifier's labels are pinned into cfg.data.labels, so the run reloads its head
    from the run alone."""
    tok = tokenizer_for(cfg)
    data = build_data(cfg.data, tok, cfg.train.seed, task=cfg.model.task)
    if cfg.model.task == "sequence_classification" and cfg.data.labels is None:
        cfg.data.labels = data.labels
    resolve_with_data(cfg, data)   # train.epochs -> steps, eval.metric auto -> macro_f1 | val_loss
    if model is None:
        model, tok = start_model(cfg, tokenizer=tok)
    return model, tok, data


def place(cfg: Config) -> str:
    """The device cfg names (train.device, auto: CUDA when visible), with train.precision resolved
    for it in cfg (auto: bf16 where it is fast), as training resolved it."""
    device = pick_device(cfg.train.device)
    cfg.train.precision = resolve_precision(cfg.train.precision, device)
    return device


@dataclass
class OpenedRun:
    """A finished run, opened: the model is on the CPU until `on_device()`; `data` is built (the
    same seeded split the run trained on) the first time it is asked for."""
    run: RunDir
    cfg: Config
    model: torch.nn.Module
    tokenizer: object
    threads_before: int | None = field(default=None, repr=False)   # set where open_run set train.threads

    @cached_property
    def device(self) -> str:
        """The run's device, train.precision resolved for it (`place`)."""
        return place(self.cfg)

    @property
    def precision(self) -> str:
        self.device   # (resolves it)
        return self.cfg.train.precision

    @cached_property
    def data(self) -> Data:
        return build_data(self.cfg.data, self.tokenizer, self.cfg.train.seed, task=self.cfg.model.task)

    def on_device(self) -> torch.nn.Module:
        return self.model.to(self.device)

    def restore_threads(self) -> None:
        """The thread count as it was before open_run applied train.threads."""
        if self.threads_before is not None:
            torch.set_num_threads(self.threads_before)


def open_run(path: str | Path, overrides: list[str] | None = None, which: str = FINAL, *,
             threads: bool = False, tokenizer=None, allow_pickle: bool | None = None) -> OpenedRun:
    """The run at `path` (its folder or its final/) opened: config with `overrides`, the `which`
    artefact loaded onto its base. `threads`: apply train.threads to this process (where set),
    restorable with restore_threads()."""
    run = RunDir(path)
    cfg, model, tok = load_run(path, which, tokenizer=tokenizer, overrides=overrides, allow_pickle=allow_pickle)
    before = None
    if threads:
        before = torch.get_num_threads()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
    return OpenedRun(run, cfg, model, tok, before)
