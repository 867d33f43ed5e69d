"""The model and tokenizer a config names, and the method a model carries.

Every model a run holds is marked with the method it carries (`tailorlm_method`), so a run that
starts from a tuned model continues that method's parameters instead of stacking a second copy on
top; `merged` and `with_method` read and keep that mark.
"""
from __future__ import annotations

from ..config import Config
from ..errors import ConfigError
from ..methods import METHODS, NotMergeable
from ..models.load import check_task, load_model, load_tokenizer, resolve

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
