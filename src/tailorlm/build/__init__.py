"""Builders from a config, split by what they build: `model` (the base model, the tokenizer, the
method a model carries) and `paths` (the stored paths made absolute).

What needs a run folder (a run's tuned model, the model a run starts from, the run start itself)
is in tailorlm.run, one layer up: it reads config.yaml and final/ through RunDir.
"""
from __future__ import annotations

from .model import MARK, load_base, merged, tokenizer_for, with_method
from .paths import resolve_paths

__all__ = ["MARK", "load_base", "merged", "resolve_paths", "tokenizer_for", "with_method"]
