"""Builders shared by train, eval, generate, export and what runs beside the loop: config in, objects out.

The model a run starts from is, in order: a model object handed to `build(cfg, model=...)`; the
`final/` of an earlier run named by `model.init_from` (a continual stage, a second round of tuning);
or the base model `model.path` names. Whatever it is, it is marked with the method it carries
(`tailorlm_method`), so a run that starts from a tuned model continues that method's parameters
instead of stacking a second copy on top.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import Config, load_config, resolve_with_data
from .data import Data, build_data
from .errors import ConfigError, MissingError
from .methods import METHODS, NotMergeable
from .models.defaults import DEFAULT_MODELS
from .models.load import check_pickles, check_task, load_model, load_tokenizer, resolve

MARK = "tailorlm_method"   # attribute naming the method a model already carries


def load_base(cfg: Config, tokenizer=None):
    """The base model the config names; a classifier gets a head over cfg.data.labels."""
    m = cfg.model
    labels = cfg.data.labels if m.task == "sequence_classification" else None
    return load_model(m.path, dtype=m.dtype, task=m.task, trust_remote_code=m.trust_remote_code,
                      allow_pickle=m.allow_pickle, tokenizer=tokenizer, labels=labels)


def tokenizer_for(cfg: Config):
    """The model's tokenizer; first (reading config.json only) a refusal of a model the task does not
    fit, so it comes before the data is read and the weights load."""
    p = resolve(cfg.model.path)
    check_task(p, cfg.model.task)
    return load_tokenizer(p, cfg.model.trust_remote_code)


def _absolute(path: str | None) -> str | None:
    """An existing path made absolute (symlinks kept); anything else as written, so that an error
    about it names what the user typed."""
    if path is None or not Path(path).expanduser().exists():
        return path
    return os.path.abspath(Path(path).expanduser())


def resolve_paths(cfg: Config) -> Config:
    """Make every path a run stores absolute, when the run starts. config.yaml is what eval,
    generate, export and resume read later, from any directory; a relative model.path or data path
    would only work from the folder the run was started in. Embedded short names stay names."""
    m, d, r = cfg.model, cfg.data, cfg.retention
    if m.path not in DEFAULT_MODELS:
        m.path = _absolute(m.path)
    m.init_from = _absolute(m.init_from)
    if isinstance(d.train, str):
        d.train = _absolute(d.train)
    else:   # several files: paths, or {path, weight} entries
        d.train = [_absolute(t) if isinstance(t, str) else t.model_copy(update={"path": _absolute(t.path)})
                   for t in d.train]
    d.val, d.test = _absolute(d.val), _absolute(d.test)
    if r.reference != "auto":
        r.reference = _absolute(r.reference)
    r.replay_data = _absolute(r.replay_data)
    cfg.bias.probes, cfg.bias.swaps = _absolute(cfg.bias.probes), _absolute(cfg.bias.swaps)
    return cfg


def run_dir_of(path: str | Path) -> Path:
    """A run directory, given it or its final/ folder."""
    p = Path(path)
    return p.parent if p.name == "final" and (p.parent / "config.yaml").is_file() else p


def load_run(run_dir: str | Path, which: str = "final", tokenizer=None, overrides: list[str] | None = None,
             allow_pickle: bool | None = None):
    """(cfg, tuned model, tokenizer) from a run directory alone. `overrides` (dotted key=value) apply
    to the stored config before anything loads (e.g. model.path=... for a run moved elsewhere).
    Pickled weights in the artefact are refused (before the base model loads) unless `allow_pickle`,
    by default the run's model.allow_pickle; a run started from this one passes its own."""
    cfg = run_config(run_dir, overrides)
    art = run_dir_of(run_dir) / which
    if not art.is_dir():
        raise MissingError(f"{art}: the run has no {which}/ folder (did it finish?)")
    allow = cfg.model.allow_pickle if allow_pickle is None else allow_pickle
    check_pickles(art, allow)
    base, tok = method_base(cfg, tokenizer)
    model = METHODS[cfg.method.name].load(base, art, allow_pickle=allow)
    setattr(model, MARK, cfg.method.name)
    return cfg, model, tok


def run_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    run_dir = run_dir_of(run_dir)
    if not (run_dir / "config.yaml").is_file():
        what = "no such directory" if not run_dir.exists() else "not a tailorlm run (no config.yaml)"
        raise MissingError(f"{run_dir}: {what}. Fix: name a run directory written by tailorlm train")
    return load_config(run_dir / "config.yaml", overrides)


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


def merged(model, name: str):
    """`model` without the adapter of another method than `name` it may carry: folded into its weights."""
    carried = getattr(model, MARK, None)
    if carried in (None, "full", name):
        return model
    try:
        return METHODS[carried].merge(model)
    except NotMergeable as e:
        raise ConfigError(f"model.init_from carries {carried}, which cannot be merged before applying "
                          f"method {name} ({e}). Fix: method.name={carried} to continue it") from None


def with_method(model, cfg: Config):
    """`model` carrying cfg's method, trainable: continued when the model already carries it (every
    method's load() returns its parameters trainable), else applied (after merging another's adapter)."""
    name = cfg.method.name
    if getattr(model, MARK, None) == name:
        return model
    model = METHODS[name].apply(merged(model, name), cfg.method)
    setattr(model, MARK, name)
    return model


def build(cfg: Config, model: torch.nn.Module | None = None) -> tuple[torch.nn.Module, object, Data]:
    """Tokenizer, data (before the model: bad data fails fast), then the model the run starts from.
    A classifier's labels are pinned into cfg.data.labels, so the run reloads its head from the run alone."""
    tok = tokenizer_for(cfg)
    data = build_data(cfg.data, tok, cfg.train.seed, task=cfg.model.task)
    if cfg.model.task == "sequence_classification" and cfg.data.labels is None:
        cfg.data.labels = data.labels
    resolve_with_data(cfg, data)   # train.epochs -> steps, eval.metric auto -> macro_f1 | val_loss
    if model is None:
        model, tok = start_model(cfg, tokenizer=tok)
    return model, tok, data
