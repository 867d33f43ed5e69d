"""What the planner knows of a model before any weight is read: its config.json, the parameters each
method trains on it (counted on a skeleton), and what autograd keeps per decoder layer (a probe).

Trainable parameters are counted exactly: the method is applied to the model's skeleton on the meta
device (shapes only, no memory) and `methods.count` counts what it made trainable, the same function
a run reports.

Activations are measured, not guessed, on a probe: the same architecture with 1 and then 2 decoder
layers (random weights, a 256-word vocabulary), the configured method and precision, one forward at
three sequence lengths, counting every tensor autograd saves for backward
(`torch.autograd.graph.saved_tensors_hooks`; each storage once, the weights themselves left out,
since they are counted as weights). The 2-layer minus the 1-layer model is one layer:

    saved(T) = c + a * T + q * T^2        per layer and row of T tokens

c is what a layer keeps whatever the tokens (bf16 copies of its weights under autocast), a the
per-token activations, q the attention matrix when the attention kernel keeps one (0 with a
flash-style kernel). The probe costs the memory of two layers, built once per model, method and
precision and cached in the process.
"""
from __future__ import annotations

import copy
import functools
import json

import torch

from ..data.batching import collate
from ..data.tokenize import Example
from ..device import autocast
from ..forward import lm_loss_sum
from ..methods import METHODS, count
from ..models.load import load_hf_config, resolve

PROBE_VOCAB = 256
PROBE_LENGTHS = (32, 64, 128)


def hf_config(cfg):
    """The model's transformers config (config.json only; its code never runs)."""
    return load_hf_config(cfg.model.path, cfg.model.trust_remote_code)


def skeleton(config, task: str):
    """The architecture with its weights on the meta device."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if task == "sequence_classification" else AutoModelForCausalLM
    with torch.device("meta"):
        return cls.from_config(config)


def method_counts(cfg, config) -> tuple[int, int]:
    """(trainable, total) parameters of the configured method on this model, tied weights once."""
    model = skeleton(copy.deepcopy(config), cfg.model.task)
    model.name_or_path = str(resolve(cfg.model.path))
    return count(METHODS[cfg.method.name].apply(model, _shape_only(cfg.method)))


def _shape_only(mcfg):
    """The method's config without what only sets start values (a prompt's init text needs real
    weights to embed; the shapes are the same)."""
    if getattr(mcfg, "init", None) == "text":
        return mcfg.model_copy(update={"init": "random", "init_text": None})
    return mcfg


def layers_in_backward(cfg, n_layers: int) -> int:
    """Decoder layers that backward runs through: every one when the input needs a gradient (full,
    prompt, prefix tuning), else those from the lowest adapted layer up."""
    sel = getattr(cfg.method, "layers", None)
    if cfg.method.name == "full" or sel is None:
        return n_layers
    lowest = n_layers - sel if isinstance(sel, int) else min(sel)
    return n_layers - max(0, lowest)


def _probe_config(config, n_layers: int, vocab: int):
    c = copy.deepcopy(config)
    c.num_hidden_layers, c.vocab_size = n_layers, vocab
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if isinstance(getattr(c, key, None), int) and getattr(c, key) >= vocab:
            setattr(c, key, 0)
    if hasattr(c, "layer_types") and c.layer_types:
        c.layer_types = c.layer_types[:n_layers]
    return c


def _saved_bytes(model, precision: str, tokens: int, vocab: int) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one forward of 1 x `tokens`."""

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params and s.device.type != "meta":
            seen[s.data_ptr()] = s.nbytes()
        return t

    ids = [1 + (i * 7) % (vocab - 1) for i in range(tokens)]
    batch = collate([Example(ids, list(ids), "probe", 1, 0)], 0, packing=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast("cpu", precision):
        loss, _ = lm_loss_sum(model, batch)
    del loss
    return sum(seen.values())


def _fit(xs, ys) -> tuple[float, float, float]:
    """c, a, q of y = c + a x + q x^2 through three points."""
    import numpy as np

    c, a, q = np.linalg.solve(np.array([[1.0, x, x * x] for x in xs]), np.array(ys, dtype=float))
    return float(c), float(a), max(0.0, float(q))


def _measure(config, method_name: str, mcfg, precision: str, dtype: str, n_layers: int, vocab: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_probe_config(config, n_layers, vocab))
    model = model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    model = METHODS[method_name].apply(model, mcfg).train()
    return [_saved_bytes(model, precision, t, vocab) for t in PROBE_LENGTHS]


@functools.lru_cache(maxsize=16)
def _probe(config_json: str, method_json: str, method_name: str, precision: str, dtype: str) -> dict:
    from transformers import AutoConfig

    config = AutoConfig.for_model(**json.loads(config_json))
    args = (config, method_name, METHODS[method_name].Config(**json.loads(method_json)), precision, dtype)
    one, two = _measure(*args, 1, PROBE_VOCAB), _measure(*args, 2, PROBE_VOCAB)
    wide = _measure(*args, 1, 2 * PROBE_VOCAB)          # the vocabulary's share: logits and head copies
    layer = [b - a for a, b in zip(one, two)]
    word = [(w - a) / PROBE_VOCAB for a, w in zip(one, wide)]
    rest = [a - b - PROBE_VOCAB * v for a, b, v in zip(one, layer, word)]
    # a row's tokens: its own and the virtual ones a prompt method puts in front
    xs = [t + json.loads(method_json).get("virtual_tokens", 0) * (method_name == "prompt") for t in PROBE_LENGTHS]
    return {"layer": _fit(xs, layer), "word": _fit(xs, word), "rest": _fit(xs, rest)}


def probe(cfg, config, precision: str) -> dict:
    """Per layer and outside the layers: (c, a, q) of saved bytes for a row of T tokens (see above).
    The method is applied to every probe layer (its `layers` choice is applied by the caller)."""
    mcfg = _shape_only(cfg.method).model_dump()
    mcfg.pop("layers", None)
    return _probe(config.to_json_string(use_diff=False), json.dumps(mcfg), cfg.method.name, precision,
                  cfg.model.dtype)
