"""Where a run's logits are computed: its target positions, per example.

The LM head runs only at the columns that carry a target (forward.lm_logits' `keep`; the chunked
loss, train.loss_chunk, at the target positions alone). Text, instruction and chat data are planned
with every position a target (a document is all targets; a long answer may fill its row). A
classification example's targets are its label word and what ends the turn, rendered as training
renders them (data/formats.py `response_text`):

    L = max over labels of len(tokens(response_text(prompt, label)))

so a micro-batch of R examples has R x L target positions, whatever its rows' length. The labels
are data.labels, else those of the training file (data/validate.py `label_set`); data.format auto
is resolved on that file as training resolves it. Where neither can be read (no file yet, a tokenizer
that cannot load), every position is planned, as for text.
"""
from __future__ import annotations

import functools
import json

from ..data.formats import Formatter
from ..data.read import read_rows
from ..data.validate import detect_format, label_set
from ..models.load import load_tokenizer, resolve


def label_positions(cfg) -> int | None:
    """L, the target positions of one classification example (see above); None for other data, or
    when the labels or the tokenizer cannot be read."""
    d = cfg.data
    if d.format not in ("classification", "auto") or cfg.model.task != "causal_lm":
        return None
    key = json.dumps([cfg.model.path, cfg.model.trust_remote_code, d.model_dump(mode="json")], sort_keys=True,
                     default=str)
    return _positions(key)


@functools.lru_cache(maxsize=16)
def _positions(key: str) -> int | None:
    """label_positions, once per model and data section (advice re-plans the same data many times)."""
    from ..config import DataConfig

    path, trust, raw = json.loads(key)
    d = DataConfig.model_validate(raw)
    try:
        labels = list(d.labels or [])
        if not labels or d.format == "auto":
            rows = read_rows(d.train, on_error="skip").rows
            if detect_format(rows, d) != "classification":
                return None
            labels = label_set(rows, d)
        tok = load_tokenizer(resolve(path), trust)
    except Exception:   # no data or tokenizer to read yet: the planner falls back to every position
        return None
    if not labels:
        return None
    fm = Formatter("classification", tok, d, labels)
    prompt = fm.wrap("x")
    return max(len(tok(fm.response_text(prompt, lab), add_special_tokens=False)["input_ids"]) for lab in labels)
