"""Builders shared by train, eval, generate and export: config in, objects out."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..config import Config, load_config
from ..data import Data, build_data
from ..methods import METHODS
from ..models.load import load_model, load_tokenizer, resolve


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_base(cfg: Config, num_labels: int | None = None, tokenizer=None):
    """The base model the config names; a classifier gets a head over cfg.data.labels."""
    m = cfg.model
    labels = cfg.data.labels if m.task == "sequence_classification" else None
    return load_model(m.path, dtype=m.dtype, task=m.task, trust_remote_code=m.trust_remote_code,
                      allow_pickle=m.allow_pickle, num_labels=num_labels, tokenizer=tokenizer, labels=labels)


def tokenizer_for(cfg: Config):
    return load_tokenizer(resolve(cfg.model.path), cfg.model.trust_remote_code)


def build(cfg: Config) -> tuple[torch.nn.Module, object, Data]:
    """Tokenizer, data (before the model: bad data fails fast), then the base model. A classifier's
    labels are pinned into cfg.data.labels, so the run reloads its head from the run alone."""
    tok = tokenizer_for(cfg)
    data = build_data(cfg.data, tok, cfg.train.seed, task=cfg.model.task)
    if cfg.model.task == "sequence_classification" and cfg.data.labels is None:
        cfg.data.labels = data.labels
    model, tok = load_base(cfg, tokenizer=tok)
    return model, tok, data


def load_run(run_dir: str | Path, which: str = "final"):
    """(cfg, tuned model, tokenizer) from a run directory alone."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    art = run_dir / which
    if not art.is_dir():
        raise FileNotFoundError(f"{art}: the run has no {which}/ folder (did it finish?)")
    base, tok = load_base(cfg)
    model = METHODS[cfg.method.name].load(base, art)
    return cfg, model, tok
